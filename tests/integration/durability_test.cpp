// Durability knobs and value checks against real servers (docs/durability.md):
//  - Redis wait_replicas / wait_timeout_ms with a real replica on loopback: an
//    event is acknowledged (the slot moves) only once the replica has it; with
//    the replica stopped WAIT times out, walbus reports Unavailable, keeps the
//    slot where it was and retries, and once the replica is back every event is
//    in the stream exactly once.
//  - Redis wait_aof against a server older than 7.2 (Debian 12 ships 7.0): one
//    clear error naming the version and the fix, from `walbus check` and `run`.
//  - JetStream: the stream walbus creates has the configured duplicate window,
//    and walbus warns (one line, at most once a minute) when its lag exceeds it.
//  - json: a value that is not JSON (stored through a cast from text WITHOUT
//    FUNCTION, which a superuser may create) stops walbus with a clear error
//    and never reaches a broker as a broken envelope.
// Servers: PostgreSQL 56350, nats 56351, redis 56352 (master) and 56353
// (replica), under /tmp/walbus-be-*, serialised by the port lock.
#include <hiredis/hiredis.h>
#include <nats/nats.h>

#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kNatsPort = 56351;
constexpr int kRedisPort = 56352;
constexpr int kReplicaPort = 56353;

using DurabilityBase = PgFixtureOnPort<56350>;
class Durability : public DurabilityBase {
 protected:
  // A config with one sink of the given TOML body (after `[[sink]]`).
  std::string Config(const std::string& name, const std::string& sink) {
    std::string path = dir() + "/" + name + ".toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + dsn() + "\"\n"
                    "slot = \"dur_slot\"\n"
                    "publication = \"dur_pub\"\n"
                    "status_interval_ms = 100\n"
                    "\n[metrics]\nlisten = \"\"\n"
                    "\n[[sink]]\n" + sink);
    return path;
  }

  // Starts walbus and waits for "streaming".
  bool Run(Child* child, const std::string& config, const std::string& tag) {
    return StartRun(child, config, tag, 60s);
  }
};

// A synchronous hiredis connection for checking what the servers hold.
class Redis {
 public:
  explicit Redis(int port) : ctx_(redisConnect("127.0.0.1", port)) {}
  ~Redis() {
    if (ctx_ != nullptr) redisFree(ctx_);
  }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  // The reply as text (bulk/status/error) or number; "" when there is none.
  std::string Cmd(const std::vector<std::string>& args) {
    if (ctx_ == nullptr || ctx_->err != 0) return "";
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.c_str());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r == nullptr) return "";
    std::string out;
    if (r->type == REDIS_REPLY_INTEGER) {
      out = std::to_string(r->integer);
    } else if (r->str != nullptr) {
      out.assign(r->str, r->len);
    }
    freeReplyObject(r);
    return out;
  }

  // Field "id" (the event id) of every entry of a stream, in order.
  std::vector<std::string> EventIds(const std::string& key) {
    std::vector<std::string> ids;
    if (ctx_ == nullptr || ctx_->err != 0) return ids;
    auto* r = static_cast<redisReply*>(redisCommand(ctx_, "XRANGE %s - +", key.c_str()));
    if (r == nullptr) return ids;
    if (r->type == REDIS_REPLY_ARRAY) {
      for (size_t i = 0; i < r->elements; ++i) {
        const redisReply* fields = r->element[i]->element[1];
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
          if (std::string(fields->element[f]->str) == "id") ids.emplace_back(fields->element[f + 1]->str);
        }
      }
    }
    freeReplyObject(r);
    return ids;
  }

 private:
  redisContext* ctx_;
};

size_t CountOf(const std::string& text, std::string_view needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// ------------------------------------------------------------------- redis

TEST_F(Durability, RedisWaitReplicasAcknowledgesOnlyReplicatedEventsAndLosesNothing) {
  ComposeBroker master(ComposeBroker::Kind::kRedis, kRedisPort, "/tmp/walbus-be-redis-56352");
  ComposeBroker replica(ComposeBroker::Kind::kRedis, kReplicaPort, "/tmp/walbus-be-redis-56353",
                        "WALBUS_REDIS_OPTS='--replicaof 127.0.0.1 " + std::to_string(kRedisPort) +
                            "'");
  ASSERT_TRUE(master.Start());
  ASSERT_TRUE(replica.Start());
  Redis m(kRedisPort), r(kReplicaPort);
  auto replica_online = [&] {
    return Contains(m.Cmd({"INFO", "replication"}), "connected_slaves:1") &&
           Contains(m.Cmd({"INFO", "replication"}), "state=online");
  };
  ASSERT_TRUE(WaitUntil(replica_online, 30s)) << m.Cmd({"INFO", "replication"});

  ASSERT_TRUE(sql().Exec("CREATE TABLE t (id int PRIMARY KEY, v text);"
                         "CREATE PUBLICATION dur_pub FOR TABLE t;"));
  const std::string key = "dur.public.t";
  std::string cfg = Config("redis", "name = \"redis\"\ntype = \"redis\"\nurl = \"" + master.Url() +
                                        "\"\nkey = \"dur.{schema}.{table}\"\n"
                                        "wait_replicas = 1\nwait_timeout_ms = 300\n");
  Child walbus;
  ASSERT_TRUE(Run(&walbus, cfg, "run"));

  // Replica up: acknowledged, and the replica holds every entry.
  for (int txn = 0; txn < 4; ++txn) {
    std::string values;
    for (int i = 1; i <= 5; ++i) {
      int id = txn * 5 + i;
      values += (values.empty() ? "" : ",") + ("(" + std::to_string(id) + ", 'v')");
    }
    ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES " + values));
  }
  uint64_t first_end = sql().CurrentWalLsn();
  uint64_t confirmed = 0;
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "dur_slot", first_end, 60s, &confirmed))
      << "confirmed " << FormatLsn(confirmed) << ", wanted " << FormatLsn(first_end)
      << "; stderr:\n" << walbus.err();
  EXPECT_EQ(r.Cmd({"XLEN", key}), "20");
  EXPECT_EQ(m.Cmd({"XLEN", key}), "20");

  // Replica gone: WAIT times out, Unavailable, the slot stays behind.
  replica.Stop();
  ASSERT_TRUE(WaitUntil([&] { return !Contains(m.Cmd({"INFO", "replication"}), "state=online"); },
                        30s));
  ASSERT_TRUE(sql().Exec("INSERT INTO t SELECT g, 'w' FROM generate_series(21, 30) g"));
  uint64_t second_end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitUntil([&] { return Contains(walbus.err(), "only 0 of 1 replicas"); }, 30s))
      << walbus.err();
  EXPECT_TRUE(walbus.Running());
  std::this_thread::sleep_for(2s);
  std::optional<uint64_t> held = sql().SlotConfirmed("dur_slot");
  ASSERT_TRUE(held.has_value());
  EXPECT_LT(*held, second_end) << "the slot moved past events no replica acknowledged";
  // The master has them (in memory): that alone is not an acknowledgement.
  EXPECT_EQ(m.Cmd({"XLEN", key}), "30");

  // Replica back: the retry gets its acknowledgement; every event once.
  ASSERT_TRUE(replica.Start(/*fresh=*/false));
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "dur_slot", second_end, 90s, &confirmed))
      << "confirmed " << FormatLsn(confirmed) << ", wanted " << FormatLsn(second_end)
      << "; stderr:\n" << walbus.err();
  Redis r2(kReplicaPort);  // the first connection died with the replica
  ASSERT_TRUE(WaitUntil([&] { return r2.Cmd({"XLEN", key}) == "30"; }, 30s))
      << r2.Cmd({"XLEN", key});
  std::vector<std::string> ids = m.EventIds(key);
  EXPECT_EQ(ids.size(), 30u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 30u) << "an event twice";
  EXPECT_EQ(Stop(&walbus), std::optional<int>(0)) << walbus.err();
}

TEST_F(Durability, RedisWaitAofOnRedisOlderThan72IsOneClearError) {
  ComposeBroker master(ComposeBroker::Kind::kRedis, kRedisPort, "/tmp/walbus-be-redis-56352",
                       "WALBUS_REDIS_AOF=1");
  ASSERT_TRUE(master.Start());
  Redis m(kRedisPort);
  std::string info = m.Cmd({"INFO", "server"});
  size_t at = info.find("redis_version:");
  ASSERT_NE(at, std::string::npos) << info;
  std::string version = info.substr(at + 14, info.find_first_of("\r\n", at) - at - 14);
  int major = std::atoi(version.c_str());
  int minor = std::atoi(version.c_str() + version.find('.') + 1);
  if (major > 7 || (major == 7 && minor >= 2)) GTEST_SKIP() << "redis " << version << " has WAITAOF";

  ASSERT_TRUE(sql().Exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION dur_pub FOR TABLE t;"));
  std::string cfg = Config("aof", "name = \"redis\"\ntype = \"redis\"\nurl = \"" + master.Url() +
                                      "\"\nwait_aof = true\n");
  RunResult check = RunWalbus({"check", "-c", cfg}, dir(), "check");
  EXPECT_EQ(check.code, std::optional<int>(1)) << check.out << check.err;
  std::string said = check.out + check.err;
  EXPECT_NE(said.find("is Redis " + version), std::string::npos) << said;
  EXPECT_NE(said.find("wait_aof needs WAITAOF, Redis 7.2 or newer"), std::string::npos) << said;
  EXPECT_NE(said.find("set wait_aof = false"), std::string::npos) << said;

  RunResult run = RunWalbus({"run", "-c", cfg}, dir(), "run", 60s);
  EXPECT_EQ(run.code, std::optional<int>(1)) << run.err;
  EXPECT_NE(run.err.find("is Redis " + version), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("wait_aof needs WAITAOF"), std::string::npos) << run.err;
  EXPECT_LE(CountOf(run.err, "wait_aof needs WAITAOF"), 2u) << run.err;
}

// --------------------------------------------------------------- jetstream

struct NatsConn {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  explicit NatsConn(const std::string& url) {
    if (natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK) natsConnection_JetStream(&js, nc, nullptr);
  }
  ~NatsConn() {
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  // The stream's duplicate window in ns and message count; -1 when unreadable.
  std::pair<int64_t, int64_t> Stream(const char* name) {
    jsStreamInfo* si = nullptr;
    if (js == nullptr || js_GetStreamInfo(&si, js, name, nullptr, nullptr) != NATS_OK) {
      return {-1, -1};
    }
    std::pair<int64_t, int64_t> out{si->Config->Duplicates, static_cast<int64_t>(si->State.Msgs)};
    jsStreamInfo_Destroy(si);
    return out;
  }
};

TEST_F(Durability, JetStreamWarnsOnceAMinuteWhenLagExceedsTheDuplicateWindow) {
  ComposeBroker nats(ComposeBroker::Kind::kNats, kNatsPort, "/tmp/walbus-be-nats-56351",
                     "WALBUS_NATS_HTTP_PORT=0");
  ASSERT_TRUE(nats.Start());
  ASSERT_TRUE(sql().Exec("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION dur_pub FOR TABLE t;"));
  std::string cfg = Config("js", "name = \"js\"\ntype = \"jetstream\"\nurl = \"" + nats.Url() +
                                     "\"\nstream = \"WALBUS_DUR\"\nduplicate_window = \"3s\"\n"
                                     "topic = \"dur.{schema}.{table}.{op}\"\n");
  const std::string kWarning = "WARN jetstream lag exceeds the stream's duplicate window";
  NatsConn peer(nats.Url());

  Child walbus;
  ASSERT_TRUE(Run(&walbus, cfg, "run1"));
  // Created by walbus with the configured window.
  EXPECT_EQ(peer.Stream("WALBUS_DUR").first, int64_t{3'000'000'000});
  ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (1)"));
  ASSERT_TRUE(WaitUntil([&] { return peer.Stream("WALBUS_DUR").second == 1; }, 30s));
  EXPECT_EQ(CountOf(walbus.err(), kWarning), 0u) << walbus.err();

  // Lag: walbus stopped while transactions commit, started 6 s later.
  ASSERT_EQ(Stop(&walbus), std::optional<int>(0)) << walbus.err();
  for (int id = 2; id <= 4; ++id) ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (" + std::to_string(id) + ")"));
  std::this_thread::sleep_for(6s);
  ASSERT_TRUE(Run(&walbus, cfg, "run2"));
  ASSERT_TRUE(WaitUntil([&] { return peer.Stream("WALBUS_DUR").second == 4; }, 30s));
  ASSERT_TRUE(WaitUntil([&] { return CountOf(walbus.err(), kWarning) >= 1; }, 10s)) << walbus.err();
  std::vector<std::string> lines = LinesWith(walbus.err(), kWarning);
  ASSERT_EQ(lines.size(), 1u) << walbus.err();
  EXPECT_TRUE(Contains(lines[0], "duplicate_window_s=3.0")) << lines[0];
  EXPECT_TRUE(Contains(lines[0], "stream=WALBUS_DUR")) << lines[0];

  // Lag again within the minute (walbus frozen while more commits): no second line.
  ASSERT_TRUE(walbus.Signal(SIGSTOP));
  ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (5)"));
  std::this_thread::sleep_for(5s);
  ASSERT_TRUE(walbus.Signal(SIGCONT));
  ASSERT_TRUE(WaitUntil([&] { return peer.Stream("WALBUS_DUR").second == 5; }, 30s));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(CountOf(walbus.err(), kWarning), 1u) << walbus.err();
  EXPECT_EQ(Stop(&walbus), std::optional<int>(0)) << walbus.err();
}

// -------------------------------------------------------------------- json

TEST_F(Durability, JsonThatIsNotJsonStopsWalbusWithAClearErrorAndNoBrokenEnvelope) {
  // Only a superuser can do this; the fixture's user is one.
  ASSERT_TRUE(sql().Exec("CREATE TABLE j (id int PRIMARY KEY, doc json, docs json[]);"
                         "CREATE PUBLICATION dur_pub FOR TABLE j;"));
  std::string cfg = Config("json", "name = \"out\"\ntype = \"stdout\"\n");
  Child walbus;
  ASSERT_TRUE(Run(&walbus, cfg, "run"));
  ASSERT_TRUE(sql().Exec("INSERT INTO j VALUES (1, '{\"a\": [1, 2]}', ARRAY['{\"b\": null}']::json[])"));
  ASSERT_TRUE(WaitUntil([&] { return CountLines(walbus.out_path()) >= 1; }, 30s)) << walbus.err();
  uint64_t good_end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "dur_slot", good_end, 30s));

  ASSERT_TRUE(sql().Exec("DROP CAST IF EXISTS (text AS json); "
                         "CREATE CAST (text AS json) WITHOUT FUNCTION"));
  ASSERT_TRUE(sql().Exec("INSERT INTO j VALUES (2, '[1, {\"secret\": 7'::text::json, NULL)"));
  uint64_t bad_end = sql().CurrentWalLsn();
  std::optional<int> code = walbus.Wait(60s);
  EXPECT_EQ(code, std::optional<int>(1)) << walbus.err();
  std::string err = walbus.err();
  EXPECT_TRUE(Contains(err, "not valid JSON")) << err;
  EXPECT_TRUE(Contains(err, "public.j")) << err;
  EXPECT_TRUE(Contains(err, " in the transaction committing at ")) << err;
  // Bad stored data, not a walbus bug: the line names the fix instead.
  EXPECT_TRUE(Contains(err, "DROP CAST (text AS json)")) << err;
  EXPECT_FALSE(Contains(err, "walbus bug")) << err;
  EXPECT_TRUE(Contains(err, "code=\"failed precondition\"")) << err;
  for (const std::string& line : LinesWith(err, " ERROR ")) std::printf("[ info ] %s\n", line.c_str());
  EXPECT_FALSE(Contains(err, "secret")) << "the value leaked into the log: " << err;
  // One good envelope, nothing else, and the bad transaction is not confirmed.
  std::vector<Envelope> got = ParseOutput(walbus.out_path());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].Field("after"), R"({"id":1,"doc":{"a":[1,2]},"docs":[{"b":null}]})");
  std::optional<uint64_t> confirmed = sql().SlotConfirmed("dur_slot");
  ASSERT_TRUE(confirmed.has_value());
  EXPECT_LT(*confirmed, bad_end);
  EXPECT_TRUE(sql().Exec("DROP CAST (text AS json)"));
}

}  // namespace
}  // namespace walbus::itest
