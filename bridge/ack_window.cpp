#include "bridge/ack_window.h"

#include <string>

#include "bridge/core/log.h"

namespace walbus::bridge {
namespace {

size_t RingSize(size_t max_in_flight) {
  // Slack over max_in_flight: one Publish may overshoot the window by a few
  // events (a TRUNCATE of several tables) before the pipeline pauses.
  size_t want = max_in_flight * 2 + 4096;
  size_t n = 1;
  while (n < want) n <<= 1;
  return n;
}

}  // namespace

AckWindow::AckWindow(size_t max_in_flight, Wakeup* wakeup)
    : bits_(RingSize(max_in_flight), 0), mask_(bits_.size() - 1), wakeup_(wakeup) {}

void AckWindow::Ack(uint64_t ticket) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t acked = acked_.load(std::memory_order_relaxed);
    if (ticket <= acked || ticket <= floor_) return;  // duplicate or abandoned
    if (ticket > issued() || ticket - acked > mask_) {
      // A sink bug; refusing it keeps the low-water mark honest.
      log::Error("acknowledgement for a ticket never issued; ignored",
                 {{"ticket", std::to_string(ticket)}});
      return;
    }
    if (ticket != acked + 1) {
      bits_[ticket & mask_] = 1;
      return;
    }
    acked_.store(ticket, std::memory_order_release);
    DrainLocked();
  }
  if (wakeup_ != nullptr) wakeup_->NotifyAck();
}

void AckWindow::AckThrough(uint64_t ticket) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t acked = acked_.load(std::memory_order_relaxed);
    if (ticket <= acked || ticket <= floor_) return;
    if (ticket > issued()) {
      log::Error("acknowledgement through a ticket never issued; ignored",
                 {{"ticket", std::to_string(ticket)}});
      return;
    }
    for (uint64_t t = acked + 1; t <= ticket; ++t) bits_[t & mask_] = 0;
    acked_.store(ticket, std::memory_order_release);
    DrainLocked();
  }
  if (wakeup_ != nullptr) wakeup_->NotifyAck();
}

void AckWindow::DrainLocked() {
  uint64_t acked = acked_.load(std::memory_order_relaxed);
  while (bits_[(acked + 1) & mask_] != 0 && acked + 1 <= issued()) {
    bits_[(acked + 1) & mask_] = 0;
    ++acked;
  }
  acked_.store(acked, std::memory_order_release);
}

void AckWindow::Fail(Status why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_) failure_ = std::move(why);
    failed_.store(true, std::memory_order_release);
  }
  if (wakeup_ != nullptr) wakeup_->Notify();
}

void AckWindow::Rewind() {
  std::lock_guard<std::mutex> lock(mu_);
  floor_ = issued();
  std::fill(bits_.begin(), bits_.end(), 0);
  acked_.store(floor_, std::memory_order_release);
  failure_.reset();
  failed_.store(false, std::memory_order_release);
}

std::optional<Status> AckWindow::TakeFailure() {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<Status> f = std::move(failure_);
  failure_.reset();
  failed_.store(false, std::memory_order_release);
  return f;
}

}  // namespace walbus::bridge
