// Security (issue 6) against a PostgreSQL that demands scram-sha-256 passwords:
//  - the password may come from ${ENV} in the DSN, a .pgpass file (PGPASSFILE
//    or ~/.pgpass), PGPASSWORD or the file itself; each one streams, and the
//    password appears in no output of check, run, slot status, in text or
//    json log format; no password at all / a wrong one is one clear line;
//  - conf/least-privilege.sql: a LOGIN REPLICATION role with SELECT on the
//    published tables only and a publication owned by an admin role runs
//    `walbus check` and `walbus run` (initial snapshot + streaming); without
//    SELECT or without REPLICATION it stops with one line naming the grant;
//  - the metrics endpoint binds 127.0.0.1 only unless configured;
//  - a world-readable configuration file that holds a secret (or a
//    world-readable tls_key) draws one warning line with the chmod fix.
//
// Ports (range 56100-56149): PostgreSQL 56110, a spare metrics port 56111;
// and the metrics default 127.0.0.1:9187 itself, which this test must use
// (lock file /tmp/walbus-metrics-9187.lock). Lock file /tmp/walbus-sec-56110.lock.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPgPort = 56110;
constexpr int kSpareMetricsPort = 56111;
constexpr int kDefaultMetricsPort = 9187;
constexpr const char* kPassword = "Scram-Pw-4b7e1d";
constexpr const char* kPasswordPart = "Pw-4b7e1d";  // any part of it counts as a leak
constexpr const char* kLpPassword = "Lp-Pw-6c02aa";

const char* kHba =
    "local all all trust\n"
    "host all postgres 127.0.0.1/32 trust\n"
    "host all all 127.0.0.1/32 scram-sha-256";

std::string PgScript() {
  return "WALBUS_PG_DIR=/tmp/walbus-sec-pg-" + std::to_string(kPgPort) + " WALBUS_PG_HBA='" +
         kHba + "' '" + std::string(kSourceDir) + "/compose/pg.sh'";
}

std::string AdminDsn() {
  return "host=127.0.0.1 port=" + std::to_string(kPgPort) + " user=postgres dbname=postgres";
}

std::string UserDsn(const std::string& user, const std::string& extra = "") {
  return "host=127.0.0.1 port=" + std::to_string(kPgPort) + " user=" + user + " dbname=postgres" +
         (extra.empty() ? "" : " " + extra);
}

std::string OneErrorLine(const std::string& err, const std::string& tag) {
  std::vector<std::string> lines = LinesWith(err, " ERROR ");
  EXPECT_EQ(lines.size(), 1u) << tag << ": a fatal error is one line on stderr:\n" << err;
  return lines.empty() ? std::string() : lines[0];
}

// GET `path` from 127.0.0.1:port; the status line, or "" when nothing answers.
std::string HttpStatusLine(int port, const std::string& path) {
  std::string reply = HttpGetReply(port, path);
  return reply.substr(0, reply.find("\r\n"));
}

// True when a TCP socket can bind 0.0.0.0:port (nothing else holds it).
bool PortFree(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a = LocalAddress(port, /*any=*/true);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

class Security : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-sec-" + std::to_string(kPgPort) + ".lock");
    Shell(PgScript() + " stop " + std::to_string(kPgPort) + " >/dev/null 2>&1");
    ShellResult pg = Shell(PgScript() + " start " + std::to_string(kPgPort) + " 2>&1");
    if (pg.code != 0) {
      ADD_FAILURE() << "compose/pg.sh start failed: " << pg.out;
      return;
    }
    Pg admin(AdminDsn());
    ready_ = admin.ok() &&
             admin.Exec("SET password_encryption = 'scram-sha-256'; DO $$ BEGIN "
                        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'walbus_pw') THEN "
                        "CREATE ROLE walbus_pw LOGIN SUPERUSER; END IF; END $$; "
                        "ALTER ROLE walbus_pw PASSWORD '" + std::string(kPassword) + "'");
  }

  static void TearDownTestSuite() {
    Shell(PgScript() + " stop " + std::to_string(kPgPort) + " >/dev/null 2>&1");
    lock_.reset();
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(ready_) << "PostgreSQL on " << kPgPort << " did not start";
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = FreshDir(std::string("sec-") + info->test_suite_name() + "-" + info->name());
    sql_ = std::make_unique<Pg>(AdminDsn());
    ASSERT_TRUE(sql_->ok());
    Pg& pg = *sql_;
    ResetDatabase(pg);
    pg.Exec("DROP SCHEMA IF EXISTS walbus CASCADE");
    ASSERT_TRUE(pg.Exec("CREATE TABLE t (id int PRIMARY KEY, v text)"));
    // No password source but the ones a test gives: HOME without .pgpass,
    // PGPASSFILE to a missing file, no PGPASSWORD.
    std::filesystem::create_directories(dir_ + "/emptyhome");
    base_env_ = {{"HOME", dir_ + "/emptyhome"},
                 {"PGPASSFILE", dir_ + "/no-such-pgpass"},
                 {"PGPASSWORD", std::nullopt},
                 {"WALBUS_SEC_PW", std::nullopt}};
  }

  // A configuration file with `dsn`, `source_extra`, a stdout sink and
  // `tail`; metrics off unless `metrics` is given ("default" = no [metrics]).
  std::string Config(const std::string& name, const std::string& dsn, mode_t mode = 0600,
                     const std::string& source_extra = "", const std::string& metrics = "off",
                     const std::string& tail = "") {
    std::string path = dir_ + "/" + name + ".toml";
    std::string m = metrics == "off"       ? "\n[metrics]\nlisten = \"\"\n"
                    : metrics == "default" ? std::string()
                                           : "\n[metrics]\nlisten = \"" + metrics + "\"\n";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + dsn + "\"\n"
                    "slot = \"sec_slot\"\n"
                    "publication = \"sec_pub\"\n"
                    "status_interval_ms = 200\n"
                    "standby_retry_ms = 300\n" +
                    source_extra + m +
                    "\n[[sink]]\nname = \"out\"\ntype = \"stdout\"\n" + tail);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }

  EnvChanges Env(const EnvChanges& more = {}) const {
    EnvChanges e = base_env_;
    for (const auto& [k, v] : more) e[k] = v;
    return e;
  }

  // `walbus <args> run -c cfg`, until "streaming"; then `between`, SIGTERM.
  template <class Between>
  RunResult RunStreaming(const std::vector<std::string>& pre, const std::string& cfg,
                         const std::string& tag, const EnvChanges& env, Between between) {
    std::vector<std::string> args = pre;
    args.insert(args.end(), {"run", "-c", cfg});
    auto streaming = [](const std::string& err) {
      return Contains(err, "INFO streaming") || Contains(err, "\"msg\":\"streaming\"");
    };
    return RunWalbusThenStop(args, dir_, tag, env, streaming, "not streaming", 30s, between);
  }

  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }

  static inline std::unique_ptr<FileLock> lock_;
  static inline bool ready_ = false;

 private:
  std::string dir_;
  std::unique_ptr<Pg> sql_;
  EnvChanges base_env_;
};

// Each password source works against scram-sha-256, and the password shows
// in no output of check / run / slot status in either log format.
TEST_F(Security, PasswordSourcesWorkAndTheirPasswordIsNeverPrinted) {
  ASSERT_EQ(sql().Scalar("SELECT (rolpassword LIKE 'SCRAM-SHA-256$%')::text FROM pg_authid "
                         "WHERE rolname = 'walbus_pw'"),
            std::optional<std::string>("true"));
  const std::string pgpass_line =
      "127.0.0.1:" + std::to_string(kPgPort) + ":*:walbus_pw:" + kPassword + "\n";
  const std::string pgpass = dir() + "/pgpass";
  WriteFile(pgpass, "# walbus test\n" + pgpass_line);
  ::chmod(pgpass.c_str(), 0600);
  std::filesystem::create_directories(dir() + "/home");
  WriteFile(dir() + "/home/.pgpass", pgpass_line);
  ::chmod((dir() + "/home/.pgpass").c_str(), 0600);

  struct Source {
    std::string tag;
    std::string dsn;
    EnvChanges env;
  };
  const std::vector<Source> sources = {
      {"env_in_dsn", UserDsn("walbus_pw", "password=${WALBUS_SEC_PW}"),
       Env({{"WALBUS_SEC_PW", kPassword}})},
      {"pgpassfile", UserDsn("walbus_pw"), Env({{"PGPASSFILE", pgpass}})},
      {"home_pgpass", UserDsn("walbus_pw"),
       Env({{"HOME", dir() + "/home"}, {"PGPASSFILE", std::nullopt}})},
      {"pgpassword", UserDsn("walbus_pw"), Env({{"PGPASSWORD", kPassword}})},
      {"literal_0600", UserDsn("walbus_pw", "password=" + std::string(kPassword)), Env()},
      {"uri_literal", "postgresql://walbus_pw:" + std::string(kPassword) + "@127.0.0.1:" +
                          std::to_string(kPgPort) + "/postgres",
       Env()},
  };

  size_t outputs = 0;
  int next_id = 0;
  auto expect_clean = [&](const RunResult& r, const std::string& what) {
    ++outputs;
    EXPECT_FALSE(Contains(r.out, kPasswordPart)) << what << ": the password is on stdout:\n" << r.out;
    EXPECT_FALSE(Contains(r.err, kPasswordPart)) << what << ": the password is on stderr:\n" << r.err;
  };
  for (const Source& s : sources) {
    std::string cfg = Config(s.tag, s.dsn);
    for (const std::string format : {"text", "json"}) {
      const std::string tag = s.tag + "_" + format;
      RunResult check = RunWalbus({"--log-format", format, "check", "-c", cfg}, dir(),
                                  "check_" + tag, 30s, s.env);
      expect_clean(check, "check " + tag);
      EXPECT_EQ(check.code, std::optional<int>(0)) << tag << "\n" << check.out << check.err;
      EXPECT_TRUE(Contains(check.out, "user walbus_pw")) << check.out;
      const int id = ++next_id;
      RunResult run = RunStreaming(
          {"--log-format", format, "--log-level", "debug"}, cfg, "run_" + tag, s.env, [&](Child& c) {
            ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES (" + std::to_string(id) + ", 'x')"));
            EXPECT_TRUE(WaitUntil(
                [&] { return Contains(c.out(), "\"after\":{\"id\":" + std::to_string(id) + ","); },
                15s))
                << tag << ": row " << id << " did not arrive:\n" << c.err();
          });
      expect_clean(run, "run " + tag);
      EXPECT_EQ(run.code, std::optional<int>(0)) << tag << "\n" << run.err;
      RunResult status = RunWalbus({"--log-format", format, "slot", "status", "-c", cfg}, dir(),
                                   "status_" + tag, 30s, s.env);
      expect_clean(status, "slot status " + tag);
      EXPECT_EQ(status.code, std::optional<int>(0)) << tag << "\n" << status.err;
      EXPECT_TRUE(Contains(status.out, "sec_slot")) << status.out;
    }
  }

  // No password anywhere, and a wrong one: one line each, naming the sources.
  std::string none = Config("none", UserDsn("walbus_pw"));
  RunResult r = RunWalbus({"run", "-c", none}, dir(), "none", 30s, Env());
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  std::string line = OneErrorLine(r.err, "no password");
  EXPECT_TRUE(Contains(line, "no password supplied")) << line;
  EXPECT_TRUE(Contains(line, "PGPASSWORD") && Contains(line, ".pgpass") && Contains(line, "${ENV}"))
      << line;
  RunResult wrong = RunWalbus({"--log-format", "json", "run", "-c", none}, dir(), "wrong", 30s,
                              Env({{"PGPASSWORD", "Wrong-" + std::string(kPasswordPart)}}));
  expect_clean(wrong, "wrong password");
  EXPECT_EQ(wrong.code, std::optional<int>(1)) << wrong.err;
  EXPECT_TRUE(Contains(wrong.err, "password authentication failed")) << wrong.err;
  std::printf("[ info ] %zu outputs checked for the password; no-password line: %s\n", outputs,
              line.c_str());
}

// conf/least-privilege.sql sets up a role walbus can run as, and nothing more.
TEST_F(Security, LeastPrivilegeRoleRunsAndMissingGrantsAreOneLine) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE orders (id int PRIMARY KEY, amount numeric); "
                         "CREATE TABLE secrets (id int PRIMARY KEY, card text); "
                         "INSERT INTO orders VALUES (1, 10.5); INSERT INTO secrets VALUES (1, 'x')"));
  ShellResult setup = Shell(
      "psql -X -q '" + AdminDsn() + "' -v ON_ERROR_STOP=1 -v walbus_role=walbus_lp "
      "-v walbus_password='" + std::string(kLpPassword) + "' -v admin_role=walbus_lp_admin "
      "-v publication=lp_pub -v tables='public.orders' -f '" + std::string(kSourceDir) +
      "/conf/least-privilege.sql' 2>&1");
  ASSERT_EQ(setup.code, 0) << setup.out;
  // Run twice: the script converges.
  setup = Shell("psql -X -q '" + AdminDsn() + "' -v walbus_role=walbus_lp -v walbus_password='" +
                std::string(kLpPassword) + "' -v admin_role=walbus_lp_admin -v publication=lp_pub "
                "-v tables='public.orders' -f '" + std::string(kSourceDir) +
                "/conf/least-privilege.sql' 2>&1");
  ASSERT_EQ(setup.code, 0) << setup.out;

  Rows role = sql().Query(
      "SELECT rolsuper::text, rolreplication::text, rolcanlogin::text, rolcreatedb::text, "
      "rolcreaterole::text FROM pg_roles WHERE rolname = 'walbus_lp'");
  ASSERT_EQ(role.size(), 1u);
  EXPECT_EQ(role[0], (Row{"false", "true", "true", "false", "false"}));
  EXPECT_EQ(sql().Scalar("SELECT pg_get_userbyid(pubowner)::text FROM pg_publication WHERE "
                         "pubname = 'lp_pub'"),
            std::optional<std::string>("walbus_lp_admin"));
  EXPECT_EQ(sql().Scalar("SELECT has_table_privilege('walbus_lp', 'public.orders', 'SELECT')::text"),
            std::optional<std::string>("true"));
  EXPECT_EQ(sql().Scalar("SELECT (has_table_privilege('walbus_lp', 'public.orders', 'INSERT') OR "
                         "has_table_privilege('walbus_lp', 'public.secrets', 'SELECT'))::text"),
            std::optional<std::string>("false"));

  const std::string cfg =
      Config("lp", UserDsn("walbus_lp", "password=${WALBUS_LP_PW}"), 0600,
             "create_publication = false\nsnapshot = \"initial\"\n");
  std::string text = ReadFile(cfg);
  text.replace(text.find("sec_pub"), 7, "lp_pub");
  WriteFile(cfg, text);
  const EnvChanges env = Env({{"WALBUS_LP_PW", kLpPassword}});

  RunResult check = RunWalbus({"check", "-c", cfg}, dir(), "check_lp", 30s, env);
  EXPECT_EQ(check.code, std::optional<int>(0)) << check.out << check.err;
  EXPECT_EQ(LinesWith(check.out, "FAIL").size(), 0u) << check.out;

  RunResult run = RunStreaming({}, cfg, "run_lp", env, [&](Child& c) {
    ASSERT_TRUE(sql().Exec("INSERT INTO orders VALUES (2, 20); UPDATE secrets SET card = 'y'"));
    EXPECT_TRUE(WaitUntil([&] { return CountLines(c.out_path()) >= 2; }, 20s)) << c.err();
  });
  EXPECT_EQ(run.code, std::optional<int>(0)) << run.err;
  std::vector<Envelope> events = ParseOutput(dir() + "/run_lp.out");
  ASSERT_EQ(events.size(), 2u) << run.out;
  EXPECT_EQ(events[0].op, "read");
  EXPECT_EQ(events[0].table, "public.orders");
  EXPECT_EQ(events[1].op, "insert");
  EXPECT_EQ(events[1].table, "public.orders");
  EXPECT_EQ(LinesWith(run.err, " ERROR ").size(), 0u) << run.err;
  EXPECT_FALSE(Contains(run.out + run.err, kLpPassword));

  // A backfill request as the same role: schema walbus is its own (the script
  // made it), so no CREATE on the database is needed.
  RunResult bf = RunWalbus({"backfill", "-c", cfg, "--no-wait", "public.orders"}, dir(),
                           "backfill_lp", 30s, env);
  EXPECT_EQ(bf.code, std::optional<int>(0)) << bf.out << bf.err;
  EXPECT_EQ(sql().Scalar("SELECT count(*)::text FROM walbus.backfill"),
            std::optional<std::string>("1"));

  auto fresh_slot = [&] {
    sql().Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots");
    sql().Exec("DROP SCHEMA IF EXISTS walbus CASCADE; CREATE SCHEMA walbus AUTHORIZATION walbus_lp");
  };

  // Without SELECT on a published table the initial snapshot cannot read it.
  fresh_slot();
  ASSERT_TRUE(sql().Exec("REVOKE SELECT ON public.orders FROM walbus_lp"));
  RunResult no_select = RunWalbus({"run", "-c", cfg}, dir(), "no_select", 60s, env);
  EXPECT_EQ(no_select.code, std::optional<int>(1)) << no_select.err;
  std::string select_line = OneErrorLine(no_select.err, "no SELECT");
  EXPECT_TRUE(Contains(select_line, "permission denied for table orders")) << select_line;
  EXPECT_TRUE(Contains(select_line, "GRANT SELECT")) << select_line;
  ASSERT_TRUE(sql().Exec("GRANT SELECT ON public.orders TO walbus_lp"));

  // Without REPLICATION nothing streams: check and run name the fix.
  fresh_slot();
  ASSERT_TRUE(sql().Exec("ALTER ROLE walbus_lp NOREPLICATION"));
  RunResult no_repl = RunWalbus({"run", "-c", cfg}, dir(), "no_repl", 60s, env);
  RunResult no_repl_check = RunWalbus({"check", "-c", cfg}, dir(), "no_repl_check", 30s, env);
  ASSERT_TRUE(sql().Exec("ALTER ROLE walbus_lp REPLICATION"));
  EXPECT_EQ(no_repl.code, std::optional<int>(1)) << no_repl.err;
  std::string repl_line = OneErrorLine(no_repl.err, "no REPLICATION");
  EXPECT_TRUE(Contains(repl_line, "replication role")) << repl_line;
  EXPECT_TRUE(Contains(repl_line, "REPLICATION")) << repl_line;
  EXPECT_EQ(no_repl_check.code, std::optional<int>(1)) << no_repl_check.out;
  EXPECT_FALSE(LinesWith(no_repl_check.out, "ALTER ROLE \"walbus_lp\" REPLICATION").empty())
      << no_repl_check.out;
  std::printf("[ info ] without SELECT: %s\n[ info ] without REPLICATION: %s\n",
              select_line.c_str(), repl_line.c_str());
}

// With no [metrics] table the endpoint listens on 127.0.0.1:9187 and nowhere
// else; an explicit listen address is honoured.
TEST_F(Security, MetricsDefaultListensOnLoopbackOnly) {
  FileLock metrics_lock("/tmp/walbus-metrics-" + std::to_string(kDefaultMetricsPort) + ".lock");
  ASSERT_TRUE(PortFree(kDefaultMetricsPort))
      << "port " << kDefaultMetricsPort << " (the metrics default) is in use by another process";
  std::string cfg = Config("default_metrics", UserDsn("walbus_pw", "password=${WALBUS_SEC_PW}"),
                           0600, "", "default");
  EXPECT_FALSE(Contains(ReadFile(cfg), "[metrics]"));
  const EnvChanges env = Env({{"WALBUS_SEC_PW", kPassword}});
  std::vector<std::string> listening;
  std::string health;
  RunResult r = RunStreaming({}, cfg, "default", env, [&](Child& c) {
    listening = ListeningAddresses(c.pid());
    health = HttpStatusLine(kDefaultMetricsPort, "/healthz");
  });
  EXPECT_EQ(r.code, std::optional<int>(0)) << r.err;
  EXPECT_EQ(listening, std::vector<std::string>{ProcAddress("0100007F", kDefaultMetricsPort)})
      << "the default must be 127.0.0.1:" << kDefaultMetricsPort << " only";
  EXPECT_TRUE(Contains(health, " 200")) << health;
  EXPECT_TRUE(Contains(r.err, "metrics listening listen=127.0.0.1:9187")) << r.err;

  std::string all = Config("all_interfaces", UserDsn("walbus_pw", "password=${WALBUS_SEC_PW}"),
                           0600, "", "0.0.0.0:" + std::to_string(kSpareMetricsPort));
  r = RunStreaming({}, all, "all", env, [&](Child& c) { listening = ListeningAddresses(c.pid()); });
  EXPECT_EQ(r.code, std::optional<int>(0)) << r.err;
  EXPECT_EQ(listening, std::vector<std::string>{ProcAddress("00000000", kSpareMetricsPort)});
  std::printf("[ info ] default metrics socket %s\n",
              ProcAddress("0100007F", kDefaultMetricsPort).c_str());
}

// A secret in a world-readable file: one warning line with the fix, in both
// log formats and for every command; none when the file is private or the
// secret comes from the environment.
TEST_F(Security, WorldReadableSecretFileWarnsOnce) {
  const std::string literal = UserDsn("walbus_pw", "password=" + std::string(kPassword));
  const std::string from_env = UserDsn("walbus_pw", "password=${WALBUS_SEC_PW}");
  const EnvChanges env = Env({{"WALBUS_SEC_PW", kPassword}});
  auto warnings = [](const std::string& err) { return LinesWith(err, "readable by every user"); };

  std::string open = Config("open", literal, 0644);
  for (const std::string format : {"text", "json"}) {
    RunResult check = RunWalbus({"--log-format", format, "check", "-c", open}, dir(),
                                "check_open_" + format, 30s, env);
    EXPECT_EQ(check.code, std::optional<int>(0)) << check.out << check.err;
    std::vector<std::string> w = warnings(check.err);
    ASSERT_EQ(w.size(), 1u) << check.err;
    EXPECT_TRUE(Contains(w[0], open)) << w[0];
    EXPECT_TRUE(Contains(w[0], "mode 0644")) << w[0];
    EXPECT_TRUE(Contains(w[0], "chmod 600 " + open)) << w[0];
    EXPECT_TRUE(Contains(w[0], "chmod 640")) << w[0];
    EXPECT_TRUE(Contains(w[0], "source.dsn")) << w[0];
    EXPECT_TRUE(Contains(w[0], format == "json" ? "\"level\":\"warn\"" : " WARN ")) << w[0];
    EXPECT_FALSE(Contains(check.out + check.err, kPasswordPart)) << check.err;
    RunResult run = RunStreaming({"--log-format", format}, open, "run_open_" + format, env,
                                 [](Child&) {});
    EXPECT_EQ(run.code, std::optional<int>(0)) << run.err;
    EXPECT_EQ(warnings(run.err).size(), 1u) << run.err;
    EXPECT_FALSE(Contains(run.out + run.err, kPasswordPart)) << run.err;
  }
  RunResult status = RunWalbus({"slot", "status", "-c", open}, dir(), "status_open", 30s, env);
  EXPECT_EQ(warnings(status.err).size(), 1u) << status.err;

  for (mode_t mode : {0600, 0640, 0400}) {
    std::string quiet = Config("private_" + std::to_string(mode), literal, mode);
    RunResult r = RunWalbus({"check", "-c", quiet}, dir(), "check_private", 30s, env);
    EXPECT_EQ(r.code, std::optional<int>(0)) << r.out << r.err;
    EXPECT_EQ(warnings(r.err).size(), 0u) << std::oct << mode << "\n" << r.err;
  }
  std::string env_only = Config("env_only", from_env, 0644);
  RunResult e = RunWalbus({"check", "-c", env_only}, dir(), "check_env_only", 30s, env);
  EXPECT_EQ(e.code, std::optional<int>(0)) << e.out << e.err;
  EXPECT_EQ(warnings(e.err).size(), 0u) << e.err;

  // A world-readable TLS client key is named too (slot status opens no sink).
  std::string key = dir() + "/client.key";
  WriteFile(key, "not really a key\n");
  ::chmod(key.c_str(), 0644);
  std::string with_key = Config(
      "with_key", from_env, 0600, "", "off",
      "\n[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"ssl://127.0.0.1:56149\"\n"
      "tls_cert = \"" + dir() + "/client.crt\"\ntls_key = \"" + key + "\"\n");
  RunResult k = RunWalbus({"slot", "status", "-c", with_key}, dir(), "status_key", 30s, env);
  std::vector<std::string> kw = warnings(k.err);
  ASSERT_EQ(kw.size(), 1u) << k.err;
  EXPECT_TRUE(Contains(kw[0], "sink 'm' tls_key file " + key)) << kw[0];
  EXPECT_TRUE(Contains(kw[0], "chmod 600 " + key)) << kw[0];
}

}  // namespace
}  // namespace walbus::itest
