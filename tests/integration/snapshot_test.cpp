// source.snapshot = "initial" (SPEC §6, docs/snapshot.md) against a real
// PostgreSQL 15 (port 56000) and Redis (56001), metrics on 56002.
//
// ~200,000 existing rows in three tables (a bigint key, a composite key, and
// one without a primary key under REPLICA IDENTITY FULL, holding duplicate
// rows), while another connection inserts, updates and deletes in all three.
// walbus copies them as read events into stdout and Redis Streams (id =
// "lsn"), then streams from the consistent point. A consumer model rebuilds
// each table from the events (by key for keyed tables, row by row as a
// multiset for the keyless one: a delete or update of a row the model does
// not hold is an error) and the result must equal the tables' contents:
//   - uninterrupted;
//   - walbus killed with SIGKILL in the middle of a keyed table and
//     restarted (the progress table must show it continued after its last
//     acknowledged key, not from zero; the keyless table is then read under
//     a new snapshot, and the stream must skip what that snapshot holds);
//   - SIGKILL in the middle of the keyless table: it starts over behind one
//     truncate event;
//   - Redis stopped and restarted in the middle of a keyed table: walbus
//     retries and continues under the same exported snapshot, re-sending
//     unacknowledged rows with their ids;
//   - SIGTERM in the middle, then a restart (row numbers continue exactly
//     and no keyed row is read twice).
// Also: walbus's own schema is never published even by FOR ALL TABLES; the
// progress log line and walbus_snapshot_rows_total{table}; a slot that
// already exists is just streamed; the privilege errors name their fix.
#include <hiredis/hiredis.h>

#include <atomic>
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kRedisPort = 56001;
constexpr int kMetricsPort = 56002;
constexpr const char* kSlot = "snap";
constexpr const char* kPublication = "snap_pub";

constexpr int kOrders = 120000;
constexpr int kItems = 60000;
constexpr int kEvents = 20000;
constexpr int kDuplicates = 500;  // identical rows in the keyless table

// --- canonical JSON ----------------------------------------------------------

// Compact JSON with object members sorted by name: equal values, equal text.
void WriteCanonical(const rapidjson::Value& v, std::string* out) {
  if (v.IsObject()) {
    std::vector<std::pair<std::string, const rapidjson::Value*>> members;
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
      members.emplace_back(std::string(it->name.GetString(), it->name.GetStringLength()),
                           &it->value);
    }
    std::sort(members.begin(), members.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    *out += '{';
    for (size_t i = 0; i < members.size(); ++i) {
      if (i > 0) *out += ',';
      rapidjson::Value name(members[i].first.c_str(),
                            static_cast<rapidjson::SizeType>(members[i].first.size()));
      *out += ToJson(name);
      *out += ':';
      WriteCanonical(*members[i].second, out);
    }
    *out += '}';
  } else if (v.IsArray()) {
    *out += '[';
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
      if (i > 0) *out += ',';
      WriteCanonical(v[i], out);
    }
    *out += ']';
  } else {
    *out += ToJson(v);
  }
}

std::string Canon(const rapidjson::Value& v) {
  std::string out;
  WriteCanonical(v, &out);
  return out;
}

std::string CanonText(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str(), json.size());
  if (d.HasParseError()) {
    ADD_FAILURE() << "bad JSON from PostgreSQL: " << json.substr(0, 200);
    return json;
  }
  return Canon(d);
}

// --- the consumer model ------------------------------------------------------

bool Keyed(const std::string& table) { return table != "public.tail_log"; }

// What a consumer holds after applying events in order: keyed tables by
// their key, the keyless one as a multiset of whole rows.
struct Model {
  std::map<std::string, std::map<std::string, std::string>> keyed;
  std::map<std::string, std::multiset<std::string>> rows;
  size_t missing_rows = 0;  // keyless update/delete of a row the model lacks
  size_t internal = 0;      // events of walbus's own schema
  size_t events = 0;
  std::map<std::string, size_t> reads;  // per table

  void Apply(const rapidjson::Value& d) {
    ++events;
    const rapidjson::Value& src = Member(d, "source");
    std::string schema = Member(src, "schema").IsString() ? Member(src, "schema").GetString() : "";
    std::string table = schema + "." +
                        (Member(src, "table").IsString() ? Member(src, "table").GetString() : "");
    if (schema == "walbus") {
      ++internal;
      return;
    }
    std::string op = Member(d, "op").IsString() ? Member(d, "op").GetString() : "";
    if (op == "read") ++reads[table];
    if (op == "truncate") {
      keyed[table].clear();
      rows[table].clear();
      return;
    }
    if (Keyed(table)) {
      std::string key = Canon(Member(d, "key"));
      if (op == "delete") {
        keyed[table].erase(key);
      } else {
        keyed[table][key] = Canon(Member(d, "after"));
      }
      return;
    }
    std::multiset<std::string>& set = rows[table];
    if (op == "update" || op == "delete") {
      auto it = set.find(Canon(Member(d, "before")));
      if (it == set.end()) {
        if (++missing_rows <= 5) {
          ADD_FAILURE() << op << " of a row the consumer does not hold: " << ToJson(d);
        }
      } else {
        set.erase(it);
      }
    }
    if (op != "delete") set.insert(Canon(Member(d, "after")));
  }
};

// Every complete `TOPIC<TAB>JSON` line of a stdout-sink file, one at a time
// (a run writes ~100 MB: never all parsed documents at once).
template <class Fn>
void ForEachEvent(const std::string& path, Fn fn) {
  std::ifstream in(path, std::ios::binary);
  std::string line;
  rapidjson::Document d;
  size_t n = 0;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // an unterminated last line was never acknowledged
    ++n;
    size_t tab = line.find('\t');
    if (tab == std::string::npos) {
      ADD_FAILURE() << path << ":" << n << ": no tab";
      continue;
    }
    d.Parse(line.c_str() + tab + 1, line.size() - tab - 1);
    if (d.HasParseError() || !d.IsObject()) {
      ADD_FAILURE() << path << ":" << n << ": not JSON: " << line.substr(0, 200);
      continue;
    }
    fn(d);
  }
}

// The row number of a read event's id ("<16 hex>:<n>").
int64_t RowNumber(const rapidjson::Value& d) {
  const rapidjson::Value& id = Member(d, "id");
  if (!id.IsString()) return -1;
  std::string s = id.GetString();
  size_t colon = s.find(':');
  return colon == std::string::npos ? -1 : std::atoll(s.c_str() + colon + 1);
}

// --- the tables' contents ------------------------------------------------------

struct Truth {
  std::map<std::string, std::map<std::string, std::string>> keyed;
  std::map<std::string, std::multiset<std::string>> rows;
};

// Each row rendered as walbus renders it (SPEC §3 mapping), then canonical.
Truth ReadTruth(Pg& pg) {
  Truth t;
  for (const Row& r : pg.Query(
           "SELECT json_build_object('id', id)::text, json_build_object('id', id, 'customer', "
           "customer, 'amount', amount::text, 'paid', paid, 'tags', tags, 'meta', meta, 'note', "
           "note, 'created', created::text)::text FROM orders")) {
    t.keyed["public.orders"][CanonText(*r[0])] = CanonText(*r[1]);
  }
  for (const Row& r : pg.Query(
           "SELECT json_build_object('order_id', order_id, 'line', line)::text, "
           "json_build_object('order_id', order_id, 'line', line, 'sku', sku, 'qty', qty, "
           "'price', price)::text FROM items")) {
    t.keyed["public.items"][CanonText(*r[0])] = CanonText(*r[1]);
  }
  for (const Row& r : pg.Query(
           "SELECT json_build_object('kind', kind, 'payload', translate(encode(payload, "
           "'base64'), E'\\n', ''), 'at', at::text, 'n', n)::text FROM tail_log")) {
    t.rows["public.tail_log"].insert(CanonText(*r[0]));
  }
  return t;
}

// Compares the model with the tables; true when equal (differences reported).
bool Matches(const Model& m, const Truth& t, const std::string& what) {
  bool ok = true;
  for (const auto& [table, want] : t.keyed) {
    auto it = m.keyed.find(table);
    const std::map<std::string, std::string> empty;
    const auto& have = it == m.keyed.end() ? empty : it->second;
    size_t shown = 0;
    for (const auto& [key, row] : want) {
      auto h = have.find(key);
      if (h == have.end() || h->second != row) {
        ok = false;
        if (++shown <= 3) {
          ADD_FAILURE() << what << ": " << table << " " << key << " is "
                        << (h == have.end() ? "<missing>" : h->second) << ", the table has "
                        << row;
        }
      }
    }
    for (const auto& [key, row] : have) {
      if (!want.count(key)) {
        ok = false;
        if (++shown <= 3) ADD_FAILURE() << what << ": " << table << " " << key << " is not in the table";
      }
    }
    if (shown > 3) ADD_FAILURE() << what << ": " << table << ": " << shown << " differences";
  }
  for (const auto& [table, want] : t.rows) {
    auto it = m.rows.find(table);
    std::multiset<std::string> have = it == m.rows.end() ? std::multiset<std::string>() : it->second;
    if (have != want) {
      ok = false;
      std::vector<std::string> extra, lacking;
      std::set_difference(have.begin(), have.end(), want.begin(), want.end(),
                          std::back_inserter(extra));
      std::set_difference(want.begin(), want.end(), have.begin(), have.end(),
                          std::back_inserter(lacking));
      ADD_FAILURE() << what << ": " << table << " has " << have.size() << " rows, the table "
                    << want.size() << "; extra " << extra.size() << " (e.g. "
                    << (extra.empty() ? "-" : extra[0]) << "), lacking " << lacking.size()
                    << " (e.g. " << (lacking.empty() ? "-" : lacking[0]) << ")";
    }
  }
  EXPECT_EQ(m.missing_rows, 0u) << what;
  EXPECT_EQ(m.internal, 0u) << what << ": events of walbus's own schema were published";
  return ok && m.missing_rows == 0 && m.internal == 0;
}

// --- Redis -------------------------------------------------------------------

struct RedisReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyFree>;

// Applies every entry of stream `key` (in id order) to `model`; also counts
// the entries. False when Redis could not be read.
bool ApplyRedisStream(int port, const std::string& key, Model* model, size_t* entries) {
  std::unique_ptr<redisContext, decltype(&redisFree)> ctx(redisConnect("127.0.0.1", port),
                                                          &redisFree);
  if (!ctx || ctx->err) {
    ADD_FAILURE() << "cannot connect to Redis on " << port;
    return false;
  }
  std::string from = "-";
  rapidjson::Document d;
  for (;;) {
    const char* argv[] = {"XRANGE", key.c_str(), from.c_str(), "+", "COUNT", "5000"};
    RedisReplyPtr r(static_cast<redisReply*>(redisCommandArgv(ctx.get(), 6, argv, nullptr)));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
      ADD_FAILURE() << "XRANGE " << key << " failed";
      return false;
    }
    if (r->elements == 0) break;
    std::string last;
    for (size_t i = 0; i < r->elements; ++i) {
      redisReply* entry = r->element[i];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
      last = entry->element[0]->str;
      redisReply* fields = entry->element[1];
      for (size_t f = 0; f + 1 < fields->elements; f += 2) {
        if (std::string(fields->element[f]->str) != "event") continue;
        d.Parse(fields->element[f + 1]->str, fields->element[f + 1]->len);
        if (d.HasParseError()) {
          ADD_FAILURE() << "not JSON in " << key << " " << last;
          continue;
        }
        model->Apply(d);
        ++*entries;
      }
    }
    if (r->elements < 5000) break;
    from = "(" + last;
  }
  return true;
}

// Every stream key in Redis.
std::vector<std::string> RedisKeys(int port) {
  std::vector<std::string> keys;
  std::unique_ptr<redisContext, decltype(&redisFree)> ctx(redisConnect("127.0.0.1", port),
                                                          &redisFree);
  if (!ctx || ctx->err) return keys;
  RedisReplyPtr r(static_cast<redisReply*>(redisCommand(ctx.get(), "KEYS *")));
  if (!r || r->type != REDIS_REPLY_ARRAY) return keys;
  for (size_t i = 0; i < r->elements; ++i) keys.emplace_back(r->element[i]->str);
  std::sort(keys.begin(), keys.end());
  return keys;
}

// --- concurrent changes ------------------------------------------------------

// Small transactions of inserts, updates and deletes on all three tables,
// from its own connection, until Stop().
class Churn {
 public:
  explicit Churn(std::string dsn, bool keyless_only = false)
      : dsn_(std::move(dsn)), keyless_only_(keyless_only) {}
  ~Churn() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int transactions() const { return transactions_.load(); }
  const std::string& error() const { return error_; }

 private:
  void Loop() {
    Pg pg(dsn_);
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> order(1, kOrders), item(0, kItems / 3);
    int64_t next = 10000000;
    while (!stop_.load()) {
      std::string n = std::to_string(next++);
      std::string keyed =
          "INSERT INTO orders VALUES (" + n + ", 7, 1.25, true, '{churn}', '{\"c\": 1}', "
          "'new\\\\row', now());"
          "UPDATE orders SET amount = amount + 1, note = 'upd ' || id, paid = NOT paid "
          "WHERE id = " + std::to_string(order(rng)) + ";"
          "DELETE FROM orders WHERE id = " + std::to_string(order(rng)) + ";"
          "INSERT INTO items VALUES (" + n + ", 0, 'churn', 1, 0.5);"
          "UPDATE items SET qty = qty + 100 WHERE order_id = " + std::to_string(item(rng)) +
          " AND line = 1;"
          "DELETE FROM items WHERE order_id = " + std::to_string(item(rng)) + " AND line = 2;";
      std::string sql =
          "BEGIN;" + (keyless_only_ ? std::string() : keyed) +
          "INSERT INTO tail_log VALUES ('churn', '\\x" + n + "', '2026-06-01', 3);"
          "UPDATE tail_log SET n = n + 1000 WHERE ctid = (SELECT ctid FROM tail_log WHERE "
          "kind = 'k" + std::to_string(next % 5) + "' AND n < 1000 LIMIT 1);"
          "DELETE FROM tail_log WHERE ctid = (SELECT ctid FROM tail_log WHERE kind = 'dup' "
          "LIMIT 1);"
          "COMMIT";
      std::string err = pg.TryExec(sql);
      if (!err.empty()) {
        error_ = err;
        return;
      }
      transactions_.fetch_add(1);
      std::this_thread::sleep_for(2ms);
    }
  }

  std::string dsn_;
  bool keyless_only_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> transactions_{0};
  std::string error_;
};

// --- fixture -------------------------------------------------------------------

class Snapshot : public PgFixtureOnPort<56000> {
 protected:
  void SetUp() override {
    PgFixtureOnPort::SetUp();
    if (HasFatalFailure()) return;
    sql().Exec("DROP SCHEMA IF EXISTS walbus CASCADE");
    sql().Exec("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'snapuser') THEN "
               "EXECUTE 'DROP OWNED BY snapuser'; DROP ROLE snapuser; END IF; END $$");
  }

  void LoadTables(int orders = kOrders, int items = kItems, int events = kEvents) {
    ASSERT_TRUE(sql().Exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, amount "
        "numeric(12,2), paid boolean, tags text[], meta jsonb, note text, created timestamptz);"
        "INSERT INTO orders SELECT g, g % 1000, (g % 100000) / 100.0, g % 3 = 0, ARRAY['t' || "
        "(g % 7), 'x y'], jsonb_build_object('g', g, 's', 'v' || g), CASE WHEN g % 11 = 0 THEN "
        "NULL ELSE repeat('n', g % 40) || E'\\t\\n\\\\' END, '2026-01-01 00:00:00+00'::timestamptz "
        "+ g * interval '1 minute' FROM generate_series(1, " + std::to_string(orders) + ") g;"
        "CREATE TABLE items (order_id bigint, line int, sku text, qty int, price float8, "
        "PRIMARY KEY (order_id, line));"
        "INSERT INTO items SELECT g / 3, g % 3, 'sku-' || g, g % 17, (g % 400) * 0.25 FROM "
        "generate_series(0, " + std::to_string(items - 1) + ") g;"
        "CREATE TABLE tail_log (kind text, payload bytea, at date, n int);"
        "ALTER TABLE tail_log REPLICA IDENTITY FULL;"
        "INSERT INTO tail_log SELECT 'k' || (g % 5), decode(md5(g::text), 'hex'), date "
        "'2026-01-01' + (g % 365), g % 10 FROM generate_series(1, " +
        std::to_string(events) + ") g;"
        "INSERT INTO tail_log SELECT 'dup', '\\x00', date '2026-01-01', 1 FROM "
        "generate_series(1, " + std::to_string(events > 0 ? kDuplicates : 0) + ");"
        "ANALYZE orders; ANALYZE items; ANALYZE tail_log"));
  }

  // stdout sink plus (unless no_redis) a Redis sink with lsn ids; the
  // publication is created by walbus FOR ALL TABLES (so it includes
  // walbus's own schema).
  std::string Config(const std::string& name, bool redis = true, bool metrics = false,
                     const std::string& dsn = "") {
    std::string path = dir() + "/" + name + ".toml";
    WriteFile(path,
              "[source]\n"
              "dsn = \"" + (dsn.empty() ? this->dsn() : dsn) + "\"\n"
              "slot = \"" + kSlot + "\"\n"
              "publication = \"" + kPublication + "\"\n"
              "snapshot = \"initial\"\n"
              "status_interval_ms = 200\n"
              "standby_retry_ms = 300\n"
              "\n[metrics]\nlisten = \"" +
                  (metrics ? "127.0.0.1:" + std::to_string(kMetricsPort) : std::string()) +
                  "\"\n"
                  "\n[[sink]]\nname = \"out\"\ntype = \"stdout\"\n" +
                  (redis ? "\n[[sink]]\nname = \"redis\"\ntype = \"redis\"\nurl = "
                           "\"redis://127.0.0.1:" + std::to_string(kRedisPort) +
                           "\"\nid = \"lsn\"\n"
                         : ""));
    return path;
  }

  // With aof, Redis keeps its data across a stop and start.
  bool StartRedis(bool aof = false) {
    redis_ = std::make_unique<ComposeBroker>(ComposeBroker::Kind::kRedis, kRedisPort,
                                             "/tmp/walbus-snap-redis-" + std::to_string(kRedisPort),
                                             aof ? "WALBUS_REDIS_AOF=1" : "");
    return redis_->Start();
  }

  std::string Out(const std::string& tag) const { return dir() + "/" + tag + ".out"; }
  std::string Err(const std::string& tag) const { return dir() + "/" + tag + ".err"; }

  bool Launch(Child* c, const std::string& cfg, const std::string& tag) {
    return c->Start({kWalbus, "run", "-c", cfg}, Out(tag), Err(tag));
  }

  // Waits for "INFO streaming" (the snapshot is complete) or the exit.
  bool WaitStreaming(Child* c, const std::string& tag, milliseconds timeout = 120s) {
    bool ok = WaitUntil(
        [&] { return !c->Running() || Contains(ReadFile(Err(tag)), "INFO streaming"); }, timeout,
        100ms);
    if (!ok || !c->Running()) {
      ADD_FAILURE() << tag << " did not reach streaming; stderr:\n" << ReadFile(Err(tag));
      return false;
    }
    return true;
  }

  // Stops the churn, waits until walbus confirmed everything, stops walbus.
  void Settle(Churn* churn, Child* c, const std::string& tag) {
    churn->Stop();
    EXPECT_EQ(churn->error(), "");
    uint64_t end = sql().CurrentWalLsn();
    uint64_t seen = 0;
    EXPECT_TRUE(WaitSlotConfirmed(sql(), kSlot, end, 60s, &seen))
        << "slot confirmed " << FormatLsn(seen) << ", WAL end " << FormatLsn(end);
    EXPECT_EQ(Stop(c), std::optional<int>(0)) << ReadFile(Err(tag));
  }

  // Waits until the progress table shows `table` partly acknowledged.
  bool WaitPartlyDone(const std::string& table, Child* c, const std::string& tag) {
    std::string state;
    bool ok = WaitUntil(
        [&] {
          return !c->Running() ||
                 sql().Scalar("SELECT to_regclass('walbus.snapshot_progress') IS NOT NULL") ==
                     std::optional<std::string>("t");
        },
        60s, 5ms);
    ok = ok && WaitUntil(
        [&] {
          if (!c->Running()) return true;
          std::optional<std::string> v = sql().Scalar(
              "SELECT rows_done::text || '/' || done::text FROM walbus.snapshot_progress "
              "WHERE table_name = '" + table + "'");
          state = v.value_or("");
          return Contains(state, "/true") ||
                 (!state.empty() && state[0] != '0' && Contains(state, "/false"));
        },
        120s, 5ms);
    if (!ok || !c->Running() || !Contains(state, "/false")) {
      ADD_FAILURE() << "never saw " << table << " partly acknowledged (last '" << state
                    << "'; running " << c->Running() << "); stderr:\n"
                    << ReadFile(Err(tag));
      return false;
    }
    std::printf("[ info ] %s progress at the interruption: %s\n", table.c_str(), state.c_str());
    return true;
  }

  // Launch(), then WaitPartlyDone(table).
  bool LaunchUntilPartlyDone(Child* c, const std::string& cfg, const std::string& tag,
                             const std::string& table) {
    return Launch(c, cfg, tag) && WaitPartlyDone(table, c, tag);
  }

  // Launch(), WaitStreaming() (the snapshot completes), then Settle(); false
  // when walbus did not start or reach streaming.
  bool FinishAndSettle(Churn* churn, Child* c, const std::string& cfg, const std::string& tag) {
    if (!Launch(c, cfg, tag) || !WaitStreaming(c, tag)) return false;
    Settle(churn, c, tag);
    return true;
  }

  // Rebuilds the tables from Redis and checks them.
  void CheckRedis(const Truth& truth, const std::string& what) {
    Model m;
    size_t entries = 0;
    std::vector<std::string> keys = RedisKeys(kRedisPort);
    for (const std::string& k : keys) {
      EXPECT_EQ(k.find("walbus"), std::string::npos) << "a Redis stream of walbus's schema: " << k;
      ApplyRedisStream(kRedisPort, k, &m, &entries);
    }
    std::printf("[ info ] %s: %zu Redis entries in %zu streams\n", what.c_str(), entries,
                keys.size());
    EXPECT_TRUE(Matches(m, truth, what + " (Redis)"));
  }

  std::unique_ptr<ComposeBroker> redis_;
};

// --- tests ---------------------------------------------------------------------

TEST_F(Snapshot, CopiesEveryRowUnderConcurrentChangesIntoStdoutAndRedis) {
  LoadTables();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(StartRedis());
  Churn churn(dsn());
  churn.Start();
  std::this_thread::sleep_for(200ms);
  Child run;
  ASSERT_TRUE(Launch(&run, Config("c"), "run"));
  ASSERT_TRUE(WaitStreaming(&run, "run"));
  int during = churn.transactions();
  // Walbus's own schema changes in the same transaction as a published row
  // (FOR ALL TABLES includes the schema): the row's seq counts it, the
  // walbus change itself is never published.
  ASSERT_TRUE(sql().Exec("BEGIN; UPDATE walbus.snapshots SET runs = runs WHERE slot = 'snap';"
                         "INSERT INTO items VALUES (-1, -1, 'marker', 0, 0); COMMIT"));
  std::this_thread::sleep_for(300ms);
  Settle(&churn, &run, "run");
  std::printf("[ info ] %d concurrent transactions, %d of them before the snapshot completed\n",
              churn.transactions(), during);
  EXPECT_GT(during, 0) << "no change happened during the snapshot";

  std::string err = ReadFile(Err("run"));
  EXPECT_TRUE(Contains(err, "snapshot=exported"));
  EXPECT_TRUE(Contains(err, "INFO initial snapshot complete"));
  EXPECT_FALSE(Contains(err, "WARN")) << err;

  Model m;
  bool marker_seq1 = false;
  std::set<int64_t> numbers;
  size_t reads = 0, duplicate_numbers = 0;
  std::string point;
  ForEachEvent(Out("run"), [&](const rapidjson::Document& d) {
    m.Apply(d);
    std::string op = Member(d, "op").GetString();
    if (op == "read") {
      ++reads;
      if (!numbers.insert(RowNumber(d)).second) ++duplicate_numbers;
      std::string id = Member(d, "id").GetString();
      if (point.empty()) point = id.substr(0, 16);
      EXPECT_EQ(id.substr(0, 16), point);
      EXPECT_EQ(Member(Member(d, "source"), "seq").GetInt64(), RowNumber(d));
    }
    const rapidjson::Value& after = Member(d, "after");
    if (op == "insert" && Member(after, "sku").IsString() &&
        std::string(Member(after, "sku").GetString()) == "marker") {
      marker_seq1 = Member(Member(d, "source"), "seq").GetInt() == 1;
    }
  });
  EXPECT_TRUE(marker_seq1) << "the marker row should be change 1 of its transaction (0 was "
                              "walbus's own, not published)";
  // Uninterrupted: row numbers 0..N-1, each once.
  EXPECT_EQ(duplicate_numbers, 0u);
  ASSERT_FALSE(numbers.empty());
  EXPECT_EQ(*numbers.begin(), 0);
  EXPECT_EQ(*numbers.rbegin(), static_cast<int64_t>(reads) - 1);
  std::printf("[ info ] %zu read events, %zu events in all\n", reads, m.events);
  EXPECT_GE(reads, static_cast<size_t>(kOrders + kItems + kEvents) * 9 / 10);

  Truth truth = ReadTruth(sql());
  EXPECT_TRUE(Matches(m, truth, "stdout"));
  CheckRedis(truth, "uninterrupted");

  std::optional<std::string> state = sql().Scalar(
      "SELECT done::text || ' ' || runs FROM walbus.snapshots WHERE slot = 'snap'");
  EXPECT_EQ(state, std::optional<std::string>("true 1"));
}

TEST_F(Snapshot, KillNineMidTableThenRestartCompletesIt) {
  LoadTables();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(StartRedis());
  Churn churn(dsn());
  churn.Start();
  std::string cfg = Config("c");
  Child run0;
  ASSERT_TRUE(LaunchUntilPartlyDone(&run0, cfg, "run0", "orders"));
  ASSERT_TRUE(run0.Signal(SIGKILL));
  EXPECT_EQ(run0.Wait(10s), std::optional<int>(128 + SIGKILL));
  std::optional<std::string> before = sql().Scalar(
      "SELECT rows_done FROM walbus.snapshot_progress WHERE table_name = 'orders'");
  ASSERT_TRUE(before);
  std::this_thread::sleep_for(300ms);  // more changes while nothing runs

  Child run1;
  ASSERT_TRUE(FinishAndSettle(&churn, &run1, cfg, "run1"));
  std::string err1 = ReadFile(Err("run1"));
  EXPECT_TRUE(Contains(err1, "snapshot=new")) << err1;
  EXPECT_TRUE(Contains(err1, "table=public.orders how=resume")) << err1;

  // Resumed after its last acknowledged key, not from zero.
  Rows p = sql().Query("SELECT resumes, coalesce(resumed_at_rows, -1), done, starts FROM "
                       "walbus.snapshot_progress WHERE table_name = 'orders'");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0][0], std::optional<std::string>("1"));
  EXPECT_GT(std::atoll(p[0][1]->c_str()), 0) << "orders was not resumed after a key";
  EXPECT_EQ(p[0][1], before);
  EXPECT_EQ(p[0][2], std::optional<std::string>("t"));
  EXPECT_EQ(p[0][3], std::optional<std::string>("1"));
  EXPECT_EQ(sql().Scalar("SELECT done::text || ' ' || runs FROM walbus.snapshots"),
            std::optional<std::string>("true 2"));

  Model m;
  int64_t first_orders_key = -1, last_run0_number = -1, first_run1_number = -1;
  ForEachEvent(Out("run0"), [&](const rapidjson::Document& d) {
    m.Apply(d);
    last_run0_number = std::max(last_run0_number, RowNumber(d));
  });
  size_t run0_reads = m.reads["public.orders"];
  ForEachEvent(Out("run1"), [&](const rapidjson::Document& d) {
    m.Apply(d);
    std::string op = Member(d, "op").GetString();
    if (op == "read" && first_run1_number < 0) first_run1_number = RowNumber(d);
    if (op == "read" && first_orders_key < 0 &&
        std::string(Member(Member(d, "source"), "table").GetString()) == "orders") {
      first_orders_key = Member(Member(d, "key"), "id").GetInt64();
    }
  });
  std::printf("[ info ] run0 read %zu orders rows; run1 continued at key %lld; row numbers: "
              "run0 up to %lld, run1 from %lld\n",
              run0_reads, static_cast<long long>(first_orders_key),
              static_cast<long long>(last_run0_number), static_cast<long long>(first_run1_number));
  EXPECT_GT(first_orders_key, std::atoll(before->c_str())) << "run1 re-read acknowledged orders";
  // A number is never used for two rows: after a crash run1 takes fresh ones.
  EXPECT_GT(first_run1_number, last_run0_number);

  Truth truth = ReadTruth(sql());
  EXPECT_TRUE(Matches(m, truth, "stdout, kill -9"));
  CheckRedis(truth, "kill -9");
}

TEST_F(Snapshot, SigtermMidTableStopsCleanlyAndTheRestartContinuesExactly) {
  LoadTables();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(StartRedis());
  Churn churn(dsn());
  churn.Start();
  std::string cfg = Config("c");
  Child run0;
  ASSERT_TRUE(LaunchUntilPartlyDone(&run0, cfg, "run0", "orders"));
  EXPECT_EQ(Stop(&run0), std::optional<int>(0)) << ReadFile(Err("run0"));
  std::string err0 = ReadFile(Err("run0"));
  EXPECT_TRUE(Contains(err0, "initial snapshot stopped")) << err0;
  EXPECT_TRUE(Contains(err0, "unacknowledged=none")) << err0;
  EXPECT_EQ(sql().SlotActivePid(kSlot), std::optional<int>(0)) << "slot still active";

  Child run1;
  ASSERT_TRUE(FinishAndSettle(&churn, &run1, cfg, "run1"));

  Model m;
  std::set<int64_t> numbers;
  std::set<int64_t> orders_read;
  size_t dup_numbers = 0, dup_orders = 0;
  int64_t last_run0 = -1, first_run1 = -1;
  for (const char* tag : {"run0", "run1"}) {
    ForEachEvent(Out(tag), [&](const rapidjson::Document& d) {
      m.Apply(d);
      if (std::string(Member(d, "op").GetString()) != "read") return;
      int64_t n = RowNumber(d);
      if (!numbers.insert(n).second) ++dup_numbers;
      if (std::string(tag) == "run0") last_run0 = std::max(last_run0, n);
      if (std::string(tag) == "run1" && first_run1 < 0) first_run1 = n;
      if (std::string(Member(Member(d, "source"), "table").GetString()) == "orders" &&
          !orders_read.insert(Member(Member(d, "key"), "id").GetInt64()).second) {
        ++dup_orders;
      }
    });
  }
  std::printf("[ info ] row numbers: run0 up to %lld, run1 from %lld\n",
              static_cast<long long>(last_run0), static_cast<long long>(first_run1));
  // Everything sent was acknowledged before the stop: the restart continues
  // with the next number and the next key, re-sending nothing.
  EXPECT_EQ(first_run1, last_run0 + 1);
  EXPECT_EQ(dup_numbers, 0u);
  EXPECT_EQ(dup_orders, 0u);
  Rows p = sql().Query("SELECT resumes, coalesce(resumed_at_rows, -1) FROM "
                       "walbus.snapshot_progress WHERE table_name = 'orders'");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0][0], std::optional<std::string>("1"));
  EXPECT_GT(std::atoll(p[0][1]->c_str()), 0);

  Truth truth = ReadTruth(sql());
  EXPECT_TRUE(Matches(m, truth, "stdout, SIGTERM"));
  CheckRedis(truth, "SIGTERM");
}

TEST_F(Snapshot, ABrokerOutageMidTableContinuesUnderTheSameSnapshot) {
  LoadTables();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(StartRedis(/*aof=*/true));
  Churn churn(dsn());
  churn.Start();
  Child run;
  ASSERT_TRUE(LaunchUntilPartlyDone(&run, Config("c"), "run", "orders"));
  redis_->Stop();
  std::this_thread::sleep_for(1500ms);
  ASSERT_TRUE(redis_->Start(/*fresh=*/false));
  ASSERT_TRUE(WaitStreaming(&run, "run"));
  Settle(&churn, &run, "run");
  std::string err = ReadFile(Err("run"));
  EXPECT_TRUE(Contains(err, "sink failed")) << err;
  EXPECT_TRUE(Contains(err, "table=public.orders how=resume")) << err;
  // The connection holding the exported snapshot survived the outage.
  EXPECT_FALSE(Contains(err, "exported snapshot is gone")) << err;
  EXPECT_EQ(LinesWith(err, "snapshot=exported").size(), 2u) << err;

  // Rows sent but not acknowledged before the outage were sent again with
  // the same id and the same content (Redis refused them as duplicates).
  Model m;
  std::map<int64_t, std::string> by_number;
  size_t resent = 0, conflicts = 0;
  ForEachEvent(Out("run"), [&](const rapidjson::Document& d) {
    m.Apply(d);
    if (std::string(Member(d, "op").GetString()) != "read") return;
    std::string text = Canon(d);
    auto [it, fresh] = by_number.emplace(RowNumber(d), text);
    if (!fresh) {
      ++resent;
      if (it->second != text && ++conflicts <= 3) {
        ADD_FAILURE() << "row number " << it->first << " used for two rows:\n  " << it->second
                      << "\n  " << text;
      }
    }
  });
  std::printf("[ info ] %zu read events sent again after the outage\n", resent);
  EXPECT_EQ(conflicts, 0u);
  Truth truth = ReadTruth(sql());
  EXPECT_TRUE(Matches(m, truth, "stdout, broker outage"));
  CheckRedis(truth, "broker outage");
}

TEST_F(Snapshot, KillNineInATableWithoutKeyStartsItOverBehindATruncate) {
  // Only the keyless table, bigger, so the kill lands inside it.
  LoadTables(0, 0, 80000);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(StartRedis());
  Churn churn(dsn(), /*keyless_only=*/true);
  churn.Start();
  std::string cfg = Config("c");
  Child run0;
  ASSERT_TRUE(LaunchUntilPartlyDone(&run0, cfg, "run0", "tail_log"));
  ASSERT_TRUE(run0.Signal(SIGKILL));
  EXPECT_EQ(run0.Wait(10s), std::optional<int>(128 + SIGKILL));
  std::this_thread::sleep_for(300ms);
  Child run1;
  ASSERT_TRUE(FinishAndSettle(&churn, &run1, cfg, "run1"));
  EXPECT_TRUE(Contains(ReadFile(Err("run1")), "table=public.tail_log how=restart"));
  Rows p = sql().Query("SELECT starts, resumes, done, read_snapshot IS NOT NULL FROM "
                       "walbus.snapshot_progress WHERE table_name = 'tail_log'");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0], (Row{"2", "0", "t", "t"}));

  Model m;
  size_t truncates = 0;
  for (const char* tag : {"run0", "run1"}) {
    ForEachEvent(Out(tag), [&](const rapidjson::Document& d) {
      if (std::string(Member(d, "op").GetString()) == "truncate") ++truncates;
      m.Apply(d);
    });
  }
  EXPECT_EQ(truncates, 1u) << "the restart of the keyless table is announced once";
  Truth truth = ReadTruth(sql());
  EXPECT_TRUE(Matches(m, truth, "stdout, kill -9 in the keyless table"));
  CheckRedis(truth, "kill -9 in the keyless table");
}

TEST_F(Snapshot, ProgressLogAndRowsMetricMatchTheTables) {
  LoadTables(3000, 1500, 700);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(sql().Exec("CREATE TABLE empty_one (id int PRIMARY KEY)"));
  Child run;
  ASSERT_TRUE(Launch(&run, Config("c", /*redis=*/false, /*metrics=*/true), "run"));
  ASSERT_TRUE(WaitStreaming(&run, "run", 60s));
  std::string metrics = HttpGetReply(kMetricsPort, "/metrics");
  EXPECT_EQ(Stop(&run), std::optional<int>(0));
  std::map<std::string, long long> want;
  for (const char* t : {"orders", "items", "tail_log", "empty_one"}) {
    want[std::string("public.") + t] =
        std::atoll(sql().Scalar(std::string("SELECT count(*) FROM ") + t).value_or("-1").c_str());
  }
  for (const auto& [table, rows] : want) {
    std::string sample = "walbus_snapshot_rows_total{table=\"" + table + "\"} " +
                         std::to_string(rows) + "\n";
    EXPECT_TRUE(Contains(metrics, sample)) << "missing: " << sample << "in\n" << metrics;
  }
  EXPECT_FALSE(Contains(metrics, "table=\"walbus.")) << metrics;
  std::vector<std::string> lines = LinesWith(ReadFile(Err("run")), "INFO initial snapshot progress");
  ASSERT_FALSE(lines.empty()) << ReadFile(Err("run"));
  const std::string& last = lines.back();
  for (const char* field : {"tables=4/4", "rows=5700 ", "rows_acknowledged=5700 ", "rows_per_s=",
                            "eta_s="}) {
    EXPECT_TRUE(Contains(last, field)) << field << " not in: " << last;
  }
  // Every existing row is one read event (each table's rows contiguous).
  Model m;
  ForEachEvent(Out("run"), [&](const rapidjson::Document& d) { m.Apply(d); });
  EXPECT_EQ(m.reads["public.orders"], 3000u);
  EXPECT_EQ(m.reads["public.items"], 1500u);
  EXPECT_EQ(m.reads["public.tail_log"], 1200u);
  EXPECT_EQ(m.reads["public.empty_one"], 0u);
  EXPECT_EQ(m.internal, 0u);
}

TEST_F(Snapshot, AnExistingSlotWithoutAnUnfinishedSnapshotIsJustStreamed) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);"
                         "CREATE PUBLICATION snap_pub FOR ALL TABLES"));
  ASSERT_TRUE(sql().Exec("SELECT pg_create_logical_replication_slot('snap', 'pgoutput')"));
  Child run;
  ASSERT_TRUE(Launch(&run, Config("c", false), "run"));
  ASSERT_TRUE(WaitStreaming(&run, "run", 30s));
  ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (3)"));
  EXPECT_TRUE(WaitUntil([&] { return CountLines(Out("run")) >= 1; }, 20s));
  std::this_thread::sleep_for(300ms);
  std::vector<Envelope> envs = ParseOutput(Out("run"));
  EXPECT_EQ(Stop(&run), std::optional<int>(0));
  ASSERT_EQ(envs.size(), 1u);
  EXPECT_EQ(envs[0].op, "insert");
  EXPECT_FALSE(Contains(ReadFile(Err("run")), "initial snapshot"));
  EXPECT_EQ(sql().Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'walbus'"),
            std::optional<std::string>("0"))
      << "nothing to do, nothing created";
}

TEST_F(Snapshot, PrivilegeErrorsNameTheFixAndTheSnapshotCompletesOnceGranted) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE t (id int PRIMARY KEY, v text);"
                         "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;"
                         "CREATE PUBLICATION snap_pub FOR TABLE t;"
                         "CREATE ROLE snapuser LOGIN REPLICATION;"
                         "GRANT USAGE ON SCHEMA public TO snapuser"));
  std::string cfg = Config("c", false, false, dsn() + " user=snapuser");
  // No CREATE on the database: one line naming both fixes; no slot left behind.
  RunResult r = RunWalbus({"run", "-c", cfg}, dir(), "nocreate", 30s);
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  std::vector<std::string> errors = LinesWith(r.err, "ERROR");
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_TRUE(Contains(errors[0], "cannot create schema walbus")) << errors[0];
  EXPECT_TRUE(Contains(errors[0], "GRANT CREATE ON DATABASE \"postgres\" TO \"snapuser\""))
      << errors[0];
  EXPECT_TRUE(Contains(errors[0], "CREATE SCHEMA walbus AUTHORIZATION \"snapuser\"")) << errors[0];
  EXPECT_FALSE(sql().SlotExists(kSlot));

  // A pre-created schema, but no SELECT on the table.
  ASSERT_TRUE(sql().Exec("CREATE SCHEMA walbus AUTHORIZATION snapuser"));
  r = RunWalbus({"run", "-c", cfg}, dir(), "noselect", 30s);
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  errors = LinesWith(r.err, "ERROR");
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_TRUE(Contains(errors[0], "permission denied for table t")) << errors[0];
  EXPECT_TRUE(Contains(errors[0], "GRANT SELECT")) << errors[0];

  // Granted: the next run completes the snapshot.
  ASSERT_TRUE(sql().Exec("GRANT SELECT ON t TO snapuser"));
  Child run;
  ASSERT_TRUE(Launch(&run, cfg, "granted"));
  ASSERT_TRUE(WaitStreaming(&run, "granted", 30s));
  EXPECT_EQ(Stop(&run), std::optional<int>(0));
  Model m;
  ForEachEvent(Out("granted"), [&](const rapidjson::Document& d) { m.Apply(d); });
  EXPECT_EQ(m.reads["public.t"], 100u);
}

}  // namespace
}  // namespace walbus::itest
