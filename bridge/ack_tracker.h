// AckTracker: turns sink acknowledgements into the slot's confirmed-flush LSN,
// exactly by SPEC §4. For each committed transaction it records the commit's
// end LSN and, per sink, the newest ticket issued up to its commit; the
// transaction is confirmable when every sink's low-water mark has reached its
// ticket, and the confirmed LSN is the end LSN of the newest transaction such
// that it and every earlier one are confirmable: an ordered low-water mark
// over transactions and sinks, never "the last callback wins".
//
// Threads: source thread only (it reads the windows' atomics).
#pragma once

#include <cstdint>
#include <vector>

#include "bridge/ack_window.h"
#include "bridge/core/lsn.h"

namespace walbus::bridge {

class AckTracker {
 public:
  explicit AckTracker(std::vector<AckWindow*> windows) : windows_(std::move(windows)) {}

  // Start from the slot's confirmed position (after connecting).
  void Reset(Lsn confirmed);

  void BeginTransaction() { in_transaction_ = true; }
  // The transaction whose events were just published committed; end_lsn is
  // Commit.end_lsn, commit_time_us its commit time (for lag in seconds).
  // `mark` is the caller's own label for the unit (the initial snapshot's
  // checkpoint number; 0 for stream transactions).
  void CommitTransaction(Lsn end_lsn, int64_t commit_time_us, uint64_t mark = 0);
  // A keepalive told us the server's WAL end: everything before it has been
  // sent to us. It is confirmable as soon as nothing at all is in flight and
  // no transaction is open — now, or at a later Advance() (a keepalive that
  // arrived while events were unacknowledged must not be forgotten, or an
  // idle database would look behind until its next write).
  void OnKeepalive(Lsn wal_end);

  // Pops every confirmable transaction; returns the confirmed LSN.
  Lsn Advance();

  Lsn confirmed() const { return confirmed_; }
  // Commit time of the newest confirmed transaction (0 when none yet).
  int64_t confirmed_commit_time_us() const { return confirmed_time_us_; }
  // The largest mark of any confirmed unit (marks must grow to be useful).
  uint64_t confirmed_mark() const { return confirmed_mark_; }
  size_t pending() const { return count_; }
  bool in_transaction() const { return in_transaction_; }
  // No open transaction, nothing pending, every ticket acknowledged.
  bool Idle() const;

 private:
  struct Record {
    Lsn end_lsn;
    int64_t commit_time_us;
    uint64_t mark;
  };
  bool Confirmable(size_t slot) const;

  std::vector<AckWindow*> windows_;
  // A ring of pending transactions: records_[i] with its tickets at
  // tickets_[i * windows_.size() ...]. Grows by doubling; no allocation per
  // transaction in steady state.
  std::vector<Record> records_;
  std::vector<uint64_t> tickets_;
  size_t head_ = 0;
  size_t count_ = 0;
  Lsn confirmed_ = 0;
  Lsn keepalive_end_ = 0;  // newest keepalive WAL end of this connection
  int64_t confirmed_time_us_ = 0;
  uint64_t confirmed_mark_ = 0;
  bool in_transaction_ = false;
};

}  // namespace walbus::bridge
