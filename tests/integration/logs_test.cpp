// Logging (SPEC §1): logs go to stderr, one line per record with timestamp and
// level; `--log-format json` gives JSON lines {ts, level, msg, fields...};
// passwords in a DSN or URL never appear in any output of any command.
//
// Servers: PostgreSQL on 55450 (trust authentication: it ignores the DSN's
// password), nats-server on 55451 without authentication (it ignores a URL's
// user and password) and Redis on 55453 started with --requirepass (so the
// password in the redis URL is really used). 55452 is left closed: the
// "failing connection" cases point there. The lock file
// /tmp/walbus-ha-logs-55450.lock serialises this binary with ha_takeover_test.
#include <time.h>

#include <regex>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPgPort = 55450;
constexpr int kNatsPort = 55451;
constexpr int kClosedPort = 55452;
constexpr int kRedisPort = 55453;
constexpr const char* kSecret = "Sup3rS3cret!x";
// Any part of the secret counts as a leak (e.g. a password cut at '!').
constexpr const char* kSecretPart = "Sup3rS3cret";

std::string NatsScript() {
  return "WALBUS_NATS_DIR=/tmp/walbus-logs-nats-" + std::to_string(kNatsPort) +
         " WALBUS_NATS_HTTP_PORT=0 '" + std::string(kSourceDir) + "/compose/nats.sh'";
}
std::string RedisScript() {
  return "WALBUS_REDIS_DIR=/tmp/walbus-logs-redis-" + std::to_string(kRedisPort) +
         " WALBUS_REDIS_OPTS='--requirepass " + std::string(kSecret) + "' '" +
         std::string(kSourceDir) + "/compose/redis.sh'";
}

class Logs : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-ha-logs-" + std::to_string(kPgPort) + ".lock");
    pg_ = std::make_unique<PgServer>(kPgPort, "/tmp/walbus-ha-pg-" + std::to_string(kPgPort));
    pg_ok_ = pg_->Start();
    ShellResult n = Shell(NatsScript() + " start " + std::to_string(kNatsPort) + " 2>&1");
    nats_ok_ = n.code == 0;
    if (!nats_ok_) ADD_FAILURE() << "compose/nats.sh start: " << n.out;
    Shell(RedisScript() + " stop " + std::to_string(kRedisPort) + " >/dev/null 2>&1");
    ShellResult r = Shell(RedisScript() + " start " + std::to_string(kRedisPort) + " 2>&1");
    redis_ok_ = r.code == 0;
    if (!redis_ok_) ADD_FAILURE() << "compose/redis.sh start: " << r.out;
  }

  static void TearDownTestSuite() {
    Shell(RedisScript() + " stop " + std::to_string(kRedisPort) + " >/dev/null 2>&1");
    Shell(NatsScript() + " stop " + std::to_string(kNatsPort) + " >/dev/null 2>&1");
    if (pg_) pg_->Stop();
    pg_.reset();
    lock_.reset();
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(pg_ok_) << "PostgreSQL on port " << kPgPort << " did not start";
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = FreshDir(std::string(info->test_suite_name()) + "-" + info->name());
    sql_ = std::make_unique<Pg>(pg_->Dsn());
    ASSERT_TRUE(sql_->ok());
    ResetDatabase(*sql_);
    ASSERT_TRUE(sql_->Exec("CREATE TABLE t (id int PRIMARY KEY, v text)"));
  }

  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }

  std::string PgDsn(const std::string& extra = "") const {
    return "host=127.0.0.1 port=" + std::to_string(kPgPort) + " user=postgres dbname=postgres" +
           (extra.empty() ? "" : " " + extra);
  }

  // A config file: [source] with `dsn`, `source_extra` lines, metrics off,
  // then `sinks` (TOML [[sink]] tables).
  std::string Config(const std::string& name, const std::string& dsn, const std::string& slot,
                     const std::string& sinks, const std::string& source_extra = "") {
    std::string path = dir_ + "/" + name + ".toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + dsn + "\"\n"
                    "slot = \"" + slot + "\"\n"
                    "publication = \"logs_pub\"\n"
                    "status_interval_ms = 200\n"
                    "standby_retry_ms = 300\n" +
                    source_extra +
                    "\n[metrics]\nlisten = \"\"\n\n" + sinks);
    return path;
  }

  static std::string StdoutSink() { return "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n"; }

  // `walbus run` until its stderr shows `marker` (or `wait` passes), then
  // `between()`, then SIGTERM; the exit code goes to *code.
  template <class Between>
  RunResult RunThenStop(const std::vector<std::string>& args, const std::string& tag,
                        const std::string& marker, Between between, milliseconds wait = 15s,
                        const EnvChanges& env = {}) {
    return RunWalbusThenStop(
        args, dir_, tag, env, [&](const std::string& err) { return Contains(err, marker); },
        "no '" + marker + "' in stderr", wait, between);
  }
  RunResult RunThenStop(const std::vector<std::string>& args, const std::string& tag,
                        const std::string& marker, milliseconds wait = 15s,
                        const EnvChanges& env = {}) {
    return RunThenStop(args, tag, marker, [](Child&) {}, wait, env);
  }

  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<PgServer> pg_;
  static inline bool pg_ok_ = false;
  static inline bool nats_ok_ = false;
  static inline bool redis_ok_ = false;

 private:
  std::string dir_;
  std::unique_ptr<Pg> sql_;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// UTC seconds of "YYYY-MM-DDTHH:MM:SS[.fff]Z" at the start of `ts`; -1 when malformed.
int64_t ParseUtc(const std::string& ts) {
  static const std::regex kTs(R"(^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z)");
  std::smatch m;
  if (!std::regex_search(ts, m, kTs)) return -1;
  struct tm tm {};
  tm.tm_year = std::stoi(m[1]) - 1900;
  tm.tm_mon = std::stoi(m[2]) - 1;
  tm.tm_mday = std::stoi(m[3]);
  tm.tm_hour = std::stoi(m[4]);
  tm.tm_min = std::stoi(m[5]);
  tm.tm_sec = std::stoi(m[6]);
  return static_cast<int64_t>(timegm(&tm));
}

// Records a failure for every stderr line of `err` that is not a JSON object
// with string ts (ISO 8601 UTC, near now), level (a known level) and a
// non-empty msg; returns the parsed records.
std::vector<std::shared_ptr<rapidjson::Document>> ExpectJsonLines(const std::string& err,
                                                                  const std::string& tag) {
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error"};
  std::vector<std::shared_ptr<rapidjson::Document>> out;
  int64_t now = static_cast<int64_t>(::time(nullptr));
  int n = 0;
  for (const std::string& line : Lines(err)) {
    ++n;
    auto d = std::make_shared<rapidjson::Document>();
    d->Parse(line.c_str(), line.size());
    if (d->HasParseError() || !d->IsObject()) {
      ADD_FAILURE() << tag << " stderr line " << n << " is not a JSON object: " << line;
      continue;
    }
    const rapidjson::Value& ts = Member(*d, "ts");
    const rapidjson::Value& level = Member(*d, "level");
    const rapidjson::Value& msg = Member(*d, "msg");
    if (!ts.IsString() || !level.IsString() || !msg.IsString()) {
      ADD_FAILURE() << tag << " stderr line " << n << " lacks string ts/level/msg: " << line;
      continue;
    }
    int64_t t = ParseUtc(ts.GetString());
    EXPECT_TRUE(t >= 0 && t > now - 3600 && t < now + 60)
        << tag << " line " << n << ": ts is not a current UTC ISO 8601 time: " << line;
    EXPECT_EQ(kLevels.count(level.GetString()), 1u) << tag << " line " << n << ": " << line;
    EXPECT_GT(msg.GetStringLength(), 0u) << tag << " line " << n << ": " << line;
    for (auto it = d->MemberBegin(); it != d->MemberEnd(); ++it) {
      EXPECT_FALSE(it->value.IsObject() || it->value.IsArray())
          << tag << " line " << n << ": field " << it->name.GetString() << " is not a scalar";
    }
    out.push_back(d);
  }
  EXPECT_EQ(err.empty() || err.back() == '\n', true) << tag << ": the last line is unterminated";
  return out;
}

bool HasMsg(const std::vector<std::shared_ptr<rapidjson::Document>>& recs, const std::string& msg) {
  for (const auto& d : recs) {
    const rapidjson::Value& m = Member(*d, "msg");
    if (m.IsString() && msg == m.GetString()) return true;
  }
  return false;
}

// (a) Every stderr line of a short run in JSON format, and of a failing
// start, a retrying start and `slot status`, is a JSON object with ts, level, msg.
TEST_F(Logs, JsonFormatEveryStderrLineIsAnObjectWithTsLevelMsg) {
  // A config path with a quote, a backslash and a space: the "config" field
  // must come out escaped, and read back the same.
  std::string cfg_src = Config("plain", PgDsn(), "logs_json", StdoutSink());
  std::string cfg = dir() + "/we\"ird \\ cfg.toml";
  WriteFile(cfg, ReadFile(cfg_src));

  RunResult run = RunThenStop(
      {"--log-format", "json", "--log-level", "trace", "run", "-c", cfg}, "run_json",
      "\"msg\":\"streaming\"", [&](Child& c) {
        ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')"));
        ASSERT_TRUE(sql().Exec("UPDATE t SET v = 'quote \" and \\ backslash' WHERE id = 1"));
        ASSERT_TRUE(sql().Exec("DELETE FROM t WHERE id = 2"));
        EXPECT_TRUE(WaitUntil([&] { return CountLines(c.out_path()) >= 5; }, 15s)) << c.out();
      });
  EXPECT_EQ(run.code, std::optional<int>(0)) << run.err;
  EXPECT_EQ(ParseOutput(dir() + "/run_json.out").size(), 5u) << "stdout holds only envelopes";
  auto recs = ExpectJsonLines(run.err, "run");
  EXPECT_TRUE(HasMsg(recs, "walbus starting")) << run.err;
  EXPECT_TRUE(HasMsg(recs, "streaming")) << run.err;
  EXPECT_TRUE(HasMsg(recs, "stopped")) << run.err;
  bool config_field = false;
  for (const auto& d : recs) {
    const rapidjson::Value& c = Member(*d, "config");
    if (c.IsString() && cfg == c.GetString()) config_field = true;
  }
  EXPECT_TRUE(config_field) << "no record carries the config path " << cfg << " intact:\n"
                            << run.err;
  // At TRACE each event's envelope is a field: escaped so that it reads back
  // as the same JSON as on stdout (the update has a quote and a backslash).
  std::set<std::string> stdout_json;
  for (const Envelope& e : ParseOutput(dir() + "/run_json.out")) stdout_json.insert(e.json);
  size_t traced = 0;
  for (const auto& d : recs) {
    const rapidjson::Value& m = Member(*d, "msg");
    const rapidjson::Value& p = Member(*d, "payload");
    if (!m.IsString() || std::string(m.GetString()) != "event" || !p.IsString()) continue;
    ++traced;
    EXPECT_EQ(stdout_json.count(p.GetString()), 1u)
        << "a traced payload differs from every envelope on stdout: " << p.GetString();
  }
  EXPECT_EQ(traced, 5u) << run.err;
  std::printf("[ info ] json run: %zu records, %zu traced envelopes\n", recs.size(), traced);

  // A fatal start: one error record.
  std::string missing = Config("missing", PgDsn(), "logs_absent", StdoutSink(),
                               "create_slot = false\n");
  RunResult fatal = RunWalbus({"--log-format", "json", "run", "-c", missing}, dir(), "fatal_json");
  EXPECT_EQ(fatal.code, std::optional<int>(1)) << fatal.err;
  auto frecs = ExpectJsonLines(fatal.err, "fatal run");
  size_t errors = 0;
  for (const auto& d : frecs) {
    const rapidjson::Value& l = Member(*d, "level");
    if (l.IsString() && std::string(l.GetString()) == "error") {
      ++errors;
      const rapidjson::Value& m = Member(*d, "msg");
      EXPECT_TRUE(m.IsString() && Contains(m.GetString(), "logs_absent")) << fatal.err;
    }
  }
  EXPECT_EQ(errors, 1u) << fatal.err;

  // Retrying against a closed port: warnings, then a clean stop.
  std::string closed = Config("closed", "host=127.0.0.1 port=" + std::to_string(kClosedPort) +
                                            " user=postgres dbname=postgres",
                              "logs_json", StdoutSink());
  RunResult retry = RunThenStop({"--log-format", "json", "run", "-c", closed}, "retry_json",
                                "\"level\":\"warn\"");
  EXPECT_EQ(retry.code, std::optional<int>(0)) << retry.err;
  auto rrecs = ExpectJsonLines(retry.err, "retrying run");
  EXPECT_GE(rrecs.size(), 2u) << retry.err;

  // slot status: the table goes to stdout; a missing slot is one error record.
  RunResult status = RunWalbus({"--log-format", "json", "slot", "status", "-c", cfg}, dir(),
                               "status_json");
  EXPECT_EQ(status.code, std::optional<int>(0)) << status.err;
  EXPECT_TRUE(Contains(status.out, "logs_json")) << status.out;
  ExpectJsonLines(status.err, "slot status");
  RunResult nostatus = RunWalbus({"--log-format", "json", "slot", "status", "-c", missing}, dir(),
                                 "nostatus_json");
  EXPECT_EQ(nostatus.code, std::optional<int>(1)) << nostatus.err;
  EXPECT_EQ(ExpectJsonLines(nostatus.err, "slot status (missing)").size(), 1u) << nostatus.err;
  // `check` prints its report on stdout; whatever it logs on stderr is JSON.
  RunResult check = RunWalbus({"--log-format", "json", "check", "-c", closed}, dir(), "check_json");
  EXPECT_EQ(check.code, std::optional<int>(1)) << check.out;
  ExpectJsonLines(check.err, "check");
}

// (a2) The server's own messages (NOTICE, WARNING, DEBUG) on walbus's sessions
// become log records too: with client_min_messages = debug1 the server talks a
// lot on every connection (the walsender included); each line is still JSON,
// and at --log-level debug they are records of their own.
TEST_F(Logs, ServerMessagesBecomeLogRecords) {
  std::string cfg = Config("chatty", PgDsn("options='-c client_min_messages=debug1'"),
                           "logs_chatty", StdoutSink(), "snapshot = \"initial\"\n");
  ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (1, 'a')"));
  RunResult run = RunThenStop(
      {"--log-format", "json", "--log-level", "debug", "run", "-c", cfg}, "chatty",
      "\"msg\":\"streaming\"", [&](Child& c) {
        ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (2, 'b')"));
        EXPECT_TRUE(WaitUntil([&] { return CountLines(c.out_path()) >= 2; }, 15s)) << c.out();
      });
  EXPECT_EQ(run.code, std::optional<int>(0)) << run.err;
  auto recs = ExpectJsonLines(run.err, "chatty");
  size_t server = 0;
  for (const auto& d : recs) {
    const rapidjson::Value& m = Member(*d, "msg");
    if (!m.IsString() || std::string(m.GetString()) != "PostgreSQL server message") continue;
    ++server;
    const rapidjson::Value& sev = Member(*d, "severity");
    const rapidjson::Value& text = Member(*d, "message");
    EXPECT_TRUE(sev.IsString() && text.IsString() && text.GetStringLength() > 0) << run.err;
  }
  EXPECT_GT(server, 0u) << "no server message became a record:\n" << run.err;
  EXPECT_FALSE(Contains(run.err, "DEBUG:  ")) << run.err;
  std::printf("[ info ] %zu server messages logged as records\n", server);

  // At the default level they are not shown, and nothing raw is left.
  RunResult quiet = RunThenStop({"run", "-c", cfg}, "chatty_quiet", "INFO streaming");
  EXPECT_EQ(quiet.code, std::optional<int>(0)) << quiet.err;
  EXPECT_FALSE(Contains(quiet.err, "PostgreSQL server message")) << quiet.err;
  for (const std::string& line : Lines(quiet.err)) {
    EXPECT_GE(ParseUtc(line), 0) << "a stderr line outside the log format: " << line;
  }
}

// (b) The password of the DSN and of broker URLs appears in no output of
// check, run (streaming, retrying, failing) and slot status, in either format.
TEST_F(Logs, SecretsNeverAppearInAnyOutput) {
  ASSERT_TRUE(nats_ok_) << "nats-server on " << kNatsPort << " did not start";
  ASSERT_TRUE(redis_ok_) << "redis-server on " << kRedisPort << " did not start";
  const std::string secret = kSecret;
  const std::string good_dsn = PgDsn("password=" + secret);
  const std::string env_dsn = PgDsn("password=${WALBUS_LOGS_PW}");
  const std::string uri_closed = "postgresql://postgres:" + secret + "@127.0.0.1:" +
                                 std::to_string(kClosedPort) + "/postgres?sslmode=disable";
  auto nats_sink = [&](const std::string& name, int port) {
    return "[[sink]]\nname = \"" + name + "\"\ntype = \"nats\"\nurl = \"nats://walbus:" + secret +
           "@127.0.0.1:" + std::to_string(port) + "\"\n";
  };
  auto token_sink = [&](const std::string& name, int port) {
    return "[[sink]]\nname = \"" + name + "\"\ntype = \"nats\"\nurl = \"nats://" + secret +
           "@127.0.0.1:" + std::to_string(port) + "\"\n";
  };
  auto redis_sink = [&](const std::string& name, int port) {
    return "[[sink]]\nname = \"" + name + "\"\ntype = \"redis\"\nurl = \"redis://default:" +
           secret + "@127.0.0.1:" + std::to_string(port) + "/0\"\n";
  };
  auto js_sink = [&](const std::string& name, int port) {
    return "[[sink]]\nname = \"" + name + "\"\ntype = \"jetstream\"\nurl = \"nats://127.0.0.1:" +
           std::to_string(port) + "\"\nuser = \"walbus\"\npassword = \"" + secret +
           "\"\nstream = \"LOGS\"\n";
  };
  const std::string good_sinks =
      StdoutSink() + nats_sink("nats", kNatsPort) + redis_sink("redis", kRedisPort);
  const std::string good = Config("good", good_dsn, "logs_secret", good_sinks);
  const std::string from_env = Config("env", env_dsn, "logs_secret", StdoutSink());
  const std::string bad_pg = Config("bad_pg", uri_closed, "logs_secret", StdoutSink());
  const std::string bad_sinks =
      Config("bad_sinks", good_dsn, "logs_secret_sinks",
             nats_sink("nats", kClosedPort) + token_sink("token", kClosedPort) +
                 redis_sink("redis", kClosedPort) + js_sink("js", kClosedPort));
  // The first sink that fails at start is the one logged: one run per sink kind.
  const std::string bad_redis =
      Config("bad_redis", good_dsn, "logs_secret_redis", redis_sink("redis", kClosedPort));
  const std::string bad_js = Config("bad_js", good_dsn, "logs_secret_js", js_sink("js", kClosedPort));
  const std::string bad_token =
      Config("bad_token", good_dsn, "logs_secret_token", token_sink("token", kClosedPort));
  const std::string bad_option =
      Config("bad_option", PgDsn("password=" + secret + " no_such_option=1"), "logs_secret",
             StdoutSink());
  const std::string bad_quote =
      Config("bad_quote", PgDsn("password='" + secret), "logs_secret", StdoutSink());
  // Configuration errors next to a secret.
  const std::string bad_url_port = Config(
      "bad_url_port", good_dsn, "logs_secret",
      "[[sink]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://default:" + secret +
          "@127.0.0.1:notaport/0\"\n");
  const std::string bad_scheme = Config(
      "bad_scheme", good_dsn, "logs_secret",
      "[[sink]]\nname = \"r\"\ntype = \"redis\"\nurl = \"rediss://default:" + secret +
          "@127.0.0.1:" + std::to_string(kRedisPort) + "/0\"\n");
  const std::string bad_key = Config(
      "bad_key", good_dsn, "logs_secret",
      "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://127.0.0.1:" +
          std::to_string(kNatsPort) + "\"\npasword = \"" + secret + "\"\n");
  const std::string mqtt_creds = Config(
      "mqtt_creds", good_dsn, "logs_secret",
      "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"tcp://walbus:" + secret + "@127.0.0.1:" +
          std::to_string(kClosedPort) + "\"\n");
  const EnvChanges env_pw = {{"WALBUS_LOGS_PW", secret}};

  size_t outputs = 0, redacted = 0;
  int rows_sent = 0;
  std::string all;  // everything walbus printed, for the failure message
  auto expect_clean = [&](const RunResult& r, const std::string& what) {
    ++outputs;
    all += "=== " + what + " (exit " + (r.code ? std::to_string(*r.code) : "none") +
           ")\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
    EXPECT_FALSE(Contains(r.out, kSecretPart)) << what << ": the secret is on stdout:\n" << r.out;
    EXPECT_FALSE(Contains(r.err, kSecretPart)) << what << ": the secret is on stderr:\n" << r.err;
    if (Contains(r.out, "***") || Contains(r.err, "***")) ++redacted;
  };

  for (const std::string format : {"text", "json"}) {
    const std::vector<std::string> f = {"--log-format", format};
    auto args = [&](std::vector<std::string> rest) {
      std::vector<std::string> v = f;
      v.insert(v.end(), rest.begin(), rest.end());
      return v;
    };
    auto cli = [&](std::vector<std::string> rest, const std::string& tag,
                   const EnvChanges& env = {}) {
      RunResult r = RunWalbus(args(std::move(rest)), dir(), tag + "_" + format, 30s, env);
      expect_clean(r, format + " " + tag);
      return r;
    };

    // Everything reachable: check passes, run streams to all three sinks.
    RunResult c = cli({"check", "-c", good}, "check_good");
    EXPECT_EQ(c.code, std::optional<int>(0)) << c.out << c.err;
    EXPECT_TRUE(Contains(c.out, "password=***")) << c.out;
    RunResult r = RunThenStop(
        args({"--log-level", "debug", "run", "-c", good}), "run_good_" + format,
        format == "json" ? "\"msg\":\"streaming\"" : "INFO streaming", [&](Child& ch) {
          ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (" + std::to_string(rows_sent + 1) +
                                 ", 'row')"));
          ++rows_sent;
          EXPECT_TRUE(WaitUntil([&] { return CountLines(ch.out_path()) >= 1; }, 15s));
          // Redis got it too, through the password (the server requires it).
          EXPECT_TRUE(WaitUntil(
              [&] {
                ShellResult x = Shell("redis-cli -h 127.0.0.1 -p " + std::to_string(kRedisPort) +
                                      " --no-auth-warning -a '" + secret +
                                      "' XLEN postgres.public.t 2>&1");
                return std::atoi(x.out.c_str()) >= rows_sent;
              },
              10s))
              << "the redis sink did not write through its authenticated connection";
        });
    expect_clean(r, format + " run_good");
    EXPECT_EQ(r.code, std::optional<int>(0)) << r.err;
    EXPECT_TRUE(Contains(r.err, "***")) << "the DSN/URL is not logged redacted:\n" << r.err;
    RunResult s = cli({"slot", "status", "-c", good}, "status_good");
    EXPECT_EQ(s.code, std::optional<int>(0)) << s.err;
    EXPECT_TRUE(Contains(s.out, "logs_secret")) << s.out;
    s = cli({"check", "-c", from_env}, "check_env", env_pw);
    EXPECT_EQ(s.code, std::optional<int>(0)) << s.out << s.err;
    r = RunThenStop(args({"run", "-c", from_env}), "run_env_" + format, "streaming", 15s, env_pw);
    expect_clean(r, format + " run_env");
    EXPECT_EQ(r.code, std::optional<int>(0)) << r.err;

    // PostgreSQL unreachable (a URI DSN with user:password@).
    s = cli({"check", "-c", bad_pg}, "check_bad_pg");
    EXPECT_EQ(s.code, std::optional<int>(1)) << s.out << s.err;
    s = cli({"slot", "status", "-c", bad_pg}, "status_bad_pg");
    EXPECT_EQ(s.code, std::optional<int>(1)) << s.out << s.err;
    r = RunThenStop(args({"run", "-c", bad_pg}), "run_bad_pg_" + format, "unavailable");
    expect_clean(r, format + " run_bad_pg");
    EXPECT_EQ(r.code, std::optional<int>(0)) << r.err;

    // Brokers unreachable: nats user:password@, nats token@, redis
    // user:password@, jetstream with a password key.
    s = cli({"check", "-c", bad_sinks}, "check_bad_sinks");
    EXPECT_EQ(s.code, std::optional<int>(1)) << s.out << s.err;
    EXPECT_GE(LinesWith(s.out, "FAIL").size(), 4u) << s.out;
    for (const auto& [cfg, tag] : {std::pair{bad_sinks, std::string("run_bad_nats")},
                                   std::pair{bad_redis, std::string("run_bad_redis")},
                                   std::pair{bad_js, std::string("run_bad_js")},
                                   std::pair{bad_token, std::string("run_bad_token")}}) {
      r = RunThenStop(args({"run", "-c", cfg}), tag + "_" + format, "unavailable");
      expect_clean(r, format + " " + tag);
      EXPECT_EQ(r.code, std::optional<int>(0)) << r.err;
    }

    // Malformed DSNs and configuration errors next to a secret. (The exit
    // codes are not this test's subject; a run that retries is stopped after 3 s.)
    for (const auto& [cfg, tag] : {std::pair{bad_option, std::string("bad_option")},
                                   std::pair{bad_quote, std::string("bad_quote")},
                                   std::pair{bad_url_port, std::string("bad_url_port")},
                                   std::pair{bad_scheme, std::string("bad_scheme")},
                                   std::pair{bad_key, std::string("bad_key")},
                                   std::pair{mqtt_creds, std::string("mqtt_creds")}}) {
      cli({"check", "-c", cfg}, "check_" + tag);
      cli({"slot", "status", "-c", cfg}, "status_" + tag);
      RunResult run = RunWalbus(args({"run", "-c", cfg}), dir(), "run_" + tag + "_" + format, 3s);
      expect_clean(run, format + " run_" + tag);
      EXPECT_FALSE(run.err.empty()) << tag << ": nothing logged";
    }
  }
  std::printf("[ info ] %zu outputs checked, %zu of them show a redacted *** value\n", outputs,
              redacted);
  EXPECT_GE(redacted, 10u);
  if (HasFailure()) std::printf("%s", all.c_str());
}

// (c) Text format: every stderr line is one record, starting with a UTC
// timestamp and a level; multi-line causes (libpq's "Is the server running
// ...?" hint) do not spill onto further lines.
TEST_F(Logs, TextFormatOneLinePerRecordWithTimestampAndLevel) {
  static const std::regex kLine(
      R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (TRACE|DEBUG|INFO|WARN|ERROR) \S.*$)");
  int64_t now = static_cast<int64_t>(::time(nullptr));
  auto expect_lines = [&](const std::string& err, const std::string& tag) {
    int n = 0;
    for (const std::string& line : Lines(err)) {
      ++n;
      EXPECT_TRUE(std::regex_match(line, kLine))
          << tag << " stderr line " << n << " is not `TIMESTAMP LEVEL message`: " << line;
      int64_t t = ParseUtc(line);
      EXPECT_TRUE(t > now - 3600 && t < now + 3600)
          << tag << " line " << n << ": the timestamp is not the current UTC time: " << line;
    }
    EXPECT_TRUE(err.empty() || err.back() == '\n') << tag << ": the last line is unterminated";
    return n;
  };

  std::string cfg = Config("text", PgDsn(), "logs_text", StdoutSink());
  RunResult run = RunThenStop(
      {"--log-level", "trace", "run", "-c", cfg}, "run_text", "INFO streaming", [&](Child& c) {
        // A value with a newline and a tab: at TRACE the envelope is logged,
        // escaped, on its record's line.
        ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (1, E'two\\nlines\\tand a tab')"));
        EXPECT_TRUE(WaitUntil([&] { return CountLines(c.out_path()) >= 1; }, 15s)) << c.out();
      });
  EXPECT_EQ(run.code, std::optional<int>(0)) << run.err;
  EXPECT_GE(expect_lines(run.err, "run"), 3);
  EXPECT_EQ(LinesWith(run.err, " INFO walbus starting ").size(), 1u) << run.err;
  EXPECT_EQ(LinesWith(run.err, " INFO stopped").size(), 1u) << run.err;
  EXPECT_EQ(ParseOutput(dir() + "/run_text.out").size(), 1u) << "stdout holds only envelopes";

  std::string closed = Config("closed", "host=127.0.0.1 port=" + std::to_string(kClosedPort) +
                                            " user=postgres dbname=postgres",
                              "logs_text", StdoutSink());
  RunResult retry = RunThenStop({"run", "-c", closed}, "retry_text", " WARN ");
  EXPECT_EQ(retry.code, std::optional<int>(0)) << retry.err;
  expect_lines(retry.err, "retrying run");
  EXPECT_FALSE(Contains(retry.err, "Is the server running")) << retry.err;

  std::string missing = Config("missing", PgDsn(), "logs_absent", StdoutSink(),
                               "create_slot = false\n");
  RunResult fatal = RunWalbus({"run", "-c", missing}, dir(), "fatal_text");
  EXPECT_EQ(fatal.code, std::optional<int>(1)) << fatal.err;
  expect_lines(fatal.err, "fatal run");
  EXPECT_EQ(LinesWith(fatal.err, " ERROR ").size(), 1u) << fatal.err;

  RunResult status = RunWalbus({"slot", "status", "-c", closed}, dir(), "status_text");
  EXPECT_EQ(status.code, std::optional<int>(1)) << status.err;
  EXPECT_EQ(expect_lines(status.err, "slot status"), 1) << status.err;
}

}  // namespace
}  // namespace walbus::itest
