// AckWindow: the acknowledgement state of one sink. The source thread issues
// tickets 1, 2, 3, ... in publish order; broker threads acknowledge them in
// any order. acked() is the low-water mark: every ticket <= acked() is
// acknowledged. It never counts a ticket twice and never moves past a gap.
//
// Threads: Issue/Rewind/TakeFailure on the source thread; Ack/AckThrough/Fail
// from any thread (they take a short mutex and never block otherwise).
// Out-of-order acknowledgements are kept in a bitmap ring, so at most
// capacity() tickets may be outstanding; the pipeline's max_in_flight keeps
// well under it.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "bridge/core/sink.h"
#include "bridge/wakeup.h"

namespace walbus::bridge {

class AckWindow final : public AckSink {
 public:
  // wakeup may be null (tests); otherwise it is notified on progress and failure.
  AckWindow(size_t max_in_flight, Wakeup* wakeup);

  // Before any acknowledgement can arrive (the pipeline sets it in Run).
  void set_wakeup(Wakeup* wakeup) { wakeup_ = wakeup; }

  uint64_t Issue() { return issued_.fetch_add(1, std::memory_order_relaxed) + 1; }
  uint64_t issued() const { return issued_.load(std::memory_order_relaxed); }
  uint64_t acked() const { return acked_.load(std::memory_order_acquire); }
  uint64_t in_flight() const { return issued() - acked(); }
  size_t capacity() const { return bits_.size(); }

  void Ack(uint64_t ticket) override;
  void AckThrough(uint64_t ticket) override;
  void Fail(Status why) override;

  // Abandons every outstanding ticket (after a rewind they will never be
  // acknowledged; late acknowledgements of them are ignored) and clears a
  // recorded failure.
  void Rewind();
  // The first failure reported since the last Rewind, if any.
  std::optional<Status> TakeFailure();
  bool failed() const { return failed_.load(std::memory_order_acquire); }

 private:
  void DrainLocked();  // moves acked_ over set bits

  std::atomic<uint64_t> issued_{0};
  std::atomic<uint64_t> acked_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  uint64_t floor_ = 0;              // tickets <= floor_ were abandoned by Rewind
  std::vector<uint8_t> bits_;       // bits_[t & mask_]: ticket t acknowledged early
  uint64_t mask_;
  std::optional<Status> failure_;
  Wakeup* wakeup_;
};

}  // namespace walbus::bridge
