// Writes one column value as JSON, from the text form pgoutput sent, by the
// rules of SPEC §3. Appends to a caller-owned std::string (reserve once,
// reuse) and allocates nothing on the common paths. Pure function; any
// thread. SQL NULL and unchanged TOAST never get here: the envelope builder
// writes those itself.
#pragma once

#include <string>
#include <string_view>

#include "bridge/core/status.h"
#include "pgwire/type_map.h"

namespace walbus {

struct ValueOptions {
  bool numeric_as_number = false;  // [envelope] numeric = "number"
  bool bytea_hex = false;          // [envelope] bytea = "hex"
};

// Appends the JSON value of text, a column of the given type:
//   kBool     t / f -> true / false
//   kInteger  a number (the text must be a JSON integer)
//   kFloat    a number; NaN, Infinity, -Infinity as strings
//   kNumeric  a string, or with numeric_as_number a number (NaN, Infinity,
//             -Infinity still strings)
//   kJson     the JSON text itself; newlines/tabs between tokens become
//             spaces so an envelope is always one line, invalid UTF-8 is
//             replaced inside strings
//   kBytea    hex (\x...) or escape-format input -> base64 (padded), or
//             lower-case hex without \x with bytea_hex
//   kArray    a JSON array (nested for more dimensions), elements mapped by
//             type.element, NULL -> null, bounds decoration dropped
//   kText     a JSON string
// Text that is not what PostgreSQL prints for that kind is Corruption with a
// short reason (never a default value, never the value itself: it may hold
// personal data); *out is then left as it was.
Status AppendValue(std::string* out, const pgwire::TypeInfo& type, std::string_view text,
                   const ValueOptions& opt);

// Appends bytes as padded standard base64 (no quotes).
void AppendBase64(std::string* out, std::string_view bytes);

}  // namespace walbus
