// LSNs are 64-bit WAL positions, written everywhere the PostgreSQL way: %X/%X.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace walbus {

using Lsn = uint64_t;
inline constexpr Lsn kInvalidLsn = 0;

std::string FormatLsn(Lsn lsn);             // "16/B374D848"
void AppendLsn(std::string* out, Lsn lsn);  // same, appended
// Appends the 16 upper-case hex digits used in event ids: "00000000016B37A0".
void AppendLsnHex16(std::string* out, Lsn lsn);
// Parses "X/Y" (hex, either case). Returns false on anything else.
bool ParseLsn(std::string_view text, Lsn* out);

}  // namespace walbus
