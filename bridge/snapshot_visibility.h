// SnapshotVisibility: which transactions a PostgreSQL MVCC snapshot saw. It
// is built from pg_current_snapshot()'s text ("xmin:xmax:xip1,xip2,...", 64-bit
// xids) and pg_current_wal_lsn() read in the same statement, just after the
// snapshot was taken.
//
// The initial snapshot uses it when it has to read a table under a snapshot
// newer than the slot's consistent point (after a crash the exported snapshot
// is gone): the stream replays every change from the consistent point, and a
// change whose transaction that snapshot already saw is skipped for that
// table, so a consumer never applies it twice (which matters for tables
// without a primary key, applied row by row).
//
// Value type; pure logic, any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bridge/core/lsn.h"
#include "bridge/core/status.h"
#include "bridge/xid_snapshot.h"

namespace walbus::bridge {

class SnapshotVisibility {
 public:
  // InvalidArgument when `snapshot` is not pg_snapshot text.
  static Result<SnapshotVisibility> Parse(std::string_view snapshot, Lsn wal_lsn);

  // True when the transaction with this (32-bit, as pgoutput's Begin sends
  // it) xid, committed at commit_lsn, was visible to the snapshot. A commit at
  // or after wal_lsn was not (it had not been written when the snapshot was
  // taken); an older one was visible unless it was still running then (in
  // xip, or at or above xmax).
  bool Saw(uint32_t xid, Lsn commit_lsn) const;

  Lsn wal_lsn() const { return wal_lsn_; }
  const std::string& text() const { return text_; }

 private:
  XidSnapshot xids_;
  Lsn wal_lsn_ = 0;
  std::string text_;
};

}  // namespace walbus::bridge
