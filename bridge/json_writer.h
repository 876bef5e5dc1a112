// JSON string output for envelopes. Appends to a caller-owned std::string, so
// a caller that reserves once and reuses the buffer allocates nothing per
// value. Output is always valid UTF-8 JSON whatever the input bytes: every
// invalid UTF-8 sequence (stray continuation bytes, overlongs, surrogates,
// code points above U+10FFFF, truncated sequences) becomes one U+FFFD per
// maximal invalid subpart, as Unicode §3.9 recommends. Pure functions; any
// thread may call them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace walbus {

inline constexpr std::string_view kUtf8Replacement = "\xEF\xBF\xBD";  // U+FFFD

// Appends s as a quoted JSON string: escapes '"', '\\' and every control
// character below 0x20 (\b \t \n \f \r in short form, the rest as \u00XX);
// 0x7F and all valid non-ASCII UTF-8 pass through unchanged.
void AppendJsonString(std::string* out, std::string_view s);

// Same, for the raw text of a quoted element of a PostgreSQL array literal
// (array_out): each backslash is dropped and the byte after it taken
// literally, so the raw `with \"q\"` becomes the JSON string "with \"q\"".
// array_out only ever escapes '"' and '\\'; a backslash inside a multi-byte
// UTF-8 sequence breaks that sequence (U+FFFD), and a trailing lone backslash
// (which ParseArrayLiteral never reports) is kept as a backslash.
void AppendJsonStringUnescapingPg(std::string* out, std::string_view raw);

// Appends text, the text of a json/jsonb value, checking JSON's grammar (RFC
// 8259 §2-6) while it copies, in one pass. PostgreSQL's json_in accepts
// exactly that grammar (checked against PostgreSQL 15 for numbers, literals,
// escapes, commas), but a binary-coercible cast from text (CREATE CAST
// ... WITHOUT FUNCTION) or a C function can store any bytes as json and
// pgoutput sends them as they are (tests/fuzz/README.md, "json values").
// The copy is normalised so an envelope stays one line and valid UTF-8: tabs,
// newlines and carriage returns between tokens become spaces, a raw control
// character inside a string is escaped, and invalid UTF-8 inside a string is
// replaced. Returns false when text is not one JSON value with optional
// whitespace around it: *out is then as it was and *error_at holds the offset
// of the first byte that breaks the grammar (text.size() when it ends early).
// No recursion; nesting up to 4096 levels uses no heap memory.
[[nodiscard]] bool AppendJsonValue(std::string* out, std::string_view text, size_t* error_at);

namespace json_detail {
inline bool IsDigit(char c) { return static_cast<unsigned char>(c - '0') <= 9; }
inline const char* SkipDigits(const char* p, const char* end) {
  while (p != end && IsDigit(*p)) ++p;
  return p;
}
}  // namespace json_detail

// JSON's int production, -?(0|[1-9][0-9]*), at p: returns its end, or
// nullptr when there is none.
inline const char* ScanJsonInt(const char* p, const char* end) {
  if (p != end && *p == '-') ++p;
  if (p == end || !json_detail::IsDigit(*p)) return nullptr;
  if (*p == '0') return p + 1;
  return json_detail::SkipDigits(p, end);
}

// JSON's number production, int frac? exp?, at p: returns its end, or nullptr
// when there is none. Then *stop (when given) is where the scan broke: p when
// the int part is missing, else the byte that breaks the fraction or the
// exponent (end when the text ran out).
inline const char* ScanJsonNumber(const char* p, const char* end, const char** stop = nullptr) {
  const char* q = ScanJsonInt(p, end);
  if (q == nullptr) {
    if (stop != nullptr) *stop = p;
    return nullptr;
  }
  if (q != end && *q == '.') {
    const char* digits = ++q;
    q = json_detail::SkipDigits(q, end);
    if (q == digits) {
      if (stop != nullptr) *stop = q;
      return nullptr;
    }
  }
  if (q != end && (*q == 'e' || *q == 'E')) {
    ++q;
    if (q != end && (*q == '+' || *q == '-')) ++q;
    const char* digits = q;
    q = json_detail::SkipDigits(q, end);
    if (q == digits) {
      if (stop != nullptr) *stop = q;
      return nullptr;
    }
  }
  return q;
}

// Checks the UTF-8 sequence that starts at p (p < end). Returns its length
// (1-4) when it is valid, else 0 with *invalid_len set to the length of the
// maximal invalid subpart (1-3), the bytes one U+FFFD replaces.
size_t CheckUtf8Sequence(const char* p, const char* end, size_t* invalid_len);

}  // namespace walbus
