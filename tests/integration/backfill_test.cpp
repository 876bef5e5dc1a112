// `walbus backfill` (docs/backfill.md) against real servers: PostgreSQL 15 on
// port 56300 and Redis on 56301 (ports 56300-56349 belong to this file).
//
//  - Consistency under load: 50,000 rows, walbus streaming into stdout and a
//    Redis stream, a writer inserting, updating, deleting and changing primary
//    keys (concentrated just ahead of the backfill's progress, so chunk windows
//    see changes); the state rebuilt from every event, in stream order
//    (read/insert/update/delete by key), equals the table, from the stdout
//    output and from Redis alike; every row that existed untouched throughout
//    has a read event; watermark messages never reach a sink.
//  - kill -9 of walbus in the middle of a backfill: the restarted walbus
//    resumes after the last confirmed chunk, completes it, and the same
//    equality holds over both runs' output and over Redis.
//  - The replication connection cut three times during a backfill: rewinds
//    read the unconfirmed chunks again; the same equality holds.
//  - The error lines: not in the publication, no primary key, no such table,
//    a name without schema, a bad --chunk-size; nothing is registered.
#include <atomic>
#include <map>
#include <random>
#include <set>

#if __has_include(<hiredis/hiredis.h>)
#include <hiredis/hiredis.h>
#define WALBUS_TEST_REDIS 1
#endif

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPgPort = 56300;
constexpr int kRedisPort = 56301;
constexpr int kMetricsPort = 56302;
constexpr int kRows = 50000;

class Backfill : public PgFixtureOnPort<kPgPort> {
 public:
  static void SetUpTestSuite() {
    PgFixtureOnPort<kPgPort>::SetUpTestSuite();
#ifdef WALBUS_TEST_REDIS
    redis_ = std::make_unique<ComposeBroker>(ComposeBroker::Kind::kRedis, kRedisPort,
                                             "/tmp/walbus-be-backfill-redis-" +
                                                 std::to_string(kRedisPort));
    redis_ok_ = redis_->Start();
#endif
  }
  static void TearDownTestSuite() {
    redis_.reset();
    PgFixtureOnPort<kPgPort>::TearDownTestSuite();
  }

 protected:
  void SetUp() override {
    PgFixtureOnPort<kPgPort>::SetUp();
    sql().Exec("DROP SCHEMA IF EXISTS walbus CASCADE");
#ifdef WALBUS_TEST_REDIS
    ASSERT_TRUE(redis_ok_) << "redis-server on " << kRedisPort << " did not start";
    ASSERT_EQ(Shell("redis-cli -p " + std::to_string(kRedisPort) + " FLUSHALL").code, 0);
#endif
  }

  std::string Config(const std::string& name, const std::string& slot,
                     const std::string& publication, const std::string& metrics = "") {
    std::string path = dir() + "/" + name + ".toml";
    std::string text = "[source]\ndsn = \"" + dsn() + "\"\nslot = \"" + slot +
                       "\"\npublication = \"" + publication +
                       "\"\nstatus_interval_ms = 200\nstandby_retry_ms = 300\n"
                       "messages = true\n\n[metrics]\nlisten = \"" + metrics + "\"\n\n"
                       "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n";
#ifdef WALBUS_TEST_REDIS
    text += "\n[[sink]]\nname = \"redis\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:" +
            std::to_string(kRedisPort) + "\"\n";
#endif
    WriteFile(path, text);
    return path;
  }

  static inline std::unique_ptr<ComposeBroker> redis_;
  static inline bool redis_ok_ = false;
};

// The table's rows as the test compares them: id -> "v|note".
using State = std::map<int64_t, std::string>;

std::string RowText(const rapidjson::Value& after) {
  const rapidjson::Value& v = Member(after, "v");
  const rapidjson::Value& note = Member(after, "note");
  return (v.IsInt64() ? std::to_string(v.GetInt64()) : "?" + ToJson(v)) + "|" +
         (note.IsString() ? std::string(note.GetString()) : ToJson(note));
}

State TableState(Pg& pg) {
  State s;
  for (const Row& r : pg.Query("SELECT id, v, coalesce(note, 'null') FROM items")) {
    s[std::stoll(*r[0])] = *r[1] + "|" + *r[2];
  }
  return s;
}

struct Rebuilt {
  State state;
  std::set<int64_t> read_keys;
  size_t reads = 0;
  std::set<std::string> read_ids;
  size_t duplicate_read_ids = 0;
  size_t walbus_messages = 0;
  size_t walbus_rows = 0;  // changes of walbus's own tables (never published)
  size_t app_messages = 0;
  size_t bad = 0;
};

// Applies one envelope (JSON text) to *r, in stream order.
void Apply(const std::string& json, Rebuilt* r) {
  rapidjson::Document d;
  d.Parse(json.c_str(), json.size());
  if (d.HasParseError() || !d.IsObject()) {
    ++r->bad;
    return;
  }
  std::string op = Member(d, "op").IsString() ? Member(d, "op").GetString() : "";
  if (op == "message") {
    std::string prefix = Member(d, "prefix").IsString() ? Member(d, "prefix").GetString() : "";
    if (prefix == "walbus") ++r->walbus_messages;
    if (prefix == "app") ++r->app_messages;
    return;
  }
  const rapidjson::Value& src = Member(d, "source");
  if (Member(src, "schema").IsString() && std::string(Member(src, "schema").GetString()) == "walbus") {
    ++r->walbus_rows;
  }
  if (!Member(src, "table").IsString() || std::string(Member(src, "table").GetString()) != "items") {
    return;
  }
  const rapidjson::Value& key = Member(Member(d, "key"), "id");
  if (!key.IsInt64()) {
    ++r->bad;
    return;
  }
  int64_t id = key.GetInt64();
  if (op == "delete") {
    r->state.erase(id);
    return;
  }
  if (op != "insert" && op != "update" && op != "read") {
    ++r->bad;
    return;
  }
  // A primary-key change (REPLICA IDENTITY FULL): the old key is gone.
  const rapidjson::Value& before_id = Member(Member(d, "before"), "id");
  if (op == "update" && before_id.IsInt64() && before_id.GetInt64() != id) {
    r->state.erase(before_id.GetInt64());
  }
  r->state[id] = RowText(Member(d, "after"));
  if (op == "read") {
    ++r->reads;
    r->read_keys.insert(id);
    std::string eid = Member(d, "id").IsString() ? Member(d, "id").GetString() : "";
    if (!r->read_ids.insert(eid).second) ++r->duplicate_read_ids;
  }
}

Rebuilt FromFiles(const std::vector<std::string>& paths) {
  Rebuilt r;
  for (const std::string& p : paths) {
    for (const std::string& line : ReadLines(p)) {
      size_t tab = line.find('\t');
      if (tab == std::string::npos) {
        ++r.bad;
        continue;
      }
      Apply(line.substr(tab + 1), &r);
    }
  }
  return r;
}

#ifdef WALBUS_TEST_REDIS
// Every entry of the stream `key`, in entry-id order, applied to a Rebuilt.
Rebuilt FromRedis(const std::string& key) {
  Rebuilt r;
  std::unique_ptr<redisContext, decltype(&redisFree)> c(redisConnect("127.0.0.1", kRedisPort),
                                                       &redisFree);
  if (!c || c->err) {
    ADD_FAILURE() << "cannot connect to redis-server on " << kRedisPort;
    return r;
  }
  std::string start = "-";
  for (;;) {
    std::vector<std::string> args = {"XRANGE", key, start, "+", "COUNT", "10000"};
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    std::unique_ptr<redisReply, decltype(&freeReplyObject)> reply(
        static_cast<redisReply*>(
            redisCommandArgv(c.get(), static_cast<int>(argv.size()), argv.data(), lens.data())),
        &freeReplyObject);
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
      ADD_FAILURE() << "XRANGE " << key << " failed";
      return r;
    }
    if (reply->elements == 0) break;
    for (size_t i = 0; i < reply->elements; ++i) {
      const redisReply* entry = reply->element[i];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) {
        ADD_FAILURE() << "unexpected XRANGE entry";
        return r;
      }
      start.assign(1, '(');
      start.append(entry->element[0]->str, entry->element[0]->len);
      const redisReply* fields = entry->element[1];
      for (size_t f = 0; f + 1 < fields->elements; f += 2) {
        if (std::string(fields->element[f]->str, fields->element[f]->len) == "event") {
          Apply(std::string(fields->element[f + 1]->str, fields->element[f + 1]->len), &r);
        }
      }
    }
  }
  return r;
}
#endif

// A writer: inserts, updates, deletes (and primary-key changes with
// `key_changes`), mostly just ahead of the backfill's saved position so that
// chunk windows see changes. Records every id it touched.
class Writer {
 public:
  Writer(const std::string& dsn, bool key_changes, unsigned seed)
      : dsn_(dsn), key_changes_(key_changes), seed_(seed) {}
  ~Writer() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  const std::set<int64_t>& touched() const { return touched_; }
  uint64_t ops() const { return ops_.load(); }
  const std::string& error() const { return error_; }

 private:
  void Loop() {
    Pg pg(dsn_);
    std::mt19937 rng(seed_);
    // New keys far above the initial ones: pick() never collides with them.
    int64_t next_id = 10 * kRows + 1;
    int64_t focus = 1;
    auto t0 = Clock::now();
    while (!stop_.load()) {
      if (SecondsSince(t0) > 0.2) {  // follow the backfill's progress
        t0 = Clock::now();
        if (pg.Scalar("SELECT to_regclass('walbus.backfill') IS NOT NULL") ==
            std::optional<std::string>("t")) {
          std::optional<std::string> k = pg.Scalar(
              "SELECT coalesce(max(last_key[1]::bigint), 1)::text FROM walbus.backfill");
          focus = k ? std::stoll(*k) : 1;
        }
      }
      auto pick = [&]() -> int64_t {
        if (rng() % 4 != 0 && focus < kRows) {
          return std::min<int64_t>(kRows, focus + static_cast<int64_t>(rng() % 3000));
        }
        return 1 + static_cast<int64_t>(rng() % kRows);
      };
      std::string sql;
      unsigned dice = rng() % 100;
      int64_t a = pick();
      std::vector<int64_t> ids = {a};
      if (dice < 45) {
        sql = "UPDATE items SET v = v + 1, note = md5(random()::text) WHERE id = " +
              std::to_string(a);
      } else if (dice < 60) {
        int64_t id = next_id++;
        ids = {id};
        sql = "INSERT INTO items VALUES (" + std::to_string(id) + ", 7, 'new')";
      } else if (dice < 72) {
        sql = "DELETE FROM items WHERE id = " + std::to_string(a);
      } else if (dice < 82) {
        sql = "INSERT INTO items VALUES (" + std::to_string(a) +
              ", -1, 'again') ON CONFLICT (id) DO UPDATE SET note = 'conflict'";
      } else if (dice < 94 || !key_changes_) {
        int64_t b = pick(), c = pick();
        ids = {a, b, c};
        sql = "BEGIN; UPDATE items SET v = v * 2 WHERE id = " + std::to_string(a) +
              "; DELETE FROM items WHERE id = " + std::to_string(b) +
              "; UPDATE items SET note = NULL WHERE id = " + std::to_string(c) + "; COMMIT";
      } else {
        int64_t to = next_id++;
        ids = {a, to};
        sql = "UPDATE items SET id = " + std::to_string(to) + " WHERE id = " + std::to_string(a);
      }
      touched_.insert(ids.begin(), ids.end());
      std::string err = pg.TryExec(sql);
      if (!err.empty()) {
        pg.TryExec("ROLLBACK");
        if (error_.empty()) error_ = sql + ": " + err;
      }
      ++ops_;
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  }

  std::string dsn_;
  bool key_changes_;
  unsigned seed_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ops_{0};
  std::set<int64_t> touched_;
  std::string error_;
  std::thread thread_;
};

void CreateItems(Pg& pg, bool full_identity) {
  ASSERT_TRUE(pg.Exec(
      "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);"
      "INSERT INTO items SELECT g, g % 1000, md5(g::text) FROM generate_series(1, " +
      std::to_string(kRows) + ") g; ANALYZE items;"
      "CREATE TABLE other (id int PRIMARY KEY); CREATE TABLE nopk (a int);"
      "CREATE PUBLICATION bf FOR TABLE items, nopk"));
  if (full_identity) {
    ASSERT_TRUE(pg.Exec("ALTER TABLE items REPLICA IDENTITY FULL"));
  }
}

// Compares a rebuilt state with the table and checks the coverage rules.
void ExpectConsistent(const Rebuilt& r, const State& table, const std::set<int64_t>& touched,
                      const std::string& what) {
  EXPECT_EQ(r.bad, 0u) << what;
  EXPECT_EQ(r.walbus_messages, 0u) << what << ": a watermark reached a sink";
  EXPECT_EQ(r.walbus_rows, 0u) << what << ": walbus.backfill changes reached a sink";
  EXPECT_EQ(r.duplicate_read_ids, 0u) << what;
  size_t missing = 0, extra = 0, differ = 0;
  std::string example;
  for (const auto& [id, row] : table) {
    auto it = r.state.find(id);
    if (it == r.state.end()) {
      if (++missing == 1) example = "missing id " + std::to_string(id);
    } else if (it->second != row) {
      if (++differ == 1) example = "id " + std::to_string(id) + ": " + it->second + " vs " + row;
    }
  }
  for (const auto& [id, row] : r.state) {
    if (table.count(id) == 0 && ++extra == 1) example = "extra id " + std::to_string(id);
  }
  EXPECT_EQ(missing + extra + differ, 0u)
      << what << ": " << missing << " missing, " << extra << " extra, " << differ
      << " different rows (e.g. " << example << ") of " << table.size();
  // Rows that existed throughout (never written by the load) were all read.
  size_t untouched = 0, unread = 0;
  for (int64_t id = 1; id <= kRows; ++id) {
    if (touched.count(id) != 0) continue;
    ++untouched;
    if (r.read_keys.count(id) == 0) ++unread;
  }
  EXPECT_EQ(unread, 0u) << what << ": untouched rows without a read event";
  EXPECT_GE(r.reads, untouched) << what;
}

TEST_F(Backfill, ConsistentWithTheStreamUnderLoad) {
  CreateItems(sql(), /*full_identity=*/true);
  std::string cfg = Config("c", "bf_slot", "bf", "127.0.0.1:" + std::to_string(kMetricsPort));
  Child run;
  ASSERT_TRUE(StartRun(&run, cfg, "run"));

  Writer writer(dsn(), /*key_changes=*/true, 20261125);
  writer.Start();
  std::this_thread::sleep_for(500ms);
  sql().Exec("SELECT pg_logical_emit_message(true, 'app', 'hello')");
  auto t0 = Clock::now();
  RunResult bf =
      RunWalbus({"backfill", "-c", cfg, "--chunk-size", "1000", "public.items"}, dir(), "bf", 150s);
  double secs = SecondsSince(t0);
  writer.Stop();
  ASSERT_EQ(bf.code, std::optional<int>(0)) << bf.out << bf.err << "\nwalbus:\n" << run.err();
  EXPECT_TRUE(Contains(bf.out, "requested: public.items (request ")) << bf.out;
  EXPECT_TRUE(Contains(bf.out, "public.items: done, ")) << bf.out;
  EXPECT_TRUE(writer.error().empty()) << writer.error();

  uint64_t end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "bf_slot", end, 60s)) << run.err();
  ASSERT_TRUE(run.Running()) << run.err();
  State table = TableState(sql());
  Rows progress = sql().Query("SELECT state, rows, skipped, chunks FROM walbus.backfill");
  ASSERT_EQ(progress.size(), 1u);
  std::printf("[ info ] backfill of %d rows under %llu writes took %.1f s: %s rows read, %s "
              "left to the stream, %s chunks; table now %zu rows\n",
              kRows, static_cast<unsigned long long>(writer.ops()), secs,
              progress[0][1]->c_str(), progress[0][2]->c_str(), progress[0][3]->c_str(),
              table.size());
  EXPECT_EQ(*progress[0][0], "done");
  EXPECT_TRUE(Contains(run.err(), "INFO backfill started")) << run.err();
  EXPECT_TRUE(Contains(run.err(), "INFO backfill done")) << run.err();

  Rebuilt out = FromFiles({run.out_path()});
  EXPECT_EQ(out.app_messages, 1u) << "the user's message, published once";
  EXPECT_EQ(std::to_string(out.reads), *progress[0][1]);
  ExpectConsistent(out, table, writer.touched(), "stdout");
  std::string metrics = HttpGet(kMetricsPort, "/metrics", 3s);
  EXPECT_TRUE(Contains(metrics, "walbus_snapshot_rows_total{table=\"public.items\"} " +
                                    std::to_string(out.reads) + "\n"))
      << LinesWith(metrics, "snapshot_rows").size() << " lines:\n"
      << (LinesWith(metrics, "snapshot_rows").empty() ? metrics.substr(0, 2000)
                                                      : LinesWith(metrics, "snapshot_rows")[0]);
#ifdef WALBUS_TEST_REDIS
  Rebuilt redis = FromRedis("postgres.public.items");
  EXPECT_EQ(redis.reads, out.reads);
  ExpectConsistent(redis, table, writer.touched(), "redis");
#endif
  EXPECT_EQ(Stop(&run), std::optional<int>(0)) << run.err();
}

TEST_F(Backfill, ResumesAfterKillNine) {
  // FOR ALL TABLES: walbus.backfill is published too, and must stay internal.
  CreateItems(sql(), /*full_identity=*/false);
  ASSERT_TRUE(sql().Exec("CREATE PUBLICATION bfall FOR ALL TABLES"));
  std::string cfg = Config("c", "bf_slot", "bfall");
  Child run1;
  ASSERT_TRUE(StartRun(&run1, cfg, "run1"));
  Writer writer(dsn(), /*key_changes=*/false, 777);
  writer.Start();

  RunResult bf = RunWalbus({"backfill", "-c", cfg, "--no-wait", "--chunk-size", "100",
                            "public.items"},
                           dir(), "bf", 30s);
  ASSERT_EQ(bf.code, std::optional<int>(0)) << bf.out << bf.err;
  EXPECT_TRUE(Contains(bf.out, "requested: public.items")) << bf.out;
  RunResult again = RunWalbus({"backfill", "-c", cfg, "--no-wait", "public.items"}, dir(), "bf2");
  EXPECT_EQ(again.code, std::optional<int>(0)) << again.err;
  EXPECT_TRUE(Contains(again.out, "already requested: public.items")) << again.out;

  // Kill -9 once some chunks are confirmed and saved, well before the end.
  std::string rows_then;
  bool midway = WaitUntil(
      [&] {
        Rows r = sql().Query("SELECT state, rows FROM walbus.backfill");
        if (r.empty()) return false;
        rows_then = *r[0][1];
        return std::stoll(rows_then) >= 3000 || *r[0][0] == "done";
      },
      60s, 10ms);
  ASSERT_TRUE(midway) << run1.err();
  ASSERT_TRUE(run1.Signal(SIGKILL));
  run1.Wait(10s);
  Rows at_kill = sql().Query("SELECT state, rows, chunks FROM walbus.backfill");
  ASSERT_EQ(*at_kill[0][0], "running") << "the backfill ended before the kill; rows " << rows_then;
  std::printf("[ info ] killed walbus with %s rows (%s chunks) saved\n", at_kill[0][1]->c_str(),
              at_kill[0][2]->c_str());

  Child run2;
  ASSERT_TRUE(StartRun(&run2, cfg, "run2"));
  bool done = WaitUntil(
      [&] {
        return sql().Scalar("SELECT state FROM walbus.backfill") == std::optional<std::string>("done");
      },
      120s, 100ms);
  writer.Stop();
  ASSERT_TRUE(done) << run2.err();
  EXPECT_TRUE(writer.error().empty()) << writer.error();
  EXPECT_TRUE(Contains(run2.err(), "INFO backfill resuming")) << run2.err();

  uint64_t end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "bf_slot", end, 60s)) << run2.err();
  State table = TableState(sql());
  Rebuilt out = FromFiles({run1.out_path(), run2.out_path()});
  ExpectConsistent(out, table, writer.touched(), "stdout of both runs");
#ifdef WALBUS_TEST_REDIS
  ExpectConsistent(FromRedis("postgres.public.items"), table, writer.touched(), "redis");
#endif
  EXPECT_EQ(Stop(&run2), std::optional<int>(0)) << run2.err();
}

// The replication connection is cut three times during a backfill: each time
// walbus rewinds to the confirmed LSN, and the chunks not confirmed yet are
// read again after the reconnect.
TEST_F(Backfill, SurvivesReconnects) {
  CreateItems(sql(), /*full_identity=*/false);
  std::string cfg = Config("c", "bf_slot", "bf");
  Child run;
  ASSERT_TRUE(StartRun(&run, cfg, "run"));
  Writer writer(dsn(), /*key_changes=*/false, 4242);
  writer.Start();
  RunResult bf = RunWalbus({"backfill", "-c", cfg, "--no-wait", "--chunk-size", "100",
                            "public.items"},
                           dir(), "bf", 30s);
  ASSERT_EQ(bf.code, std::optional<int>(0)) << bf.out << bf.err;
  int cuts = 0;
  for (int64_t at : {2000, 12000, 25000}) {
    bool reached = WaitUntil(
        [&] {
          std::optional<std::string> r = sql().Scalar("SELECT rows FROM walbus.backfill");
          return r && std::stoll(*r) >= at;
        },
        60s, 10ms);
    ASSERT_TRUE(reached) << run.err();
    if (sql().Scalar("SELECT state FROM walbus.backfill") != std::optional<std::string>("running")) {
      break;
    }
    sql().Exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE "
               "slot_name = 'bf_slot' AND active_pid IS NOT NULL");
    ++cuts;
  }
  bool done = WaitUntil(
      [&] {
        return sql().Scalar("SELECT state FROM walbus.backfill") == std::optional<std::string>("done");
      },
      120s, 100ms);
  writer.Stop();
  ASSERT_TRUE(done) << run.err();
  EXPECT_GE(cuts, 2) << "the backfill was too quick to be interrupted";
  EXPECT_GE(LinesWith(run.err(), "resuming from the confirmed LSN").size(), 2u) << run.err();
  uint64_t end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "bf_slot", end, 60s)) << run.err();
  State table = TableState(sql());
  ExpectConsistent(FromFiles({run.out_path()}), table, writer.touched(), "stdout");
#ifdef WALBUS_TEST_REDIS
  ExpectConsistent(FromRedis("postgres.public.items"), table, writer.touched(), "redis");
#endif
  EXPECT_EQ(Stop(&run), std::optional<int>(0)) << run.err();
}

TEST_F(Backfill, RefusesTablesItCannotKeepConsistent) {
  CreateItems(sql(), false);
  std::string cfg = Config("c", "bf_slot", "bf");
  struct Case {
    std::vector<std::string> args;
    std::string expect;
  };
  std::vector<Case> cases = {
      {{"public.other"}, "table public.other is not in publication \"bf\""},
      {{"public.nopk"}, "table public.nopk has no primary key"},
      {{"public.nothing"}, "table public.nothing does not exist"},
      {{"items"}, "name the table as schema.table"},
      {{"--chunk-size", "0", "public.items"}, "--chunk-size needs a number"},
      {{}, "backfill needs one or more SCHEMA.TABLE"},
  };
  int n = 0;
  for (const Case& c : cases) {
    std::vector<std::string> args = {"backfill", "-c", cfg};
    args.insert(args.end(), c.args.begin(), c.args.end());
    RunResult r = RunWalbus(args, dir(), "err" + std::to_string(n++));
    EXPECT_EQ(r.code, std::optional<int>(2)) << c.expect << "\n" << r.err;
    EXPECT_TRUE(Contains(r.err, c.expect)) << r.err;
    if (Contains(c.expect, "publication")) {  // the fix is named
      EXPECT_TRUE(Contains(r.err, "ALTER PUBLICATION \"bf\" ADD TABLE \"public\".\"other\""))
          << r.err;
    }
    if (Contains(c.expect, "primary key")) {
      EXPECT_TRUE(Contains(r.err, "ADD PRIMARY KEY")) << r.err;
    }
    if (Contains(c.expect, "table ")) {
      EXPECT_EQ(LinesWith(r.err, "ERROR").size(), 1u) << "one line per bad table:\n" << r.err;
    }
  }
  // One good and one bad table: nothing is registered.
  RunResult mixed =
      RunWalbus({"backfill", "-c", cfg, "--no-wait", "public.items", "public.nopk"}, dir(), "mix");
  EXPECT_EQ(mixed.code, std::optional<int>(2)) << mixed.err;
  EXPECT_EQ(sql().Scalar("SELECT to_regclass('walbus.backfill')::text"), std::nullopt);
}

}  // namespace
}  // namespace walbus::itest
