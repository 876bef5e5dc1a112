// FlushKicker: sends what cnats has buffered without waiting for cnats's own
// flusher thread, which sleeps 1 ms after a publish signals it before it
// writes (longer on a busy machine): at the end of a batch that delay is all
// latency. A thread of its own runs a flush round trip
// (natsConnection_FlushTimeout: the buffered bytes, then PING, then wait for
// PONG) whenever it is kicked; kicks that come during a round trip are
// merged into the next one. The round trip's outcome is ignored: the owner
// detects failures by its own means (PubAcks for JetStream).
//
// Threads: Kick() from the owner's thread. The owner calls Stop() before it
// destroys the connection, after natsConnection_Close() if a round trip may
// be waiting for a server that does not answer.
#pragma once

#include <nats/nats.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace walbus::adapters::nats {

class FlushKicker {
 public:
  FlushKicker(natsConnection* nc, int64_t timeout_ms);
  ~FlushKicker() { Stop(); }
  FlushKicker(const FlushKicker&) = delete;
  FlushKicker& operator=(const FlushKicker&) = delete;

  void Kick();
  // Ends the thread (waits for a round trip in progress to end). Idempotent.
  void Stop();

 private:
  void Loop();

  natsConnection* const nc_;
  const int64_t timeout_ms_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t kicks_ = 0;  // guarded by mu_
  bool stop_ = false;   // guarded by mu_
  std::thread thread_;
};

}  // namespace walbus::adapters::nats
