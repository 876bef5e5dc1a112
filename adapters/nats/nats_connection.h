// Connection: one cnats connection for one Open() of a NATS sink, and the Link
// its callbacks write to. Internal to adapters/nats.
//
// Ownership: the sink owns the Connection; the Connection owns the
// natsConnection. cnats keeps calling back into the Link for a short while
// after natsConnection_Destroy returns (the closed callback runs on cnats's
// async thread, a subscription thread may be inside a message callback), so a
// Link is never freed with its Connection: it is parked in a process-wide
// list and freed once the closed callback has run, no callback is inside it,
// and a grace period has passed.
//
// cnats does not reconnect by itself: a lost connection is a failure of this
// Connection, and the next Open makes a new one (see Connect).
//
// Threads: Connect and the destructor run on the source thread. Link::Fail and
// the callbacks run on cnats threads (and the core sink's flusher thread).
// After the destructor returns, no callback forwards anything to the AckSink:
// this is what makes "tickets from before a reconnect are never acknowledged
// afterwards" hold.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/nats/nats_options.h"
#include "bridge/core/sink.h"
#include "bridge/core/status.h"

namespace walbus::adapters::nats {

// Everything a callback may touch. Fields above `retired` are written before
// the connection exists (or, for the stream fields, before the first publish)
// and only read afterwards.
struct Link {
  std::string sink;                       // the sink's name
  std::string servers;                    // redacted URL list, for messages
  AckSink* acks = nullptr;                // null for Check()
  std::string stream;                     // JetStream: the configured stream
  std::vector<std::string> stream_subjects;  // JetStream: its subjects, as the server has them
  uint32_t ack_timeout_ms = 0;            // for messages

  std::atomic<bool> retired{false};       // set first thing by ~Connection
  std::atomic<bool> failed{false};        // a failure was recorded: ack nothing more
  std::atomic<uint64_t> entered{0};       // callbacks that started (also: acks seen)
  std::atomic<uint64_t> left{0};          // callbacks that finished

  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;                    // cnats's closed callback ran; guarded by mu
  Status failure;                         // the first failure; guarded by mu
  std::chrono::steady_clock::time_point retired_at;

  // Records the first failure and forwards it to the AckSink unless retired.
  // Later failures are dropped: the pipeline rewinds once per session.
  void Fail(Status why);
  // Records the first failure without forwarding it: for a failure the
  // source thread returns itself (from Publish), so it is reported once.
  void Record(Status why);
  // The recorded failure (call after `failed` was seen true).
  Status Failure();
};

// Counts a callback in and out of a Link so ~Connection can wait for it.
// live() is read after counting in: if ~Connection saw no callback inside,
// every later one sees `retired` and forwards nothing.
class CallbackScope {
 public:
  explicit CallbackScope(Link* link) : link_(link) { link_->entered.fetch_add(1); }
  ~CallbackScope() { link_->left.fetch_add(1); }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
  bool live() const { return !link_->retired.load() && link_->acks != nullptr; }

 private:
  Link* link_;
};

struct NatsConnectionDeleter {
  void operator()(natsConnection* nc) const { natsConnection_Destroy(nc); }
};
struct JsCtxDeleter {
  void operator()(jsCtx* js) const { jsCtx_Destroy(js); }
};

class Connection {
  struct Key {
    explicit Key() = default;
  };

 public:
  explicit Connection(Key) {}
  // Connects to the first server of the list that answers. Unavailable when
  // none does; FailedPrecondition for refused credentials, TLS problems and
  // unreadable files (the fix is in the configuration).
  static Result<std::unique_ptr<Connection>> Connect(const NatsOptions& options, AckSink* acks);

  // Retires the Link, closes the connection, waits briefly for cnats to let go.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  natsConnection* get() const { return nc_.get(); }
  Link* link() const { return link_.get(); }
  // Stops callbacks from forwarding to the AckSink (the destructor does it too);
  // the owner calls it before tearing down what it built on the connection.
  void Retire() { link_->retired.store(true); }
  // Closes the socket (kicks a flush in progress) without freeing anything.
  void Close() { natsConnection_Close(nc_.get()); }

  int64_t max_payload() const { return natsConnection_GetMaxPayload(nc_.get()); }
  // The server in use, secrets hidden; "" when disconnected.
  std::string connected_url() const;

 private:
  std::unique_ptr<natsConnection, NatsConnectionDeleter> nc_;
  std::unique_ptr<Link> link_;  // handed to the parking list by the destructor
};

// "<text>: <detail>" from cnats's last error on this thread, for messages.
std::string NatsErrorText(natsStatus s);

// A cnats status from a connection-level call (publish, flush, request):
// Unavailable for the network / server kinds, Internal otherwise.
Status ConnectionStatus(natsStatus s, const std::string& what);

}  // namespace walbus::adapters::nats
