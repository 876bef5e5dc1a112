#include "bridge/core/lsn.h"

namespace walbus {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

// Writes v in upper-case hex without leading zeros ("0" for 0) so that it
// ends just before `end`; returns where it starts.
char* HexBackwards(char* end, uint32_t v) {
  do {
    *--end = kHex[v & 0xF];
    v >>= 4;
  } while (v != 0);
  return end;
}

bool ParseHex32(std::string_view s, uint32_t* out) {
  if (s.empty() || s.size() > 8) return false;
  uint32_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return false;
    v = (v << 4) | static_cast<uint32_t>(d);
  }
  *out = v;
  return true;
}

}  // namespace

void AppendLsn(std::string* out, Lsn lsn) {
  // Formatted right to left into a stack buffer, then one append: the
  // envelope builder calls this for every event.
  char buf[17];
  char* end = buf + sizeof buf;
  char* p = HexBackwards(end, static_cast<uint32_t>(lsn));
  *--p = '/';
  p = HexBackwards(p, static_cast<uint32_t>(lsn >> 32));
  out->append(p, static_cast<size_t>(end - p));
}

std::string FormatLsn(Lsn lsn) {
  std::string s;
  AppendLsn(&s, lsn);
  return s;
}

void AppendLsnHex16(std::string* out, Lsn lsn) {
  char buf[16];
  for (int i = 15; i >= 0; --i) {
    buf[i] = kHex[lsn & 0xF];
    lsn >>= 4;
  }
  out->append(buf, 16);
}

bool ParseLsn(std::string_view text, Lsn* out) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return false;
  uint32_t hi, lo;
  if (!ParseHex32(text.substr(0, slash), &hi) || !ParseHex32(text.substr(slash + 1), &lo)) {
    return false;
  }
  *out = (static_cast<Lsn>(hi) << 32) | lo;
  return true;
}

}  // namespace walbus
