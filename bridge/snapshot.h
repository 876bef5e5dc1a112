// InitialSnapshot: `source.snapshot = "initial"` (SPEC §6, docs/snapshot.md).
//
// When walbus creates the slot it exports the slot's snapshot; a second,
// ordinary connection imports it at once (REPEATABLE READ READ ONLY, SET
// TRANSACTION SNAPSHOT) and copies every table of the publication under it,
// row by row (pgwire::TableReader), as `read` events with id
// "<consistent point>:<row number>", through the pipeline's sinks and its
// ack tracker (one checkpoint unit every kCheckpointRows rows, see
// SnapshotLedger). Only when every read event is acknowledged does the
// pipeline start replication, from the consistent point; the slot is never
// confirmed past it before. Progress (acknowledged rows only) is written to
// walbus.snapshot_progress every second or kSaveRows acknowledged rows
// (SnapshotStore), so a snapshot
// interrupted by a crash, a SIGTERM or an outage is completed later: tables
// with a primary key continue after their last acknowledged key, others start
// over (announced by a `truncate` event for that table); when the exported
// snapshot is gone (new process or lost connection) a new REPEATABLE READ
// snapshot is used and the tables first read under it are given a
// SnapshotVisibility, so the stream skips the changes that snapshot already
// holds.
//
// Row numbers: in copy order (tables by schema and name, rows by primary
// key), contiguous when nothing interrupts. A number is never used for two
// different rows: continuing under the same exported snapshot re-uses the
// numbers of rows sent but not acknowledged (the same rows); continuing under
// a new snapshot takes fresh numbers above every number used before (kept in
// walbus.snapshots.next_row, reserved kReserveRows at a time, set exactly at a
// clean stop).
//
// Threads: the source thread (the pipeline's Run). It reaches the pipeline
// through SnapshotHost.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bridge/ack_tracker.h"
#include "bridge/envelope_builder.h"
#include "bridge/snapshot_ledger.h"
#include "bridge/snapshot_store.h"
#include "bridge/snapshot_visibility.h"
#include "pgwire/pg_conn.h"
#include "pgwire/table_reader.h"

namespace walbus::bridge {

// What the snapshot needs from the pipeline running it (source thread).
class SnapshotHost {
 public:
  virtual ~SnapshotHost() = default;
  // Sets a table's per-sink `included` and topic cache.
  virtual void PrepareTable(TableInfo* t) = 0;
  // Publishes to every sink whose include matches (a full client library
  // queue is waited out; the max_in_flight window is the caller's: Paused).
  virtual Status Publish(const Built& b) = 0;
  // End of a batch: flush every sink; a sink failure is returned.
  virtual Status Flush() = 0;
  // Back-pressure: a sink has max_in_flight unacknowledged events.
  virtual bool Paused() = 0;
  // Sleeps until an acknowledgement, a sink failure or a stop (or timeout_ms).
  virtual Status WaitForAcks(int timeout_ms) = 0;
};

// Rows read per table by this process, for walbus_snapshot_rows_total{table};
// written by the source thread, read by the metrics thread.
struct SnapshotCounters {
  std::mutex mu;
  std::vector<std::pair<std::string, uint64_t>> rows;  // "schema.table", rows

  // Counts n more rows of `table` (locks mu).
  void Add(const std::string& table, uint64_t n) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [name, count] : rows) {
      if (name == table) {
        count += n;
        return;
      }
    }
    rows.emplace_back(table, n);
  }
};

class InitialSnapshot {
 public:
  static constexpr uint64_t kCheckpointRows = 1000;
  static constexpr uint64_t kReserveRows = 100000;
  static constexpr int kProgressLogMs = 10000;
  static constexpr int kSaveMs = 1000;          // progress written at least this often
  static constexpr uint64_t kSaveRows = 10000;  // or after this many acknowledged rows
  static constexpr int kStopDrainMs = 10000;

  struct Options {
    std::string dsn;
    std::string slot;
    std::string publication;
  };

  InitialSnapshot(Options options, EnvelopeBuilder* builder, AckTracker* tracker,
                  SnapshotCounters* counters);
  ~InitialSnapshot();

  // Before CREATE_REPLICATION_SLOT: the schema, the lock (ResourceExhausted
  // when another walbus holds it) and a new record without consistent point.
  Status BeforeCreateSlot(PGconn* sql);
  // Right after CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT, before the
  // replication session runs anything else: imports the snapshot on a new
  // connection and records the consistent point.
  Status Import(PGconn* sql, Lsn point, const std::string& snapshot_name);

  // Whether the record of this slot says a snapshot is unfinished (reads
  // walbus.snapshots when it exists; creates nothing).
  Result<bool> Unfinished(PGconn* sql);

  // Copies every unfinished table, waits until every read event is
  // acknowledged, and records the snapshot as done. Returns Ok also when
  // *stop became true (then stopped() is true): read events already sent
  // were given up to kStopDrainMs to be acknowledged and the progress saved.
  // `slot_confirmed` is the slot's confirmed_flush_lsn (the consistent point
  // when the record lacks it). ResourceExhausted: another walbus is copying.
  Status Run(PGconn* sql, Lsn slot_confirmed, SnapshotHost* host,
             const std::atomic<bool>* stop);
  bool stopped() const { return stopped_; }

  // After the pipeline abandoned every unacknowledged event.
  void Rewind();
  // Closes the snapshot's connection (after a PostgreSQL failure).
  void Disconnect();

 private:
  struct Table {
    SnapshotTableProgress progress;
    uint64_t acked_next_row = 0;  // number after its last acknowledged row
    uint64_t txn = 0;             // numbers assigned under this transaction (0: none)
    bool dirty = false;           // progress not written yet
    uint64_t base_rows = 0;       // rows_done when the current read began
    uint64_t rows_read = 0;       // by this process
    double estimated_rows = -1;
  };

  Status EnsureTransaction(PGconn* sql);
  Status Plan(PGconn* sql);
  Status Estimate(PGconn* sql);
  void SetReadSnapshot(SnapshotTableProgress* p) const;
  Status CopyTable(PGconn* sql, size_t index, SnapshotHost* host);
  Status Checkpoint(size_t index, bool table_end);
  Status Confirm(PGconn* sql, bool force_save);
  Status Save(PGconn* sql);
  Status Reserve(PGconn* sql, uint64_t row);
  Status WaitWhilePaused(PGconn* sql, SnapshotHost* host);
  Status DrainAcks(PGconn* sql, SnapshotHost* host, int timeout_ms);
  void MaybeLogProgress(bool force);
  void PublishCounters();
  void SaveBestEffort(PGconn* sql);

  Options options_;
  EnvelopeBuilder* builder_;
  AckTracker* tracker_;
  SnapshotCounters* counters_;
  SnapshotStore store_;
  SnapshotLedger ledger_;

  // The snapshot's own connection, inside its REPEATABLE READ transaction.
  pgwire::PgConnPtr conn_;
  uint64_t txn_ = 0;      // generation of conn_'s transaction
  uint64_t txn_seq_ = 0;  // last generation handed out
  // Of a new snapshot; none: under the slot's exported snapshot.
  std::optional<SnapshotVisibility> visibility_;

  Lsn point_ = 0;
  std::vector<Table> tables_;
  bool loaded_ = false;
  int runs_seen_ = 0;  // walbus.snapshots.runs as this process last left it
  uint64_t next_row_ = 0;  // number of the next read event
  uint64_t used_to_ = 0;   // every number below was (maybe) used
  uint64_t reserved_ = 0;  // walbus.snapshots.next_row
  bool stopped_ = false;
  const std::atomic<bool>* stop_ = nullptr;

  // The table being read; the reader borrows conn_ (reset it first).
  pgwire::TableShape shape_;
  std::unique_ptr<TableInfo> info_;
  std::unique_ptr<pgwire::TableReader> reader_;
  uint64_t rows_since_checkpoint_ = 0;
  int64_t next_save_ms_ = 0;
  uint64_t acked_since_save_ = 0;
  int64_t next_log_ms_ = 0;
  int64_t started_ms_ = 0;
  uint64_t rows_this_run_ = 0;
  size_t current_ = 0;
};

}  // namespace walbus::bridge
