#include "bridge/core/lsn.h"

namespace walbus {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

void AppendHex(std::string* out, uint32_t v) {
  char buf[8];
  int n = 0;
  do {
    buf[n++] = kHex[v & 0xF];
    v >>= 4;
  } while (v != 0);
  while (n > 0) out->push_back(buf[--n]);
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
  AppendHex(out, static_cast<uint32_t>(lsn >> 32));
  out->push_back('/');
  AppendHex(out, static_cast<uint32_t>(lsn));
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
