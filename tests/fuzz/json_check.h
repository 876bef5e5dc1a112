// A strict RFC 8259 validator for the fuzz targets: one JSON value, optional
// whitespace around it, strings and everything else valid UTF-8 (no
// overlongs, surrogates or code points above U+10FFFF), \u escapes checked
// for hex only. Nesting is limited to kMaxDepth. Header-only, no allocation.
// (rapidjson was tried first: its own Stack trips UBSan's pointer-overflow.)
#pragma once

#include <cstddef>
#include <string_view>

namespace walbus::fuzz {

class JsonCheck {
 public:
  static constexpr int kMaxDepth = 20000;  // deeper than any input the fuzzer makes

  // True if text is exactly one valid JSON value.
  static bool Valid(std::string_view text) {
    JsonCheck c(text);
    c.Ws();
    if (!c.Value(0)) return false;
    c.Ws();
    return c.p_ == c.end_;
  }

  // Weaker: valid UTF-8 and no control character (U+0000..U+001F) anywhere,
  // which is what one envelope line needs from a pass-through value.
  static bool LexicallyClean(std::string_view text) {
    JsonCheck c(text);
    while (c.More()) {
      unsigned char b = c.Peek();
      if (b < 0x20) return false;
      if (b < 0x80) {
        ++c.p_;
      } else if (!c.Utf8()) {
        return false;
      }
    }
    return true;
  }

 private:
  explicit JsonCheck(std::string_view t) : p_(t.data()), end_(t.data() + t.size()) {}

  bool More() const { return p_ != end_; }
  unsigned char Peek() const { return static_cast<unsigned char>(*p_); }
  void Ws() {
    while (More() && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool Lit(std::string_view w) {
    if (static_cast<size_t>(end_ - p_) < w.size() || std::string_view(p_, w.size()) != w) {
      return false;
    }
    p_ += w.size();
    return true;
  }
  static bool Digit(char c) { return c >= '0' && c <= '9'; }
  static bool Hex(char c) {
    return Digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }

  bool Value(int depth) {
    if (!More()) return false;
    switch (*p_) {
      case '{': return Object(depth + 1);
      case '[': return Array(depth + 1);
      case '"': return String();
      case 't': return Lit("true");
      case 'f': return Lit("false");
      case 'n': return Lit("null");
      default: return Number();
    }
  }
  bool Object(int depth) {
    if (depth > kMaxDepth) return false;
    ++p_;
    Ws();
    if (More() && *p_ == '}') return ++p_, true;
    for (;;) {
      Ws();
      if (!More() || *p_ != '"' || !String()) return false;
      Ws();
      if (!More() || *p_ != ':') return false;
      ++p_;
      Ws();
      if (!Value(depth)) return false;
      Ws();
      if (!More()) return false;
      if (*p_ == '}') return ++p_, true;
      if (*p_ != ',') return false;
      ++p_;
    }
  }
  bool Array(int depth) {
    if (depth > kMaxDepth) return false;
    ++p_;
    Ws();
    if (More() && *p_ == ']') return ++p_, true;
    for (;;) {
      Ws();
      if (!Value(depth)) return false;
      Ws();
      if (!More()) return false;
      if (*p_ == ']') return ++p_, true;
      if (*p_ != ',') return false;
      ++p_;
    }
  }
  bool Number() {
    if (More() && *p_ == '-') ++p_;
    if (!More() || !Digit(*p_)) return false;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (More() && Digit(*p_)) ++p_;
    }
    if (More() && *p_ == '.') {
      ++p_;
      if (!More() || !Digit(*p_)) return false;
      while (More() && Digit(*p_)) ++p_;
    }
    if (More() && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (More() && (*p_ == '+' || *p_ == '-')) ++p_;
      if (!More() || !Digit(*p_)) return false;
      while (More() && Digit(*p_)) ++p_;
    }
    return true;
  }
  bool String() {
    ++p_;  // the opening quote
    while (More()) {
      unsigned char c = Peek();
      if (c == '"') return ++p_, true;
      if (c < 0x20) return false;
      if (c == '\\') {
        ++p_;
        if (!More()) return false;
        char e = *p_++;
        if (e == 'u') {
          for (int i = 0; i < 4; ++i) {
            if (!More() || !Hex(*p_)) return false;
            ++p_;
          }
        } else if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' &&
                   e != 'r' && e != 't') {
          return false;
        }
        continue;
      }
      if (c < 0x80) {
        ++p_;
        continue;
      }
      if (!Utf8()) return false;
    }
    return false;  // no closing quote
  }
  // One multi-byte UTF-8 sequence at p_ (RFC 3629 table 3-7).
  bool Utf8() {
    unsigned char c = Peek();
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    ++p_;
    for (int i = 0; i < n; ++i) {
      if (!More()) return false;
      unsigned char b = Peek();
      if (b < lo || b > hi) return false;
      lo = 0x80;
      hi = 0xBF;
      ++p_;
    }
    return true;
  }

  const char* p_;
  const char* end_;
};

}  // namespace walbus::fuzz
