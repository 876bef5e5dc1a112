#include "bridge/xid_snapshot.h"

#include <algorithm>
#include <charconv>

namespace walbus::bridge {
namespace {

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace

bool XidSnapshot::Parse(std::string_view text, XidSnapshot* out) {
  XidSnapshot s;
  size_t c1 = text.find(':');
  if (c1 == std::string_view::npos) return false;
  size_t c2 = text.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return false;
  if (!ParseU64(text.substr(0, c1), &s.xmin)) return false;
  if (!ParseU64(text.substr(c1 + 1, c2 - c1 - 1), &s.xmax)) return false;
  if (s.xmin > s.xmax) return false;
  std::string_view rest = text.substr(c2 + 1);
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    uint64_t x;
    if (!ParseU64(rest.substr(0, comma), &x)) return false;
    if (x < s.xmin || x >= s.xmax) return false;
    s.xip.push_back(x);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
    if (rest.empty()) return false;
  }
  std::sort(s.xip.begin(), s.xip.end());
  *out = std::move(s);
  return true;
}

bool XidSnapshot::Sees(uint32_t xid) const {
  // Widen the 32-bit xid to the 64-bit one nearest xmax: the transactions a
  // stream carries are within 2^31 of a snapshot taken while they ran.
  int32_t behind = static_cast<int32_t>(static_cast<uint32_t>(xmax) - xid);
  int64_t full = static_cast<int64_t>(xmax) - behind;
  if (full < 0) return true;  // from before the first epoch's start: long done
  uint64_t f = static_cast<uint64_t>(full);
  if (f < xmin) return true;
  if (f >= xmax) return false;
  return !std::binary_search(xip.begin(), xip.end(), f);
}

}  // namespace walbus::bridge
