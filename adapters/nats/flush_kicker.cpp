#include "adapters/nats/flush_kicker.h"

#include <utility>

namespace walbus::adapters::nats {

FlushKicker::FlushKicker(natsConnection* nc, int64_t timeout_ms, Done done)
    : nc_(nc), timeout_ms_(timeout_ms), done_(std::move(done)), thread_(&FlushKicker::Loop, this) {}

void FlushKicker::Kick(uint64_t target) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++kicks_;
    target_ = target;
  }
  cv_.notify_one();
}

void FlushKicker::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void FlushKicker::Loop() {
  uint64_t done = 0;
  for (;;) {
    uint64_t target;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || kicks_ != done; });
      if (stop_) return;
      done = kicks_;
      target = target_;
    }
    natsStatus s = natsConnection_FlushTimeout(nc_, timeout_ms_);
    if (done_) {
      if (!done_(s, target)) return;
    } else if (s == NATS_CONNECTION_CLOSED) {
      return;  // a closed connection never comes back (cnats does not reconnect here)
    }
  }
}

}  // namespace walbus::adapters::nats
