#include "bridge/snapshot_visibility.h"

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

Result<SnapshotVisibility> SnapshotVisibility::Parse(std::string_view snapshot, Lsn wal_lsn) {
  SnapshotVisibility v;
  v.text_ = std::string(snapshot);
  v.wal_lsn_ = wal_lsn;
  auto bad = [&] {
    return Status::InvalidArgument("not a pg_snapshot: '" + std::string(snapshot) + "'");
  };
  size_t c1 = snapshot.find(':');
  if (c1 == std::string_view::npos) return bad();
  size_t c2 = snapshot.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return bad();
  if (!ParseU64(snapshot.substr(0, c1), &v.xmin_) ||
      !ParseU64(snapshot.substr(c1 + 1, c2 - c1 - 1), &v.xmax_) || v.xmin_ > v.xmax_) {
    return bad();
  }
  std::string_view rest = snapshot.substr(c2 + 1);
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    uint64_t x;
    if (!ParseU64(rest.substr(0, comma), &x)) return bad();
    v.xip_.push_back(x);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
    if (rest.empty()) return bad();
  }
  std::sort(v.xip_.begin(), v.xip_.end());
  return v;
}

bool SnapshotVisibility::Saw(uint32_t xid, Lsn commit_lsn) const {
  if (commit_lsn >= wal_lsn_) return false;
  // Widen the 32-bit xid to the epoch it belongs to: it is within 2^31 of
  // xmax (older transactions are frozen long before they wrap).
  int32_t diff = static_cast<int32_t>(xid - static_cast<uint32_t>(xmax_));
  int64_t full = static_cast<int64_t>(xmax_) + diff;
  if (full < 0) return false;
  uint64_t x = static_cast<uint64_t>(full);
  if (x < xmin_) return true;
  if (x >= xmax_) return false;
  return !std::binary_search(xip_.begin(), xip_.end(), x);
}

}  // namespace walbus::bridge
