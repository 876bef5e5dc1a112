#include "adapters/nats/nats_sink.h"

#include <algorithm>
#include <utility>

#include "adapters/nats/nats_connection.h"
#include "bridge/core/log.h"

namespace walbus::adapters::nats {
namespace {

std::string EventName(const Event& e) {
  std::string out = "event ";
  out += e.id;
  out += " (table ";
  out += e.table;
  out += ')';
  return out;
}

}  // namespace

NatsSink::NatsSink(NatsOptions options)
    : options_(std::move(options)),
      request_every_(std::clamp<uint32_t>(options_.max_pending / 4, 64, 4096)) {}

NatsSink::~NatsSink() { Close(); }

Status NatsSink::Open(AckSink* acks) {
  Close();
  auto conn = Connection::Connect(options_, acks);
  if (!conn.ok()) return conn.status();
  conn_ = std::move(conn).value();
  max_payload_ = conn_->max_payload();
  last_published_ = 0;
  last_requested_ = 0;
  since_request_ = 0;
  const int64_t timeout = std::max<uint32_t>(options_.ack_timeout_ms, 100);
  natsConnection* nc = conn_->get();
  Link* link = conn_->link();
  kicker_ = std::make_unique<FlushKicker>(nc, timeout, [this, nc, link, timeout](natsStatus s,
                                                                                 uint64_t target) {
    return RoundTripDone(nc, link, timeout, s, target);
  });
  log::Info("nats sink up", {{"sink", options_.name},
                             {"url", conn_->connected_url()},
                             {"max_payload", std::to_string(max_payload_)}});
  return Status::Ok();
}

void NatsSink::Close() {
  if (!conn_) return;
  conn_->Retire();
  conn_->Close();   // a round trip in progress returns at once
  kicker_.reset();  // stops and joins its thread
  conn_.reset();
}

Status NatsSink::Publish(const Event& event) {
  if (!conn_) return Status::Unavailable("sink " + options_.name + ": not connected");
  Link* link = conn_->link();
  if (link->failed.load(std::memory_order_relaxed)) return link->Failure();
  if (static_cast<int64_t>(event.payload.size()) > max_payload_) {
    return Status::Permanent("sink " + options_.name + ": " + EventName(event) + ": payload of " +
                             std::to_string(event.payload.size()) +
                             " bytes exceeds the NATS server's max_payload of " +
                             std::to_string(max_payload_) + " bytes (" + link->servers +
                             "); raise max_payload on the server");
  }
  subject_.assign(event.topic);
  natsStatus s = natsConnection_Publish(conn_->get(), subject_.c_str(), event.payload.data(),
                                        static_cast<int>(event.payload.size()));
  if (s != NATS_OK) {
    if (s == NATS_MAX_PAYLOAD) {
      // Reconnected to a server with a smaller limit than the first one.
      return Status::Permanent("sink " + options_.name + ": " + EventName(event) + ": payload of " +
                               std::to_string(event.payload.size()) +
                               " bytes exceeds the NATS server's max_payload of " +
                               std::to_string(conn_->max_payload()) + " bytes (" +
                               link->servers + "); raise max_payload on the server");
    }
    if (s == NATS_INVALID_SUBJECT) {
      return Status::Permanent("sink " + options_.name + ": " + EventName(event) + ": subject '" +
                               subject_ + "' is not a valid NATS subject");
    }
    Status why = ConnectionStatus(s, "sink " + options_.name + ": publishing " + EventName(event));
    if (why.code() == Code::kInternal) why = Status::Unavailable(why.message());
    link->Record(why);  // the flusher must not acknowledge past a lost publish
    return why;
  }
  last_published_ = event.ticket;
  if (++since_request_ >= request_every_) RequestAck();
  return Status::Ok();
}

Status NatsSink::Flush() {
  if (!conn_) return Status::Unavailable("sink " + options_.name + ": not connected");
  Link* link = conn_->link();
  if (link->failed.load(std::memory_order_relaxed)) return link->Failure();
  if (last_published_ > last_requested_) RequestAck();
  return Status::Ok();
}

void NatsSink::RequestAck() {
  since_request_ = 0;
  last_requested_ = last_published_;
  kicker_->Kick(last_published_);
}

// The kicker's completion callback. One round trip covers every publish that
// cnats buffered before the PING, so acknowledging `target` (read before the
// flush starts) is exact. cnats processes a permissions -ERR in its read loop
// before the PONG that follows it, so checking the connection's last error
// after the flush keeps a refused publish from being acknowledged.
bool NatsSink::RoundTripDone(natsConnection* nc, Link* link, int64_t timeout, natsStatus s,
                             uint64_t target) {
  if (link->retired.load() || link->failed.load()) return false;
  if (s != NATS_OK) {
    std::string why = s == NATS_TIMEOUT
                          ? "no flush round trip within " + std::to_string(timeout) + " ms"
                          : "flush round trip failed: " + NatsErrorText(s);
    link->Fail(Status::Unavailable("sink " + options_.name + ": " + why + " (" + link->servers +
                                   "); unacknowledged events will be re-published"));
    return false;
  }
  const char* text = nullptr;
  if (natsConnection_GetLastError(nc, &text) == NATS_NOT_PERMITTED) {
    link->Fail(Status::Permanent("sink " + options_.name + ": the NATS server refused: " +
                                 std::string(text != nullptr ? text : "permissions violation") +
                                 "; grant the sink's user this permission"));
    return false;
  }
  link->acks->AckThrough(target);
  return true;
}

Status NatsSink::Check() {
  auto conn = Connection::Connect(options_, nullptr);
  if (!conn.ok()) return conn.status();
  natsStatus s = natsConnection_FlushTimeout((*conn)->get(), std::max<uint32_t>(options_.ack_timeout_ms, 100));
  if (s != NATS_OK) {
    return ConnectionStatus(s, "sink " + options_.name + ": no round trip with " +
                                   (*conn)->connected_url());
  }
  log::Debug("nats sink check", {{"sink", options_.name},
                                {"url", (*conn)->connected_url()},
                                {"max_payload", std::to_string((*conn)->max_payload())}});
  return Status::Ok();
}

}  // namespace walbus::adapters::nats
