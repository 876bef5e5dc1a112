// XidSnapshot: a PostgreSQL MVCC snapshot as pg_current_snapshot() prints it
// ("xmin:xmax:xip1,xip2,...", 64-bit xids), and whether it saw a transaction
// known only by the 32-bit xid that pgoutput's Begin carries. Used by the
// initial snapshot (SnapshotVisibility) and by backfill chunks.
//
// Value type; pure logic, any thread.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace walbus::bridge {

struct XidSnapshot {
  uint64_t xmin = 0;
  uint64_t xmax = 0;
  std::vector<uint64_t> xip;  // sorted

  // pg_snapshot text. False when malformed (also when an xip is outside
  // [xmin, xmax)).
  static bool Parse(std::string_view text, XidSnapshot* out);
  // Whether a committed transaction, by its 32-bit xid, was visible to the
  // snapshot: it finished before xmin, or below xmax and not in xip.
  bool Sees(uint32_t xid) const;
};

}  // namespace walbus::bridge
