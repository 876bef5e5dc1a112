// Bad input of every kind (issue 6): the real walbus, against real servers,
// for every case of tests/bad_input/cases.txt whose `where` is `bad_input`.
// The table holds the expected exit code and line; this file only holds how
// to bring each situation about. For each case walbus must
//   - exit with the table's code (fatal errors: exactly one ERROR line, which
//     matches the table's line), or keep running and log the table's line
//     (retries), or keep streaming with no ERROR line (continues);
//   - never print the password that is in every DSN and broker URL here.
// The other cases name the test that covers them; BadInputTable checks that
// those tests exist and that docs/troubleshooting.md was generated from the
// table.
//
// Servers (ports 56500-56549): PostgreSQL 56500 (trust, except a scram role
// and a role pg_hba.conf does not list), a second PostgreSQL 56501 restarted
// with the odd setting a case needs (wal_level=replica, max_replication_slots
// 0 or 1), nats-server 56510 (max_payload 2048, JetStream) and 56514 (user and
// password), Redis 56511 and 56513 (requirepass), mosquitto 56512 (password
// file). 56540-56544 stay closed; 56545 is held by the test (metrics port in
// use). All under /tmp/walbus-bad-*, serialised by /tmp/walbus-bad-56500.lock.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <functional>
#include <regex>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPgPort = 56500;
constexpr int kOddPgPort = 56501;
constexpr int kNatsPort = 56510;
constexpr int kRedisPort = 56511;
constexpr int kMqttAuthPort = 56512;
constexpr int kRedisAuthPort = 56513;
constexpr int kNatsAuthPort = 56514;
constexpr int kClosedPgPort = 56540;
constexpr int kClosedNatsPort = 56541;
constexpr int kClosedMqttPort = 56542;
constexpr int kClosedRedisPort = 56543;
constexpr int kBusyPort = 56545;
// In every DSN and broker URL; walbus must never print it.
constexpr const char* kSecret = "Bad1nputS3cret";
const char* const kSlot = "bad_slot";
const char* const kPub = "bad_pub";
constexpr const char* kHbaGroup = "walbus_hba_ok";

// --- the table -------------------------------------------------------------

struct Case {
  std::string id;
  int line = 0;  // of `[id]` in the file
  std::map<std::string, std::string> f;
  const std::string& operator[](const std::string& key) const {
    static const std::string kEmpty;
    auto it = f.find(key);
    return it == f.end() ? kEmpty : it->second;
  }
};

// gtest prints a case by its id.
void PrintTo(const Case& c, std::ostream* os) { *os << c.id; }

std::string TablePath() { return std::string(kSourceDir) + "/tests/bad_input/cases.txt"; }

const std::vector<std::string> kKeys = {"area", "command", "exit", "expect",
                                        "where", "input", "cause", "fix"};

// Parses cases.txt; problems (unknown keys, duplicates, ...) go to *errors.
std::vector<Case> LoadCases(std::vector<std::string>* errors = nullptr) {
  std::vector<Case> cases;
  std::ifstream in(TablePath());
  auto problem = [&](int line, const std::string& what) {
    if (errors) errors->push_back("cases.txt:" + std::to_string(line) + ": " + what);
  };
  if (!in) problem(0, "cannot open " + TablePath());
  std::string text;
  int line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (text.empty() || text[0] == '#') continue;
    if (text[0] == '[') {
      if (text.back() != ']') problem(line_no, "a record starts with [id]");
      Case c;
      c.id = text.substr(1, text.size() - 2);
      c.line = line_no;
      cases.push_back(std::move(c));
      continue;
    }
    size_t colon = text.find(':');
    if (cases.empty() || colon == std::string::npos) {
      problem(line_no, "expected `key: value` inside a record");
      continue;
    }
    std::string key = text.substr(0, colon);
    std::string value = text.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
      problem(line_no, "unknown key '" + key + "'");
    }
    if (!cases.back().f.emplace(key, value).second) problem(line_no, "duplicate key " + key);
  }
  return cases;
}

std::vector<Case> CasesRunHere() {
  std::vector<Case> out;
  for (Case& c : LoadCases()) {
    if (c["where"] == "bad_input") out.push_back(std::move(c));
  }
  return out;
}

// A template line as a regex: <<...>> is any text, the rest literal,
// anchored at the start.
std::regex TemplateRegex(const std::string& tpl) {
  std::string re = "^";
  size_t i = 0;
  while (i < tpl.size()) {
    size_t open = tpl.find("<<", i);
    size_t close = open == std::string::npos ? std::string::npos : tpl.find(">>", open + 2);
    size_t literal_end = close == std::string::npos ? tpl.size() : open;
    for (size_t j = i; j < literal_end; ++j) {
      char ch = tpl[j];
      if (std::strchr("\\^$.|?*+()[]{}", ch) != nullptr) re += '\\';
      re += ch;
    }
    if (close == std::string::npos) break;
    re += ".*?";
    i = close + 2;
  }
  return std::regex(re);
}

// A text log line without its timestamp: "LEVEL message fields...".
std::string WithoutTimestamp(const std::string& line) {
  static const std::regex ts("^\\d{4}-\\d\\d-\\d\\dT[0-9:.]+Z ");
  return std::regex_replace(line, ts, "", std::regex_constants::format_first_only);
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// --- how each case is brought about ------------------------------------------

class BadInput;

// What a scenario prepares: the walbus arguments and what to do while it runs.
struct Plan {
  std::vector<std::string> args;
  EnvChanges env;
  bool as_nobody = false;  // run walbus as the user nobody (via runuser) when root
  // Called once walbus logs "INFO streaming" (the case then waits for that first).
  std::function<void(Child&)> streaming;
  // Called after walbus stopped: checks of what it delivered or left behind.
  std::function<void(Child&)> after;
};

using Scenario = std::function<void(BadInput&, Plan&)>;
const std::map<std::string, Scenario>& Scenarios();

class BadInput : public ::testing::TestWithParam<Case> {
 public:
  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-bad-" + std::to_string(kPgPort) + ".lock");
    pg_ = std::make_unique<PgServer>(kPgPort, "/tmp/walbus-bad-pg-" + std::to_string(kPgPort));
    pg_ok_ = pg_->Start();
    if (!pg_ok_) return;
    // Trust for postgres, the members of kHbaGroup and walbus_t_ghost (which
    // does not exist), scram for walbus_t_pw, and no line at all for anyone
    // else ("no pg_hba.conf entry").
    WriteFile(pg_->dir() + "/data/pg_hba.conf",
              "local all all trust\n"
              "host all walbus_t_pw 127.0.0.1/32 scram-sha-256\n"
              "host all walbus_t_ghost 127.0.0.1/32 trust\n"  // a role that does not exist
              "host all postgres 127.0.0.1/32 trust\n"
              "host all +" + std::string(kHbaGroup) + " 127.0.0.1/32 trust\n");
    Pg pg(pg_->Dsn());
    pg_ok_ = pg.ok() && pg.Exec("SELECT pg_reload_conf()") &&
             pg.Exec("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" +
                     std::string(kHbaGroup) + "') THEN CREATE ROLE " + kHbaGroup +
                     " NOLOGIN; END IF; END $$");
  }

  static void TearDownTestSuite() {
    brokers_.clear();
    if (pg_) pg_->Stop();
    pg_.reset();
    lock_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(pg_ok_) << "PostgreSQL on port " << kPgPort << " did not start";
    dir_ = FreshDir("bad-input-" + GetParam().id);
    sql_ = std::make_unique<Pg>(pg_->Dsn());
    ASSERT_TRUE(sql_->ok());
    Reset(*sql_);
  }

  void TearDown() override {
    if (odd_) odd_->Stop();
    odd_.reset();
    if (busy_fd_ >= 0) ::close(busy_fd_);
    busy_fd_ = -1;
  }

  // Drops every slot, publication, test role and test database; empties public.
  static void Reset(Pg& pg) {
    ResetDatabase(pg);
    pg.Exec("DROP SCHEMA IF EXISTS walbus CASCADE");  // walbus's own bookkeeping, if any
    pg.Exec("DROP DATABASE IF EXISTS walbus_bad_other");
    pg.Exec("DO $$ DECLARE r record; BEGIN "
            "FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'walbus\\_t\\_%' LOOP "
            "EXECUTE format('DROP OWNED BY %I; DROP ROLE %I', r.rolname, r.rolname); "
            "END LOOP; END $$");
  }

  // --- helpers for the scenarios ---
  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }

  static std::string Dsn(const std::string& user = "postgres", int port = kPgPort,
                         const std::string& extra = "") {
    return "host=127.0.0.1 port=" + std::to_string(port) + " user=" + user +
           " dbname=postgres password=" + kSecret + (extra.empty() ? "" : " " + extra);
  }

  static std::string StdoutSink() { return "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n"; }

  // A configuration file: [source] with `dsn` and `source_extra`, [metrics]
  // with `metrics`, then `sinks`.
  std::string Conf(const std::string& dsn, const std::string& source_extra = "",
                   const std::string& sinks = StdoutSink(),
                   const std::string& metrics = "listen = \"\"\n") {
    std::string path = dir_ + "/walbus.toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + dsn + "\"\n"
                    "slot = \"" + kSlot + "\"\n"
                    "publication = \"" + kPub + "\"\n"
                    "status_interval_ms = 100\n"
                    "standby_retry_ms = 300\n" +
                    source_extra + "\n[metrics]\n" + metrics + "\n" + sinks);
    // It holds a password: readable by its owner only (walbus warns otherwise).
    EXPECT_EQ(::chmod(path.c_str(), 0600), 0);
    return path;
  }

  // `walbus run -c` / `check -c` a configuration file.
  static std::vector<std::string> Run(const std::string& cfg) { return {"run", "-c", cfg}; }
  static std::vector<std::string> Check(const std::string& cfg) { return {"check", "-c", cfg}; }

  // A role that pg_hba.conf lets in (unless `hba` is false).
  bool Role(const std::string& name, const std::string& attributes, bool hba = true) {
    return sql().Exec("CREATE ROLE " + name + " LOGIN " + attributes +
                      (hba ? std::string(" IN ROLE ") + kHbaGroup : std::string()));
  }

  // The second PostgreSQL, started afresh with `opts`.
  PgServer* Odd(const std::string& opts) {
    if (odd_) odd_->Stop();
    const std::string dir = "/tmp/walbus-bad-pg-" + std::to_string(kOddPgPort);
    // A fresh data directory: a logical slot left by an interrupted run would
    // stop it from starting with wal_level=replica.
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    odd_ = std::make_unique<PgServer>(kOddPgPort, dir, opts);
    if (!odd_->Start()) return nullptr;
    return odd_.get();
  }

  // A broker from compose/, started once for the whole suite.
  static ComposeBroker* Broker(ComposeBroker::Kind kind, int port, const std::string& env = "") {
    auto it = brokers_.find(port);
    if (it != brokers_.end()) return it->second.get();
    auto b = std::make_unique<ComposeBroker>(kind, port, "/tmp/walbus-bad-broker-" +
                                                             std::to_string(port), env);
    if (!b->Start()) return nullptr;
    return brokers_.emplace(port, std::move(b)).first->second.get();
  }

  // Holds 127.0.0.1:kBusyPort open (listening) until the case ends.
  bool HoldBusyPort() {
    busy_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(busy_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = LocalAddress(kBusyPort);
    return busy_fd_ >= 0 && bind(busy_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
           listen(busy_fd_, 1) == 0;
  }

  std::string out_path() const { return dir_ + "/walbus.out"; }

  // Waits until walbus's stdout has at least `n` envelopes.
  std::vector<Envelope> Envelopes(size_t n, milliseconds timeout = 20s) {
    bool got = WaitUntil([&] { return CountLines(out_path()) >= n; }, timeout);
    EXPECT_TRUE(got) << "expected " << n << " envelopes, have " << CountLines(out_path());
    return ParseOutput(out_path());
  }

 private:
  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<PgServer> pg_;
  static inline bool pg_ok_ = false;
  static inline std::map<int, std::unique_ptr<ComposeBroker>> brokers_;

  std::string dir_;
  std::unique_ptr<Pg> sql_;
  std::unique_ptr<PgServer> odd_;
  int busy_fd_ = -1;
};

TEST_P(BadInput, ExitCodeAndLine) {
  const Case& c = GetParam();
  SCOPED_TRACE("cases.txt:" + std::to_string(c.line) + " [" + c.id + "]");
  auto scenario = Scenarios().find(c.id);
  ASSERT_NE(scenario, Scenarios().end()) << "no scenario for " << c.id << " in this file";
  Plan s;
  scenario->second(*this, s);
  if (HasFatalFailure() || IsSkipped()) return;

  std::vector<std::string> argv;
  if (s.as_nobody && geteuid() == 0) argv = {"/usr/sbin/runuser", "-u", "nobody", "--"};
  argv.push_back(kWalbus);
  argv.insert(argv.end(), s.args.begin(), s.args.end());
  Child w;
  ASSERT_TRUE(w.Start(argv, out_path(), dir() + "/walbus.err", s.env));
  if (s.streaming) {
    bool up = WaitUntil([&] { return !w.Running() || Contains(w.err(), "INFO streaming"); }, 20s);
    ASSERT_TRUE(up && w.Running()) << "walbus did not start streaming:\n" << w.err();
    s.streaming(w);
    if (HasFatalFailure()) return;
  }

  const std::string& exit = c["exit"];
  const std::string& expect = c["expect"];
  std::regex re = TemplateRegex(expect);
  bool on_stdout = expect.rfind("FAIL ", 0) == 0 || expect.rfind("ok ", 0) == 0;
  // The lines the template is matched against, timestamps removed.
  auto candidates = [&] {
    std::vector<std::string> out;
    for (const std::string& l : Lines(on_stdout ? w.out() : w.err())) {
      out.push_back(WithoutTimestamp(l));
    }
    return out;
  };
  auto matching = [&]() -> std::optional<std::string> {
    for (const std::string& l : candidates()) {
      if (std::regex_search(l, re)) return l;
    }
    return std::nullopt;
  };
  auto listing = [&] {
    std::string all = "stdout:\n" + w.out() + "stderr:\n" + w.err();
    return all;
  };
  std::vector<std::string> error_lines = LinesWith(w.err(), " ERROR ");

  if (exit == "1" || exit == "2") {
    std::optional<int> code = w.Wait(60s);
    EXPECT_EQ(code, std::optional<int>(std::stoi(exit))) << listing();
    error_lines = LinesWith(w.err(), " ERROR ");
    if (expect.rfind("ERROR ", 0) == 0) {
      EXPECT_EQ(error_lines.size(), 1u) << "a fatal error is one ERROR line:\n" << listing();
    } else if (expect.rfind("walbus: ", 0) == 0) {
      std::vector<std::string> err = Lines(w.err());
      EXPECT_TRUE(!err.empty() && std::regex_search(err[0], re))
          << "the first stderr line is the problem:\n" << listing();
    }
  } else if (exit == "retries" || exit == "continues") {
    if (!expect.empty()) {
      bool seen = WaitUntil([&] { return matching().has_value() || !w.Running(); }, 30s, 100ms);
      EXPECT_TRUE(seen) << "no line matching the table's in 30 s:\n" << listing();
    }
    std::this_thread::sleep_for(1s);
    EXPECT_TRUE(w.Running()) << "walbus stopped:\n" << listing();
    if (exit == "continues") {
      EXPECT_EQ(LinesWith(w.err(), " ERROR ").size(), 0u) << listing();
    }
    auto t0 = Clock::now();
    std::optional<int> code = w.Signal(SIGTERM) ? w.Wait(20s) : std::nullopt;
    EXPECT_EQ(code, std::optional<int>(0)) << "SIGTERM did not stop walbus cleanly ("
                                           << SecondsSince(t0) << " s):\n" << listing();
  } else {
    FAIL() << "unknown exit '" << exit << "'";
  }
  w.Kill();

  if (!expect.empty()) {
    std::optional<std::string> line = matching();
    std::string shown;
    for (const std::string& l : candidates()) shown += "  " + l + "\n";
    EXPECT_TRUE(line.has_value()) << "no line matches\n  " << expect << "\nlines:\n" << shown;
    if (line) std::printf("[ line ] %s: %s\n", c.id.c_str(), line->c_str());
  } else {
    std::printf("[ line ] %s: (none)\n", c.id.c_str());
  }
  std::string out = w.out(), err = w.err();
  EXPECT_FALSE(Contains(out, kSecret)) << "stdout shows the password:\n" << out;
  EXPECT_FALSE(Contains(err, kSecret)) << "stderr shows the password:\n" << err;
  if (s.after) s.after(w);
}

INSTANTIATE_TEST_SUITE_P(Cases, BadInput, ::testing::ValuesIn(CasesRunHere()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.id; });

// --- the table itself --------------------------------------------------------

TEST(BadInputTable, WellFormed) {
  std::vector<std::string> errors;
  std::vector<Case> cases = LoadCases(&errors);
  EXPECT_GE(cases.size(), 40u);
  std::set<std::string> ids;
  const std::set<std::string> areas = {"cli",    "config", "connection", "server", "slot",
                                       "publication", "schema", "broker", "protocol"};
  const std::set<std::string> exits = {"1", "2", "retries", "continues"};
  for (const Case& c : cases) {
    std::string at = "cases.txt:" + std::to_string(c.line) + " [" + c.id + "]: ";
    if (!std::regex_match(c.id, std::regex("[a-z0-9_]+"))) errors.push_back(at + "bad id");
    if (!ids.insert(c.id).second) errors.push_back(at + "duplicate id");
    for (const std::string& k : kKeys) {
      if (c.f.count(k) == 0) errors.push_back(at + "no " + k);
      else if (k != "expect" && c[k].empty()) errors.push_back(at + k + " is empty");
    }
    if (!areas.count(c["area"])) errors.push_back(at + "unknown area " + c["area"]);
    if (!exits.count(c["exit"])) errors.push_back(at + "unknown exit " + c["exit"]);
    if (c["expect"].empty() && c["exit"] != "continues") {
      errors.push_back(at + "only a `continues` case may have no line");
    }
    const std::string& where = c["where"];
    if (where == "bad_input") {
      if (!Scenarios().count(c.id)) errors.push_back(at + "no scenario in bad_input_test.cpp");
      continue;
    }
    // FILE:TEST, FILE relative to tests/: the file must exist and name TEST.
    size_t colon = where.find(':');
    std::string file = std::string(kSourceDir) + "/tests/" + where.substr(0, colon);
    std::string text = ReadFile(file);
    if (colon == std::string::npos || text.empty()) {
      errors.push_back(at + "where: no test file " + file);
    } else if (!Contains(text, where.substr(colon + 1))) {
      errors.push_back(at + "where: " + file + " has no " + where.substr(colon + 1));
    }
  }
  for (const auto& [id, fn] : Scenarios()) {
    if (!ids.count(id)) errors.push_back("scenario " + id + " has no case in cases.txt");
  }
  for (const std::string& e : errors) ADD_FAILURE() << e;
}

TEST(BadInputTable, TroubleshootingPageIsGeneratedFromIt) {
  ShellResult r = Shell("bash '" + std::string(kSourceDir) + "/tests/bad_input/gen_docs.sh' --check 2>&1");
  EXPECT_EQ(r.code, 0) << r.out;
}

// --- the scenarios -------------------------------------------------------------

// A table t (id int primary key, v text) in a publication created by walbus.
void TableT(BadInput& b) {
  ASSERT_TRUE(b.sql().Exec("CREATE TABLE t (id int PRIMARY KEY, v text)"));
}

// A [[sink]] table: `name`, `type`, `url`, then the TOML lines `more`.
std::string Sink(const std::string& name, const std::string& type, const std::string& url,
                 const std::string& more = "") {
  return "[[sink]]\nname = \"" + name + "\"\ntype = \"" + type + "\"\nurl = \"" + url + "\"\n" +
         more;
}

// SCHEME://USERINFO127.0.0.1:PORT
std::string Url(const std::string& scheme, int port, const std::string& userinfo = "") {
  return scheme + "://" + userinfo + "127.0.0.1:" + std::to_string(port);
}

// Credentials, all with the password that must never be printed.
const std::string kUserSecret = "walbus:" + std::string(kSecret) + "@";  // URL userinfo
const std::string kSecretOnly = ":" + std::string(kSecret) + "@";        // Redis AUTH password
const std::string kUserPassword =
    "user = \"walbus\"\npassword = \"" + std::string(kSecret) + "\"\n";  // sink keys

enum Command { kRun, kCheck };

// `walbus run` or `walbus check` of a configuration with `sink` as its only
// sink; with `closed_port`, first asserts that nothing listens there.
Scenario SinkCase(Command command, std::string sink, int closed_port = 0) {
  return [command, sink, closed_port](BadInput& b, Plan& s) {
    if (closed_port != 0) {
      ASSERT_TRUE(PortClosed(closed_port));
    }
    std::string cfg = b.Conf(b.Dsn(), "", sink);
    s.args = command == kRun ? b.Run(cfg) : b.Check(cfg);
  };
}

// nats-server on kNatsPort: JetStream, a 2 KiB max_payload.
constexpr const char* kSmallNats = "WALBUS_NATS_HTTP_PORT=0 WALBUS_NATS_MAX_PAYLOAD=2048";

// `walbus run` with one sink, `sink(url)`, to the suite's broker of `kind` on
// `port` (started with `env` by the first case that uses it); then `more`.
Scenario BrokerCase(ComposeBroker::Kind kind, int port, std::string env,
                    std::function<std::string(const std::string&)> sink,
                    std::function<void(BadInput&, Plan&)> more = {}) {
  return [kind, port, env, sink, more](BadInput& b, Plan& s) {
    ComposeBroker* broker = BadInput::Broker(kind, port, env);
    ASSERT_NE(broker, nullptr);
    if (more) {
      more(b, s);
      if (::testing::Test::HasFatalFailure()) return;
    }
    s.args = b.Run(b.Conf(b.Dsn(), "", sink(broker->Url())));
  };
}

// The table below, with each `STEM_run|check` entry made into two cases:
// STEM_run as written, and STEM_check, the same situation with `walbus check`
// in place of `walbus run`.
std::map<std::string, Scenario> WithChecks(std::map<std::string, Scenario> table) {
  std::map<std::string, Scenario> out;
  for (auto& [id, scenario] : table) {
    const std::string both = "_run|check";
    if (id.size() <= both.size() || id.compare(id.size() - both.size(), both.size(), both) != 0) {
      out.emplace(id, std::move(scenario));
      continue;
    }
    std::string stem = id.substr(0, id.size() - both.size());
    out.emplace(stem + "_check", [run = scenario](BadInput& b, Plan& s) {
      run(b, s);
      if (!s.args.empty() && s.args[0] == "run") s.args[0] = "check";
    });
    out.emplace(stem + "_run", std::move(scenario));
  }
  return out;
}

const std::map<std::string, Scenario>& Scenarios() {
  static const std::map<std::string, Scenario> kScenarios = WithChecks({
      // --- command line
      {"usage_unknown_command", [](BadInput&, Plan& s) { s.args = {"frobnicate"}; }},
      {"usage_missing_config", [](BadInput&, Plan& s) { s.args = {"run"}; }},
      {"usage_unknown_option",
       [](BadInput& b, Plan& s) { s.args = {"run", "-c", b.Conf(b.Dsn()), "--colour"}; }},
      {"usage_bad_log_format",
       [](BadInput& b, Plan& s) {
         s.args = {"run", "-c", b.Conf(b.Dsn()), "--log-format", "xml"};
       }},
      {"usage_slot_drop_without_yes",
       [](BadInput& b, Plan& s) { s.args = {"slot", "drop", "-c", b.Conf(b.Dsn())}; }},
      // --- configuration file
      {"config_missing_file",
       [](BadInput& b, Plan& s) { s.args = b.Run(b.dir() + "/no-such-file.toml"); }},
      {"config_unreadable_file",
       [](BadInput& b, Plan& s) {
         std::string cfg = b.Conf(b.Dsn());
         ASSERT_EQ(::chmod(cfg.c_str(), geteuid() == 0 ? 0600 : 0), 0);
         s.as_nobody = true;
         s.args = b.Run(cfg);
       }},
      {"config_syntax",
       [](BadInput& b, Plan& s) { s.args = b.Run(b.Conf(b.Dsn(), "messages = \n")); }},
      {"config_unknown_key",
       [](BadInput& b, Plan& s) {
         s.args = b.Run(b.Conf(b.Dsn(), "", BadInput::StdoutSink() + "max_inflight = 10\n"));
       }},
      {"config_wrong_type",
       [](BadInput& b, Plan& s) {
         s.args = b.Run(b.Conf(b.Dsn(), "", BadInput::StdoutSink() + "max_in_flight = \"10\"\n"));
       }},
      {"config_bad_enum",
       [](BadInput& b, Plan& s) {
         s.args = b.Run(b.Conf(b.Dsn(), "", "[[sink]]\nname = \"events\"\ntype = \"kafka\"\n"));
       }},
      {"config_env_unset",
       [](BadInput& b, Plan& s) {
         s.args = b.Run(b.Conf(b.Dsn() + " sslmode=${WALBUS_BAD_SSLMODE}"));
         s.env = {{"WALBUS_BAD_SSLMODE", std::nullopt}};
       }},
      {"config_invalid_slot_name",
       [](BadInput& b, Plan& s) {
         std::string cfg = b.Conf(b.Dsn());
         std::string text = ReadFile(cfg);
         text.replace(text.find("bad_slot"), 8, "My-Slot");
         WriteFile(cfg, text);
         s.args = b.Run(cfg);
       }},
      {"config_dsn_typo",
       [](BadInput& b, Plan& s) {
         std::string dsn = BadInput::Dsn();
         dsn.replace(dsn.find("port="), 5, "prot=");
         s.args = b.Run(b.Conf(dsn));
       }},
      {"config_dsn_bad_port",
       [](BadInput& b, Plan& s) {
         std::string dsn = BadInput::Dsn();
         dsn.replace(dsn.find("port=") + 9, 1, "O");
         s.args = b.Run(b.Conf(dsn));
       }},
      {"config_secret_world_readable",
       [](BadInput& b, Plan& s) {
         std::string cfg = b.Conf(b.Dsn());
         ASSERT_EQ(::chmod(cfg.c_str(), 0644), 0);
         s.args = b.Run(cfg);
       }},
      // --- connecting to PostgreSQL
      {"pg_closed_port_run|check",
       [](BadInput& b, Plan& s) {
         ASSERT_TRUE(PortClosed(kClosedPgPort));
         s.args = b.Run(b.Conf(BadInput::Dsn("postgres", kClosedPgPort)));
       }},
      {"pg_unknown_host_run",
       [](BadInput& b, Plan& s) {
         std::string dsn = BadInput::Dsn();
         dsn.replace(dsn.find("127.0.0.1"), 9, "walbus-no-such-host.invalid");
         s.args = b.Run(b.Conf(dsn));
       }},
      {"pg_wrong_password_run|check",
       [](BadInput& b, Plan& s) {
         ASSERT_TRUE(b.Role("walbus_t_pw", "REPLICATION PASSWORD 'the-right-one'", false));
         s.args = b.Run(b.Conf(BadInput::Dsn("walbus_t_pw")));
       }},
      {"pg_missing_database_run",
       [](BadInput& b, Plan& s) {
         std::string dsn = BadInput::Dsn();
         dsn.replace(dsn.find("dbname=postgres"), 15, "dbname=walbus_no_such_db");
         s.args = b.Run(b.Conf(dsn));
       }},
      {"pg_missing_role_run",
       [](BadInput& b, Plan& s) { s.args = b.Run(b.Conf(BadInput::Dsn("walbus_t_ghost"))); }},
      {"pg_no_hba_entry_run",
       [](BadInput& b, Plan& s) {
         ASSERT_TRUE(b.Role("walbus_t_nohba", "REPLICATION", false));
         s.args = b.Run(b.Conf(BadInput::Dsn("walbus_t_nohba")));
       }},
      // --- server prerequisites
      {"wal_level_replica_run|check",
       [](BadInput& b, Plan& s) {
         PgServer* odd = b.Odd("-c wal_level=replica");
         ASSERT_NE(odd, nullptr);
         s.args = b.Run(b.Conf(BadInput::Dsn("postgres", kOddPgPort)));
       }},
      {"role_without_replication_run|check",
       [](BadInput& b, Plan& s) {
         TableT(b);
         ASSERT_TRUE(b.Role("walbus_t_norepl", ""));
         ASSERT_TRUE(b.sql().Exec("CREATE PUBLICATION bad_pub FOR TABLE t"));
         s.args = b.Run(b.Conf(BadInput::Dsn("walbus_t_norepl")));
       }},
      {"role_without_select",
       [](BadInput& b, Plan& s) {
         TableT(b);
         ASSERT_TRUE(b.Role("walbus_t_nosel", "REPLICATION"));
         ASSERT_TRUE(b.sql().Exec("CREATE PUBLICATION bad_pub FOR TABLE t"));
         s.args = b.Run(b.Conf(BadInput::Dsn("walbus_t_nosel"), "create_publication = false\n"));
         s.streaming = [&b](Child&) { ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (1, 'x')")); };
         s.after = [&b](Child&) {
           std::vector<Envelope> e = b.Envelopes(1);
           ASSERT_EQ(e.size(), 1u);
           EXPECT_EQ(e[0].table, "public.t");
         };
       }},
      {"publication_create_denied",
       [](BadInput& b, Plan& s) {
         TableT(b);
         ASSERT_TRUE(b.Role("walbus_t_notowner", "REPLICATION"));
         s.args = b.Run(b.Conf(BadInput::Dsn("walbus_t_notowner"), "tables = [\"public.t\"]\n"));
       }},
      {"max_replication_slots_zero_run|check",
       [](BadInput& b, Plan& s) {
         ASSERT_NE(b.Odd("-c max_replication_slots=0"), nullptr);
         s.args = b.Run(b.Conf(BadInput::Dsn("postgres", kOddPgPort)));
       }},
      {"slots_exhausted_run",
       [](BadInput& b, Plan& s) {
         PgServer* odd = b.Odd("-c max_replication_slots=1");
         ASSERT_NE(odd, nullptr);
         Pg pg(odd->Dsn());
         ASSERT_TRUE(pg.Exec("SELECT pg_create_logical_replication_slot('squatter', 'pgoutput')"));
         s.args = b.Run(b.Conf(BadInput::Dsn("postgres", kOddPgPort)));
       }},
      {"metrics_port_in_use",
       [](BadInput& b, Plan& s) {
         ASSERT_TRUE(b.HoldBusyPort());
         s.args = b.Run(b.Conf(b.Dsn(), "", BadInput::StdoutSink(),
                               "listen = \"127.0.0.1:" + std::to_string(kBusyPort) + "\"\n"));
       }},
      // --- the replication slot
      {"slot_missing_not_created",
       [](BadInput& b, Plan& s) { s.args = b.Run(b.Conf(b.Dsn(), "create_slot = false\n")); }},
      {"slot_other_plugin",
       [](BadInput& b, Plan& s) {
         ASSERT_TRUE(b.sql().Exec(
             "SELECT pg_create_logical_replication_slot('bad_slot', 'test_decoding')"));
         s.args = b.Run(b.Conf(b.Dsn()));
       }},
      {"slot_other_database",
       [](BadInput& b, Plan& s) {
         ASSERT_TRUE(b.sql().Exec("CREATE DATABASE walbus_bad_other"));
         std::string other = BadInput::Dsn();
         other.replace(other.find("dbname=postgres"), 15, "dbname=walbus_bad_other");
         Pg pg(other);
         ASSERT_TRUE(pg.Exec("SELECT pg_create_logical_replication_slot('bad_slot', 'pgoutput')"));
         s.args = b.Run(b.Conf(b.Dsn()));
       }},
      {"slot_dropped_while_running",
       [](BadInput& b, Plan& s) {
         TableT(b);
         s.args = b.Run(b.Conf(b.Dsn()));
         s.streaming = [&b](Child&) {
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (1, 'before')"));
           b.Envelopes(1);
           // The slot can only be dropped while no walsender uses it: end
           // walbus's, then drop before walbus reconnects (its back-off).
           bool dropped = WaitUntil(
               [&] {
                 b.sql().Exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                              "WHERE slot_name = 'bad_slot' AND active_pid IS NOT NULL");
                 return b.sql().TryExec("SELECT pg_drop_replication_slot('bad_slot')").empty();
               },
               10s, 1ms);
           ASSERT_TRUE(dropped) << "could not drop the slot";
           // Written while no slot exists: only the old slot would have kept it.
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (2, 'in the gap')"));
         };
         s.after = [&b](Child&) {
           std::vector<Envelope> e = ParseOutput(b.out_path());
           bool gap_seen = false;
           for (const Envelope& x : e) gap_seen = gap_seen || JsonEq(x["key"], R"({"id":2})");
           std::printf("[ info ] slot_dropped_while_running: slot recreated: %s, row written in "
                       "the gap delivered: %s\n",
                       b.sql().SlotExists("bad_slot") ? "yes" : "no", gap_seen ? "yes" : "no");
         };
       }},
      {"walsender_terminated",
       [](BadInput& b, Plan& s) {
         TableT(b);
         s.args = b.Run(b.Conf(b.Dsn()));
         s.streaming = [&b](Child&) {
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (1, 'before')"));
           b.Envelopes(1);
           ASSERT_TRUE(b.sql().Exec("SELECT pg_terminate_backend(active_pid) FROM "
                                    "pg_replication_slots WHERE slot_name = 'bad_slot'"));
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (2, 'after')"));
           b.Envelopes(2);
         };
       }},
      // --- the publication
      {"publication_missing_run|check",
       [](BadInput& b, Plan& s) {
         s.args = b.Run(b.Conf(b.Dsn(), "create_publication = false\n"));
       }},
      {"publication_dropped_while_running",
       [](BadInput& b, Plan& s) {
         TableT(b);
         s.args = b.Run(b.Conf(b.Dsn()));
         s.streaming = [&b](Child&) {
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (1, 'before')"));
           b.Envelopes(1);
           ASSERT_TRUE(b.sql().Exec("DROP PUBLICATION bad_pub"));
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (2, 'after')"));
         };
         // A restart (create_publication = true recreates it) must not skip row 2.
         s.after = [&b](Child&) {
           RunResult again = RunWalbus({"run", "-c", b.dir() + "/walbus.toml"}, b.dir(), "again", 15s);
           std::printf("[ info ] restart after the drop: exit %s\n%s%s\n",
                       again.code ? std::to_string(*again.code).c_str() : "none (still running)",
                       again.out.c_str(), again.err.c_str());
         };
       }},
      // --- schema changes
      {"table_dropped_while_behind",
       [](BadInput& b, Plan& s) {
         TableT(b);
         ASSERT_TRUE(b.sql().Exec("CREATE TABLE u (id int PRIMARY KEY)"));
         s.args = b.Run(b.Conf(b.Dsn()));
         s.streaming = [&b](Child& w) {
           // walbus paused: it reads the changes only after the drop.
           ASSERT_TRUE(w.Signal(SIGSTOP));
           bool ok = b.sql().Exec("INSERT INTO t VALUES (1, 'dropped soon')") &&
                     b.sql().Exec("DROP TABLE t") && b.sql().Exec("INSERT INTO u VALUES (1)");
           ASSERT_TRUE(w.Signal(SIGCONT));
           ASSERT_TRUE(ok);
           std::vector<Envelope> e = b.Envelopes(2);
           ASSERT_EQ(e.size(), 2u);
           EXPECT_EQ(e[0].table, "public.t");
           EXPECT_TRUE(JsonEq(e[0]["after"], R"({"id":1,"v":"dropped soon"})")) << e[0].json;
           EXPECT_EQ(e[1].table, "public.u");
         };
       }},
      {"column_type_changed",
       [](BadInput& b, Plan& s) {
         TableT(b);
         s.args = b.Run(b.Conf(b.Dsn()));
         s.streaming = [&b](Child& w) {
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (1, '12')"));
           b.Envelopes(1);
           ASSERT_TRUE(b.sql().Exec("ALTER TABLE t ALTER COLUMN v TYPE int USING v::int"));
           ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (2, 13)"));
           // And once more while walbus is behind.
           ASSERT_TRUE(w.Signal(SIGSTOP));
           bool ok = b.sql().Exec("ALTER TABLE t ALTER COLUMN v TYPE numeric(10,2)") &&
                     b.sql().Exec("INSERT INTO t VALUES (3, 14.5)");
           ASSERT_TRUE(w.Signal(SIGCONT));
           ASSERT_TRUE(ok);
           std::vector<Envelope> e = b.Envelopes(3);
           ASSERT_EQ(e.size(), 3u);
           EXPECT_TRUE(JsonEq(e[0]["after"], R"({"id":1,"v":"12"})")) << e[0].json;
           EXPECT_TRUE(JsonEq(e[1]["after"], R"({"id":2,"v":13})")) << e[1].json;
           EXPECT_TRUE(JsonEq(e[2]["after"], R"({"id":3,"v":"14.50"})")) << e[2].json;
         };
       }},
      // --- brokers
      // `run` with credentials in the URL or the sink (they must not be
      // printed), after checking the port is closed; `check` without.
      {"nats_unreachable_run",
       SinkCase(kRun, Sink("events", "nats", Url("nats", kClosedNatsPort, kUserSecret)),
                kClosedNatsPort)},
      {"nats_unreachable_check",
       SinkCase(kCheck, Sink("events", "nats", Url("nats", kClosedNatsPort)))},
      {"jetstream_unreachable_run|check",
       SinkCase(kRun,
                Sink("js", "jetstream", Url("nats", kClosedNatsPort), "stream = \"BAD\"\n"))},
      {"mqtt_unreachable_run",
       SinkCase(kRun, Sink("mq", "mqtt", Url("tcp", kClosedMqttPort), kUserPassword),
                kClosedMqttPort)},
      {"mqtt_unreachable_check",
       SinkCase(kCheck, Sink("mq", "mqtt", Url("tcp", kClosedMqttPort)))},
      {"redis_unreachable_run",
       SinkCase(kRun, Sink("streams", "redis", Url("redis", kClosedRedisPort, kSecretOnly)),
                kClosedRedisPort)},
      {"redis_unreachable_check",
       SinkCase(kCheck, Sink("streams", "redis", Url("redis", kClosedRedisPort)))},
      // One broker, started once for the suite by the first case that needs it.
      {"nats_wrong_password",
       BrokerCase(ComposeBroker::Kind::kNats, kNatsAuthPort,
                  "WALBUS_NATS_HTTP_PORT=0 WALBUS_NATS_ARGS='--user walbus --pass the-right-one'",
                  [](const std::string& url) {
                    return Sink("events", "nats", url, kUserPassword);
                  })},
      {"mqtt_wrong_password",
       BrokerCase(ComposeBroker::Kind::kMosquitto, kMqttAuthPort,
                  "WALBUS_MQTT_PASSWD='walbus:the-right-one'",
                  [](const std::string& url) { return Sink("mq", "mqtt", url, kUserPassword); })},
      {"redis_wrong_password",
       BrokerCase(ComposeBroker::Kind::kRedis, kRedisAuthPort,
                  "WALBUS_REDIS_OPTS='--requirepass the-right-one'",
                  [](const std::string&) {
                    return Sink("streams", "redis", Url("redis", kRedisAuthPort, kSecretOnly));
                  })},
      {"jetstream_stream_missing",
       BrokerCase(ComposeBroker::Kind::kNats, kNatsPort, kSmallNats, [](const std::string& url) {
         return Sink("js", "jetstream", url,
                     "stream = \"NO_SUCH_STREAM\"\ncreate_stream = false\n");
       })},
      {"nats_refused_payload",
       BrokerCase(ComposeBroker::Kind::kNats, kNatsPort, kSmallNats,
                  [](const std::string& url) { return Sink("events", "nats", url); },
                  [](BadInput& b, Plan& s) {
                    TableT(b);
                    s.streaming = [&b](Child&) {
                      ASSERT_TRUE(b.sql().Exec("INSERT INTO t SELECT 1, string_agg(md5(g::text), "
                                               "'') FROM generate_series(1, 160) g"));
                    };
                  })},
      {"redis_refused_wrongtype",
       BrokerCase(ComposeBroker::Kind::kRedis, kRedisPort, "",
                  [](const std::string& url) { return Sink("streams", "redis", url); },
                  [](BadInput& b, Plan& s) {
                    ShellResult set = Shell("redis-cli -h 127.0.0.1 -p " +
                                            std::to_string(kRedisPort) +
                                            " SET postgres.public.t a-string 2>&1");
                    ASSERT_EQ(set.out, "OK\n");
                    TableT(b);
                    s.streaming = [&b](Child&) {
                      ASSERT_TRUE(b.sql().Exec("INSERT INTO t VALUES (1, 'x')"));
                    };
                  })},
  });
  return kScenarios;
}

}  // namespace
}  // namespace walbus::itest
