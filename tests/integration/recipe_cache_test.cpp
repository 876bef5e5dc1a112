// compose/recipes/cache: walbus appends changes to Redis Streams, cache.py
// (a consumer group) applies them to one hash per row and XACKs. After a
// mixed load — inserts, updates (values to NULL, key changes), deletes, a
// truncate — with walbus AND the consumer killed (-9) and restarted in the
// middle, the hashes must equal the tables, and nothing stays pending.
#include "recipe_support.h"

namespace walbus::itest::recipes {
namespace {

constexpr int kRedisPort = 56220;
const char* const kStreams = "shop.public.products,shop.public.stock";

// Everything under public.* in Redis as {key: {field: value}}, read by one
// Lua script so the test does not need a Redis client library.
std::string RedisHashesJson() {
  const char* script =
      "local out = {} "
      "for _, k in ipairs(redis.call('KEYS', 'public.*')) do "
      "  local h = redis.call('HGETALL', k) local m = {} "
      "  for i = 1, #h, 2 do m[h[i]] = h[i + 1] end "
      "  out[k] = m "
      "end "
      "if next(out) == nil then return '{}' end "
      "return cjson.encode(out)";
  ShellResult r = Shell("redis-cli -p " + std::to_string(kRedisPort) + " --raw EVAL " +
                        Quote(script) + " 0 2>&1");
  if (r.code != 0) ADD_FAILURE() << "redis-cli EVAL failed: " << r.out;
  return r.out;
}

using Hashes = std::map<std::string, std::map<std::string, std::string>>;

// A field value in a comparable form: JSON arrays/objects re-serialised
// compactly (jsonb prints `{"a": 1}`, the consumer stores `{"a":1}`).
std::string Normal(const std::string& v) {
  if (v.empty() || (v[0] != '{' && v[0] != '[')) return v;
  rapidjson::Document d;
  d.Parse(v.c_str(), v.size());
  return d.HasParseError() ? v : ToJson(d);
}

Hashes FromJson(const std::string& text) {
  Hashes out;
  rapidjson::Document d;
  if (!ParseJson(text, &d, "hashes") || !d.IsObject()) return out;
  for (auto& k : d.GetObject()) {
    auto& fields = out[k.name.GetString()];
    if (!k.value.IsObject()) continue;  // cjson writes an empty hash as {}
    for (auto& f : k.value.GetObject()) {
      fields[f.name.GetString()] = Normal(f.value.IsString() ? f.value.GetString() : ToJson(f.value));
    }
  }
  return out;
}

// What the hashes must hold: the tables, with the consumer's text forms.
Hashes Expected(Pg& shop) {
  Rows rows = shop.Query(
      "SELECT 'public.products:' || id, json_strip_nulls(json_build_object("
      "  'id', id::text, 'name', name, 'price', price::text,"
      "  'in_stock', CASE WHEN in_stock THEN 'true' ELSE 'false' END,"
      "  'tags', to_json(tags)::text, 'attributes', attributes::text, 'note', note))::text "
      "FROM products "
      "UNION ALL "
      "SELECT 'public.stock:' || warehouse || ',' || sku, json_build_object("
      "  'warehouse', warehouse, 'sku', sku, 'qty', qty::text)::text FROM stock");
  Hashes out;
  for (const Row& r : rows) {
    rapidjson::Document d;
    if (!r[0] || !r[1] || !ParseJson(*r[1], &d, "expected row")) continue;
    auto& fields = out[*r[0]];
    for (auto& f : d.GetObject()) fields[f.name.GetString()] = Normal(f.value.GetString());
  }
  return out;
}

std::string Diff(const Hashes& want, const Hashes& got) {
  std::string out;
  int shown = 0;
  for (const auto& [k, fields] : want) {
    auto it = got.find(k);
    if (it == got.end()) {
      if (shown++ < 10) out += "  missing " + k + "\n";
    } else if (it->second != fields) {
      if (shown++ < 10) {
        out += "  differs " + k + ":";
        for (const auto& [f, v] : fields) out += " " + f + "=" + v;
        out += "  vs";
        for (const auto& [f, v] : it->second) out += " " + f + "=" + v;
        out += "\n";
      }
    }
  }
  for (const auto& [k, _] : got) {
    if (want.count(k) == 0 && shown++ < 10) out += "  extra " + k + "\n";
  }
  return out + "  (" + std::to_string(want.size()) + " rows, " + std::to_string(got.size()) +
         " hashes)";
}

// A deterministic mixed load: each call is one transaction of 1-5 statements
// that are valid whatever the current rows are.
class Load {
 public:
  std::string Next() {
    std::string sql = "BEGIN;";
    int n = 1 + static_cast<int>(Rand() % 5);
    for (int i = 0; i < n; ++i) sql += Statement();
    return sql + "COMMIT;";
  }

 private:
  uint64_t Rand() {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    return state_ >> 33;
  }
  // (Built with snprintf: GCC 12 warns falsely about chains of string + at -O2.)
  std::string Statement() {
    unsigned id = 1 + static_cast<unsigned>(Rand() % 120);
    unsigned other = 121 + static_cast<unsigned>(Rand() % 40);
    unsigned wh = 1 + static_cast<unsigned>(Rand() % 3);
    unsigned sku = 1 + static_cast<unsigned>(Rand() % 40);
    unsigned v = static_cast<unsigned>(Rand() % 10000);
    const char* flag = Rand() % 2 ? "true" : "false";
    char buf[512];
    switch (Rand() % 10) {
      case 0:
      case 1:
      case 2:
        std::snprintf(buf, sizeof buf,
                      "INSERT INTO products VALUES (%u, 'p%u', %u/100.0, %s, '{red,\"big box\"}', "
                      "'{\"w\": %u, \"tags\": [\"a\", null]}', NULL) ON CONFLICT (id) DO UPDATE "
                      "SET name = excluded.name || '+', price = excluded.price;",
                      id, id, v, flag, v % 50);
        break;
      case 3:
        std::snprintf(buf, sizeof buf,
                      "UPDATE products SET note = CASE WHEN note IS NULL THEN 'n%u' ELSE NULL END, "
                      "tags = CASE WHEN tags IS NULL THEN '{x}'::text[] ELSE NULL END, attributes = NULL "
                      "WHERE id = %u;",
                      id, id);
        break;
      case 4:
        std::snprintf(buf, sizeof buf,
                      "UPDATE products SET price = price + 1, in_stock = NOT in_stock WHERE id = %u;", id);
        break;
      case 5:  // a key change
        std::snprintf(buf, sizeof buf,
                      "UPDATE products SET id = %u WHERE id = %u AND NOT EXISTS "
                      "(SELECT FROM products WHERE id = %u);",
                      other, id, other);
        break;
      case 6:
        std::snprintf(buf, sizeof buf, "DELETE FROM products WHERE id = %u OR id = %u;", id, other);
        break;
      case 7:
      case 8:
        std::snprintf(buf, sizeof buf,
                      "INSERT INTO stock VALUES ('w%u', 's%u', %u) ON CONFLICT (warehouse, sku) "
                      "DO UPDATE SET qty = stock.qty + excluded.qty;",
                      wh, sku, v % 100);
        break;
      default:
        std::snprintf(buf, sizeof buf, "DELETE FROM stock WHERE warehouse = 'w%u' AND sku = 's%u';",
                      wh, sku);
        break;
    }
    return buf;
  }
  uint64_t state_ = 20260501;
};

class RecipeCache : public PgFixtureOnPort<kPgPort> {
 protected:
  bool StartConsumer(Child* c, const std::string& tag) {
    std::string err = dir() + "/" + tag + ".err";
    if (!c->Start({python_, RecipeFile("cache", "cache.py"), "--redis",
                   "redis://127.0.0.1:" + std::to_string(kRedisPort) + "/0", "--streams",
                   kStreams, "--group", "cache", "--consumer", "cache-1", "--batch", "20"},
                  dir() + "/" + tag + ".out", err)) {
      return false;
    }
    bool up = WaitUntil([&] { return !c->Running() || Contains(ReadFile(err), "consuming"); }, 20s);
    if (!up || !c->Running()) {
      ADD_FAILURE() << "cache.py did not start (" << tag << "): " << ReadFile(err);
      return false;
    }
    return true;
  }
  std::string python_ = Python();
};

TEST_F(RecipeCache, HashesEqualTablesAfterMixedLoadAndRestarts) {
  if (!WalbusHas("hiredis")) GTEST_SKIP() << "walbus was built without the Redis adapter";
  ASSERT_FALSE(python_.empty()) << "python3 is needed by the cache recipe (apt-get install python3)";
  ComposeBroker redis(ComposeBroker::Kind::kRedis, kRedisPort, "/tmp/walbus-recipe-test-redis-56220");
  ASSERT_TRUE(redis.Start());
  ASSERT_TRUE(FreshShop(sql(), kPort, "cache"));
  Pg shop(ShopDsnFor(kPort));
  ASSERT_TRUE(shop.ok());

  const EnvChanges env = {{"SHOP_DSN", ShopDsnFor(kPort)},
                          {"REDIS_URL", redis.Url()},
                          {"METRICS_LISTEN", ""}};
  const std::string config = RecipeFile("cache", "walbus.toml");
  Child w, consumer;
  ASSERT_TRUE(StartRecipeWalbus(&w, config, env, dir(), "walbus1"));
  ASSERT_TRUE(StartConsumer(&consumer, "cache1"));

  Load load;
  auto run = [&](int txns) {
    for (int i = 0; i < txns; ++i) {
      if (!shop.Exec(load.Next())) return false;
    }
    return true;
  };
  // Phase 1: both running.
  ASSERT_TRUE(run(200));
  // Kill both while the consumer is behind (it reads 20 at a time).
  consumer.Signal(SIGKILL);
  consumer.Wait(10s);
  w.Signal(SIGKILL);
  w.Wait(10s);
  // Phase 2: changes while both are down, then walbus back.
  ASSERT_TRUE(run(100));
  ASSERT_TRUE(StartRecipeWalbus(&w, config, env, dir(), "walbus2"));
  // Phase 3: a truncate and refill while the consumer is still down.
  ASSERT_TRUE(shop.Exec("TRUNCATE stock"));
  ASSERT_TRUE(run(100));
  ASSERT_TRUE(StartConsumer(&consumer, "cache2"));
  // Phase 4: both running again; another truncate mid-way.
  ASSERT_TRUE(run(100));
  ASSERT_TRUE(shop.Exec("BEGIN; TRUNCATE stock; INSERT INTO stock VALUES ('w9', 's1', 1); COMMIT"));
  ASSERT_TRUE(run(100));

  uint64_t wal_end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "walbus_cache", wal_end, 60s)) << w.err();

  Hashes want = Expected(shop);
  ASSERT_GT(want.size(), 50u) << "the load left too few rows to prove anything";
  Hashes got;
  bool equal = WaitUntil([&] { return (got = FromJson(RedisHashesJson())) == want; }, 60s, 500ms);
  EXPECT_TRUE(equal) << "the hashes differ from the tables:\n" << Diff(want, got)
                     << "\ncache.py stderr:\n" << consumer.err();

  // Everything acknowledged.
  for (const char* stream : {"shop.public.products", "shop.public.stock"}) {
    ShellResult p = Shell("redis-cli -p " + std::to_string(kRedisPort) + " XPENDING " + stream +
                          " cache 2>&1");
    EXPECT_EQ(p.out.substr(0, 2), "0\n") << stream << ": " << p.out;
  }
  consumer.Signal(SIGTERM);
  EXPECT_EQ(consumer.Wait(15s), std::optional<int>(0)) << consumer.err();
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

}  // namespace
}  // namespace walbus::itest::recipes
