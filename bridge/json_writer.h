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

// Appends json, the text of a json/jsonb value that PostgreSQL validated,
// without parsing it: tabs, newlines and carriage returns between tokens
// become spaces (so an envelope stays one line), a raw control character
// inside a string is escaped, and invalid UTF-8 is replaced. Returns false,
// with *out partly written, when json has a string left open, a backslash or
// other control character outside a string: then it is not PostgreSQL's.
[[nodiscard]] bool AppendJsonText(std::string* out, std::string_view json);

// Checks the UTF-8 sequence that starts at p (p < end). Returns its length
// (1-4) when it is valid, else 0 with *invalid_len set to the length of the
// maximal invalid subpart (1-3), the bytes one U+FFFD replaces.
size_t CheckUtf8Sequence(const char* p, const char* end, size_t* invalid_len);

}  // namespace walbus
