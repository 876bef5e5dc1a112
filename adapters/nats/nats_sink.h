// NatsSink: the `nats` sink, core NATS publish (SPEC.md §2). An event is
// acknowledged when a flush round trip (PING/PONG) that started after its
// publish completes: the server has received it, nothing more.
//
// Ownership and threads: Open, Publish, Flush, Close and Check run on the
// source thread. Open starts one FlushKicker (flush_kicker.h) per connection;
// its thread turns "tickets up to T were published" (handed over by Flush,
// and every few thousand Publish calls) into one natsConnection_FlushTimeout
// and then AckThrough(T), coalescing requests that arrive during a round
// trip. Publish only appends to cnats's buffer and never waits for an
// acknowledgement.
//
// Errors: Unavailable (returned, or through AckSink::Fail from the flusher or
// a cnats callback) when the server cannot be reached, a round trip times out
// or the connection drops; the pipeline rewinds and calls Open again, which
// starts a fresh connection; no ticket from before it is acknowledged after
// Open or Close returns. Permanent when the server refuses for good: a payload
// over its max_payload (names the event id, table, size and limit), or a
// permissions violation (names the subject; cnats cannot tell which event).
#pragma once

#include <nats/nats.h>

#include <cstdint>
#include <memory>
#include <string>

#include "adapters/nats/flush_kicker.h"
#include "adapters/nats/nats_options.h"
#include "bridge/core/sink.h"

namespace walbus::adapters::nats {

class Connection;
struct Link;

class NatsSink final : public Sink {
 public:
  explicit NatsSink(NatsOptions options);
  ~NatsSink() override;
  NatsSink(const NatsSink&) = delete;
  NatsSink& operator=(const NatsSink&) = delete;

  std::string_view name() const override { return options_.name; }
  std::string_view type() const override { return "nats"; }
  Status Open(AckSink* acks) override;
  Status Publish(const Event& event) override;
  Status Flush() override;
  void Close() override;
  Status Check() override;

 private:
  void RequestAck();
  // On the kicker's thread after each round trip: acknowledges through target
  // or reports the failure; false ends the kicker's thread.
  bool RoundTripDone(natsConnection* nc, Link* link, int64_t timeout, natsStatus s,
                     uint64_t target);

  NatsOptions options_;
  uint32_t request_every_;           // Publish hands tickets to the flusher this often

  // Source thread only.
  std::unique_ptr<Connection> conn_;
  int64_t max_payload_ = 0;
  std::string subject_;              // NUL-terminated copy of Event.topic (capacity reused)
  uint64_t last_published_ = 0;
  uint64_t last_requested_ = 0;
  uint32_t since_request_ = 0;
  std::unique_ptr<FlushKicker> kicker_;  // one per connection; destroyed before conn_
};

}  // namespace walbus::adapters::nats
