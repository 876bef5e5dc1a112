#include "conf/loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "bridge/core/status.h"
#include "conf/config.h"

namespace walbus::conf {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A fake environment: tests never read or change the real one.
GetEnv FakeEnv(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

const GetEnv kNoEnv = FakeEnv({});

std::string ConfDir() { return std::string(WALBUS_FIXTURES_DIR) + "/../../conf"; }

std::string ReadWholeFile(const std::string& path) {
  std::string text;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

// ---------------------------------------------------------------------------

TEST(ConfigLoad, EveryKey) {
  const char* text = R"(
[source]
dsn = "host=db port=5432 dbname=shop user=walbus password=${PGPASSWORD}"
slot = "shop_cdc"
publication = "shop_pub"
tables = ["public.*", "sales.orders"]
create_slot = false
create_publication = false
snapshot = "initial"
status_interval_ms = 500
messages = true
standby_retry_ms = 5000

[envelope]
numeric = "number"
bytea = "hex"

[[sink]]
name = "console"
type = "stdout"
topic = "{schema}.{table}"
include = ["public.orders", "sales.*", "audit.log_?"]
max_in_flight = 7

[[sink]]
name = "core"
type = "nats"
url = "nats://a:4222, tls://b:4223"
user = "walbus"
password = "${NATS_PASSWORD}"
tls_ca = "/etc/ca.pem"
tls_cert = "/etc/cert.pem"
tls_key = "/etc/key.pem"

[[sink]]
name = "core-token"
type = "nats"
url = "nats://127.0.0.1:4222"
token = "s3cret"

[[sink]]
name = "js"
type = "jetstream"
url = "nats://127.0.0.1:4222"
creds = "/etc/walbus.creds"
stream = "SHOP"
create_stream = false
replicas = 3
duplicate_window = "90s"
topic = "cdc.{db}.{table}.{op}"

[[sink]]
name = "mq"
type = "mqtt"
url = "ssl://broker:8883"
client_id = "walbus-one"
qos = 2
user = "u"
password = "p"
tls_ca = "/etc/ca.pem"
tls_cert = "/etc/c.pem"
tls_key = "/etc/k.pem"
state_topic = "{db}/{schema}/{table}/state/{key}"
topic = "cdc/{table}/{op}"

[[sink]]
name = "cache"
type = "redis"
url = "redis://app:pw@cache:6379/2"
key = "cdc:{schema}:{table}"
maxlen = 100000
id = "auto"
wait_replicas = 1
wait_timeout_ms = 250
wait_aof = true

[metrics]
listen = "0.0.0.0:9999"
)";
  auto env = FakeEnv({{"PGPASSWORD", "pg-secret"}, {"NATS_PASSWORD", "nats-secret"}});
  Result<Config> r = ParseConfig(text, "every.toml", env);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Config& c = *r;
  EXPECT_EQ(c.path, "every.toml");

  EXPECT_EQ(c.source.dsn, "host=db port=5432 dbname=shop user=walbus password=pg-secret");
  EXPECT_EQ(c.source.slot, "shop_cdc");
  EXPECT_EQ(c.source.publication, "shop_pub");
  EXPECT_EQ(c.source.tables, (std::vector<std::string>{"public.*", "sales.orders"}));
  EXPECT_FALSE(c.source.create_slot);
  EXPECT_FALSE(c.source.create_publication);
  EXPECT_EQ(c.source.snapshot, "initial");
  EXPECT_EQ(c.source.status_interval_ms, 500u);
  EXPECT_TRUE(c.source.messages);
  EXPECT_EQ(c.source.standby_retry_ms, 5000u);
  EXPECT_TRUE(c.envelope.numeric_as_number);
  EXPECT_TRUE(c.envelope.bytea_hex);
  EXPECT_EQ(c.metrics.listen, "0.0.0.0:9999");

  ASSERT_EQ(c.sinks.size(), 6u);
  const SinkConfig& out = c.sinks[0];
  EXPECT_EQ(out.name, "console");
  EXPECT_EQ(out.type, "stdout");
  EXPECT_EQ(out.topic, "{schema}.{table}");
  EXPECT_EQ(out.include,
            (std::vector<std::string>{"public.orders", "sales.*", "audit.log_?"}));
  EXPECT_EQ(out.max_in_flight, 7u);
  EXPECT_EQ(out.line, 18);

  const SinkConfig& nats = c.sinks[1];
  EXPECT_EQ(nats.type, "nats");
  EXPECT_EQ(nats.url, "nats://a:4222, tls://b:4223");
  EXPECT_EQ(nats.user, "walbus");
  EXPECT_EQ(nats.password, "nats-secret");
  EXPECT_EQ(nats.tls_ca, "/etc/ca.pem");
  EXPECT_EQ(nats.tls_cert, "/etc/cert.pem");
  EXPECT_EQ(nats.tls_key, "/etc/key.pem");
  EXPECT_EQ(nats.topic, "{db}.{schema}.{table}.{op}");
  EXPECT_EQ(nats.max_in_flight, 10000u);
  EXPECT_TRUE(nats.include.empty());
  EXPECT_EQ(c.sinks[2].token, "s3cret");

  const SinkConfig& js = c.sinks[3];
  EXPECT_EQ(js.type, "jetstream");
  EXPECT_EQ(js.creds, "/etc/walbus.creds");
  EXPECT_EQ(js.stream, "SHOP");
  EXPECT_FALSE(js.create_stream);
  EXPECT_EQ(js.replicas, 3u);
  EXPECT_EQ(js.duplicate_window, "90s");
  EXPECT_EQ(js.duplicate_window_ms, 90000u);
  EXPECT_EQ(js.topic, "cdc.{db}.{table}.{op}");

  const SinkConfig& mq = c.sinks[4];
  EXPECT_EQ(mq.type, "mqtt");
  EXPECT_EQ(mq.url, "ssl://broker:8883");
  EXPECT_EQ(mq.client_id, "walbus-one");
  EXPECT_EQ(mq.qos, 2);
  EXPECT_EQ(mq.user, "u");
  EXPECT_EQ(mq.password, "p");
  EXPECT_EQ(mq.tls_ca, "/etc/ca.pem");
  EXPECT_EQ(mq.state_topic, "{db}/{schema}/{table}/state/{key}");
  EXPECT_EQ(mq.topic, "cdc/{table}/{op}");

  const SinkConfig& redis = c.sinks[5];
  EXPECT_EQ(redis.type, "redis");
  EXPECT_EQ(redis.url, "redis://app:pw@cache:6379/2");
  EXPECT_EQ(redis.key, "cdc:{schema}:{table}");
  EXPECT_EQ(redis.topic, "cdc:{schema}:{table}");  // the pipeline reads topic
  ASSERT_TRUE(redis.maxlen.has_value());
  EXPECT_EQ(*redis.maxlen, 100000u);
  EXPECT_EQ(redis.id, "auto");
  EXPECT_EQ(redis.wait_replicas, 1u);
  EXPECT_EQ(redis.wait_timeout_ms, 250u);
  EXPECT_TRUE(redis.wait_aof);
}

TEST(ConfigLoad, DefaultsFilled) {
  const char* text = R"(
[source]
dsn = "dbname=shop"

[[sink]]
name = "out"
type = "stdout"

[[sink]]
name = "n"
type = "nats"
url = "nats://127.0.0.1:4222"

[[sink]]
name = "j"
type = "jetstream"
url = "nats://127.0.0.1:4222"
stream = "S"

[[sink]]
name = "m"
type = "mqtt"
url = "tcp://127.0.0.1:1883"

[[sink]]
name = "r"
type = "redis"
url = "redis://127.0.0.1:6379"
)";
  Result<Config> r = ParseConfig(text, "d.toml", kNoEnv);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Config& c = *r;
  EXPECT_EQ(c.source.slot, "walbus");
  EXPECT_EQ(c.source.publication, "walbus");
  EXPECT_TRUE(c.source.tables.empty());
  EXPECT_TRUE(c.source.create_slot);
  EXPECT_TRUE(c.source.create_publication);
  EXPECT_EQ(c.source.snapshot, "never");
  EXPECT_EQ(c.source.status_interval_ms, 1000u);
  EXPECT_FALSE(c.source.messages);
  EXPECT_EQ(c.source.standby_retry_ms, 2000u);
  EXPECT_FALSE(c.envelope.numeric_as_number);
  EXPECT_FALSE(c.envelope.bytea_hex);
  EXPECT_EQ(c.metrics.listen, "127.0.0.1:9187");

  ASSERT_EQ(c.sinks.size(), 5u);
  for (const SinkConfig& s : c.sinks) {
    EXPECT_EQ(s.max_in_flight, 10000u) << s.name;
    EXPECT_TRUE(s.include.empty()) << s.name;
  }
  EXPECT_EQ(c.sinks[0].topic, "{db}.{schema}.{table}.{op}");
  EXPECT_EQ(c.sinks[1].topic, "{db}.{schema}.{table}.{op}");
  EXPECT_EQ(c.sinks[2].topic, "{db}.{schema}.{table}.{op}");
  EXPECT_TRUE(c.sinks[2].create_stream);
  EXPECT_EQ(c.sinks[2].replicas, 1u);
  EXPECT_EQ(c.sinks[2].duplicate_window, "2m");
  EXPECT_EQ(c.sinks[2].duplicate_window_ms, 120000u);
  EXPECT_EQ(c.sinks[3].topic, "{db}/{schema}/{table}/{op}");
  EXPECT_EQ(c.sinks[3].client_id, "walbus-walbus");
  EXPECT_EQ(c.sinks[3].qos, 1);
  EXPECT_TRUE(c.sinks[3].state_topic.empty());
  EXPECT_EQ(c.sinks[4].key, "{db}.{schema}.{table}");
  EXPECT_EQ(c.sinks[4].topic, "{db}.{schema}.{table}");
  EXPECT_FALSE(c.sinks[4].maxlen.has_value());
  EXPECT_EQ(c.sinks[4].id, "lsn");
  EXPECT_EQ(c.sinks[4].wait_replicas, 0u);
  EXPECT_FALSE(c.sinks[4].wait_aof);
}

TEST(ConfigLoad, ClientIdFollowsSlotAndMetricsCanBeOff) {
  const char* text = R"(
[[sink]]
name = "m"
type = "mqtt"
url = "mqtt://broker"

[source]
dsn = "dbname=shop"
slot = "orders_slot"

[metrics]
listen = ""
)";
  Result<Config> r = ParseConfig(text, "c.toml", kNoEnv);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->sinks[0].client_id, "walbus-orders_slot");
  EXPECT_EQ(r->metrics.listen, "");
}

TEST(ConfigLoad, MetricsGraceAndRetainedWal) {
  struct Case {
    const char* metrics;  // the [metrics] table's lines
    uint32_t grace_ms;
    uint64_t warn_bytes;
  };
  const Case cases[] = {
      {"", 30000, 1073741824},
      {"health_grace_ms = 0\n", 0, 1073741824},
      {"health_grace_ms = 2000\n", 2000, 1073741824},
      {"health_grace_ms = 3600000\n", 3600000, 1073741824},
      {"retained_wal_warn_bytes = 0\n", 30000, 0},
      {"retained_wal_warn_bytes = 10_737_418_240\n", 30000, 10737418240ull},
      {"listen = \"\"\nhealth_grace_ms = 5000\nretained_wal_warn_bytes = 1\n", 5000, 1},
  };
  for (const Case& c : cases) {
    std::string text = std::string("[source]\ndsn = \"dbname=shop\"\n"
                                   "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n"
                                   "[metrics]\n") + c.metrics;
    Result<Config> r = ParseConfig(text, "m.toml", kNoEnv);
    ASSERT_TRUE(r.ok()) << c.metrics << r.status().ToString();
    EXPECT_EQ(r->metrics.health_grace_ms, c.grace_ms) << c.metrics;
    EXPECT_EQ(r->metrics.retained_wal_warn_bytes, c.warn_bytes) << c.metrics;
  }
  // Without a [metrics] table at all: the defaults.
  Result<Config> r = ParseConfig("[source]\ndsn = \"dbname=shop\"\n"
                                 "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n",
                                 "m.toml", kNoEnv);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->metrics.listen, "127.0.0.1:9187");
  EXPECT_EQ(r->metrics.health_grace_ms, 30000u);
  EXPECT_EQ(r->metrics.retained_wal_warn_bytes, 1073741824u);
}

TEST(ConfigLoad, InlineArrayOfSinkTablesIsAccepted) {
  const char* text = R"(
source = { dsn = "dbname=shop" }
sink = [ { name = "a", type = "stdout" }, { name = "b", type = "stdout", topic = "x.{op}" } ]
)";
  Result<Config> r = ParseConfig(text, "i.toml", kNoEnv);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->sinks.size(), 2u);
  EXPECT_EQ(r->sinks[1].topic, "x.{op}");
}

TEST(ConfigLoad, DurationForms) {
  struct Case {
    const char* text;
    uint64_t ms;
  } cases[] = {{"500ms", 500}, {"90s", 90000}, {"2m", 120000}, {"1h", 3600000}, {"1m30s", 90000}};
  for (const Case& c : cases) {
    std::string text = std::string("[source]\ndsn = \"x\"\n[[sink]]\nname = \"j\"\n"
                                   "type = \"jetstream\"\nurl = \"nats://h\"\nstream = \"S\"\n"
                                   "duplicate_window = \"") + c.text + "\"\n";
    Result<Config> r = ParseConfig(text, "w.toml", kNoEnv);
    ASSERT_TRUE(r.ok()) << c.text << ": " << r.status().ToString();
    EXPECT_EQ(r->sinks[0].duplicate_window_ms, c.ms) << c.text;
  }
}

// ---------------------------------------------------------------------------

TEST(ConfigEnv, ExpandsEveryStringAlsoInArrays) {
  const char* text = R"(
[source]
dsn = "host=${PGHOST} dbname=${PGDB} password=pa$$word"
slot = "${SLOT}"
tables = ["${SCHEMA}.orders", "${SCHEMA}.*"]

[[sink]]
name = "${SINK}"
type = "${TYPE}"
url = "redis://:${REDIS_PW}@cache:6379/0"
key = "cost$5.${SCHEMA}.{table}"

[metrics]
listen = "${METRICS}"
)";
  auto env = FakeEnv({{"PGHOST", "db.internal"},
                      {"PGDB", "shop"},
                      {"SLOT", "cdc_slot"},
                      {"SCHEMA", "public"},
                      {"SINK", "cache"},
                      {"TYPE", "redis"},
                      {"REDIS_PW", "hunter2"},
                      {"METRICS", "127.0.0.1:1234"}});
  Result<Config> r = ParseConfig(text, "e.toml", env);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source.dsn, "host=db.internal dbname=shop password=pa$word");
  EXPECT_EQ(r->source.slot, "cdc_slot");
  EXPECT_EQ(r->source.tables, (std::vector<std::string>{"public.orders", "public.*"}));
  EXPECT_EQ(r->sinks[0].name, "cache");
  EXPECT_EQ(r->sinks[0].type, "redis");
  EXPECT_EQ(r->sinks[0].url, "redis://:hunter2@cache:6379/0");
  EXPECT_EQ(r->sinks[0].key, "cost$5.public.{table}");  // a lone '$' stays
  EXPECT_EQ(r->metrics.listen, "127.0.0.1:1234");
}

TEST(ConfigEnv, ExpansionIsNotRecursive) {
  const char* text = "[source]\ndsn = \"${A}\"\n[[sink]]\nname = \"o\"\ntype = \"stdout\"\n";
  Result<Config> r = ParseConfig(text, "e.toml", FakeEnv({{"A", "${B}"}, {"B", "no"}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source.dsn, "${B}");
}

TEST(ConfigEnv, AnEmptyVariableIsSetButEmpty) {
  const char* text =
      "[source]\ndsn = \"dbname=x password=${PW}\"\n[[sink]]\nname = \"o\"\ntype = \"stdout\"\n";
  Result<Config> r = ParseConfig(text, "e.toml", FakeEnv({{"PW", ""}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source.dsn, "dbname=x password=");
}

TEST(ConfigEnv, UsesTheProcessEnvironmentByDefault) {
  // Only reads: HOME is set in every test environment we run in.
  const char* home = ::getenv("HOME");
  if (home == nullptr) GTEST_SKIP() << "HOME is not set";
  const char* text = "[source]\ndsn = \"${HOME}\"\n[[sink]]\nname = \"o\"\ntype = \"stdout\"\n";
  Result<Config> r = ParseConfig(text, "e.toml");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source.dsn, home);
}

TEST(ConfigEnv, SecretsNeverAppearInMessages) {
  auto env = FakeEnv({{"PW", "hunter2"}, {"TOKEN", "tok-hunter2"}});
  const char* cases[] = {
      // A URL that is wrong after expansion.
      "[source]\ndsn = \"x\"\n[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
      "url = \"redis://u:${PW}@host:99999/0\"\n",
      "[source]\ndsn = \"x\"\n[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
      "url = \"redis://u:${PW}@host:6379/zero\"\n",
      "[source]\ndsn = \"x\"\n[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n"
      "url = \"http://u:${PW}@host\"\n",
      "[source]\ndsn = \"x\"\n[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n"
      "url = \"u:${PW}@host\"\n",
      "[source]\ndsn = \"x\"\n[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
      "url = \"nats://${TOKEN}@\"\n",
      // An unset variable next to a set one.
      "[source]\ndsn = \"password=${PW} host=${NOPE}\"\n",
      // A later error after a secret was expanded.
      "[source]\ndsn = \"password=${PW}\"\nslot = \"BAD\"\n",
  };
  for (const char* text : cases) {
    Result<Config> r = ParseConfig(text, "s.toml", env);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_THAT(r.status().message(), Not(HasSubstr("hunter2"))) << text;
  }
}

// ---------------------------------------------------------------------------
// Bad configurations: the exact FILE:LINE:COL and a phrase of the message.

struct BadCase {
  const char* name;
  const char* text;
  const char* where;   // "LINE:COL"
  const char* phrase;  // part of the message
};

// Lines 1-2 of most cases.
#define SRC "[source]\ndsn = \"dbname=shop\"\n"
// A valid stdout sink, for cases about other tables.
#define OUT "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n"

const BadCase kBadCases[] = {
    // --- TOML itself
    {"toml_syntax", SRC "slot = \n", "3:8", "invalid TOML"},
    {"toml_duplicate_key", SRC "dsn = \"again\"\n", "3:7", "invalid TOML: error while parsing key-value pair: cannot redefine existing string 'dsn'"},
    {"toml_unterminated_string", SRC "slot = \"abc\n", "3:12", "invalid TOML"},
    // --- top level
    {"unknown_top_table", SRC "[sinks]\nname = \"a\"\n", "3:2",
     "unknown key 'sinks' at the top level; did you mean 'sink'?"},
    {"top_level_key_belongs_in_source", "slot = \"x\"\n" SRC OUT, "1:1",
     "unknown key 'slot' at the top level; it belongs in [source]"},
    {"no_source", OUT, "1:1", "no [source] table"},
    {"source_not_a_table", "source = \"dbname=shop\"\n" OUT, "1:1",
     "source must be a table ([source]), got a string"},
    {"no_sink", SRC, "1:1", "no [[sink]]"},
    {"sink_single_brackets", SRC "[sink]\nname = \"a\"\ntype = \"stdout\"\n", "3:2",
     "write [[sink]] (double brackets)"},
    {"sink_array_of_strings", "sink = [\"out\"]\n" SRC, "1:9",
     "sink[0] must be a table ([[sink]]), got a string"},
    // --- [source]
    {"source_unknown_key_typo", SRC "slto = \"walbus\"\n" OUT, "3:1",
     "unknown key 'slto' in [source]; did you mean 'slot'?"},
    {"top_level_key_inside_source", SRC "sink = [\"out\"]\n", "3:1",
     "unknown key 'sink' in [source]; 'sink' is a top-level key: write [[sink]] as its own table"},
    {"source_key_of_envelope", SRC "numeric = \"number\"\n" OUT, "3:1",
     "unknown key 'numeric' in [source]; it belongs in [envelope]"},
    {"source_no_dsn", "[source]\nslot = \"s\"\n" OUT, "1:1", "[source] has no dsn"},
    {"source_empty_dsn", "[source]\ndsn = \"  \"\n" OUT, "2:7", "source.dsn is empty"},
    {"source_dsn_not_string", "[source]\ndsn = 5432\n" OUT, "2:7",
     "source.dsn must be a string, got an integer; put it in quotes"},
    {"create_slot_string", SRC "create_slot = \"yes\"\n" OUT, "3:15",
     "source.create_slot must be true or false, got a string"},
    {"messages_int", SRC "messages = 1\n" OUT, "3:12",
     "source.messages must be true or false, got an integer"},
    {"tables_string", SRC "tables = \"public.*\"\n" OUT, "3:10",
     "source.tables must be an array of strings, got a string; write a list, e.g. [\"public.*\"]"},
    {"tables_empty", SRC "tables = []\n" OUT, "3:10", "source.tables is an empty list"},
    {"tables_entry_no_schema", SRC "tables = [\"public.*\", \"orders\"]\n" OUT, "3:23",
     "source.tables entry 'orders' must be \"schema.table\" or \"schema.*\""},
    {"tables_entry_quoted", SRC "tables = [\"public.\\\"Orders\\\"\"]\n" OUT, "3:11",
     "must be \"schema.table\""},
    {"tables_entry_not_string", SRC "tables = [\"public.*\", 7]\n" OUT, "3:23",
     "source.tables[1] must be a string, got an integer"},
    {"snapshot_enum", SRC "snapshot = \"inital\"\n" OUT, "3:12",
     "source.snapshot must be \"never\" or \"initial\", got 'inital'; did you mean \"initial\"?"},
    {"status_interval_low", SRC "status_interval_ms = 5\n" OUT, "3:22",
     "source.status_interval_ms must be from 10 to 3600000, got 5"},
    {"standby_retry_high", SRC "standby_retry_ms = 3600001\n" OUT, "3:20",
     "source.standby_retry_ms must be from 100 to 3600000, got 3600001"},
    {"standby_retry_float", SRC "standby_retry_ms = 2000.0\n" OUT, "3:20",
     "must be an integer, got a floating-point number"},
    {"slot_upper", SRC "slot = \"Walbus\"\n" OUT, "3:8",
     "source.slot 'Walbus' is not a valid replication slot name"},
    {"slot_dash", SRC "slot = \"my-slot\"\n" OUT, "3:8", "use 1 to 63 of a-z, 0-9 and _"},
    {"slot_too_long", SRC "slot = \"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "\"\n" OUT,
     "3:8", "is not a valid replication slot name"},
    {"publication_not_identifier", SRC "publication = \"my-pub\"\n" OUT, "3:15",
     "source.publication 'my-pub' is not a plain identifier"},
    {"publication_digit_first", SRC "publication = \"1pub\"\n" OUT, "3:15",
     "is not a plain identifier"},
    // --- environment
    {"env_unset", "[source]\ndsn = \"host=${PGHOST}\"\n" OUT, "2:7",
     "environment variable PGHOST is not set (used in source.dsn)"},
    {"env_unset_in_array", SRC "tables = [\"public.*\", \"${SCHEMA}.*\"]\n" OUT, "3:23",
     "environment variable SCHEMA is not set (used in source.tables[1])"},
    {"env_unterminated", SRC "slot = \"${SLOT\"\n" OUT, "3:8", "'${' without a closing '}' in source.slot"},
    {"env_bad_name", SRC "slot = \"${MY-SLOT}\"\n" OUT, "3:8",
     "invalid environment variable name 'MY-SLOT'"},
    {"env_empty_name", SRC "slot = \"${}\"\n" OUT, "3:8", "invalid environment variable name ''"},
    // --- [envelope]
    {"envelope_numeric_enum", SRC "[envelope]\nnumeric = \"decimal\"\n" OUT, "4:11",
     "envelope.numeric must be \"string\" or \"number\", got 'decimal'"},
    {"envelope_bytea_enum", SRC "[envelope]\nbytea = \"base-64\"\n" OUT, "4:9",
     "envelope.bytea must be \"base64\" or \"hex\", got 'base-64'; did you mean \"base64\"?"},
    {"envelope_unknown_key", SRC "[envelope]\nbytes = \"hex\"\n" OUT, "4:1",
     "unknown key 'bytes' in [envelope]; did you mean 'bytea'?"},
    {"envelope_not_table", "envelope = \"number\"\n" SRC OUT, "1:1",
     "envelope must be a table ([envelope]), got a string"},
    // --- [metrics]
    {"metrics_unknown_key", SRC OUT "[metrics]\nport = 9187\n", "7:1",
     "unknown key 'port' in [metrics]; known keys: listen"},
    {"metrics_listen_typo", SRC OUT "[metrics]\nlisen = \"x:1\"\n", "7:1", "did you mean 'listen'?"},
    {"metrics_no_port", SRC OUT "[metrics]\nlisten = \"localhost\"\n", "7:10",
     "metrics.listen 'localhost': the port is missing"},
    {"metrics_port_zero", SRC OUT "[metrics]\nlisten = \"127.0.0.1:0\"\n", "7:10",
     "the port must be a number from 1 to 65535"},
    {"metrics_port_big", SRC OUT "[metrics]\nlisten = \"127.0.0.1:65536\"\n", "7:10",
     "the port must be a number from 1 to 65535"},
    {"metrics_no_host", SRC OUT "[metrics]\nlisten = \":9187\"\n", "7:10", "the host is missing"},
    {"metrics_listen_int", SRC OUT "[metrics]\nlisten = 9187\n", "7:10",
     "metrics.listen must be a string, got an integer; put it in quotes"},
    {"metrics_grace_negative", SRC OUT "[metrics]\nhealth_grace_ms = -1\n", "7:19",
     "metrics.health_grace_ms must be from 0 to 3600000, got -1"},
    {"metrics_grace_too_big", SRC OUT "[metrics]\nhealth_grace_ms = 3600001\n", "7:19",
     "metrics.health_grace_ms must be from 0 to 3600000, got 3600001"},
    {"metrics_grace_quoted", SRC OUT "[metrics]\nhealth_grace_ms = \"30000\"\n", "7:19",
     "metrics.health_grace_ms must be an integer, got a string; write 30000 without quotes"},
    {"metrics_grace_float", SRC OUT "[metrics]\nhealth_grace_ms = 2.5\n", "7:19",
     "metrics.health_grace_ms must be an integer, got a floating-point number"},
    {"metrics_grace_typo", SRC OUT "[metrics]\nhelth_grace_ms = 100\n", "7:1",
     "unknown key 'helth_grace_ms' in [metrics]; did you mean 'health_grace_ms'?"},
    {"metrics_grace_in_source", SRC "health_grace_ms = 100\n" OUT, "3:1",
     "unknown key 'health_grace_ms' in [source]; it belongs in [metrics]"},
    {"metrics_retained_negative", SRC OUT "[metrics]\nretained_wal_warn_bytes = -1\n", "7:27",
     "metrics.retained_wal_warn_bytes must be at least 0, got -1"},
    {"metrics_retained_string", SRC OUT "[metrics]\nretained_wal_warn_bytes = \"1GiB\"\n", "7:27",
     "metrics.retained_wal_warn_bytes must be an integer, got a string"},
    // --- [[sink]] common
    {"sink_no_name", SRC "[[sink]]\ntype = \"stdout\"\n", "3:1", "[[sink]] #1 has no name"},
    {"sink_bad_name", SRC "[[sink]]\nname = \"my sink\"\ntype = \"stdout\"\n", "4:8",
     "[[sink]] #1 name 'my sink' must be 1 to 64 of letters, digits"},
    {"sink_no_type", SRC "[[sink]]\nname = \"a\"\n", "3:1", "sink 'a' has no type"},
    {"sink_type_enum", SRC "[[sink]]\nname = \"a\"\ntype = \"kafka\"\n", "5:8",
     "sink 'a' type must be \"stdout\", \"nats\", \"jetstream\", \"mqtt\" or \"redis\", got 'kafka'"},
    {"sink_type_typo", SRC "[[sink]]\nname = \"a\"\ntype = \"nast\"\n", "5:8",
     "did you mean \"nats\"?"},
    {"sink_duplicate_name", SRC OUT "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n", "7:8",
     "duplicate sink name 'out' (also the [[sink]] at line 3)"},
    {"sink_unknown_key", SRC OUT "topik = \"x\"\n", "6:1",
     "unknown key 'topik' in sink 'out' (type stdout); did you mean 'topic'?"},
    {"sink_unknown_key_no_suggestion", SRC OUT "colour = \"x\"\n", "6:1",
     "unknown key 'colour' in sink 'out' (type stdout); known keys: name, type, topic"},
    {"sink_source_key", SRC OUT "dsn = \"x\"\n", "6:1", "it belongs in [source]"},
    {"max_in_flight_string", SRC OUT "max_in_flight = \"10\"\n", "6:17",
     "sink 'out' max_in_flight must be an integer, got a string; write 10 without quotes"},
    {"max_in_flight_zero", SRC OUT "max_in_flight = 0\n", "6:17",
     "sink 'out' max_in_flight must be from 1 to 1000000, got 0"},
    {"max_in_flight_big", SRC OUT "max_in_flight = 1000001\n", "6:17", "from 1 to 1000000"},
    {"include_string", SRC OUT "include = \"public.*\"\n", "6:11",
     "sink 'out' include must be an array of strings, got a string"},
    {"include_no_dot", SRC OUT "include = [\"public.*\", \"orders\"]\n", "6:24",
     "sink 'out' include entry 'orders' never matches"},
    {"include_empty", SRC OUT "include = []\n", "6:11", "sink 'out' include is an empty list"},
    // --- templates
    {"topic_unknown_placeholder", SRC OUT "topic = \"{db}.{tabel}\"\n", "6:9",
     "sink 'out' topic: unknown placeholder '{tabel}'; did you mean '{table}'?"},
    {"topic_key_placeholder", SRC OUT "topic = \"{db}.{key}\"\n", "6:9",
     "unknown placeholder '{key}'"},
    {"topic_unclosed", SRC OUT "topic = \"{db}.{table\"\n", "6:9",
     "sink 'out' topic: '{' at character 6 is not closed"},
    {"topic_nested", SRC OUT "topic = \"{db{table}}\"\n", "6:9", "'{' at character 1 is not closed"},
    {"topic_stray_close", SRC OUT "topic = \"db}.{table}\"\n", "6:9",
     "'}' at character 3 closes no placeholder"},
    {"topic_empty", SRC OUT "topic = \"\"\n", "6:9", "sink 'out' topic is empty"},
    {"nats_topic_space", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h\"\n"
     "topic = \"cdc {table}\"\n", "7:9", "a NATS subject cannot contain whitespace"},
    {"nats_topic_wildcard", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h\"\n"
     "topic = \"cdc.*.{table}\"\n", "7:9", "a NATS subject cannot contain '*'"},
    {"nats_topic_empty_token", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h\"\n"
     "topic = \"cdc..{table}\"\n", "7:9", "empty token"},
    {"mqtt_topic_wildcard", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"tcp://h:1883\"\n"
     "topic = \"cdc/+/{table}\"\n", "7:9", "cannot contain the wildcard '+'"},
    {"mqtt_state_topic_placeholder", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n"
     "url = \"tcp://h\"\nstate_topic = \"{db}/{table}/{row}\"\n", "7:15",
     "sink 'm' state_topic: unknown placeholder '{row}'"},
    {"redis_key_placeholder", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://h:6379\"\nkey = \"{db}.{key}\"\n", "7:7",
     "sink 'r' key: unknown placeholder '{key}'"},
    // --- keys that belong to another sink type
    {"stream_on_nats", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h\"\n"
     "stream = \"S\"\n", "7:1",
     "key 'stream' is only valid for a jetstream sink; sink 'n' is a nats sink"},
    {"url_on_stdout", SRC OUT "url = \"nats://h\"\n", "6:1",
     "key 'url' is only valid for a nats, jetstream, mqtt or redis sink"},
    {"topic_on_redis", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://h\"\n"
     "topic = \"x\"\n", "7:1", "a redis sink has no 'topic'; use key"},
    {"password_on_redis", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://h\"\n"
     "password = \"x\"\n", "7:1", "put them in the url"},
    {"qos_on_nats", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h\"\n"
     "qos = 1\n", "7:1", "key 'qos' is only valid for an mqtt sink"},
    {"token_on_mqtt", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"tcp://h\"\n"
     "token = \"x\"\n", "7:1", "key 'token' is only valid for a nats or jetstream sink; sink 'm' is an mqtt sink"},
    // --- required per type
    {"nats_no_url", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n", "3:1",
     "sink 'n' (type nats) has no url; add url = \"nats://127.0.0.1:4222\""},
    {"mqtt_no_url", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n", "3:1", "has no url"},
    {"redis_no_url", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n", "3:1",
     "add url = \"redis://127.0.0.1:6379/0\""},
    {"jetstream_no_stream", SRC "[[sink]]\nname = \"j\"\ntype = \"jetstream\"\n"
     "url = \"nats://h\"\n", "3:1", "sink 'j' (type jetstream) has no stream"},
    // --- per-type values
    {"nats_url_scheme", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"http://h:4222\"\n",
     "6:7", "sink 'n' url: scheme 'http' is not supported; it must start with nats:// or tls://"},
    {"nats_url_list_bad_entry", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"nats://a:4222,b:4222\"\n", "6:7", "sink 'n' url: entry #2 of the list: it must start with nats:// or tls://"},
    {"nats_url_list_empty_entry", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"nats://a:4222,\"\n", "6:7", "the comma-separated list has an empty entry"},
    {"nats_password_without_user", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"nats://h\"\npassword = \"p\"\n", "7:12", "password is set without user"},
    {"nats_token_and_user", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"nats://h\"\nuser = \"u\"\ntoken = \"t\"\n", "8:9", "token and user/password"},
    {"nats_creds_and_token", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"nats://h\"\ncreds = \"/c\"\ntoken = \"t\"\n", "7:9", "creds cannot be combined"},
    {"nats_nkey_seed_and_creds", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"nats://h\"\nnkey_seed = \"/s.nk\"\ncreds = \"/c\"\n", "7:13",
     "nkey_seed cannot be combined with creds, token or user/password"},
    {"nats_nkey_seed_and_user", SRC "[[sink]]\nname = \"n\"\ntype = \"jetstream\"\n"
     "url = \"nats://h\"\nstream = \"S\"\nuser = \"u\"\nnkey_seed = \"/s.nk\"\n", "9:13",
     "nkey_seed cannot be combined"},
    {"mqtt_nkey_seed", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n"
     "url = \"tcp://h:1883\"\nnkey_seed = \"/s.nk\"\n", "7:1", "key 'nkey_seed' is only valid for a nats or jetstream sink"},
    {"nats_cert_without_key", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"tls://h\"\ntls_cert = \"/c.pem\"\n", "7:12", "tls_cert is set without tls_key"},
    {"nats_empty_creds", SRC "[[sink]]\nname = \"n\"\ntype = \"nats\"\n"
     "url = \"nats://h\"\ncreds = \"\"\n", "7:9", "sink 'n' creds is empty"},
    {"jetstream_replicas", SRC "[[sink]]\nname = \"j\"\ntype = \"jetstream\"\nurl = \"nats://h\"\n"
     "stream = \"S\"\nreplicas = 6\n", "8:12", "sink 'j' replicas must be from 1 to 5, got 6"},
    {"jetstream_stream_name", SRC "[[sink]]\nname = \"j\"\ntype = \"jetstream\"\n"
     "url = \"nats://h\"\nstream = \"shop.events\"\n", "7:10",
     "'shop.events' is not a valid JetStream stream name"},
    {"jetstream_duplicate_window", SRC "[[sink]]\nname = \"j\"\ntype = \"jetstream\"\n"
     "url = \"nats://h\"\nstream = \"S\"\nduplicate_window = \"2 minutes\"\n", "8:20",
     "sink 'j' duplicate_window '2 minutes' is not a duration"},
    {"jetstream_duplicate_window_int", SRC "[[sink]]\nname = \"j\"\ntype = \"jetstream\"\n"
     "url = \"nats://h\"\nstream = \"S\"\nduplicate_window = 120\n", "8:20",
     "duplicate_window must be a string, got an integer"},
    {"jetstream_create_stream_string", SRC "[[sink]]\nname = \"j\"\ntype = \"jetstream\"\n"
     "url = \"nats://h\"\nstream = \"S\"\ncreate_stream = \"true\"\n", "8:17",
     "write true or false without quotes"},
    {"mqtt_qos", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"tcp://h\"\nqos = 3\n",
     "7:7", "sink 'm' qos must be from 0 to 2, got 3"},
    {"mqtt_qos_string", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"tcp://h\"\n"
     "qos = \"1\"\n", "7:7", "qos must be an integer, got a string; write 1 without quotes"},
    {"mqtt_url_scheme", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"http://h:1883\"\n",
     "6:7", "must start with tcp://, ssl://, mqtt:// or mqtts://"},
    {"mqtt_url_no_scheme", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"h:1883\"\n",
     "6:7", "must start with tcp://"},
    {"mqtt_tls_on_tcp", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"tcp://h\"\n"
     "tls_ca = \"/ca.pem\"\n", "7:10", "tls_ca is set but the url is not TLS"},
    {"mqtt_password_without_user", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n"
     "url = \"tcp://h\"\npassword = \"p\"\n", "7:12", "password is set without user"},
    {"redis_url_scheme", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"rediss://h:6379\"\n", "6:7", "must start with redis://"},
    {"redis_url_port", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://h:99999\"\n", "6:7", "sink 'r' url: the port must be a number from 1 to 65535"},
    {"redis_url_db", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://h:6379/zero\"\n", "6:7", "the database after '/' must be a number"},
    {"redis_url_user_without_password", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://user@h:6379\"\n", "6:7", "must be user:password or :password"},
    {"redis_url_bad_percent", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://u:50%@h:6379\"\n", "6:7", "write %25 for a literal '%'"},
    {"redis_url_query", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://h:6379?db=1\"\n", "6:7", "the database after '/' must be a number"},
    {"redis_url_no_host", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://u:p@:6379\"\n", "6:7", "the host is missing"},
    {"redis_id", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://h\"\n"
     "id = \"uuid\"\n", "7:6", "sink 'r' id must be \"lsn\" or \"auto\", got 'uuid'"},
    {"redis_maxlen_zero", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://h\"\n"
     "maxlen = 0\n", "7:10", "sink 'r' maxlen must be at least 1, got 0"},
    {"redis_wait_timeout_zero", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://h\"\nwait_timeout_ms = 0\n", "7:19", "wait_timeout_ms must be from 1 to"},
    {"redis_wait_aof_string", SRC "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
     "url = \"redis://h\"\nwait_aof = \"yes\"\n", "7:12", "wait_aof must be true or false"},
    {"mqtt_url_with_credentials", SRC "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n"
     "url = \"tcp://u:p@h:1883\"\n", "6:7", "must not contain credentials"},
    // --- the first error in document order inside a table wins
    {"first_error_in_document_order", SRC "status_interval_ms = 1\nslot = \"BAD\"\n" OUT, "3:22",
     "status_interval_ms"},
};

#undef SRC
#undef OUT

class ConfigBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigBad, ReportsFileLineColumnAndCause) {
  const BadCase& c = GetParam();
  Result<Config> r = ParseConfig(c.text, "w.toml", kNoEnv);
  ASSERT_FALSE(r.ok()) << "accepted:\n" << c.text;
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  const std::string& m = r.status().message();
  EXPECT_THAT(m, StartsWith(std::string("w.toml:") + c.where + ": ")) << m;
  EXPECT_THAT(m, HasSubstr(c.phrase)) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

INSTANTIATE_TEST_SUITE_P(Config, ConfigBad, ::testing::ValuesIn(kBadCases),
                         [](const ::testing::TestParamInfo<BadCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(ConfigBadTable, HasAtLeastThirtyCases) { EXPECT_GE(std::size(kBadCases), 30u); }

// ---------------------------------------------------------------------------

TEST(ConfigFile, MissingFile) {
  Result<Config> r = LoadConfig("/nonexistent/walbus.toml", kNoEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "/nonexistent/walbus.toml: cannot read: No such file or directory; check the path given "
            "to -c and that the user running walbus may read it");
}

TEST(ConfigFile, DirectoryIsUnreadable) {
  Result<Config> r = LoadConfig(ConfDir(), kNoEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(": cannot read: Is a directory"));
}

TEST(ConfigFile, FixtureErrorsNameTheFile) {
  std::string path = std::string(WALBUS_FIXTURES_DIR) + "/conf/bad_unknown_sink_key.toml";
  Result<Config> r = LoadConfig(path, kNoEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), StartsWith(path + ":9:1: unknown key 'topik' in sink 'events'"));
}

TEST(ConfigFile, FixtureGoodLoads) {
  std::string path = std::string(WALBUS_FIXTURES_DIR) + "/conf/good_all_sinks.toml";
  Result<Config> r = LoadConfig(path, FakeEnv({{"NATS_TOKEN", "t"}, {"REDIS_PASSWORD", "p"}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->path, path);
  EXPECT_EQ(r->sinks.size(), 5u);
}

TEST(ConfigFile, ExampleLoads) {
  Result<Config> r = LoadConfig(ConfDir() + "/walbus.example.toml", kNoEnv);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->sinks.size(), 1u);
  EXPECT_EQ(r->sinks[0].type, "stdout");
  EXPECT_FALSE(r->source.dsn.empty());
}

// The commented-out broker sinks of the example are valid too once uncommented.
TEST(ConfigFile, ExampleWithEverySinkUncommented) {
  Result<Config> base = LoadConfig(ConfDir() + "/walbus.example.toml", kNoEnv);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  std::string text = ReadWholeFile(ConfDir() + "/walbus.example.toml");
  ASSERT_FALSE(text.empty());
  // Lines "#[[sink]]" and "#key = value" (no space after '#') are the
  // commented-out configuration; "# ..." lines are prose.
  std::string uncommented;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (line.size() > 1 && line[0] == '#' && line[1] != ' ' && line[1] != '#') line.erase(0, 1);
    uncommented += line + "\n";
    pos = end + 1;
  }
  auto env = FakeEnv({{"NATS_PASSWORD", "x"}, {"MQTT_PASSWORD", "y"}, {"REDIS_PASSWORD", "z"},
                      {"PGPASSWORD", "w"}});
  Result<Config> r = ParseConfig(uncommented, "uncommented.toml", env);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->sinks.size(), 5u);
}

TEST(ConfigFile, PerSinkExamplesLoad) {
  auto env = FakeEnv({{"PGPASSWORD", "w"}, {"NATS_PASSWORD", "x"}, {"NATS_TOKEN", "t"},
                      {"MQTT_PASSWORD", "y"}, {"REDIS_PASSWORD", "z"}});
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(ConfDir() + "/examples")) {
    if (entry.path().extension() != ".toml") continue;
    Result<Config> r = LoadConfig(entry.path().string(), env);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    ++loaded;
  }
  EXPECT_GE(loaded, 5);
}

// Like the decoder's truncation tests: every prefix of a valid file, and the
// file with any one byte changed, gives a Config or an InvalidArgument with a
// FILE:LINE:COL prefix, never an exception or a crash.
TEST(ConfigRobust, EveryPrefixAndEveryByteFlip) {
  std::string text = ReadWholeFile(ConfDir() + "/examples/jetstream.toml");
  ASSERT_FALSE(text.empty());
  auto env = FakeEnv({{"PGPASSWORD", "w"}, {"NATS_PASSWORD", "x"}});
  auto check = [&](const std::string& input) {
    Result<Config> r = ParseConfig(input, "p.toml", env);
    if (r.ok()) return;
    ASSERT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
    ASSERT_THAT(r.status().message(), StartsWith("p.toml:")) << input;
    ASSERT_EQ(r.status().message().find('\n'), std::string::npos);
  };
  for (size_t n = 0; n <= text.size(); ++n) check(text.substr(0, n));
  for (size_t i = 0; i < text.size(); ++i) {
    for (char c : {'\0', '"', '[', '$', '{', '\xff'}) {
      std::string flipped = text;
      flipped[i] = c;
      check(flipped);
    }
  }
}

TEST(ConfigRobust, SuggestionsAreOnlyForCloseWords) {
  const char* text = "[source]\ndsn = \"x\"\n[[sink]]\nname = \"m\"\ntype = \"mqtt\"\n"
                     "url = \"tcp://h\"\nqso = 1\nstate_topic = \"{db}/{row}\"\n";
  Result<Config> r = ParseConfig(text, "s.toml", kNoEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("unknown key 'qso' in sink 'm' (type mqtt); did you mean 'qos'?"));
  std::string fixed = std::string(text).replace(std::string(text).find("qso"), 3, "qos");
  r = ParseConfig(fixed, "s.toml", kNoEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("unknown placeholder '{row}'"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("did you mean")));
}

}  // namespace
}  // namespace walbus::conf
