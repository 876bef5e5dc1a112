// JetStreamSink: the `jetstream` sink (SPEC.md §2). Every publish carries
// `Nats-Msg-Id: <event id>`; an event is acknowledged when its PubAck arrives,
// a duplicate PubAck included (the stream dropped a re-delivery).
//
// Ownership and threads: Open, Publish, Flush, Close and Check run on the
// source thread. Open connects, checks the stream (creating it when
// create_stream and it is missing: file storage, the replicas and duplicate
// window of the options) and opens a JetStream context whose async-publish
// window is max_pending. Publish hands the message to js_PublishMsgAsync and
// returns; PubAcks arrive on a cnats thread, which calls AckSink::Ack(ticket)
// per event, in whatever order the server answers.
//
// Errors: FailedPrecondition at Open/Check when the stream is missing and
// create_stream is false, when an existing stream's subjects do not cover the
// configured ones, or when the server has no JetStream. Unavailable (returned
// or through AckSink::Fail) for a lost connection, a PubAck not received
// within ack_timeout_ms, or JetStream answering "temporarily unavailable";
// after Open or Close returns no earlier ticket is acknowledged.
//
// Deduplication only covers the stream's duplicate window: Publish warns, once
// a minute at most, when an event's commit is older than that window (the lag
// at which a re-publish may no longer be recognised as a duplicate). Permanent
// (naming event id, table, subject and the server's reason) for a payload
// over max_payload, a JetStream API error on publish, a subject that no
// stream covers (the server answers "no responders" and the configured
// stream's subjects do not match it), or a permissions violation.
#pragma once

#include <memory>
#include <string>

#include "adapters/nats/nats_options.h"
#include "bridge/core/sink.h"

namespace walbus::adapters::nats {

class JetStreamSink final : public Sink {
 public:
  explicit JetStreamSink(JetStreamOptions options);
  ~JetStreamSink() override;
  JetStreamSink(const JetStreamSink&) = delete;
  JetStreamSink& operator=(const JetStreamSink&) = delete;

  std::string_view name() const override { return options_.connection.name; }
  std::string_view type() const override { return "jetstream"; }
  Status Open(AckSink* acks) override;
  Status Publish(const Event& event) override;
  Status Flush() override;
  void Close() override;
  Status Check() override;

 private:
  struct Session;  // the connection, JetStream context and publish options

  Result<std::unique_ptr<Session>> Start(AckSink* acks, bool may_create);
  // Warns (once a minute at most) when the event's commit is older than the
  // stream's duplicate window.
  void WatchLag(const Event& event);

  JetStreamOptions options_;
  std::unique_ptr<Session> session_;
  // NUL-terminated copies for cnats, capacity reused across events.
  std::string subject_;
  std::string id_;
  std::string reply_;
};

}  // namespace walbus::adapters::nats
