// Lost connection to PostgreSQL (SPEC §4): walbus reconnects with back-off and
// resumes from the slot; no event is lost and none is skipped.
//
// While a loader thread commits 40,000 rows in transactions of 500 (retrying a
// batch whose connection broke, so every batch ends up committed exactly once),
// walbus streams to stdout and
//  - FastAndImmediateShutdownDuringLoad: PostgreSQL is stopped with a fast
//    shutdown mid-load and started again ~2 s later, then crashed with an
//    immediate shutdown (WAL recovery on restart) and started again;
//  - WalsenderTerminatedThreeTimes: only walbus's walsender is killed with
//    pg_terminate_backend(), three times.
// walbus must never exit, must reconnect by itself, and at the end (slot past
// the load, SIGTERM, exit 0) every row in the table appears in its output with
// the payload the table holds, no envelope id names two changes, and nothing
// appears that the table does not hold (rows of aborted transactions).
//
// These tests stop and crash their server, so they have their own PostgreSQL
// on port 55495 instead of the shared PgFixture one.
#include <atomic>
#include <map>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPort = 55495;
constexpr int kRows = 40000;
constexpr int kBatch = 500;  // rows per transaction
constexpr int kBatches = kRows / kBatch;
// Rows of the transactions the loader rolls back on purpose get ids above this.
constexpr int kAbortedBase = 1000000;

// Loads rows 1..kRows, kBatch per transaction, through its own libpq
// connection in its own thread. While the server is down it reconnects every
// 100 ms; a batch that failed (the connection broke before, during or after
// its COMMIT) is retried. Retries insert with ON CONFLICT DO NOTHING, so a
// batch whose COMMIT did go through before the break is not inserted twice.
// Every attempt writes its own payload (`md5(id):attempt`), so a row that
// reached walbus from an attempt that did not commit differs from the table.
// Every 4th batch it also rolls back a transaction of rows kAbortedBase + ...
class Loader {
 public:
  Loader(std::string dsn, double pause_s) : dsn_(std::move(dsn)), pause_s_(pause_s) {}
  // A test that ends early (a failed ASSERT) stops the load.
  ~Loader() {
    stop_.store(true);
    Join();
  }
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  void Start() {
    started_ = Clock::now();
    thread_ = std::thread([this] { Run(); });
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  int batches_done() const { return batches_done_.load(); }  // COMMIT returned OK
  int failed_attempts() const { return failed_attempts_.load(); }
  int reconnects() const { return reconnects_.load(); }
  bool done() const { return done_.load(); }
  double seconds() const { return seconds_; }
  // After Join(): "" or why the load gave up.
  const std::string& error() const { return error_; }
  // After Join(): the first few failures, to print.
  const std::vector<std::string>& failures() const { return failure_log_; }

 private:
  using Conn = std::unique_ptr<PGconn, decltype(&PQfinish)>;

  // "" when every statement of `sql` succeeded, else the error.
  static std::string Exec(PGconn* c, const std::string& sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(c, sql.c_str()), &PQclear);
    ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return "";
    std::string msg = res ? PQresultErrorMessage(res.get()) : PQerrorMessage(c);
    if (msg.empty()) msg = PQerrorMessage(c);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return msg.empty() ? "unknown error" : msg;
  }

  void Fail(const std::string& what) {
    failed_attempts_.fetch_add(1);
    if (failure_log_.size() < 12) {
      char when[32];
      std::snprintf(when, sizeof when, "%.2f s", SecondsSince(started_));
      failure_log_.push_back(std::string(when) + ": " + what);
    }
  }

  void Run() {
    Conn conn(nullptr, &PQfinish);
    auto give_up_at = Clock::now() + 90s;
    int attempt = 0;
    for (int b = 0; b < kBatches;) {
      if (stop_.load()) {
        error_ = "stopped at batch " + std::to_string(b);
        break;
      }
      if (Clock::now() > give_up_at) {
        error_ = "gave up at batch " + std::to_string(b) + " after 90 s";
        break;
      }
      if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
        if (conn) reconnects_.fetch_add(1);
        conn.reset(PQconnectdb((dsn_ + " connect_timeout=5").c_str()));
        if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
          conn.reset();
          std::this_thread::sleep_for(100ms);
          continue;
        }
        // "terminating connection due to immediate shutdown command" is expected.
        PQsetNoticeProcessor(conn.get(), [](void*, const char*) {}, nullptr);
      }
      ++attempt;
      int lo = b * kBatch + 1, hi = lo + kBatch - 1;
      char sql[512];
      std::snprintf(sql, sizeof sql,
                    "BEGIN; INSERT INTO load SELECT g, md5(g::text) || ':%d' "
                    "FROM generate_series(%d, %d) g ON CONFLICT (id) DO NOTHING; "
                    "SELECT pg_sleep(%.3f); COMMIT",
                    attempt, lo, hi, pause_s_);
      std::string err = Exec(conn.get(), sql);
      if (!err.empty()) {
        Fail("batch " + std::to_string(b) + ": " + err);
        if (PQstatus(conn.get()) == CONNECTION_OK) Exec(conn.get(), "ROLLBACK");
        continue;  // retry the same batch (reconnecting first if needed)
      }
      if (b % 4 == 0) {
        std::snprintf(sql, sizeof sql,
                      "BEGIN; INSERT INTO load SELECT g, 'rolled back' "
                      "FROM generate_series(%d, %d) g; ROLLBACK",
                      kAbortedBase + lo, kAbortedBase + hi);
        err = Exec(conn.get(), sql);  // a failure here is harmless: nothing commits
        if (!err.empty()) Fail("rollback transaction: " + err);
      }
      ++b;
      batches_done_.store(b);
    }
    seconds_ = SecondsSince(started_);
    done_.store(true);
  }

  std::string dsn_;
  double pause_s_;
  std::thread thread_;
  Clock::time_point started_;
  std::atomic<int> batches_done_{0};
  std::atomic<int> failed_attempts_{0};
  std::atomic<int> reconnects_{0};
  std::atomic<bool> done_{false};
  std::atomic<bool> stop_{false};
  double seconds_ = 0;
  std::string error_;
  std::vector<std::string> failure_log_;
};

// One PostgreSQL on kPort for this binary, which the tests stop and start.
class PgRestart : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-itest-pg-" + std::to_string(kPort) + ".lock");
    server_ = std::make_unique<PgServer>(kPort, "/tmp/walbus-itest-pg-" + std::to_string(kPort));
    server_ok_ = server_->Start();
  }

  static void TearDownTestSuite() {
    if (server_) server_->Stop();
    server_.reset();
    lock_.reset();
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(server_ok_) << "PostgreSQL on port " << kPort << " did not start";
    // A test that failed half-way may have left the server down.
    if (!server_->PostmasterRunning()) {
      ASSERT_TRUE(server_->Start());
    }
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = FreshDir(std::string(info->test_suite_name()) + "-" + info->name());
    Reconnect();
    ASSERT_TRUE(sql_->ok());
    Pg& pg = *sql_;
    ResetDatabase(pg);
    ASSERT_TRUE(pg.Exec("CREATE TABLE load (id int PRIMARY KEY, payload text NOT NULL)"));
  }

  // A new connection for the test's own queries (after a server restart).
  // Its notices ("terminating connection due to immediate shutdown command")
  // are expected here and kept out of the test's output.
  void Reconnect() {
    sql_ = std::make_unique<Pg>(server_->Dsn());
    if (sql_->ok()) PQsetNoticeProcessor(sql_->get(), [](void*, const char*) {}, nullptr);
  }

  Pg& sql() { return *sql_; }
  PgServer& server() { return *server_; }
  const std::string& dir() const { return dir_; }

  // A config with one stdout sink; status updates every second, so that the
  // slot lags what was printed and a reconnect re-sends some changes.
  std::string WriteConfig(const std::string& slot, const std::string& publication) {
    std::string path = dir_ + "/walbus.toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + server_->Dsn() + "\"\n"
                    "slot = \"" + slot + "\"\n"
                    "publication = \"" + publication + "\"\n"
                    "status_interval_ms = 1000\n"
                    "standby_retry_ms = 300\n"
                    "\n[metrics]\nlisten = \"\"\n"
                    "\n[[sink]]\nname = \"out\"\ntype = \"stdout\"\n");
    return path;
  }

  // Starts `walbus run -c config` and waits for its "streaming" log line.
  bool StartRun(Child* child, const std::string& config) {
    return StartStreaming(child, config, dir_, "run");
  }

  // Waits until walbus streams from `slot` again: its stderr has more than
  // `streaming_before` "INFO streaming" lines and a walsender other than
  // `old_pid` holds the slot. The seconds it took, or nullopt.
  std::optional<double> WaitForReconnect(Child* walbus, const std::string& slot,
                                         size_t streaming_before, int old_pid,
                                         milliseconds timeout) {
    auto t0 = Clock::now();
    bool back = WaitUntil(
        [&] {
          if (!walbus->Running()) return false;
          if (LinesWith(walbus->err(), "INFO streaming").size() <= streaming_before) return false;
          int pid = sql().SlotActivePid(slot).value_or(0);
          return pid != 0 && pid != old_pid;
        },
        timeout, 50ms);
    if (!back) return {};
    return SecondsSince(t0);
  }

  // After the load: waits until the slot is confirmed past the WAL end, stops
  // walbus with SIGTERM (exit 0) and checks its output against the table.
  void FinishAndVerify(Child* walbus, Loader* loader, const std::string& slot);

 private:
  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<PgServer> server_;
  static inline bool server_ok_ = false;

  std::string dir_;
  std::unique_ptr<Pg> sql_;
};

void PgRestart::FinishAndVerify(Child* walbus, Loader* loader, const std::string& slot) {
  loader->Join();
  std::printf("[ info ] load: %d batches in %.2f s, %d failed attempts, %d reconnects\n",
              loader->batches_done(), loader->seconds(), loader->failed_attempts(),
              loader->reconnects());
  for (const std::string& f : loader->failures()) std::printf("[ info ]   load: %s\n", f.c_str());
  EXPECT_EQ(loader->error(), "") << "the load did not finish";

  ASSERT_TRUE(walbus->Running()) << "walbus exited; stderr:\n" << walbus->err();
  uint64_t load_end = sql().CurrentWalLsn();
  uint64_t confirmed = 0;
  auto t0 = Clock::now();
  bool caught_up = WaitUntil(
      [&] {
        confirmed = sql().SlotConfirmed(slot).value_or(0);
        return confirmed >= load_end || !walbus->Running();
      },
      60s, 100ms) && confirmed >= load_end;
  EXPECT_TRUE(caught_up) << "confirmed_flush_lsn " << FormatLsn(confirmed)
                         << " never reached the WAL end after the load " << FormatLsn(load_end)
                         << "; walbus " << (walbus->Running() ? "running" : "exited")
                         << "; stderr:\n" << walbus->err();
  std::printf("[ info ] slot confirmed %s >= load end %s after %.2f s\n",
              FormatLsn(confirmed).c_str(), FormatLsn(load_end).c_str(), SecondsSince(t0));
  EXPECT_TRUE(walbus->Running()) << "walbus exited; stderr:\n" << walbus->err();
  if (walbus->Signal(SIGTERM)) {
    EXPECT_EQ(walbus->Wait(20s), std::optional<int>(0)) << walbus->err();
  }

  // The truth: what the table holds at the end.
  std::map<int, std::string> table;
  for (const Row& r : sql().Query("SELECT id::text, payload FROM load")) {
    if (r.size() == 2 && r[0] && r[1]) table[std::atoi(r[0]->c_str())] = *r[1];
  }
  EXPECT_EQ(table.size(), static_cast<size_t>(kRows)) << "rows in the table at the end";
  if (!table.empty()) {
    EXPECT_EQ(table.begin()->first, 1);
    EXPECT_EQ(table.rbegin()->first, kRows);
  }

  std::vector<Envelope> envs = ParseOutput(walbus->out_path());
  std::map<int, int> seen;                          // row -> envelopes
  std::map<std::string, std::string> change_of_id;  // id -> table|op|key|after
  std::map<int, std::string> id_of_row;             // row -> its insert's envelope id
  size_t id_conflicts = 0, row_conflicts = 0, foreign = 0, stale = 0;
  for (const Envelope& e : envs) {
    const rapidjson::Value& key = e["key"];
    const rapidjson::Value& payload = Member(e["after"], "payload");
    if (e.table != "public.load" || e.op != "insert" || !key.IsObject() ||
        !Member(key, "id").IsInt() || !payload.IsString()) {
      if (++foreign <= 5) ADD_FAILURE() << "unexpected envelope: " << e.json.substr(0, 300);
      continue;
    }
    int row = Member(key, "id").GetInt();
    auto in_table = table.find(row);
    if (in_table == table.end()) {
      // A row of an aborted transaction (or of nothing at all).
      if (++foreign <= 5) ADD_FAILURE() << "row not in the table: " << e.json.substr(0, 300);
      continue;
    }
    if (in_table->second != payload.GetString() && ++stale <= 5) {
      // An attempt that did not commit, or a wrong value.
      ADD_FAILURE() << "row " << row << " delivered with payload " << payload.GetString()
                    << ", the table holds " << in_table->second << ": " << e.json.substr(0, 300);
    }
    ++seen[row];
    std::string change = e.table + "|" + e.op + "|" + ToJson(key) + "|" + e.Field("after");
    auto [it, fresh] = change_of_id.emplace(e.id, change);
    if (!fresh && it->second != change && ++id_conflicts <= 5) {
      ADD_FAILURE() << "id " << e.id << " names two changes: " << it->second << " and " << change;
    }
    auto [rt, rfresh] = id_of_row.emplace(row, e.id);
    if (!rfresh && rt->second != e.id && ++row_conflicts <= 5) {
      ADD_FAILURE() << "row " << row << " delivered with ids " << rt->second << " and " << e.id;
    }
  }
  int missing = 0, first_missing = 0, last_missing = 0;
  for (const auto& [row, payload] : table) {
    if (seen.count(row) == 0) {
      if (missing++ == 0) first_missing = row;
      last_missing = row;
    }
  }
  EXPECT_EQ(missing, 0) << "rows in the table never delivered: " << missing << ", from "
                        << first_missing << " to " << last_missing;
  EXPECT_EQ(id_conflicts, 0u);
  EXPECT_EQ(row_conflicts, 0u);
  EXPECT_EQ(foreign, 0u);
  EXPECT_EQ(stale, 0u);
  std::printf("[ info ] %zu envelopes, %zu distinct ids, %zu re-delivered, %d rows missing, "
              "%zu not in the table, %zu with another payload\n",
              envs.size(), change_of_id.size(), envs.size() - change_of_id.size(), missing,
              foreign, stale);
  // The output (~15 MB) is kept only to look at a failure.
  if (!HasFailure()) std::remove(walbus->out_path().c_str());
}

// The WARN lines walbus logged for a lost PostgreSQL connection.
std::vector<std::string> RetryLines(const std::string& err) {
  std::vector<std::string> out;
  for (const std::string& line : LinesWith(err, "PostgreSQL unavailable")) {
    if (Contains(line, "retry_in_ms")) out.push_back(line);
  }
  return out;
}

TEST_F(PgRestart, FastAndImmediateShutdownDuringLoad) {
  std::string cfg = WriteConfig("restart_slot", "restart_pub");
  Child walbus;
  ASSERT_TRUE(StartRun(&walbus, cfg));
  Loader loader(server().Dsn(), 0.1);
  auto t_load = Clock::now();
  loader.Start();

  struct Outage {
    const char* how;
    int after_batches;
    bool immediate;
  };
  const Outage outages[] = {{"fast shutdown", 16, false}, {"immediate shutdown", 48, true}};
  std::string server_log = server().dir() + "/server.log";
  for (const Outage& o : outages) {
    ASSERT_TRUE(WaitUntil([&] { return loader.batches_done() >= o.after_batches; }, 60s))
        << "the load stalled at batch " << loader.batches_done();
    ASSERT_TRUE(walbus.Running()) << "walbus exited; stderr:\n" << walbus.err();
    size_t streaming_before = LinesWith(walbus.err(), "INFO streaming").size();
    size_t recoveries_before = LinesWith(ReadFile(server_log), "automatic recovery in progress").size();
    size_t lines = CountLines(walbus.out_path());
    int old_pid = sql().SlotActivePid("restart_slot").value_or(0);
    auto t_stop = Clock::now();
    if (o.immediate) {
      server().StopImmediate();
    } else {
      server().Stop();
    }
    double stop_s = SecondsSince(t_stop);
    ASSERT_FALSE(server().PostmasterRunning()) << o.how << " did not stop PostgreSQL";
    std::printf("[ info ] %s at %.2f s into the load (batch %d%s, %zu envelopes) took %.2f s\n",
                o.how, SecondsSince(t_load), loader.batches_done(),
                loader.done() ? ", load done" : "", lines, stop_s);
    std::this_thread::sleep_for(2s);
    EXPECT_TRUE(walbus.Running()) << "walbus exited while PostgreSQL was down; stderr:\n"
                                  << walbus.err();
    ASSERT_TRUE(server().Start());
    Reconnect();
    ASSERT_TRUE(sql().ok());
    if (o.immediate) {
      EXPECT_GT(LinesWith(ReadFile(server_log), "automatic recovery in progress").size(),
                recoveries_before)
          << "PostgreSQL did not run crash recovery after the immediate shutdown";
    }
    std::optional<double> back =
        WaitForReconnect(&walbus, "restart_slot", streaming_before, old_pid, 35s);
    ASSERT_TRUE(back.has_value()) << "walbus did not stream again within 35 s after the "
                                  << o.how << "; walbus "
                                  << (walbus.Running() ? "running" : "exited") << "; stderr:\n"
                                  << walbus.err();
    std::printf("[ info ] walbus streams again %.2f s after the restart (%.2f s after the stop)\n",
                *back, SecondsSince(t_stop));
  }

  FinishAndVerify(&walbus, &loader, "restart_slot");
  std::vector<std::string> retries = RetryLines(walbus.err());
  EXPECT_GE(retries.size(), 2u) << "stderr does not mention retrying PostgreSQL:\n"
                                << walbus.err();
  for (const std::string& line : retries) std::printf("[ info ]   %s\n", line.c_str());
  EXPECT_TRUE(LinesWith(walbus.err(), "ERROR").empty()) << walbus.err();
}

TEST_F(PgRestart, WalsenderTerminatedThreeTimes) {
  std::string cfg = WriteConfig("term_slot", "term_pub");
  Child walbus;
  ASSERT_TRUE(StartRun(&walbus, cfg));
  Loader loader(server().Dsn(), 0.05);
  auto t_load = Clock::now();
  loader.Start();

  for (int after : {15, 35, 55}) {
    ASSERT_TRUE(WaitUntil([&] { return loader.batches_done() >= after; }, 60s))
        << "the load stalled at batch " << loader.batches_done();
    ASSERT_TRUE(walbus.Running()) << "walbus exited; stderr:\n" << walbus.err();
    size_t streaming_before = LinesWith(walbus.err(), "INFO streaming").size();
    int old_pid = sql().SlotActivePid("term_slot").value_or(0);
    ASSERT_NE(old_pid, 0) << "no walsender holds the slot";
    auto t_kill = Clock::now();
    EXPECT_EQ(sql().Scalar("SELECT pg_terminate_backend(active_pid)::text FROM "
                           "pg_replication_slots WHERE slot_name = 'term_slot'"),
              std::optional<std::string>("true"));
    std::printf("[ info ] terminated walsender %d at %.2f s into the load (batch %d, %zu "
                "envelopes)\n",
                old_pid, SecondsSince(t_load), loader.batches_done(),
                CountLines(walbus.out_path()));
    std::optional<double> back =
        WaitForReconnect(&walbus, "term_slot", streaming_before, old_pid, 35s);
    ASSERT_TRUE(back.has_value()) << "walbus did not stream again within 35 s; walbus "
                                  << (walbus.Running() ? "running" : "exited") << "; stderr:\n"
                                  << walbus.err();
    std::printf("[ info ] walbus streams again after %.2f s\n", SecondsSince(t_kill));
  }

  FinishAndVerify(&walbus, &loader, "term_slot");
  EXPECT_EQ(loader.failed_attempts(), 0) << "the load itself should not have been disturbed";
  std::vector<std::string> retries = RetryLines(walbus.err());
  EXPECT_GE(retries.size(), 3u) << "stderr does not mention retrying PostgreSQL 3 times:\n"
                                << walbus.err();
  for (const std::string& line : retries) std::printf("[ info ]   %s\n", line.c_str());
  EXPECT_TRUE(LinesWith(walbus.err(), "ERROR").empty()) << walbus.err();
}

}  // namespace
}  // namespace walbus::itest
