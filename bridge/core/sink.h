// The Sink interface: one implementation per broker under adapters/.
//
// Threads: Open, Publish, Flush and Close are called only by the source thread.
// Acknowledgements may be reported from any thread (broker callback threads)
// through the AckSink given to Open; a callback only records and returns.
//
// Errors: Publish/Flush return Unavailable when the broker is down (the
// pipeline rewinds to the slot's confirmed LSN and retries with back-off, so a
// sink never needs to buffer events for re-sending), Permanent when the broker
// refused an event for good (walbus stops with exit 1, naming the event).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bridge/core/event.h"
#include "bridge/core/status.h"

namespace walbus {

// Implemented by the pipeline; every method is thread-safe and non-blocking.
class AckSink {
 public:
  virtual ~AckSink() = default;
  // The broker acknowledged the event with this ticket.
  virtual void Ack(uint64_t ticket) = 0;
  // The broker acknowledged every event with a ticket <= this one.
  virtual void AckThrough(uint64_t ticket) = 0;
  // Reported from a callback: Unavailable (connection lost, timeout) makes the
  // pipeline rewind and retry; Permanent stops walbus. The message names the
  // event (id, table) when there is one.
  virtual void Fail(Status why) = 0;
};

class Sink {
 public:
  virtual ~Sink() = default;

  virtual std::string_view name() const = 0;
  virtual std::string_view type() const = 0;

  // Connects (or reconnects after a failure). Tickets handed out before a
  // reconnect are never acknowledged afterwards; the pipeline ignores them.
  virtual Status Open(AckSink* acks) = 0;
  // Hands one event to the broker. Must not wait for the acknowledgement.
  virtual Status Publish(const Event& event) = 0;
  // End of a batch read from PostgreSQL: push out whatever is buffered and ask
  // for acknowledgements of everything published so far.
  virtual Status Flush() = 0;
  // Releases the connection. Unacknowledged events are simply abandoned.
  virtual void Close() = 0;
  // For `walbus check`: connects and reports, then releases.
  virtual Status Check() = 0;
};

}  // namespace walbus
