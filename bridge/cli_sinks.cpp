#include "bridge/cli_sinks.h"

#include "adapters/stdout/stdout_sink.h"

#ifdef WALBUS_HAVE_REDIS
#include <hiredis/hiredis.h>

#include "adapters/redis/redis_sink.h"
#endif

namespace walbus::cli {

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(const conf::Config& config,
                                                     const std::string& db) {
  (void)db;
  std::vector<std::unique_ptr<Sink>> sinks;
  for (const conf::SinkConfig& s : config.sinks) {
    if (s.type == "stdout") {
      sinks.push_back(std::make_unique<adapters::stdout_sink::StdoutSink>(s.name));
      continue;
    }
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
#ifdef WALBUS_HAVE_REDIS
  v += "hiredis " + std::to_string(HIREDIS_MAJOR) + "." + std::to_string(HIREDIS_MINOR) + "." +
       std::to_string(HIREDIS_PATCH) + "\n";
#endif
  return v;
}

}  // namespace walbus::cli
