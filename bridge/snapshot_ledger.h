// SnapshotLedger: which read events of the initial snapshot are acknowledged.
// The snapshot records a checkpoint every few hundred rows and at each
// table's end, and hands the ack tracker the checkpoint's mark as the mark of
// one unit (AckTracker::CommitTransaction). The tracker confirms units in
// order once every sink acknowledged their events; Confirm(mark) then applies
// every checkpoint up to that mark, so the progress it reports (and that is
// written to the database) only ever covers acknowledged rows.
//
// Threads: source thread only. Pure bookkeeping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <utility>

#include "pgwire/table_reader.h"

namespace walbus::bridge {

class SnapshotLedger {
 public:
  struct Checkpoint {
    size_t table = 0;        // index into the snapshot's plan
    uint64_t rows_done = 0;  // the table's acknowledged rows once this is confirmed
    std::optional<pgwire::KeyValues> last_key;  // key of the table's last row so far
    uint64_t next_row = 0;   // row number after the last one published so far
    bool table_end = false;  // the table's last row (or its only checkpoint when empty)
  };

  // Marks grow across Abandon(): 1, 2, 3, ...
  uint64_t Add(Checkpoint c) {
    uint64_t mark = next_mark_++;
    pending_.emplace_back(mark, std::move(c));
    return mark;
  }

  // Applies, in order, every pending checkpoint whose mark is <= `mark`.
  void Confirm(uint64_t mark, const std::function<void(const Checkpoint&)>& apply) {
    while (!pending_.empty() && pending_.front().first <= mark) {
      apply(pending_.front().second);
      pending_.pop_front();
    }
  }

  // After a rewind: the pending checkpoints will never be confirmed.
  void Abandon() { pending_.clear(); }
  size_t pending() const { return pending_.size(); }

 private:
  std::deque<std::pair<uint64_t, Checkpoint>> pending_;
  uint64_t next_mark_ = 1;
};

}  // namespace walbus::bridge
