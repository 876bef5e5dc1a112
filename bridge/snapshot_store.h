// SnapshotStore: the initial snapshot's progress, kept in the source database
// itself (so it survives the host walbus runs on), in the schema walbus owns:
//
//   walbus.snapshots          one row per slot: consistent point, how far row
//                             numbers have been used, done
//   walbus.snapshot_progress  one row per slot and table: started, rows
//                             acknowledged, last acknowledged primary key,
//                             done, how often resumed, the snapshot it was
//                             read under when that was not the exported one
//
// Everything written here describes acknowledged rows only, so a crash at any
// moment leaves a record from which the snapshot can be completed.
// The schema is created on first use (CREATE SCHEMA needs CREATE on the
// database; a pre-created `walbus` schema on which the user has USAGE and
// CREATE works too). Changes to it are never published (kWalbusSchema).
//
// Threads: the source thread; every call takes the ordinary SQL connection to
// use (it may be replaced after a reconnect). Errors: Unavailable when the
// connection broke, FailedPrecondition (with the fix) for privileges.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bridge/core/lsn.h"
#include "bridge/core/status.h"
#include "pgwire/pg_conn.h"
#include "pgwire/table_reader.h"

namespace walbus::bridge {

struct SnapshotTableProgress {
  int position = 0;  // copy order
  std::string schema;
  std::string name;
  bool started = false;
  uint64_t first_row = 0;  // row number of its first read event (of its latest start)
  uint64_t rows_done = 0;  // rows acknowledged by every sink
  std::optional<pgwire::KeyValues> last_key;  // primary key of the last acknowledged row
  bool done = false;
  int starts = 0;   // times copied from its first row
  int resumes = 0;  // times continued after an interruption
  std::optional<uint64_t> resumed_at_rows;  // rows_done when last continued
  // The snapshot its rows were first read under, when that was a new one
  // (pg_current_snapshot text and the WAL position right after it); empty:
  // the slot's exported snapshot.
  std::string read_snapshot;
  Lsn read_snapshot_lsn = 0;

  std::string Qualified() const { return schema + "." + name; }
};

struct SnapshotRecord {
  Lsn consistent_point = 0;  // 0: not known yet (the slot was being created)
  uint64_t next_row = 0;     // every row number used so far is below this
  bool planned = false;      // tables listed
  bool done = false;
  int runs = 0;  // walbus runs that worked on it
  std::vector<SnapshotTableProgress> tables;  // in position order
};

class SnapshotStore {
 public:
  explicit SnapshotStore(std::string slot) : slot_(std::move(slot)) {}

  // Creates the schema (when missing) and its tables (IF NOT EXISTS).
  Status EnsureSchema(PGconn* conn);
  // The record of this slot; nullopt when there is none (or no schema).
  Result<std::optional<SnapshotRecord>> Load(PGconn* conn);

  // A new snapshot of this slot, replacing any earlier record: written
  // before the slot is created, so a crash right after creating it leaves
  // an unfinished record behind rather than none.
  Status Begin(PGconn* conn);
  Status SetConsistentPoint(PGconn* conn, Lsn point);
  // Records the tables to copy (positions are their indexes).
  Status SetPlan(PGconn* conn, const std::vector<SnapshotTableProgress>& tables);
  Status CountRun(PGconn* conn);
  Status SetNextRow(PGconn* conn, uint64_t next_row);
  Status SaveTable(PGconn* conn, const SnapshotTableProgress& t);
  Status Finish(PGconn* conn);
  // Deletes the record of this slot (when the schema exists): the slot it
  // described is gone.
  Status Forget(PGconn* conn);

  // A session-level advisory lock on the snapshot of this slot, so that two
  // walbus processes never copy at the same time. False when another
  // session holds it; true (without a second hold) when this one does.
  Result<bool> TryLock(PGconn* conn);
  void Unlock(PGconn* conn);

  // Tables read under a snapshot newer than the consistent point whose
  // read_snapshot_lsn is past `confirmed`: the stream must skip changes
  // those snapshots already saw. Empty when there is no schema.
  struct ReadSnapshot {
    std::string table;  // schema.table
    std::string snapshot;
    Lsn lsn = 0;
  };
  Result<std::vector<ReadSnapshot>> ReadSnapshotsAfter(PGconn* conn, Lsn confirmed);

  const std::string& slot() const { return slot_; }

 private:
  Result<bool> SchemaExists(PGconn* conn);
  std::string slot_;
};

}  // namespace walbus::bridge
