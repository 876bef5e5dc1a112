// Availability (SPEC §5) under load: two walbus processes run with the same
// configuration (a JetStream sink, the stream created by walbus). The one
// holding the slot streams; the other stands by, logging that once, and
// retries every standby_retry_ms. While a 50,000-row load commits, the active
// one is killed with SIGKILL at a random moment; the standby must take over
// within 20 s, and at the end the stream holds every row exactly once
// (Nats-Msg-Id deduplication drops what the takeover re-sent), the slot is
// confirmed past the load and SIGTERM stops everything with exit 0.
//
// Servers: PostgreSQL on 55450 (compose/pg.sh) and nats-server -js on 55451
// (compose/nats.sh, monitoring port off). The lock file
// /tmp/walbus-ha-logs-55450.lock serialises this binary with logs_test, which
// uses the same ports.
//
// Which instance is active is read from PostgreSQL, not from the logs: each
// instance gets its own PGAPPNAME (libpq takes application_name from it; the
// config file is the same), and pg_stat_activity names the application of
// the walsender whose PID is pg_replication_slots.active_pid. The logs are
// then checked against it ("INFO streaming" on the active one only).
#include <nats/nats.h>

#include <atomic>
#include <random>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPgPort = 55450;
constexpr int kNatsPort = 55451;
constexpr const char* kSlot = "ha_slot";
constexpr const char* kStream = "HA";
constexpr int kRows = 50000;
constexpr int kBatch = 500;  // rows per transaction

std::string NatsEnv() {
  return "WALBUS_NATS_DIR=/tmp/walbus-ha-nats-" + std::to_string(kNatsPort) +
         " WALBUS_NATS_HTTP_PORT=0 '" + std::string(kSourceDir) + "/compose/nats.sh'";
}

class HaTakeover : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-ha-logs-" + std::to_string(kPgPort) + ".lock");
    pg_ = std::make_unique<PgServer>(kPgPort, "/tmp/walbus-ha-pg-" + std::to_string(kPgPort));
    pg_ok_ = pg_->Start();
    // A fresh JetStream store every time: the stream must be created by walbus.
    Shell(NatsEnv() + " reset " + std::to_string(kNatsPort) + " >/dev/null 2>&1");
    ShellResult r = Shell(NatsEnv() + " start " + std::to_string(kNatsPort) + " 2>&1");
    nats_ok_ = r.code == 0;
    if (!nats_ok_) ADD_FAILURE() << "compose/nats.sh start " << kNatsPort << ": " << r.out;
  }

  static void TearDownTestSuite() {
    Shell(NatsEnv() + " stop " + std::to_string(kNatsPort) + " >/dev/null 2>&1");
    if (pg_) pg_->Stop();
    pg_.reset();
    lock_.reset();
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(pg_ok_) << "PostgreSQL on port " << kPgPort << " did not start";
    ASSERT_TRUE(nats_ok_) << "nats-server on port " << kNatsPort << " did not start";
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = FreshDir(std::string(info->test_suite_name()) + "-" + info->name());
    sql_ = std::make_unique<Pg>(pg_->Dsn());
    ASSERT_TRUE(sql_->ok());
    ResetDatabase(*sql_);
  }

  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }

  // application_name of the walsender holding the slot; "" when the slot is
  // inactive (or missing).
  std::string ActiveApp() {
    Rows rows = sql().Query(
        "SELECT coalesce(a.application_name, '?') FROM pg_replication_slots s "
        "JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = '" +
        std::string(kSlot) + "'");
    if (rows.empty() || rows[0].empty() || !rows[0][0]) return "";
    return *rows[0][0];
  }

  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<PgServer> pg_;
  static inline bool pg_ok_ = false;
  static inline bool nats_ok_ = false;

 private:
  std::string dir_;
  std::unique_ptr<Pg> sql_;
};

size_t Count(const std::string& text, std::string_view needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The PID in a "standing by: ... is active for PID N" line; 0 when absent.
int StandbyPid(const std::string& err) {
  std::vector<std::string> lines = LinesWith(err, "standing by");
  if (lines.empty()) return 0;
  size_t at = lines[0].find("for PID ");
  return at == std::string::npos ? 0 : std::atoi(lines[0].c_str() + at + 8);
}

// What the JetStream stream holds, read back with cnats.
struct StreamContents {
  bool ok = false;
  std::string error;
  uint64_t messages = 0;
  std::vector<int> per_row;  // index = row id, value = messages carrying that row
  size_t bad_messages = 0;   // not an insert of public.load, or no/mismatching Nats-Msg-Id
  std::string first_bad;
  std::set<std::string> msg_ids;
  // Messages stored before the kill (seq <= `stored`) whose transaction was
  // not yet confirmed (commit LSN >= `confirmed`): PostgreSQL re-sent them to
  // the new active instance, and JetStream dropped them as duplicates.
  size_t resent = 0;
};

StreamContents ReadStream(const std::string& url, const std::string& stream, uint64_t stored = 0,
                          uint64_t confirmed = UINT64_MAX) {
  StreamContents c;
  c.per_row.assign(kRows + 1, 0);
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  jsStreamInfo* si = nullptr;
  natsStatus s = natsConnection_ConnectTo(&nc, url.c_str());
  if (s == NATS_OK) s = natsConnection_JetStream(&js, nc, nullptr);
  if (s == NATS_OK) s = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr);
  if (s != NATS_OK) {
    c.error = std::string("cannot read stream info: ") + natsStatus_GetText(s);
  } else {
    c.messages = si->State.Msgs;
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
    c.ok = true;
    for (uint64_t seq = first; seq <= last && seq != 0; ++seq) {
      natsMsg* msg = nullptr;
      s = js_GetMsg(&msg, js, stream.c_str(), seq, nullptr, nullptr);
      if (s != NATS_OK) {
        c.ok = false;
        c.error = "js_GetMsg(" + std::to_string(seq) + "): " + natsStatus_GetText(s);
        break;
      }
      std::string data(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
      const char* header = nullptr;
      std::string msg_id;
      if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &header) == NATS_OK && header != nullptr) {
        msg_id = header;
      }
      std::string subject = natsMsg_GetSubject(msg);
      natsMsg_Destroy(msg);
      std::optional<Envelope> e = ParseEnvelopeLine(subject + "\t" + data);
      const rapidjson::Value* key = e ? &(*e)["key"] : nullptr;
      bool good = e && e->table == "public.load" && e->op == "insert" && key->IsObject() &&
                  key->HasMember("id") && (*key)["id"].IsInt() && !msg_id.empty() &&
                  msg_id == e->id && subject == "postgres.public.load.insert";
      int row = good ? (*key)["id"].GetInt() : 0;
      if (row < 1 || row > kRows) good = false;
      if (!good) {
        if (c.bad_messages++ == 0) {
          c.first_bad = "seq " + std::to_string(seq) + " subject " + subject + " Nats-Msg-Id '" +
                        msg_id + "': " + data.substr(0, 300);
        }
        continue;
      }
      ++c.per_row[row];
      c.msg_ids.insert(msg_id);
      if (seq <= stored && e->commit_lsn >= confirmed) ++c.resent;
    }
  }
  if (si != nullptr) jsStreamInfo_Destroy(si);
  if (js != nullptr) jsCtx_Destroy(js);
  if (nc != nullptr) natsConnection_Destroy(nc);
  return c;
}

// Messages in the stream (0 when it cannot be read).
uint64_t StreamMessages(const std::string& url, const std::string& stream) {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  jsStreamInfo* si = nullptr;
  uint64_t n = 0;
  if (natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
      js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
    n = si->State.Msgs;
  }
  if (si != nullptr) jsStreamInfo_Destroy(si);
  if (js != nullptr) jsCtx_Destroy(js);
  if (nc != nullptr) natsConnection_Destroy(nc);
  return n;
}

TEST_F(HaTakeover, StandbyTakesOverFromKilledActiveDuringLoadExactlyOnceIntoJetStream) {
  ASSERT_TRUE(sql().Exec(
      "CREATE TABLE load (id int PRIMARY KEY, payload text);"
      "CREATE PROCEDURE fill(batches int, per int, pause float8) LANGUAGE plpgsql AS $$ "
      "BEGIN "
      "  FOR i IN 0 .. batches - 1 LOOP "
      "    INSERT INTO load SELECT g, md5(g::text) FROM generate_series(i * per + 1, i * per + per) g; "
      "    COMMIT; "
      "    PERFORM pg_sleep(pause); "
      "  END LOOP; "
      "END $$;"
      // The publication is an administrator's, as README "Running in
      // production" recommends. (Two instances that both create it at the
      // same moment race: the loser gets SQLSTATE 23505 from
      // pg_publication_pubname_index, which walbus treats as fatal.)
      "CREATE PUBLICATION ha_pub FOR TABLE load;"));
  const std::string nats_url = "nats://127.0.0.1:" + std::to_string(kNatsPort);
  // One file for both instances. status_interval_ms 1000 (the default): the
  // slot lags what the stream holds, so the takeover re-sends and JetStream
  // must drop the duplicates.
  const std::string cfg = dir() + "/ha.toml";
  WriteFile(cfg, "[source]\n"
                 "dsn = \"" + pg_->Dsn() + "\"\n"
                 "slot = \"" + std::string(kSlot) + "\"\n"
                 "publication = \"ha_pub\"\n"
                 "status_interval_ms = 1000\n"
                 "standby_retry_ms = 1000\n"
                 "\n[metrics]\nlisten = \"\"\n"
                 "\n[[sink]]\nname = \"js\"\ntype = \"jetstream\"\n"
                 "url = \"" + nats_url + "\"\n"
                 "stream = \"" + std::string(kStream) + "\"\n"
                 "create_stream = true\n");

  // Both at once: they race for the JetStream stream and the slot.
  Child a, b;
  auto started = Clock::now();
  ASSERT_TRUE(a.Start({kWalbus, "run", "-c", cfg}, dir() + "/a.out", dir() + "/a.err",
                      {{"PGAPPNAME", "walbus-a"}}));
  ASSERT_TRUE(b.Start({kWalbus, "run", "-c", cfg}, dir() + "/b.out", dir() + "/b.err",
                      {{"PGAPPNAME", "walbus-b"}}));
  std::string active_app;
  bool settled = WaitUntil(
      [&] {
        if (!a.Running() || !b.Running()) return true;
        active_app = ActiveApp();
        bool streaming = Contains(a.err(), "INFO streaming") || Contains(b.err(), "INFO streaming");
        bool standby = Contains(a.err(), "standing by") || Contains(b.err(), "standing by");
        return !active_app.empty() && streaming && standby;
      },
      30s, 50ms);
  ASSERT_TRUE(a.Running()) << "instance a exited:\n" << a.err();
  ASSERT_TRUE(b.Running()) << "instance b exited:\n" << b.err();
  ASSERT_TRUE(settled) << "no instance streams while the other stands by within 30 s; slot "
                       << "held by '" << active_app << "'\n--- a:\n" << a.err() << "--- b:\n"
                       << b.err();
  ASSERT_TRUE(active_app == "walbus-a" || active_app == "walbus-b")
      << "the slot's walsender has application_name '" << active_app
      << "' (PGAPPNAME not honoured?)";
  Child& active = active_app == "walbus-a" ? a : b;
  Child& standby = active_app == "walbus-a" ? b : a;
  const char* active_name = active_app == "walbus-a" ? "a" : "b";
  const char* standby_name = active_app == "walbus-a" ? "b" : "a";
  std::printf("[ info ] %s holds the slot after %.2f s, %s stands by\n", active_name,
              SecondsSince(started), standby_name);
  // The logs agree with PostgreSQL.
  EXPECT_TRUE(Contains(active.err(), "INFO streaming")) << active.err();
  EXPECT_FALSE(Contains(active.err(), "standing by")) << active.err();
  EXPECT_FALSE(Contains(standby.err(), "INFO streaming")) << standby.err();
  EXPECT_TRUE(Contains(standby.err(), "standing by")) << standby.err();
  int active_walsender = sql().SlotActivePid(kSlot).value_or(0);
  EXPECT_EQ(StandbyPid(standby.err()), active_walsender)
      << "the standby names another PID than the slot's walsender:\n" << standby.err();
  auto standby_since = Clock::now();

  // The load, through its own connection in its own thread: 100 transactions
  // of 500 rows with 60 ms pauses, about 7 s.
  std::atomic<bool> load_done{false};
  std::string load_error;
  auto load_start = Clock::now();
  std::thread loader([&] {
    Pg pg(pg_->Dsn());
    load_error = pg.TryExec("CALL fill(" + std::to_string(kRows / kBatch) + ", " +
                            std::to_string(kBatch) + ", 0.06)");
    load_done.store(true);
  });
  struct JoinOnExit {
    std::thread& t;
    ~JoinOnExit() {
      if (t.joinable()) t.join();
    }
  } join_on_exit{loader};

  std::random_device rd;
  unsigned seed = rd();
  std::mt19937 rng(seed);
  double kill_at = std::uniform_real_distribution<double>(1.5, 5.0)(rng);
  std::printf("[ info ] seed %u: kill -9 the active instance %.2f s into the load\n", seed,
              kill_at);
  while (SecondsSince(load_start) < kill_at && !load_done.load()) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(active.Running()) << "the active instance exited:\n" << active.err();
  ASSERT_TRUE(standby.Running()) << "the standby exited:\n" << standby.err();
  // Still the same one (nothing moved the slot while both ran).
  EXPECT_EQ(ActiveApp(), active_app);
  uint64_t before_kill = StreamMessages(nats_url, kStream);
  uint64_t confirmed_at_kill = sql().SlotConfirmed(kSlot).value_or(0);
  double standby_seconds = SecondsSince(standby_since);
  ASSERT_TRUE(active.Signal(SIGKILL));
  auto killed = Clock::now();
  EXPECT_EQ(active.Wait(10s), std::optional<int>(128 + SIGKILL));
  // Where the new active instance starts (it confirms nothing new this soon).
  uint64_t confirmed_after_kill = sql().SlotConfirmed(kSlot).value_or(0);
  std::printf("[ info ] killed %s at %.2f s into the load (load %s), stream had %" PRIu64
              " messages, slot confirmed %s (just before) / %s (just after)\n",
              active_name, SecondsSince(load_start), load_done.load() ? "done" : "running",
              before_kill, FormatLsn(confirmed_at_kill).c_str(),
              FormatLsn(confirmed_after_kill).c_str());

  // The standby logged "standing by" once for all its retries (at most once a minute).
  std::string waiting_log = standby.err();
  size_t standby_lines = Count(waiting_log, "standing by");
  size_t allowed = 1 + static_cast<size_t>(standby_seconds / 60.0);
  EXPECT_GE(standby_lines, 1u);
  EXPECT_LE(standby_lines, allowed)
      << "\"standing by\" logged " << standby_lines << " times in " << standby_seconds
      << " s of standing by (retry every 1000 ms): once a minute at most\n" << waiting_log;

  // Takeover: the standby streams ("INFO streaming" in its log, the slot held
  // by its walsender).
  double log_takeover = -1, slot_takeover = -1;
  bool took_over = WaitUntil(
      [&] {
        if (!standby.Running()) return true;
        if (slot_takeover < 0 && ActiveApp() == (std::string("walbus-") + standby_name)) {
          slot_takeover = SecondsSince(killed);
        }
        if (log_takeover < 0 && Contains(standby.err(), "INFO streaming")) {
          log_takeover = SecondsSince(killed);
        }
        return log_takeover >= 0 && slot_takeover >= 0;
      },
      20s, 10ms);
  ASSERT_TRUE(standby.Running()) << "the standby exited:\n" << standby.err();
  std::printf("[ info ] takeover: %s logged \"streaming\" %.3f s after the kill, its walsender "
              "held the slot at %.3f s (standby_retry_ms 1000)\n",
              standby_name, log_takeover, slot_takeover);
  ASSERT_TRUE(took_over) << "the standby did not take over within 20 s of the kill (log "
                         << log_takeover << " s, slot " << slot_takeover << " s):\n"
                         << standby.err();
  EXPECT_LE(log_takeover, 20.0);

  // The killed instance comes back: it is the standby now, naming the new walsender.
  Child again;
  ASSERT_TRUE(again.Start({kWalbus, "run", "-c", cfg}, dir() + "/again.out",
                          dir() + "/again.err", {{"PGAPPNAME", "walbus-again"}}));
  EXPECT_TRUE(WaitUntil([&] { return !again.Running() || Contains(again.err(), "standing by"); },
                        15s))
      << "the restarted instance does not stand by:\n" << again.err();
  EXPECT_TRUE(again.Running()) << again.err();
  EXPECT_EQ(StandbyPid(again.err()), sql().SlotActivePid(kSlot).value_or(-1)) << again.err();
  EXPECT_FALSE(Contains(again.err(), "INFO streaming")) << again.err();

  loader.join();
  ASSERT_EQ(load_error, "") << "the load failed";
  std::printf("[ info ] load of %d rows in %d transactions took %.2f s\n", kRows, kRows / kBatch,
              SecondsSince(load_start));
  ASSERT_EQ(sql().Scalar("SELECT count(*) FROM load"), std::optional<std::string>("50000"));
  uint64_t load_end = sql().CurrentWalLsn();

  uint64_t confirmed = 0;
  bool caught_up = WaitSlotConfirmed(sql(), kSlot, load_end, 60s, &confirmed);
  EXPECT_TRUE(caught_up) << "confirmed_flush_lsn " << FormatLsn(confirmed)
                         << " never reached the WAL end after the load " << FormatLsn(load_end)
                         << "\n" << standby.err();
  EXPECT_EQ(ActiveApp(), std::string("walbus-") + standby_name);

  // Exactly once in the stream.
  auto read_start = Clock::now();
  StreamContents c = ReadStream(nats_url, kStream, before_kill, confirmed_after_kill);
  ASSERT_TRUE(c.ok) << c.error;
  std::printf("[ info ] stream %s: %" PRIu64 " messages, %zu distinct Nats-Msg-Id (read in %.2f s); "
              "%zu events stored before the kill were past the slot's confirmed %s, so re-sent "
              "after the takeover and dropped by Nats-Msg-Id\n",
              kStream, c.messages, c.msg_ids.size(), SecondsSince(read_start), c.resent,
              FormatLsn(confirmed_after_kill).c_str());
  EXPECT_EQ(c.messages, static_cast<uint64_t>(kRows));
  EXPECT_EQ(c.bad_messages, 0u) << "the first: " << c.first_bad;
  EXPECT_EQ(c.msg_ids.size(), static_cast<size_t>(kRows));
  int missing = 0, doubled = 0, first_missing = 0, first_doubled = 0;
  for (int row = 1; row <= kRows; ++row) {
    if (c.per_row[row] == 0 && missing++ == 0) first_missing = row;
    if (c.per_row[row] > 1 && doubled++ == 0) first_doubled = row;
  }
  EXPECT_EQ(missing, 0) << "rows not in the stream, the first: " << first_missing;
  EXPECT_EQ(doubled, 0) << "rows in the stream more than once, the first: " << first_doubled;

  // SIGTERM: both the streaming one and the standby stop cleanly.
  standby.Signal(SIGTERM);
  again.Signal(SIGTERM);
  EXPECT_EQ(standby.Wait(20s), std::optional<int>(0)) << standby.err();
  EXPECT_EQ(again.Wait(20s), std::optional<int>(0)) << again.err();
  confirmed = sql().SlotConfirmed(kSlot).value_or(0);
  EXPECT_GE(confirmed, load_end) << "final confirmed_flush_lsn " << FormatLsn(confirmed)
                                 << " is before the WAL end after the load " << FormatLsn(load_end);
  EXPECT_EQ(sql().SlotActivePid(kSlot), std::optional<int>(0));
  EXPECT_EQ(StreamMessages(nats_url, kStream), static_cast<uint64_t>(kRows));

  for (Child* ch : {&a, &b, &again}) {
    EXPECT_TRUE(LinesWith(ch->err(), " ERROR ").empty()) << ch->err();
  }
  // The restarted instance never streamed, and logged "standing by" once.
  EXPECT_FALSE(Contains(again.err(), "INFO streaming")) << again.err();
  EXPECT_EQ(Count(again.err(), "standing by"), 1u) << again.err();
}

}  // namespace
}  // namespace walbus::itest
