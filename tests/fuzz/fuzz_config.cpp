// libFuzzer target: arbitrary bytes as a walbus TOML file -> ParseConfig with
// a fake environment. It must never throw or crash; a failure is
// InvalidArgument with a non-empty one-line message.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include "conf/loader.h"

namespace {

[[noreturn]] void Fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz_config: invariant broken: %s\n", what);
  if (!detail.empty()) {
    std::fprintf(stderr, "  %.*s\n", static_cast<int>(detail.size()), detail.data());
  }
  std::abort();
}

// A fixed environment: a few names the seeds use, some empty, some odd.
const char* FakeGetenv(const char* name) {
  struct Var {
    const char* name;
    const char* value;
  };
  static constexpr Var kVars[] = {
      {"WALBUS_PG_PASSWORD", "pg-secret"},
      {"PGPASSWORD", "pg-secret"},
      {"WALBUS_DSN", "host=db user=walbus password=pg-secret dbname=app"},
      {"NATS_URL", "nats://u:nats-secret@nats:4222"},
      {"NATS_TOKEN", "nats-token"},
      {"NATS_PASSWORD", "nats-pass"},
      {"MQTT_PASSWORD", "mqtt-pass"},
      {"REDIS_PASSWORD", "redis-pass"},
      {"NAME", "walbus"},
      {"MQTT_URL", "tcp://mqtt:1883"},
      {"REDIS_URL", "redis://:redis-secret@redis:6379/0"},
      {"EMPTY", ""},
      {"HOME", "/home/walbus"},
      {"USER", "walbus"},
      {"X", "${X}"},
      {"BRACE", "}{$"},
      {"NUM", "12345"},
  };
  if (name == nullptr) Fail("getenv called with nullptr");
  for (const Var& v : kVars) {
    if (std::strcmp(v.name, name) == 0) return v.value;
  }
  return nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string owned(reinterpret_cast<const char*>(data), size);
  try {
    walbus::Result<walbus::conf::Config> r =
        walbus::conf::ParseConfig(owned, "fuzz.toml", FakeGetenv);
    if (!r.ok()) {
      const walbus::Status& s = r.status();
      if (s.code() != walbus::Code::kInvalidArgument) Fail("failure that is not InvalidArgument",
                                                           s.ToString());
      if (s.message().empty()) Fail("InvalidArgument without a message");
      if (s.message().find('\n') != std::string::npos) Fail("multi-line message", s.message());
      return 0;
    }
    if (r->sinks.empty()) Fail("a valid config without any sink");
  } catch (const std::exception& e) {
    Fail("exception escaped ParseConfig", e.what());
  } catch (...) {
    Fail("non-std exception escaped ParseConfig");
  }
  return 0;
}
