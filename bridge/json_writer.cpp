#include "bridge/json_writer.h"

#include <bit>
#include <cstring>
#include <vector>

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

// The 8 bytes at p that need attention, as their high bits: all but printable
// ASCII other than '"' and '\\' (the bit tricks of "Bit Twiddling Hacks":
// haszero / hasless). Zero when none does. A borrow can flag bytes above a
// real hit, never below one, so on a little-endian machine the lowest flag
// marks the first byte that needs attention.
inline uint64_t Attention8(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  uint64_t less_than_space = (x - kOnes * 0x20) & ~x;
  uint64_t q = x ^ (kOnes * '"');
  uint64_t is_quote = (q - kOnes) & ~q;
  uint64_t b = x ^ (kOnes * '\\');
  uint64_t is_backslash = (b - kOnes) & ~b;
  return (x | less_than_space | is_quote | is_backslash) & kHighs;
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
    for (;;) {  // to the first byte whose kClass is not 0
      if (end - p >= 8) {
        uint64_t flags = Attention8(p);
        if (flags == 0) {
          p += 8;
          continue;
        }
        if constexpr (std::endian::native == std::endian::little) {
          p += std::countr_zero(flags) / 8;
          break;
        }
      }
      while (p < end && kClass.v[static_cast<unsigned char>(*p)] == 0) ++p;
      break;
    }
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

inline bool IsHexDigit(char c) {
  auto u = static_cast<unsigned char>(c);
  return static_cast<unsigned char>(u - '0') <= 9 ||
         static_cast<unsigned char>((u | 0x20) - 'a') <= 5;
}

// AppendJsonValue's state machine: checks the grammar and copies in one walk.
// Bytes go to *out in runs from run_ (only a tab/newline/CR between tokens, a
// control character in a string and invalid UTF-8 end a run), so a value
// that needs no repair is appended at once. A bit per level of nesting says
// whether it is an object: on the stack up to kInlineLevels, on the heap
// beyond (json_in takes millions of levels).
class JsonValueWriter {
 public:
  JsonValueWriter(std::string* out, std::string_view text)
      : out_(out), begin_(text.data()), p_(text.data()), run_(text.data()),
        end_(text.data() + text.size()) {}

  // npos when the text was one JSON value and is now appended, else the
  // offset of the first byte that breaks the grammar (*out partly written).
  size_t Run() {
    Want want = Want::kValue;
    for (;;) {
      SkipWhitespace();
      if (p_ == end_) {
        if (want != Want::kNothing) return Error();
        Flush();
        return std::string_view::npos;
      }
      const char c = *p_;
      switch (want) {
        case Want::kValueOrEnd:
          if (c == ']') {
            want = Close();
            break;
          }
          [[fallthrough]];
        case Want::kValue:
          if (c == '{') {
            ++p_;
            Push(true);
            want = Want::kKeyOrEnd;
          } else if (c == '[') {
            ++p_;
            Push(false);
            want = Want::kValueOrEnd;
          } else {
            const char* at = p_;
            if (!Scalar()) return p_ == end_ ? Error() : static_cast<size_t>(at - begin_);
            want = AfterValue();
          }
          break;
        case Want::kKeyOrEnd:
          if (c == '}') {
            want = Close();
            break;
          }
          [[fallthrough]];
        case Want::kKey:
          if (c != '"') return Error();
          if (!String()) return Error();
          want = Want::kColon;
          break;
        case Want::kColon:
          if (c != ':') return Error();
          ++p_;
          want = Want::kValue;
          break;
        case Want::kCommaOrEnd:
          if (c == ',') {
            ++p_;
            want = InObject() ? Want::kKey : Want::kValue;
          } else if (c == (InObject() ? '}' : ']')) {
            ++p_;
            --depth_;
            want = AfterValue();
          } else {
            return Error();
          }
          break;
        case Want::kNothing:
          return Error();
      }
    }
  }

 private:
  static constexpr size_t kInlineLevels = 4096;
  enum class Want : uint8_t { kValue, kValueOrEnd, kKey, kKeyOrEnd, kColon, kCommaOrEnd, kNothing };

  size_t Error() const { return static_cast<size_t>(p_ - begin_); }

  // Appends the run up to p_.
  void Flush() { out_->append(run_, static_cast<size_t>(p_ - run_)); }

  void SkipWhitespace() {
    // Every token starts above ' ', every whitespace byte is at most ' '.
    while (p_ != end_ && static_cast<unsigned char>(*p_) <= ' ') {
      const char c = *p_;
      if (c == ' ') {
        ++p_;
      } else if (c == '\n' || c == '\t' || c == '\r') {
        Flush();
        out_->push_back(' ');
        run_ = ++p_;
      } else {
        return;
      }
    }
  }

  bool InObject() const {
    size_t level = depth_ - 1;
    uint64_t word = level < kInlineLevels ? inline_[level / 64]
                                          : heap_[(level - kInlineLevels) / 64];
    return (word >> (level % 64)) & 1;
  }
  void Push(bool object) {
    size_t level = depth_++;
    uint64_t* word;
    if (level < kInlineLevels) {
      word = &inline_[level / 64];
    } else {
      size_t index = (level - kInlineLevels) / 64;
      if (index >= heap_.size()) heap_.push_back(0);
      word = &heap_[index];
    }
    uint64_t bit = uint64_t{1} << (level % 64);
    uint64_t below = level % 64 == 0 ? 0 : *word & (bit - 1);  // the levels under this one
    *word = object ? (below | bit) : below;
  }
  // After a complete value: what may follow it.
  Want AfterValue() const { return depth_ == 0 ? Want::kNothing : Want::kCommaOrEnd; }
  // Past the ']' or '}' at p_: one level up.
  Want Close() {
    ++p_;
    --depth_;
    return AfterValue();
  }

  // p_ at the opening quote; leaves p_ after the closing one. Valid UTF-8 and
  // printable ASCII stay in the run; a control character is escaped and each
  // maximal invalid UTF-8 subpart becomes one U+FFFD (neither ever covers a
  // '"' or '\\', so the grammar sees the same quotes and escapes).
  bool String() {
    ++p_;
    for (;;) {
      p_ = SkipVerbatim(p_, end_);
      if (p_ == end_) return false;
      auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c == '\\') {
        ++p_;
        if (p_ == end_) return false;
        switch (*p_) {
          case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            ++p_;
            break;
          case 'u':
            ++p_;
            for (int i = 0; i < 4; ++i, ++p_) {
              if (p_ == end_ || !IsHexDigit(*p_)) return false;
            }
            break;
          default:
            return false;
        }
      } else if (c >= 0x80) {
        Flush();
        out_->append(kUtf8Replacement);
        size_t bad = 1;
        (void)CheckUtf8Sequence(p_, end_, &bad);
        run_ = p_ += bad;
      } else {
        Flush();
        AppendEscapedAscii(out_, c);
        run_ = ++p_;
      }
    }
  }
  bool Literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() ||
        std::memcmp(p_, word.data(), word.size()) != 0) {
      return false;
    }
    p_ += word.size();
    return true;
  }
  bool Number() {
    const char* stop = p_;
    const char* after = ScanJsonNumber(p_, end_, &stop);
    p_ = after != nullptr ? after : stop;
    return after != nullptr;
  }
  // One value that is not a container.
  bool Scalar() {
    switch (*p_) {
      case '"': return String();
      case 't': return Literal("true");
      case 'f': return Literal("false");
      case 'n': return Literal("null");
      default: return Number();
    }
  }

  std::string* const out_;
  const char* const begin_;
  const char* p_;
  const char* run_;  // start of the bytes not yet appended
  const char* const end_;
  size_t depth_ = 0;
  uint64_t inline_[kInlineLevels / 64];  // bit set: an object at that level (bits above
                                         // the current level are stale, never read)
  std::vector<uint64_t> heap_;           // levels from kInlineLevels on
};

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

bool AppendJsonValue(std::string* out, std::string_view text, size_t* error_at) {
  const size_t mark = out->size();
  JsonValueWriter w(out, text);
  size_t at = w.Run();
  if (at == std::string_view::npos) return true;
  out->resize(mark);
  *error_at = at;
  return false;
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
