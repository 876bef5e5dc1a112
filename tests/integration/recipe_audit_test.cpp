// compose/recipes/audit: every change of public.accounts kept in a JetStream
// stream with file storage and retention limits (made by audit.py
// create-stream), and audit.py who-changed answering "who changed row X,
// when, from what to what" — with walbus killed (-9) and restarted in the
// middle, which must neither lose nor duplicate an entry.
#include "recipe_support.h"

namespace walbus::itest::recipes {
namespace {

constexpr int kNatsPort = 56210;
constexpr int kNatsHttpPort = 56211;

// The AUDIT stream's entry in the server's /jsz report (config and state).
bool StreamDetail(rapidjson::Document* jsz, const rapidjson::Value** detail) {
  std::string body = HttpGet(kNatsHttpPort, "/jsz?streams=true&config=true");
  if (!ParseJson(body, jsz, "/jsz")) return false;
  const rapidjson::Value& accounts = Member(*jsz, "account_details");
  if (!accounts.IsArray()) return false;
  for (const rapidjson::Value& acc : accounts.GetArray()) {
    const rapidjson::Value& streams = Member(acc, "stream_detail");
    if (!streams.IsArray()) continue;
    for (const rapidjson::Value& s : streams.GetArray()) {
      const rapidjson::Value& name = Member(s, "name");
      if (name.IsString() && std::string(name.GetString()) == "AUDIT") {
        *detail = &s;
        return true;
      }
    }
  }
  return false;
}

class RecipeAudit : public PgFixtureOnPort<kPgPort> {};

TEST_F(RecipeAudit, WhoChangedRowFromWhatToWhat) {
  if (!WalbusHas("cnats")) GTEST_SKIP() << "walbus was built without the NATS adapter";
  std::string python = Python();
  ASSERT_FALSE(python.empty()) << "python3 is needed by the audit recipe (apt-get install python3)";
  ComposeBroker nats(ComposeBroker::Kind::kNats, kNatsPort, "/tmp/walbus-recipe-test-nats-56210",
                     "WALBUS_NATS_HTTP_PORT=" + std::to_string(kNatsHttpPort));
  ASSERT_TRUE(nats.Start());
  ASSERT_TRUE(FreshShop(sql(), kPort, "audit"));
  // Two application roles; roles are cluster-wide, so they may exist already.
  ASSERT_TRUE(sql().Exec(
      "DO $$ BEGIN "
      "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'alice') THEN CREATE ROLE alice LOGIN; END IF; "
      "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bob') THEN CREATE ROLE bob LOGIN; END IF; "
      "END $$"));
  Pg admin(ShopDsnFor(kPort));
  ASSERT_TRUE(admin.Exec("GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO alice, bob"));

  // The stream, as the README creates it: file storage, limits retention.
  std::string tool = Quote(python) + " " + Quote(RecipeFile("audit", "audit.py"));
  ShellResult created =
      Shell(tool + " create-stream --url " + nats.Url() +
            " --stream AUDIT --subjects 'audit.shop.>' --subjects 'shop._message.>'"
            " --max-age 30d --max-bytes 1GiB 2>&1");
  ASSERT_EQ(created.code, 0) << created.out;
  EXPECT_TRUE(Contains(created.out, "stream AUDIT created")) << created.out;
  {
    rapidjson::Document jsz;
    const rapidjson::Value* s = nullptr;
    ASSERT_TRUE(StreamDetail(&jsz, &s)) << "no stream AUDIT in /jsz";
    const rapidjson::Value& c = Member(*s, "config");
    EXPECT_TRUE(JsonEq(Member(c, "storage"), "\"file\"")) << ToJson(c);
    EXPECT_TRUE(JsonEq(Member(c, "retention"), "\"limits\"")) << ToJson(c);
    EXPECT_TRUE(JsonEq(Member(c, "max_age"), "2592000000000000")) << ToJson(c);  // 30 d in ns
    EXPECT_TRUE(JsonEq(Member(c, "max_bytes"), "1073741824")) << ToJson(c);
    EXPECT_TRUE(JsonEq(Member(c, "discard"), "\"old\"")) << ToJson(c);
  }
  // Running it again updates the limits in place.
  created = Shell(tool + " create-stream --url " + nats.Url() +
                  " --stream AUDIT --subjects 'audit.shop.>' --subjects 'shop._message.>'"
                  " --max-age 90d --max-bytes 1GiB 2>&1");
  ASSERT_EQ(created.code, 0) << created.out;
  EXPECT_TRUE(Contains(created.out, "stream AUDIT updated")) << created.out;

  const EnvChanges env = {{"SHOP_DSN", ShopDsnFor(kPort)},
                          {"NATS_URL", nats.Url()},
                          {"METRICS_LISTEN", ""}};
  const std::string config = RecipeFile("audit", "walbus.toml");
  Child w;
  ASSERT_TRUE(StartRecipeWalbus(&w, config, env, dir(), "run1"));

  Pg alice(ShopDsnFor(kPort, "alice", "application_name=billing"));
  Pg bob(ShopDsnFor(kPort, "bob", "application_name=support"));
  ASSERT_TRUE(alice.ok() && bob.ok());
  size_t events = 0;  // every row change and delete note walbus must store once
  ASSERT_TRUE(alice.Exec("INSERT INTO accounts (id, owner, email, balance) VALUES "
                         "(1, 'Ada', 'ada@example.com', 10), (2, 'Bo', NULL, 5)"));
  events += 2;
  ASSERT_TRUE(bob.Exec("UPDATE accounts SET email = 'ada@new.example', balance = 12.50 WHERE id = 1"));
  events += 1;
  // Noise on another row, in many transactions, while walbus is killed.
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(alice.Exec("UPDATE accounts SET balance = balance + 1 WHERE id = 2"));
    events += 1;
    if (i == 20) {
      w.Signal(SIGKILL);
      w.Wait(10s);
    }
  }
  ASSERT_TRUE(StartRecipeWalbus(&w, config, env, dir(), "run2"));
  ASSERT_TRUE(alice.Exec("BEGIN; SET LOCAL audit.actor = 'carol@example.com'; "
                         "UPDATE accounts SET status = 'frozen' WHERE id = 1; COMMIT"));
  events += 1;
  ASSERT_TRUE(bob.Exec("DELETE FROM accounts WHERE id = 1"));
  events += 2;  // the delete and its note
  uint64_t wal_end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "walbus_audit", wal_end, 60s)) << w.err();

  // Exactly once into the stream, despite the kill: Nats-Msg-Id dedup.
  {
    rapidjson::Document jsz;
    const rapidjson::Value* s = nullptr;
    ASSERT_TRUE(StreamDetail(&jsz, &s));
    EXPECT_TRUE(JsonEq(Member(Member(*s, "state"), "messages"), std::to_string(events)))
        << ToJson(Member(*s, "state"));
  }

  // who changed account 1: machine-readable answer.
  ShellResult r = Shell(tool + " who-changed --url " + nats.Url() +
                        " --stream AUDIT --subject-prefix audit.shop --table public.accounts"
                        " --key id=1 --json 2>&1");
  ASSERT_EQ(r.code, 0) << r.out;
  std::vector<std::string> lines = LinesWith(r.out, "{");
  ASSERT_EQ(lines.size(), 4u) << r.out;
  const char* kOps[] = {"insert", "update", "update", "delete"};
  const char* kBy[] = {"alice via billing", "bob via support", "carol@example.com via billing",
                       "bob via support"};
  const char* kChanges[] = {
      R"({"id":[null,1],"owner":[null,"Ada"],"email":[null,"ada@example.com"],)"
      R"("balance":[null,"10.00"],"status":[null,"active"]})",
      R"({"email":["ada@example.com","ada@new.example"],"balance":["10.00","12.50"]})",
      R"({"status":["active","frozen"]})",
      R"({"id":[1,null],"owner":["Ada",null],"email":["ada@new.example",null],)"
      R"("balance":["12.50",null],"status":["frozen",null]})"};
  std::string last_ts;
  for (size_t i = 0; i < lines.size(); ++i) {
    rapidjson::Document d;
    ASSERT_TRUE(ParseJson(lines[i], &d, "who-changed line"));
    EXPECT_TRUE(JsonEq(Member(d, "op"), std::string("\"") + kOps[i] + "\"")) << lines[i];
    EXPECT_TRUE(JsonEq(Member(d, "by"), std::string("\"") + kBy[i] + "\"")) << lines[i];
    EXPECT_TRUE(JsonEq(Member(d, "changes"), kChanges[i])) << lines[i];
    const rapidjson::Value& ts = Member(d, "ts");
    ASSERT_TRUE(ts.IsString()) << lines[i];
    EXPECT_GT(std::string(ts.GetString()), last_ts) << "not oldest first: " << r.out;
    last_ts = ts.GetString();
  }

  // Account 2: its insert and 40 updates, each once, all by alice.
  r = Shell(tool + " who-changed --url " + nats.Url() +
            " --table public.accounts --key id=2 --json 2>&1");
  ASSERT_EQ(r.code, 0) << r.out;
  lines = LinesWith(r.out, "{");
  EXPECT_EQ(lines.size(), 41u) << r.out;
  EXPECT_EQ(LinesWith(r.out, "\"by\":\"alice via billing\"").size(), 41u) << r.out;
  EXPECT_EQ(LinesWith(r.out, R"("balance":["44.00","45.00"])").size(), 1u) << r.out;

  // The human answer, as the README shows it.
  r = Shell(tool + " who-changed --url " + nats.Url() + " --table public.accounts --key id=1 2>&1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(Contains(r.out, "public.accounts (id=1): 4 change(s)")) << r.out;
  EXPECT_TRUE(Contains(r.out, "email: ada@example.com -> ada@new.example")) << r.out;
  EXPECT_TRUE(Contains(r.out, "delete   by bob via support")) << r.out;
  EXPECT_TRUE(Contains(r.out, "status: was frozen")) << r.out;

  // A row that never existed, and a malformed key.
  r = Shell(tool + " who-changed --url " + nats.Url() + " --table public.accounts --key id=99 2>&1");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(Contains(r.out, "no change of public.accounts (id=99)")) << r.out;
  r = Shell(tool + " who-changed --url " + nats.Url() + " --table public.accounts --key 99 2>&1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(Contains(r.out, "write COLUMN=VALUE")) << r.out;

  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

}  // namespace
}  // namespace walbus::itest::recipes
