// FlushKicker: the one flush thread of the NATS sinks. A thread of its own
// runs a flush round trip (natsConnection_FlushTimeout: the buffered bytes,
// then PING, then wait for PONG) whenever it is kicked; kicks that come during
// a round trip are merged into the next one. That sends what cnats has
// buffered without waiting for cnats's own flusher thread, which sleeps 1 ms
// after a publish signals it before it writes (longer on a busy machine): at
// the end of a batch that delay is all latency.
//
// Each round trip's outcome goes to the optional completion callback with the
// target of the last Kick() before the round trip started: every publish
// buffered before that Kick has reached the server when the status is
// NATS_OK (NatsSink acknowledges through it). The callback returns whether to
// keep going. Without one the outcome is ignored (JetStreamSink detects
// failures by its PubAcks) and the thread ends once the connection is closed.
//
// Threads: Kick() from the owner's thread; the callback runs on the kicker's
// thread. The owner calls Stop() (or destroys the kicker) before it destroys
// the connection, after natsConnection_Close() if a round trip may be waiting
// for a server that does not answer.
#pragma once

#include <nats/nats.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace walbus::adapters::nats {

class FlushKicker {
 public:
  // (status of natsConnection_FlushTimeout, target) -> keep going.
  using Done = std::function<bool(natsStatus, uint64_t target)>;

  FlushKicker(natsConnection* nc, int64_t timeout_ms, Done done = nullptr);
  ~FlushKicker() { Stop(); }
  FlushKicker(const FlushKicker&) = delete;
  FlushKicker& operator=(const FlushKicker&) = delete;

  // Asks for a round trip; target is handed to the callback after it.
  void Kick(uint64_t target = 0);
  // Ends the thread (waits for a round trip in progress to end). Idempotent.
  void Stop();

 private:
  void Loop();

  natsConnection* const nc_;
  const int64_t timeout_ms_;
  const Done done_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t kicks_ = 0;   // guarded by mu_
  uint64_t target_ = 0;  // guarded by mu_: the last Kick's
  bool stop_ = false;    // guarded by mu_
  std::thread thread_;   // last: starts once the fields above exist
};

}  // namespace walbus::adapters::nats
