#include "bridge/ack_tracker.h"

#include <algorithm>

namespace walbus::bridge {

void AckTracker::Reset(Lsn confirmed) {
  head_ = 0;
  count_ = 0;
  keepalive_end_ = 0;  // a new connection re-sends from the confirmed LSN
  confirmed_ = std::max(confirmed_, confirmed);
  in_transaction_ = false;
}

void AckTracker::CommitTransaction(Lsn end_lsn, int64_t commit_time_us, uint64_t mark) {
  in_transaction_ = false;
  const size_t n = windows_.size();
  if (count_ > 0) {
    // A transaction that issued no ticket since the previous one (all its
    // rows filtered out, or none published) is confirmable exactly when the
    // previous one is: extend that record instead of adding one.
    size_t tail = (head_ + count_ - 1) % records_.size();
    bool same = true;
    for (size_t w = 0; w < n && same; ++w) {
      same = tickets_[tail * n + w] == windows_[w]->issued();
    }
    if (same) {
      records_[tail] = {end_lsn, commit_time_us, mark};
      return;
    }
  }
  if (count_ == records_.size()) {
    size_t cap = records_.empty() ? 64 : records_.size() * 2;
    std::vector<Record> r(cap);
    std::vector<uint64_t> t(cap * n);
    for (size_t i = 0; i < count_; ++i) {
      size_t from = (head_ + i) % records_.size();
      r[i] = records_[from];
      std::copy_n(tickets_.begin() + from * n, n, t.begin() + i * n);
    }
    records_ = std::move(r);
    tickets_ = std::move(t);
    head_ = 0;
  }
  size_t slot = (head_ + count_) % records_.size();
  records_[slot] = {end_lsn, commit_time_us, mark};
  for (size_t w = 0; w < n; ++w) tickets_[slot * n + w] = windows_[w]->issued();
  ++count_;
}

bool AckTracker::Confirmable(size_t slot) const {
  const size_t n = windows_.size();
  for (size_t w = 0; w < n; ++w) {
    if (windows_[w]->acked() < tickets_[slot * n + w]) return false;
  }
  return true;
}

Lsn AckTracker::Advance() {
  while (count_ > 0 && Confirmable(head_)) {
    const Record& r = records_[head_];
    confirmed_ = std::max(confirmed_, r.end_lsn);
    confirmed_time_us_ = r.commit_time_us;
    confirmed_mark_ = std::max(confirmed_mark_, r.mark);
    head_ = (head_ + 1) % records_.size();
    --count_;
  }
  if (keepalive_end_ > confirmed_ && Idle()) confirmed_ = keepalive_end_;
  return confirmed_;
}

bool AckTracker::Idle() const {
  if (in_transaction_ || count_ > 0) return false;
  for (const AckWindow* w : windows_) {
    if (w->in_flight() != 0) return false;
  }
  return true;
}

void AckTracker::OnKeepalive(Lsn wal_end) {
  keepalive_end_ = std::max(keepalive_end_, wal_end);
  Advance();
}

}  // namespace walbus::bridge
