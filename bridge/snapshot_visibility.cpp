#include "bridge/snapshot_visibility.h"

namespace walbus::bridge {

Result<SnapshotVisibility> SnapshotVisibility::Parse(std::string_view snapshot, Lsn wal_lsn) {
  SnapshotVisibility v;
  if (!XidSnapshot::Parse(snapshot, &v.xids_)) {
    return Status::InvalidArgument("not a pg_snapshot: '" + std::string(snapshot) + "'");
  }
  v.text_ = std::string(snapshot);
  v.wal_lsn_ = wal_lsn;
  return v;
}

bool SnapshotVisibility::Saw(uint32_t xid, Lsn commit_lsn) const {
  // A commit at or after wal_lsn had not been written when the snapshot was
  // taken.
  return commit_lsn < wal_lsn_ && xids_.Sees(xid);
}

}  // namespace walbus::bridge
