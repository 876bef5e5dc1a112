#include "bridge/cli_sinks.h"

#include "adapters/stdout/stdout_sink.h"

#ifdef WALBUS_HAVE_MQTT
#include "adapters/mqtt/mqtt_sink.h"
#endif
#ifdef WALBUS_HAVE_NATS
#include <nats/nats.h>

#include "adapters/nats/jetstream_sink.h"
#include "adapters/nats/nats_sink.h"
#include "bridge/topic_template.h"
#endif
#ifdef WALBUS_HAVE_REDIS
#include <hiredis/hiredis.h>

#include "adapters/redis/redis_sink.h"
#endif

namespace walbus::cli {

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(const conf::Config& config,
                                                     [[maybe_unused]] const std::string& db) {
  std::vector<std::unique_ptr<Sink>> sinks;
  for (const conf::SinkConfig& s : config.sinks) {
    if (s.type == "stdout") {
      sinks.push_back(std::make_unique<adapters::stdout_sink::StdoutSink>(s.name));
      continue;
    }
#ifdef WALBUS_HAVE_NATS
    if (s.type == "nats" || s.type == "jetstream") {
      adapters::nats::NatsOptions o;
      o.name = s.name;
      o.urls = s.url;
      o.user = s.user;
      o.password = s.password;
      o.token = s.token;
      o.creds = s.creds;
      o.nkey_seed = s.nkey_seed;
      o.tls_ca = s.tls_ca;
      o.tls_cert = s.tls_cert;
      o.tls_key = s.tls_key;
      o.max_pending = s.max_in_flight;
      if (s.type == "nats") {
        sinks.push_back(std::make_unique<adapters::nats::NatsSink>(std::move(o)));
        continue;
      }
      adapters::nats::JetStreamOptions j;
      j.connection = std::move(o);
      j.stream = s.stream;
      j.create_stream = s.create_stream;
      j.replicas = s.replicas;
      j.duplicate_window_ms = s.duplicate_window_ms;
      Result<bridge::TopicTemplate> t =
          bridge::TopicTemplate::Parse(s.topic, bridge::TopicRules::kNats);
      if (!t.ok()) return t.status();
      std::string filter = bridge::NatsSubjectFilter(*t, db);
      j.subjects.push_back(filter);
      std::string messages = std::string(db) + "._message.>";
      if (config.source.messages && filter != std::string(db) + ".>" && filter != ">") {
        j.subjects.push_back(messages);  // pg_logical_emit_message() subjects
      }
      sinks.push_back(std::make_unique<adapters::nats::JetStreamSink>(std::move(j)));
      continue;
    }
#endif
#ifdef WALBUS_HAVE_MQTT
    if (s.type == "mqtt") {
      adapters::mqtt::MqttOptions o;
      o.name = s.name;
      o.url = s.url;
      o.client_id = s.client_id;
      o.qos = s.qos;
      o.user = s.user;
      o.password = s.password;
      o.tls_ca = s.tls_ca;
      o.tls_cert = s.tls_cert;
      o.tls_key = s.tls_key;
      o.max_in_flight = s.max_in_flight;
      sinks.push_back(std::make_unique<adapters::mqtt::MqttSink>(std::move(o)));
      continue;
    }
#endif
#ifdef WALBUS_HAVE_REDIS
    if (s.type == "redis") {
      adapters::redis::RedisOptions o;
      o.name = s.name;
      o.url = s.url;
      o.user = s.user;
      o.password = s.password;
      o.maxlen = s.maxlen;
      o.auto_id = s.id == "auto";
      o.wait_replicas = s.wait_replicas;
      o.wait_timeout_ms = s.wait_timeout_ms;
      o.wait_aof = s.wait_aof;
      o.max_in_flight = s.max_in_flight;
      sinks.push_back(std::make_unique<adapters::redis::RedisSink>(std::move(o)));
      continue;
    }
#endif
    return Status::InvalidArgument(config.path + ":" + std::to_string(s.line) + ":1: sink \"" +
                                   s.name + "\": type \"" + s.type +
                                   "\" is not available in this build");
  }
  return sinks;
}

std::string AdapterVersions() {
  std::string v;
#ifdef WALBUS_HAVE_NATS
  v += std::string("cnats ") + nats_GetVersion() + "\n";
#endif
#ifdef WALBUS_HAVE_MQTT
  // paho's async client measured 15-25k QoS 1 messages/s here (about 50 us of
  // CPU each); walbus speaks MQTT 5 / 3.1.1 itself (adapters/mqtt).
  v += "mqtt: walbus native client (MQTT 5, 3.1.1), paho not linked\n";
#endif
#ifdef WALBUS_HAVE_REDIS
  v += "hiredis " + std::to_string(HIREDIS_MAJOR) + "." + std::to_string(HIREDIS_MINOR) + "." +
       std::to_string(HIREDIS_PATCH) + "\n";
#endif
  return v;
}

}  // namespace walbus::cli
