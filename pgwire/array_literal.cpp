#include "pgwire/array_literal.h"

#include <cstring>

namespace walbus::pgwire {
namespace {

// array_in's notion of whitespace (scanner_isspace).
inline bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

Status Malformed(const char* what, size_t offset) {
  std::string m = "array literal: ";
  m += what;
  m += " at offset ";
  m += std::to_string(offset);
  return Status::Corruption(std::move(m));
}

inline bool IsNullWord(std::string_view s) {
  return s.size() == 4 && (s[0] | 0x20) == 'n' && (s[1] | 0x20) == 'u' &&
         (s[2] | 0x20) == 'l' && (s[3] | 0x20) == 'l';
}

// Parses the "[lo:hi][lo:hi]=" decoration array_out writes when a lower bound
// is not 1. Bounds are signed integers; "[n]" alone is accepted as array_in
// accepts it. *pos is at '['; on success it is just after '='.
Status SkipDimensions(std::string_view text, size_t* pos) {
  size_t p = *pos;
  int dims = 0;
  auto integer = [&](size_t* q) {
    if (*q < text.size() && (text[*q] == '-' || text[*q] == '+')) ++*q;
    size_t start = *q;
    while (*q < text.size() && text[*q] >= '0' && text[*q] <= '9') ++*q;
    return *q > start;
  };
  while (p < text.size() && text[p] == '[') {
    if (++dims > kMaxArrayDims) return Malformed("more than 6 dimensions", p);
    ++p;
    if (!integer(&p)) return Malformed("expected a bound", p);
    if (p < text.size() && text[p] == ':') {
      ++p;
      if (!integer(&p)) return Malformed("expected an upper bound", p);
    }
    if (p >= text.size() || text[p] != ']') return Malformed("expected ']'", p);
    ++p;
  }
  while (p < text.size() && IsSpace(text[p])) ++p;
  if (p >= text.size() || text[p] != '=') return Malformed("expected '=' after dimensions", p);
  ++p;
  while (p < text.size() && IsSpace(text[p])) ++p;
  *pos = p;
  return Status::Ok();
}

}  // namespace

// The grammar of array_out (src/backend/utils/adt/arrayfuncs.c), read with
// array_in's tolerance for whitespace around items. Elements must all sit at
// one depth (the innermost) and only the outermost array may be empty.
Status ParseArrayLiteral(std::string_view text, char delimiter, ArrayVisitor& v) {
  const size_t n = text.size();
  size_t pos = 0;
  while (pos < n && IsSpace(text[pos])) ++pos;
  if (pos < n && text[pos] == '[') WALBUS_RETURN_IF_ERROR(SkipDimensions(text, &pos));
  if (pos >= n || text[pos] != '{') return Malformed("expected '{'", pos);

  enum class Expect { kItemOrClose, kItem, kDelimiterOrClose };
  Expect expect = Expect::kItemOrClose;
  int depth = 0;
  int leaf_depth = 0;  // depth at which elements sit, once known

  // The outermost '{' is handled by the loop like any other.
  while (true) {
    while (pos < n && IsSpace(text[pos])) ++pos;
    if (pos >= n) return Malformed("unexpected end", pos);
    const char c = text[pos];

    if (expect == Expect::kDelimiterOrClose) {
      if (c == delimiter) {
        ++pos;
        expect = Expect::kItem;
        continue;
      }
      if (c != '}') return Malformed("expected delimiter or '}'", pos);
      WALBUS_RETURN_IF_ERROR(v.EndArray());
      ++pos;
      if (--depth == 0) break;
      continue;
    }

    if (c == '{') {
      if (leaf_depth != 0 && depth >= leaf_depth) return Malformed("unexpected '{'", pos);
      if (++depth > kMaxArrayDims) return Malformed("more than 6 dimensions", pos);
      WALBUS_RETURN_IF_ERROR(v.BeginArray());
      ++pos;
      expect = Expect::kItemOrClose;
      continue;
    }
    if (c == '}') {
      if (expect != Expect::kItemOrClose) return Malformed("empty element", pos);
      if (depth > 1) return Malformed("empty inner array", pos);
      WALBUS_RETURN_IF_ERROR(v.EndArray());
      ++pos;
      --depth;
      break;
    }
    if (c == delimiter) return Malformed("empty element", pos);

    if (leaf_depth == 0) {
      leaf_depth = depth;
    } else if (depth != leaf_depth) {
      return Malformed("element at the wrong depth", pos);
    }
    if (c == '"') {
      size_t start = ++pos;
      while (true) {
        if (pos >= n) return Malformed("unterminated quoted element", start - 1);
        char q = text[pos];
        if (q == '"') break;
        if (q == '\\') {
          if (pos + 1 >= n) return Malformed("unterminated quoted element", start - 1);
          pos += 2;
        } else {
          ++pos;
        }
      }
      WALBUS_RETURN_IF_ERROR(v.Element(text.substr(start, pos - start), true, false));
      ++pos;  // the closing quote
    } else {
      size_t start = pos;
      while (pos < n) {
        char u = text[pos];
        if (u == delimiter || u == '}') break;
        // array_out quotes any element holding these; unquoted they mean
        // the text is not what array_out wrote.
        if (u == '{' || u == '"' || u == '\\') return Malformed("unexpected character in element", pos);
        ++pos;
      }
      size_t stop = pos;
      while (stop > start && IsSpace(text[stop - 1])) --stop;
      std::string_view raw = text.substr(start, stop - start);
      WALBUS_RETURN_IF_ERROR(v.Element(raw, false, IsNullWord(raw)));
    }
    expect = Expect::kDelimiterOrClose;
  }

  while (pos < n && IsSpace(text[pos])) ++pos;
  if (pos != n) return Malformed("trailing bytes after the array", pos);
  return Status::Ok();
}

void AppendPgUnescaped(std::string* out, std::string_view raw) {
  size_t i = 0;
  while (i < raw.size()) {
    const void* hit = std::memchr(raw.data() + i, '\\', raw.size() - i);
    if (hit == nullptr) {
      out->append(raw.data() + i, raw.size() - i);
      return;
    }
    size_t b = static_cast<size_t>(static_cast<const char*>(hit) - raw.data());
    out->append(raw.data() + i, b - i);
    if (b + 1 < raw.size()) out->push_back(raw[b + 1]);
    i = b + 2;
  }
}

}  // namespace walbus::pgwire
