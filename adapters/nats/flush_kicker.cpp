#include "adapters/nats/flush_kicker.h"

namespace walbus::adapters::nats {

FlushKicker::FlushKicker(natsConnection* nc, int64_t timeout_ms)
    : nc_(nc), timeout_ms_(timeout_ms), thread_(&FlushKicker::Loop, this) {}

void FlushKicker::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++kicks_;
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
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || kicks_ != done; });
      if (stop_) return;
      done = kicks_;
    }
    natsStatus s = natsConnection_FlushTimeout(nc_, timeout_ms_);
    // A closed connection never comes back (cnats does not reconnect here).
    if (s == NATS_CONNECTION_CLOSED) return;
  }
}

}  // namespace walbus::adapters::nats
