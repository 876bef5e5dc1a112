#include "bridge/json_writer.h"

#include <cstring>

namespace walbus {
namespace {

// What each byte needs inside a JSON string: 0 = copy as is, 'u' = \u00XX,
// another letter = that short escape, '"' / '\\' = backslash + itself,
// 0x80 = start of a multi-byte UTF-8 sequence to check.
constexpr auto kClass = [] {
  struct Table {
    uint8_t v[256] = {};
  } t;
  for (int c = 0; c < 0x20; ++c) t.v[c] = 'u';
  t.v[static_cast<unsigned char>('\b')] = 'b';
  t.v[static_cast<unsigned char>('\t')] = 't';
  t.v[static_cast<unsigned char>('\n')] = 'n';
  t.v[static_cast<unsigned char>('\f')] = 'f';
  t.v[static_cast<unsigned char>('\r')] = 'r';
  t.v[static_cast<unsigned char>('"')] = '"';
  t.v[static_cast<unsigned char>('\\')] = '\\';
  for (int c = 0x80; c < 0x100; ++c) t.v[c] = 0x80;
  return t;
}();

constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;

// True when none of the 8 bytes at p needs attention: all are printable
// ASCII other than '"' and '\\' (the bit tricks of "Bit Twiddling Hacks":
// haszero / hasless, exact as yes-no answers).
inline bool EightSafe(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  uint64_t less_than_space = (x - kOnes * 0x20) & ~x;
  uint64_t q = x ^ (kOnes * '"');
  uint64_t is_quote = (q - kOnes) & ~q;
  uint64_t b = x ^ (kOnes * '\\');
  uint64_t is_backslash = (b - kOnes) & ~b;
  return ((x | less_than_space | is_quote | is_backslash) & kHighs) == 0;
}

inline void AppendEscapedAscii(std::string* out, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint8_t k = kClass.v[c];
  if (k == 'u') {
    char buf[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
    out->append(buf, 6);
  } else {
    char buf[2] = {'\\', static_cast<char>(k)};
    out->append(buf, 2);
  }
}

// Skips the bytes at p that go out unchanged: printable ASCII other than
// '"' and '\\', and valid multi-byte UTF-8. Returns the first byte that needs
// attention, or end.
inline const char* SkipVerbatim(const char* p, const char* end) {
  while (p < end) {
    while (end - p >= 8 && EightSafe(p)) p += 8;
    while (p < end && kClass.v[static_cast<unsigned char>(*p)] == 0) ++p;
    if (p == end || static_cast<unsigned char>(*p) < 0x80) break;
    size_t bad;
    size_t n = CheckUtf8Sequence(p, end, &bad);
    if (n == 0) break;
    p += n;
  }
  return p;
}

// Appends '"' + s + '"' with one size change of *out.
inline void AppendQuotedRaw(std::string* out, const char* s, size_t n) {
  size_t old = out->size();
  out->append(n + 2, '"');
  if (n != 0) std::memcpy(&(*out)[old + 1], s, n);
}

template <bool kUnescapePg>
void AppendEscaped(std::string* out, std::string_view s) {
  const char* p = s.data();
  const char* const end = p + s.size();
  p = SkipVerbatim(p, end);
  if (p == end) {  // the common case: nothing to escape
    AppendQuotedRaw(out, s.data(), s.size());
    return;
  }
  out->push_back('"');
  const char* run = s.data();  // start of the bytes not yet appended
  while (p < end) {
    out->append(run, static_cast<size_t>(p - run));
    auto c = static_cast<unsigned char>(*p);
    if constexpr (kUnescapePg) {
      if (c == '\\' && end - p >= 2) {
        ++p;  // the backslash goes; the next byte is literal
        c = static_cast<unsigned char>(*p);
        if (kClass.v[c] == 0) {
          run = p++;  // starts the next run
          p = SkipVerbatim(p, end);
          continue;
        }
      }
    }
    if (c >= 0x80) {
      // Invalid (where SkipVerbatim stopped) or just after a backslash.
      size_t bad = 1;
      size_t n = CheckUtf8Sequence(p, end, &bad);
      if (n != 0) {
        out->append(p, n);
        p += n;
      } else {
        out->append(kUtf8Replacement);
        p += bad;
      }
    } else {
      AppendEscapedAscii(out, c);
      ++p;
    }
    run = p;
    p = SkipVerbatim(p, end);
  }
  out->append(run, static_cast<size_t>(p - run));
  out->push_back('"');
}

}  // namespace

bool AppendJsonText(std::string* out, std::string_view json) {
  const char* p = json.data();
  const char* const end = p + json.size();
  bool in_string = false;
  const char* run = p;  // quotes and escapes go out unchanged: only control
                        // characters and bad UTF-8 end a run
  while (true) {
    p = SkipVerbatim(p, end);
    if (p == end) break;
    auto c = static_cast<unsigned char>(*p);
    if (c == '"') {
      in_string = !in_string;
      ++p;
    } else if (c == '\\') {
      // Only inside a string, and only JSON's escapes; the escaped byte must
      // not end the string.
      if (!in_string || end - p < 2) return false;
      switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': case 'u':
          p += 2;
          break;
        default:
          return false;
      }
    } else if (c >= 0x80) {
      out->append(run, static_cast<size_t>(p - run));
      out->append(kUtf8Replacement);
      size_t bad = 1;
      (void)CheckUtf8Sequence(p, end, &bad);
      p += bad;
      run = p;
    } else if (in_string) {
      out->append(run, static_cast<size_t>(p - run));
      AppendEscapedAscii(out, c);
      run = ++p;
    } else if (c == '\t' || c == '\n' || c == '\r') {
      out->append(run, static_cast<size_t>(p - run));
      out->push_back(' ');
      run = ++p;
    } else {
      return false;
    }
  }
  out->append(run, static_cast<size_t>(p - run));
  return !in_string;
}

size_t CheckUtf8Sequence(const char* p, const char* end, size_t* invalid_len) {
  auto b0 = static_cast<unsigned char>(p[0]);
  if (b0 < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;        // overlong
    else if (b0 == 0xED) hi = 0x9F;   // UTF-16 surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;        // overlong
    else if (b0 == 0xF4) hi = 0x8F;   // above U+10FFFF
  } else {
    *invalid_len = 1;  // continuation byte, C0/C1 overlong lead, F5..FF
    return 0;
  }
  size_t avail = static_cast<size_t>(end - p) - 1;
  for (size_t i = 1; i <= need; ++i) {
    if (i > avail) {
      *invalid_len = i;  // truncated: the lead and the valid continuations
      return 0;
    }
    auto b = static_cast<unsigned char>(p[i]);
    bool ok = (i == 1) ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      *invalid_len = i;
      return 0;
    }
  }
  return need + 1;
}

void AppendJsonString(std::string* out, std::string_view s) {
  AppendEscaped<false>(out, s);
}

void AppendJsonStringUnescapingPg(std::string* out, std::string_view raw) {
  AppendEscaped<true>(out, raw);
}

}  // namespace walbus
