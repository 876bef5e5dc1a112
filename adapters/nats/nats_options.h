// NatsOptions / JetStreamOptions: what the `nats` and `jetstream` sinks need
// from the configuration (SPEC.md §2), as plain values. The CLI fills them
// from conf::SinkConfig; nothing here is read from the environment.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace walbus::adapters::nats {

struct NatsOptions {
  std::string name;      // the sink's name: in messages, logs and the client name
  std::string urls;      // "nats://a:4222,nats://b:4222"; user:password@ / token@ allowed
  std::string user;
  std::string password;
  std::string token;
  std::string creds;     // a .creds file (user JWT + NKey seed)
  std::string nkey_seed; // a file holding a user NKey seed (server config: nkey: U...)
  std::string tls_ca;    // PEM files; any of them (or a tls:// URL) turns TLS on
  std::string tls_cert;
  std::string tls_key;
  // The pipeline's max_in_flight for this sink: sizes client buffers and the
  // JetStream async-publish window, so a Publish never waits for room.
  uint32_t max_pending = 10000;
  // A flush round trip (core) or a PubAck (JetStream) slower than this means
  // the broker is unavailable: everything unacknowledged is re-published.
  uint32_t ack_timeout_ms = 10000;
  uint32_t connect_timeout_ms = 5000;
};

struct JetStreamOptions {
  NatsOptions connection;
  std::string stream;                 // the stream's name (required)
  bool create_stream = true;          // create it at Open when missing
  uint32_t replicas = 1;              // used when creating
  uint64_t duplicate_window_ms = 120000;  // used when creating: the Nats-Msg-Id dedup window
  // Subject filters the stream must cover, e.g. {"shop.>"} derived from the
  // topic template: used to create the stream, and checked against an
  // existing stream's subjects (an empty list skips the check).
  std::vector<std::string> subjects;
  uint32_t api_timeout_ms = 5000;     // JetStream API requests (stream info / add)
};

}  // namespace walbus::adapters::nats
