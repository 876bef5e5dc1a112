// Config: the parsed, validated, ${ENV}-expanded configuration file as plain
// structs (SPEC.md §2). Produced by LoadConfig (conf/loader.h); toml++ never
// appears here. Every field has its SPEC default already filled in.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace walbus::conf {

struct SourceConfig {
  std::string dsn;                          // libpq conninfo (required)
  std::string slot = "walbus";
  std::string publication = "walbus";
  std::vector<std::string> tables;          // empty = all tables
  bool create_slot = true;
  bool create_publication = true;
  std::string snapshot = "never";           // "never" | "initial"
  uint32_t status_interval_ms = 1000;
  bool messages = false;
  uint32_t standby_retry_ms = 2000;
};

struct EnvelopeConfig {
  bool numeric_as_number = false;           // numeric = "number"
  bool bytea_hex = false;                   // bytea = "hex"
};

struct SinkConfig {
  std::string name;                         // unique
  std::string type;                         // stdout | nats | jetstream | mqtt | redis
  std::string topic;                        // template; per-type default filled in
  std::vector<std::string> include;         // globs on schema.table; empty = all
  uint32_t max_in_flight = 10000;
  int line = 0;                             // where the [[sink]] table starts, for messages

  // nats, jetstream, mqtt, redis
  std::string url;
  std::string user;
  std::string password;
  // nats, jetstream
  std::string token;
  std::string creds;
  std::string nkey_seed;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // jetstream
  std::string stream;
  bool create_stream = true;
  uint32_t replicas = 1;
  std::string duplicate_window = "2m";
  uint64_t duplicate_window_ms = 120000;
  // mqtt
  std::string client_id;                    // default "walbus-<slot>"
  int qos = 1;
  std::string state_topic;                  // optional
  // redis
  std::string key;                          // alias of topic for redis: the stream key template
  std::optional<uint64_t> maxlen;
  std::string id = "lsn";                   // "lsn" | "auto"
  uint32_t wait_replicas = 0;
  uint32_t wait_timeout_ms = 1000;
  bool wait_aof = false;
};

struct MetricsConfig {
  std::string listen = "127.0.0.1:9187";   // "" turns it off
  // How long PostgreSQL or a sink may stay unreachable before /healthz says 503.
  uint32_t health_grace_ms = 30000;          // 0 .. 3600000
  // Retained WAL (bytes behind the slot) above which walbus warns; 0 = off.
  uint64_t retained_wal_warn_bytes = 1073741824;  // 1 GiB
};

struct Config {
  std::string path;                         // the file it came from
  SourceConfig source;
  EnvelopeConfig envelope;
  std::vector<SinkConfig> sinks;            // at least one
  MetricsConfig metrics;
  // The keys whose value, as written in the file (before ${NAME} expansion),
  // holds a secret: "source.dsn", "sink 'x' password", "sink 'x' url", ...
  // A secret that only comes from ${NAME} does not count. See
  // conf/file_permissions.h.
  std::vector<std::string> secrets_in_file;
};

}  // namespace walbus::conf
