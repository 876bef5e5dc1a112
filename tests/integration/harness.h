// Integration-test harness: a throwaway PostgreSQL from compose/pg.sh, a libpq
// helper, walbus run as a child process with its stdout and stderr in files,
// and a reader for the `TOPIC<TAB>ENVELOPE` lines the stdout sink writes.
//
// Header-only (everything `inline`) so each *_test.cpp stays one binary with
// no shared library. Every wait is bounded; a Child still running when it goes
// out of scope is killed with SIGKILL and reaped, and children are started with
// PR_SET_PDEATHSIG so they die with the test binary even when it crashes.
// Spawn children from the main test thread (the death signal follows the
// thread that forked).
//
// Failures inside helpers are recorded with ADD_FAILURE() and the helper
// returns an empty/false value; the caller ASSERTs on that value.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace walbus::itest {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

constexpr const char* kWalbus = WALBUS_BINARY;
constexpr const char* kSourceDir = WALBUS_SOURCE_DIR;

// --- small utilities -----------------------------------------------------

inline bool Contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) ADD_FAILURE() << "cannot write " << path;
}

// Complete lines only: a line still being written (no '\n' yet) is left out.
inline std::vector<std::string> ReadLines(const std::string& path) {
  std::string all = ReadFile(path);
  std::vector<std::string> lines;
  size_t start = 0;
  for (;;) {
    size_t nl = all.find('\n', start);
    if (nl == std::string::npos) break;
    lines.push_back(all.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

inline size_t CountLines(const std::string& path) {
  std::string all = ReadFile(path);
  size_t n = 0;
  for (char c : all) n += c == '\n';
  return n;
}

// Lines of `text` that contain `needle`.
inline std::vector<std::string> LinesWith(const std::string& text, std::string_view needle) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (Contains(line, needle)) out.push_back(line);
  }
  return out;
}

// Polls pred() every `step` until it holds or `timeout` passes.
template <class Pred>
bool WaitUntil(Pred pred, milliseconds timeout, milliseconds step = 50ms) {
  auto until = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(step);
  }
}

inline double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A fresh, empty directory for one test's files.
inline std::string FreshDir(const std::string& name) {
  std::string dir = "/tmp/walbus-itest-" + name;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) ADD_FAILURE() << "cannot create " << dir << ": " << ec.message();
  return dir;
}

struct ShellResult {
  int code = -1;
  std::string out;
};

// Runs `cmd` with /bin/sh; its exit code and standard output.
inline ShellResult Shell(const std::string& cmd) {
  ShellResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// --- loopback TCP ----------------------------------------------------------

// 127.0.0.1:port (INADDR_ANY:port with `any`).
inline sockaddr_in LocalAddress(int port, bool any = false) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(any ? INADDR_ANY : INADDR_LOOPBACK);
  return a;
}

// True when nothing accepts connections on 127.0.0.1:port.
inline bool PortClosed(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a = LocalAddress(port);
  bool refused =
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno == ECONNREFUSED;
  ::close(fd);
  return refused;
}

// GET `path` from 127.0.0.1:port over HTTP/1.0 (the server closes): the whole
// reply, status line and head included; "" when nothing answers. Each read
// waits at most `timeout`.
inline std::string HttpGetReply(int port, const std::string& path, milliseconds timeout = 5s) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a = LocalAddress(port);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[8192];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return reply;
}

// The body of HttpGetReply(); "" when there is no complete head.
inline std::string HttpGet(int port, const std::string& path, milliseconds timeout = 5s) {
  std::string reply = HttpGetReply(port, path, timeout);
  size_t body = reply.find("\r\n\r\n");
  return body == std::string::npos ? "" : reply.substr(body + 4);
}

// --- LSNs ----------------------------------------------------------------

inline std::optional<uint64_t> ParseLsn(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= text.size()) return {};
  uint64_t hi = 0, lo = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == slash) continue;
    char c = text[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : -1;
    if (d < 0) return {};
    uint64_t& part = i < slash ? hi : lo;
    part = part * 16 + static_cast<uint64_t>(d);
    if (part > 0xFFFFFFFFull) return {};
  }
  return (hi << 32) | lo;
}

inline std::string FormatLsn(uint64_t lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32),
                static_cast<unsigned>(lsn & 0xFFFFFFFFu));
  return buf;
}

inline std::string Hex16(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIX64, v);
  return buf;
}

// --- libpq ---------------------------------------------------------------

using Row = std::vector<std::optional<std::string>>;
using Rows = std::vector<Row>;

// One libpq connection, used by one thread. Exec/Query record a test failure
// (naming the SQL and the server's message) when the statement fails.
class Pg {
 public:
  explicit Pg(const std::string& dsn) : conn_(PQconnectdb(dsn.c_str()), &PQfinish) {
    if (!ok()) {
      ADD_FAILURE() << "cannot connect to " << dsn << ": "
                    << (conn_ ? PQerrorMessage(conn_.get()) : "out of memory");
    } else {
      // Keep the test's own notices (DROP ... IF EXISTS) out of the output.
      PQclear(PQexec(conn_.get(), "SET client_min_messages = warning"));
    }
  }
  bool ok() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }
  PGconn* get() const { return conn_.get(); }

  // Runs one or more statements; "" on success, else the error message.
  std::string TryExec(const std::string& sql) {
    if (!ok()) return "not connected";
    std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn_.get(), sql.c_str()),
                                                       &PQclear);
    ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return "";
    std::string msg = res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn_.get());
    return msg.empty() ? "unknown error" : msg;
  }

  bool Exec(const std::string& sql) {
    std::string err = TryExec(sql);
    if (!err.empty()) ADD_FAILURE() << "SQL failed: " << sql << "\n  " << err;
    return err.empty();
  }

  Rows Query(const std::string& sql) {
    Rows rows;
    if (!ok()) {
      ADD_FAILURE() << "not connected: " << sql;
      return rows;
    }
    std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn_.get(), sql.c_str()),
                                                       &PQclear);
    if (!res || PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << "query failed: " << sql << "\n  "
                    << (res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn_.get()));
      return rows;
    }
    for (int r = 0; r < PQntuples(res.get()); ++r) {
      Row row;
      for (int c = 0; c < PQnfields(res.get()); ++c) {
        if (PQgetisnull(res.get(), r, c)) {
          row.emplace_back();
        } else {
          row.emplace_back(PQgetvalue(res.get(), r, c));
        }
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }

  // First column of the first row; nullopt when there is no row or it is NULL.
  std::optional<std::string> Scalar(const std::string& sql) {
    Rows rows = Query(sql);
    if (rows.empty() || rows[0].empty()) return {};
    return rows[0][0];
  }

  uint64_t CurrentWalLsn() {
    std::optional<std::string> v = Scalar("SELECT pg_current_wal_lsn()::text");
    std::optional<uint64_t> lsn = v ? ParseLsn(*v) : std::nullopt;
    if (!lsn) ADD_FAILURE() << "no pg_current_wal_lsn()";
    return lsn.value_or(0);
  }

  // The slot's confirmed_flush_lsn; nullopt when the slot does not exist.
  std::optional<uint64_t> SlotConfirmed(const std::string& slot) {
    Rows rows = Query("SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM "
                      "pg_replication_slots WHERE slot_name = '" + slot + "'");
    if (rows.empty() || !rows[0][0]) return {};
    return ParseLsn(*rows[0][0]);
  }

  // The PID streaming from the slot; 0 when inactive, nullopt when missing.
  std::optional<int> SlotActivePid(const std::string& slot) {
    Rows rows = Query("SELECT coalesce(active_pid, 0)::text FROM pg_replication_slots "
                      "WHERE slot_name = '" + slot + "'");
    if (rows.empty() || !rows[0][0]) return {};
    return std::atoi(rows[0][0]->c_str());
  }

  bool SlotExists(const std::string& slot) { return SlotActivePid(slot).has_value(); }

 private:
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
};

// --- PostgreSQL server ---------------------------------------------------

// A PostgreSQL started and stopped through compose/pg.sh, in its own data
// directory. Stop() only ever stops the postmaster of that directory.
class PgServer {
 public:
  PgServer(int port, std::string dir, std::string opts = "")
      : port_(port), dir_(std::move(dir)), opts_(std::move(opts)) {}

  bool Start() {
    std::string cmd = Env() + " '" + std::string(kSourceDir) + "/compose/pg.sh' start " +
                      std::to_string(port_) + " 2>&1";
    ShellResult r = Shell(cmd);
    if (r.code != 0) {
      ADD_FAILURE() << "compose/pg.sh start " << port_ << " failed: " << r.out;
      return false;
    }
    started_ = true;
    return true;
  }

  void Stop() {
    if (!started_) return;
    Shell(Env() + " '" + std::string(kSourceDir) + "/compose/pg.sh' stop " +
          std::to_string(port_) + " >/dev/null 2>&1");
    started_ = false;
  }

  // An immediate shutdown (SIGQUIT to the postmaster, `compose/pg.sh
  // stop-immediate`): a crash; the next Start() runs WAL recovery.
  void StopImmediate() {
    if (!started_) return;
    Shell(Env() + " '" + std::string(kSourceDir) + "/compose/pg.sh' stop-immediate " +
          std::to_string(port_) + " >/dev/null 2>&1");
    started_ = false;
  }

  // True while the postmaster of this data directory runs.
  bool PostmasterRunning() const {
    std::ifstream pidfile(dir_ + "/data/postmaster.pid");
    long pid = 0;
    if (!(pidfile >> pid) || pid <= 0) return false;
    return ::kill(static_cast<pid_t>(pid), 0) == 0;
  }

  std::string Dsn(const std::string& user = "postgres", const std::string& extra = "") const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user +
           " dbname=postgres" + (extra.empty() ? "" : " " + extra);
  }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string Env() const {
    return "WALBUS_PG_DIR='" + dir_ + "' WALBUS_PG_OPTS='" + opts_ + "'";
  }
  int port_;
  std::string dir_;
  std::string opts_;
  bool started_ = false;
};

// An exclusive lock on a file, so that test binaries sharing one port run one
// at a time even under `ctest -j`.
class FileLock {
 public:
  explicit FileLock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0 || flock(fd_, LOCK_EX) != 0) ADD_FAILURE() << "cannot lock " << path;
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// What every fixture does before a test: ends the walsenders, drops every
// replication slot and publication and empties the public schema.
inline void ResetDatabase(Pg& pg) {
  pg.Exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
          "WHERE active_pid IS NOT NULL");
  bool idle = WaitUntil(
      [&] {
        return pg.Scalar("SELECT count(*) FROM pg_replication_slots WHERE active_pid IS NOT "
                         "NULL") == std::optional<std::string>("0");
      },
      10s);
  EXPECT_TRUE(idle) << "a replication slot stayed active";
  pg.Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots");
  pg.Exec("DO $$ DECLARE r record; BEGIN "
          "FOR r IN SELECT pubname FROM pg_publication LOOP "
          "EXECUTE format('DROP PUBLICATION %I', r.pubname); END LOOP; END $$");
  pg.Exec("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public");
}

// --- child processes ----------------------------------------------------

// Environment changes for a child: a value sets NAME, nullopt removes it.
using EnvChanges = std::map<std::string, std::optional<std::string>>;

// One child process with stdout and stderr redirected to files.
class Child {
 public:
  Child() = default;
  ~Child() { Kill(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Starts `argv` (argv[0] is the program path). `append` keeps existing file
  // contents. Returns false (and records a failure) when fork fails.
  bool Start(const std::vector<std::string>& argv, const std::string& out_path,
             const std::string& err_path, const EnvChanges& env = {}, bool append = false) {
    Kill();
    out_path_ = out_path;
    err_path_ = err_path;
    // Everything the child needs is prepared before fork: after it, only
    // async-signal-safe calls.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string kv = *e;
      std::string name = kv.substr(0, kv.find('='));
      if (env.count(name) == 0) env_strings.push_back(kv);
    }
    for (const auto& [name, value] : env) {
      if (value) env_strings.push_back(name + "=" + *value);
    }
    std::vector<char*> envp, args;
    for (std::string& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_copy = argv;
    for (std::string& s : argv_copy) args.push_back(s.data());
    args.push_back(nullptr);
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
    int out = ::open(out_path.c_str(), flags, 0644);
    int err = ::open(err_path.c_str(), flags, 0644);
    if (out < 0 || err < 0) {
      ADD_FAILURE() << "cannot open " << out_path << " / " << err_path;
      if (out >= 0) ::close(out);
      if (err >= 0) ::close(err);
      return false;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork failed: " << std::strerror(errno);
      ::close(out);
      ::close(err);
      return false;
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      ::dup2(out, STDOUT_FILENO);
      ::dup2(err, STDERR_FILENO);
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      // Signals the test runner ignores or blocks must not leak into walbus.
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      struct sigaction dfl;
      std::memset(&dfl, 0, sizeof dfl);
      dfl.sa_handler = SIG_DFL;
      sigaction(SIGPIPE, &dfl, nullptr);
      execve(args[0], args.data(), envp.data());
      _exit(127);
    }
    ::close(out);
    ::close(err);
    pid_ = pid;
    exited_ = false;
    status_ = -1;
    return true;
  }

  pid_t pid() const { return pid_; }
  const std::string& out_path() const { return out_path_; }
  const std::string& err_path() const { return err_path_; }
  std::string out() const { return ReadFile(out_path_); }
  std::string err() const { return ReadFile(err_path_); }

  bool Running() {
    Reap(false);
    return pid_ > 0 && !exited_;
  }

  bool Signal(int sig) {
    if (!Running()) return false;
    return ::kill(pid_, sig) == 0;
  }

  // Waits for the exit: the exit code, 128+N for signal N, nullopt on timeout.
  std::optional<int> Wait(milliseconds timeout) {
    if (pid_ <= 0) return {};
    WaitUntil([&] { return Reap(false); }, timeout, 10ms);
    if (!exited_) return {};
    return status_;
  }

  // SIGKILL and reap; a no-op when nothing runs.
  void Kill() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      Reap(true);
    }
  }

 private:
  // Returns true when the child has exited (now or before).
  bool Reap(bool block) {
    if (pid_ <= 0) return false;
    if (exited_) return true;
    int st = 0;
    pid_t r;
    do {
      r = waitpid(pid_, &st, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == pid_) {
      exited_ = true;
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return true;
    }
    return false;
  }

  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = -1;
  std::string out_path_, err_path_;
};

struct RunResult {
  std::optional<int> code;  // nullopt: still running at the timeout (then killed)
  std::string out, err;
};

// Runs walbus with `args` to completion (at most `timeout`).
inline RunResult RunWalbus(const std::vector<std::string>& args, const std::string& dir,
                           const std::string& tag, milliseconds timeout = 30s,
                           const EnvChanges& env = {}) {
  std::vector<std::string> argv{kWalbus};
  argv.insert(argv.end(), args.begin(), args.end());
  Child c;
  RunResult r;
  std::string out = dir + "/" + tag + ".out", err = dir + "/" + tag + ".err";
  if (!c.Start(argv, out, err, env)) return r;
  r.code = c.Wait(timeout);
  c.Kill();
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

// Runs walbus with `args` (stdout and stderr in dir/TAG.out|err) until
// `ready(stderr text)` holds (at most `wait`), then `between(child)`, then
// SIGTERM: the exit code (nullopt when it did not stop within 20 s) and both
// outputs. When `ready` never held, or walbus exited before, the failure
// recorded reads "TAG: <not_ready>:" and the stderr.
template <class Ready, class Between>
RunResult RunWalbusThenStop(const std::vector<std::string>& args, const std::string& dir,
                            const std::string& tag, const EnvChanges& env, Ready ready,
                            const std::string& not_ready, milliseconds wait, Between between) {
  std::vector<std::string> argv{kWalbus};
  argv.insert(argv.end(), args.begin(), args.end());
  Child c;
  RunResult r;
  if (!c.Start(argv, dir + "/" + tag + ".out", dir + "/" + tag + ".err", env)) return r;
  bool seen = WaitUntil([&] { return !c.Running() || ready(c.err()); }, wait);
  EXPECT_TRUE(seen && c.Running()) << tag << ": " << not_ready << ":\n" << c.err();
  if (seen && c.Running()) between(c);
  c.Signal(SIGTERM);
  r.code = c.Wait(20s);
  c.Kill();
  r.out = c.out();
  r.err = c.err();
  return r;
}

// Starts `walbus run -c config` (stdout and stderr in dir/TAG.out|err) and
// waits (at most `timeout`) for its "streaming" log line. Returns false, with
// a failure naming `tag` and the stderr, if it did not get there.
inline bool StartStreaming(Child* child, const std::string& config, const std::string& dir,
                           const std::string& tag, milliseconds timeout = 20s,
                           const EnvChanges& env = {}) {
  std::string out = dir + "/" + tag + ".out", err = dir + "/" + tag + ".err";
  if (!child->Start({kWalbus, "run", "-c", config}, out, err, env)) return false;
  bool streaming = WaitUntil(
      [&] { return !child->Running() || Contains(ReadFile(err), "INFO streaming"); }, timeout);
  if (!streaming || !child->Running()) {
    ADD_FAILURE() << "walbus did not start streaming (" << tag << "); stderr:\n"
                  << ReadFile(err);
    return false;
  }
  return true;
}

// SIGTERM, then the exit code (nullopt when it did not stop in time).
inline std::optional<int> StopChild(Child* child, milliseconds timeout = 20s) {
  if (!child->Signal(SIGTERM)) return child->Wait(0ms);
  return child->Wait(timeout);
}

// --- envelopes -------------------------------------------------------------

inline std::string ToJson(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return sb.GetString();
}

// A JSON null to return for what is missing.
inline const rapidjson::Value& NullValue() {
  static const rapidjson::Value kNull;
  return kNull;
}

// v[name], or null when `v` is not an object or lacks `name`. (RapidJSON's own
// operator[] asserts, and the assert is compiled out in a Release build.)
inline const rapidjson::Value& Member(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return NullValue();
  auto it = v.FindMember(name);
  return it == v.MemberEnd() ? NullValue() : it->value;
}

// True when `v` equals the JSON text `expected` (object member order ignored).
inline bool JsonEq(const rapidjson::Value& v, const std::string& expected) {
  rapidjson::Document d;
  d.Parse(expected.c_str(), expected.size());
  if (d.HasParseError()) {
    ADD_FAILURE() << "bad expected JSON in the test: " << expected;
    return false;
  }
  return v == d;
}

// One `TOPIC<TAB>ENVELOPE` line, parsed.
// A parsed document with a memory pool sized to its text: rapidjson's default
// pool takes 64 kB per document, which for the 100,000 envelopes a test keeps
// was 6.4 GB of address space (and ran ThreadSanitizer out of mappings).
struct ParsedJson {
  explicit ParsedJson(size_t text_size) : pool(2 * text_size + 256), doc(&pool) {}
  rapidjson::MemoryPoolAllocator<> pool;
  rapidjson::Document doc;
};

struct Envelope {
  std::string topic;
  std::string json;
  std::shared_ptr<ParsedJson> parsed;

  const rapidjson::Document& doc() const { return parsed->doc; }
  std::string id, op;
  std::string table;  // "schema.table"; "" for a message
  uint64_t commit_lsn = 0;
  uint64_t lsn = 0;
  int64_t seq = -1;

  bool Has(const char* name) const { return doc().HasMember(name); }
  // The member `name`, JSON null when absent (use Has() to tell them apart).
  const rapidjson::Value& operator[](const char* name) const { return Member(doc(), name); }
  const rapidjson::Value& source() const { return (*this)["source"]; }
  // `name` of the envelope as JSON text, or "<absent>".
  std::string Field(const char* name) const {
    return Has(name) ? ToJson((*this)[name]) : std::string("<absent>");
  }
};

inline std::optional<Envelope> ParseEnvelopeLine(const std::string& line) {
  size_t tab = line.find('\t');
  if (tab == std::string::npos) return {};
  Envelope e;
  e.topic = line.substr(0, tab);
  e.json = line.substr(tab + 1);
  e.parsed = std::make_shared<ParsedJson>(e.json.size());
  e.parsed->doc.Parse(e.json.c_str(), e.json.size());
  const rapidjson::Document& d = e.doc();
  if (d.HasParseError() || !d.IsObject()) return {};
  if (d.HasMember("id") && d["id"].IsString()) e.id = d["id"].GetString();
  if (d.HasMember("op") && d["op"].IsString()) e.op = d["op"].GetString();
  if (d.HasMember("source") && d["source"].IsObject()) {
    const rapidjson::Value& s = d["source"];
    if (s.HasMember("schema") && s["schema"].IsString() && s.HasMember("table") &&
        s["table"].IsString()) {
      e.table = std::string(s["schema"].GetString()) + "." + s["table"].GetString();
    }
    if (s.HasMember("commit_lsn") && s["commit_lsn"].IsString()) {
      e.commit_lsn = ParseLsn(s["commit_lsn"].GetString()).value_or(0);
    }
    if (s.HasMember("lsn") && s["lsn"].IsString()) {
      e.lsn = ParseLsn(s["lsn"].GetString()).value_or(0);
    }
    if (s.HasMember("seq") && s["seq"].IsInt64()) e.seq = s["seq"].GetInt64();
  }
  return e;
}

// Parses every complete line of a stdout-sink output file. A line that is not
// `TOPIC<TAB>JSON object` is a test failure. Only '\n'-terminated lines are
// read: after a kill -9 an unterminated tail was never acknowledged, so it is
// re-delivered by the next run (each run writes its own file).
inline std::vector<Envelope> ParseOutput(const std::string& path) {
  std::vector<Envelope> out;
  int line_no = 0;
  for (const std::string& line : ReadLines(path)) {
    ++line_no;
    std::optional<Envelope> e = ParseEnvelopeLine(line);
    if (!e) {
      ADD_FAILURE() << path << ":" << line_no << ": not TOPIC<TAB>JSON: " << line.substr(0, 300);
      continue;
    }
    out.push_back(std::move(*e));
  }
  return out;
}

// --- fixture ---------------------------------------------------------------

// Base fixture: one PostgreSQL 15 per test binary on kPort (serialised across
// binaries by a lock file), and before every test an empty database: no slots,
// no publications, an empty public schema.
class PgFixture : public ::testing::Test {
 public:
  static constexpr int kPort = 55497;

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
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = FreshDir(std::string(info->test_suite_name()) + "-" + info->name());
    dsn_ = server_->Dsn();
    sql_ = std::make_unique<Pg>(dsn_);
    ASSERT_TRUE(sql_->ok());
    ResetDatabase(*sql_);
  }

  void TearDown() override {
    // Children are killed by their destructors; what they held goes with the
    // next SetUp's reset.
  }

  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }
  const std::string& dsn() const { return dsn_; }
  PgServer& server() { return *server_; }

  // A config file with one stdout sink; `source_extra` and `tail` are TOML
  // lines added to [source] and after the sink; `dsn` defaults to the
  // fixture's server.
  std::string WriteConfig(const std::string& name, const std::string& slot,
                          const std::string& publication, const std::string& source_extra = "",
                          const std::string& tail = "", const std::string& dsn = "",
                          int status_interval_ms = 100) {
    std::string path = dir_ + "/" + name + ".toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + (dsn.empty() ? dsn_ : dsn) + "\"\n"
                    "slot = \"" + slot + "\"\n"
                    "publication = \"" + publication + "\"\n"
                    "status_interval_ms = " + std::to_string(status_interval_ms) + "\n"
                    "standby_retry_ms = 300\n" +
                    source_extra +
                    "\n[metrics]\nlisten = \"\"\n"
                    "\n[[sink]]\nname = \"out\"\ntype = \"stdout\"\n" +
                    tail);
    return path;
  }

  // Starts `walbus run -c config` and waits (at most `timeout`) for its
  // "streaming" log line. Returns false if it did not get there.
  bool StartRun(Child* child, const std::string& config, const std::string& tag,
                milliseconds timeout = 20s, const EnvChanges& env = {}) {
    return StartStreaming(child, config, dir_, tag, timeout, env);
  }

  // Waits until `path` holds at least `n` lines; returns them parsed.
  std::vector<Envelope> WaitForEnvelopes(const std::string& path, size_t n,
                                         milliseconds timeout = 20s) {
    bool got = WaitUntil([&] { return CountLines(path) >= n; }, timeout);
    if (!got) {
      ADD_FAILURE() << "expected at least " << n << " envelopes in " << path << ", have "
                    << CountLines(path);
    }
    return ParseOutput(path);
  }

  // SIGTERM, then the exit code (nullopt when it did not stop in time).
  std::optional<int> Stop(Child* child, milliseconds timeout = 20s) {
    return StopChild(child, timeout);
  }

 private:
  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<PgServer> server_;
  static inline bool server_ok_ = false;

  std::string dir_;
  std::string dsn_;
  std::unique_ptr<Pg> sql_;
};

// --- processes by PID ------------------------------------------------------

// The PID written in a daemon's pidfile; 0 when the file is missing or empty.
inline pid_t ReadPidFile(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return 0;
  return static_cast<pid_t>(pid);
}

// A `Name:   value kB` field of /proc/PID/status (VmRSS, VmHWM, ...) in kB;
// -1 when the process or the field is missing.
inline long ProcStatusKb(pid_t pid, const std::string& field = "VmRSS") {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, field.size() + 1, field + ":") == 0) {
      return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
    }
  }
  return -1;
}

// "local_address" (hex ip:port as in /proc/net/tcp*) of every TCP socket in
// LISTEN state that process `pid` holds.
inline std::vector<std::string> ListeningAddresses(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) {
      inodes.insert(target.substr(8, target.size() - 9));
    }
  }
  std::vector<std::string> out;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      f >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (st == "0A" && inodes.count(inode) != 0) out.push_back(local);
    }
  }
  return out;
}

// A local address as /proc/net/tcp writes it: hex IP (e.g. "0100007F" for
// 127.0.0.1) and port.
inline std::string ProcAddress(const char* hex_ip, int port) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s:%04X", hex_ip, port);
  return buf;
}

// --- brokers-e2e / refusal helpers ------------------------------------------
// Used by brokers_e2e_test.cpp and refusal_test.cpp: brokers from the compose
// scripts, a fixture whose PostgreSQL port is a template argument, and a
// reference decoder that reads what pgoutput itself sends (through a second
// slot) so expected event ids do not come from walbus.

// A throwaway broker started and stopped through compose/nats.sh, redis.sh or
// mosquitto.sh on `port`, in its own directory (WALBUS_<KIND>_DIR = `dir`).
// `env` is extra `NAME=value` assignments for the script, e.g.
// "WALBUS_NATS_MAX_PAYLOAD=2048". Stop() and the destructor stop only the PID
// in that directory's pidfile (the scripts do that).
class ComposeBroker {
 public:
  enum class Kind { kNats, kRedis, kMosquitto };

  ComposeBroker(Kind kind, int port, std::string dir, std::string env = "")
      : kind_(kind), port_(port), dir_(std::move(dir)), env_(std::move(env)) {}
  ~ComposeBroker() { Stop(); }
  ComposeBroker(const ComposeBroker&) = delete;
  ComposeBroker& operator=(const ComposeBroker&) = delete;

  // Starts the broker; with `fresh`, stops a leftover one of this directory and
  // deletes the directory first (JetStream store, retained messages...).
  bool Start(bool fresh = true) {
    if (fresh) {
      Run("stop");
      std::error_code ec;
      if (dir_.rfind("/tmp/", 0) == 0) std::filesystem::remove_all(dir_, ec);
    }
    ShellResult r = Run("start");
    if (r.code != 0) {
      ADD_FAILURE() << "compose/" << Script() << " start " << port_ << " failed: " << r.out;
      return false;
    }
    return true;
  }

  void Stop() { Run("stop"); }

  // PID from the broker's pidfile when that process is alive, else 0.
  pid_t Pid() const {
    std::ifstream in(dir_ + "/" + PidName());
    long pid = 0;
    if (!(in >> pid) || pid <= 0) return 0;
    return ::kill(static_cast<pid_t>(pid), 0) == 0 ? static_cast<pid_t>(pid) : 0;
  }

  std::string Url() const {
    std::string host = "127.0.0.1:" + std::to_string(port_);
    switch (kind_) {
      case Kind::kNats: return "nats://" + host;
      case Kind::kRedis: return "redis://" + host;
      case Kind::kMosquitto: return "tcp://" + host;
    }
    return host;
  }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }

 private:
  const char* Script() const {
    switch (kind_) {
      case Kind::kNats: return "nats.sh";
      case Kind::kRedis: return "redis.sh";
      case Kind::kMosquitto: return "mosquitto.sh";
    }
    return "";
  }
  const char* PidName() const {
    switch (kind_) {
      case Kind::kNats: return "nats.pid";
      case Kind::kRedis: return "redis.pid";
      case Kind::kMosquitto: return "mosquitto.pid";
    }
    return "";
  }
  const char* DirVar() const {
    switch (kind_) {
      case Kind::kNats: return "WALBUS_NATS_DIR";
      case Kind::kRedis: return "WALBUS_REDIS_DIR";
      case Kind::kMosquitto: return "WALBUS_MQTT_DIR";
    }
    return "";
  }
  ShellResult Run(const std::string& what) {
    return Shell(env_ + " " + DirVar() + "='" + dir_ + "' '" + std::string(kSourceDir) +
                 "/compose/" + Script() + "' " + what + " " + std::to_string(port_) + " 2>&1");
  }

  Kind kind_;
  int port_;
  std::string dir_;
  std::string env_;
};

// Waits until the slot's confirmed_flush_lsn is at least `lsn`; the last
// value seen goes to *seen.
inline bool WaitSlotConfirmed(Pg& pg, const std::string& slot, uint64_t lsn,
                              milliseconds timeout, uint64_t* seen = nullptr) {
  uint64_t last = 0;
  bool ok = WaitUntil(
      [&] {
        last = pg.SlotConfirmed(slot).value_or(0);
        return last >= lsn;
      },
      timeout, 100ms);
  if (seen != nullptr) *seen = last;
  return ok;
}

// The 32-bit xid of the caller's open transaction (assigns one if needed).
inline uint32_t CurrentXid(Pg& pg) {
  std::optional<std::string> v = pg.Scalar("SELECT pg_current_xact_id()::text");
  if (!v) {
    ADD_FAILURE() << "no pg_current_xact_id()";
    return 0;
  }
  return static_cast<uint32_t>(std::strtoull(v->c_str(), nullptr, 10) & 0xFFFFFFFFull);
}

// What pgoutput (protocol 1) sends for one transaction, read through a
// reference slot with pg_logical_slot_peek_binary_changes: independent of
// walbus, so the expected envelope ids come from here.
struct RefChange {
  std::string table;  // "schema.table"
  std::string op;     // insert | update | delete | truncate
  // First column of the new tuple (insert/update) or of the key/old tuple
  // (delete) in text form; nullopt for truncate or a NULL/unchanged value.
  std::optional<std::string> first_col;
};
struct RefTxn {
  uint32_t xid = 0;
  uint64_t final_lsn = 0;   // Begin's final LSN = the commit LSN of envelope ids
  uint64_t commit_lsn = 0;  // Commit's commit LSN (equals final_lsn)
  uint64_t end_lsn = 0;     // Commit's end LSN: what a slot confirms for it
  std::vector<RefChange> changes;  // in order: index = envelope seq
  std::string Id(size_t seq) const { return Hex16(final_lsn) + ":" + std::to_string(seq); }
};

// Creates a pgoutput slot to read the reference from (before the changes).
inline bool CreateReferenceSlot(Pg& pg, const std::string& slot) {
  return pg.Exec("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')");
}

// Reads (without consuming) every committed transaction of `publication`
// since the slot was created. Failures are recorded; what parsed is returned.
inline std::vector<RefTxn> PeekReference(Pg& pg, const std::string& slot,
                                         const std::string& publication) {
  std::vector<RefTxn> txns;
  Rows rows = pg.Query("SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('" +
                       slot + "', NULL, NULL, 'proto_version', '1', 'publication_names', '" +
                       publication + "')");
  std::map<uint32_t, std::string> relations;  // relid -> schema.table
  RefTxn* open = nullptr;
  for (const Row& row : rows) {
    if (row.empty() || !row[0]) continue;
    const std::string& hex = *row[0];
    std::vector<uint8_t> b;
    b.reserve(hex.size() / 2);
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
      b.push_back(static_cast<uint8_t>(std::strtoul(hex.substr(i, 2).c_str(), nullptr, 16)));
    }
    size_t p = 0;
    bool bad = false;
    auto need = [&](size_t n) {
      if (p + n > b.size()) bad = true;
      return !bad;
    };
    auto u8 = [&]() -> uint64_t { return need(1) ? b[p++] : 0; };
    auto be = [&](int bytes) -> uint64_t {
      uint64_t v = 0;
      if (!need(static_cast<size_t>(bytes))) return 0;
      for (int i = 0; i < bytes; ++i) v = (v << 8) | b[p++];
      return v;
    };
    auto cstr = [&]() -> std::string {
      std::string s;
      while (p < b.size() && b[p] != 0) s.push_back(static_cast<char>(b[p++]));
      if (p >= b.size()) bad = true;
      ++p;
      return s;
    };
    // TupleData: the first column's text value (nullopt for null/unchanged).
    auto tuple = [&]() -> std::optional<std::string> {
      uint64_t ncols = be(2);
      std::optional<std::string> first;
      for (uint64_t c = 0; c < ncols && !bad; ++c) {
        uint64_t kind = u8();
        if (kind == 't' || kind == 'b') {
          uint64_t len = be(4);
          if (!need(len)) break;
          if (c == 0) first = std::string(b.begin() + p, b.begin() + p + len);
          p += len;
        }
      }
      return first;
    };
    auto change = [&](const char* op, uint32_t relid, std::optional<std::string> first) {
      if (open == nullptr) {
        ADD_FAILURE() << "reference: a change outside a transaction";
        return;
      }
      auto it = relations.find(relid);
      open->changes.push_back(
          {it == relations.end() ? "?" + std::to_string(relid) : it->second, op, std::move(first)});
    };
    char type = static_cast<char>(u8());
    switch (type) {
      case 'B': {
        txns.emplace_back();
        open = &txns.back();
        open->final_lsn = be(8);
        be(8);  // commit time
        open->xid = static_cast<uint32_t>(be(4));
        break;
      }
      case 'C': {
        u8();  // flags
        uint64_t commit = be(8), end = be(8);
        if (open != nullptr) {
          open->commit_lsn = commit;
          open->end_lsn = end;
        }
        open = nullptr;
        break;
      }
      case 'R': {
        uint32_t relid = static_cast<uint32_t>(be(4));
        std::string schema = cstr();
        std::string name = cstr();
        relations[relid] = schema + "." + name;
        break;
      }
      case 'I': {
        uint32_t relid = static_cast<uint32_t>(be(4));
        u8();  // 'N'
        change("insert", relid, tuple());
        break;
      }
      case 'U': {
        uint32_t relid = static_cast<uint32_t>(be(4));
        uint64_t kind = u8();
        if (kind == 'K' || kind == 'O') {
          tuple();
          kind = u8();
        }
        change("update", relid, tuple());  // the 'N' tuple
        break;
      }
      case 'D': {
        uint32_t relid = static_cast<uint32_t>(be(4));
        u8();  // 'K' or 'O'
        change("delete", relid, tuple());
        break;
      }
      case 'T': {
        uint64_t n = be(4);
        u8();  // options
        for (uint64_t i = 0; i < n && !bad; ++i) {
          change("truncate", static_cast<uint32_t>(be(4)), std::nullopt);
        }
        break;
      }
      default:
        break;  // Type, Origin, Message: not table changes
    }
    if (bad) ADD_FAILURE() << "reference: truncated pgoutput message of type " << type;
  }
  return txns;
}

// Like PgFixture, but on PostgreSQL port `Port` (data directory
// /tmp/walbus-be-pg-PORT) and with each test's files in /tmp/walbus-be-SUITE-TEST.
// The lock file /tmp/walbus-be-PORT.lock serialises every test process using
// that port, and with it the broker ports those tests use next to it.
template <int Port>
class PgFixtureOnPort : public ::testing::Test {
 public:
  static constexpr int kPort = Port;

  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-be-" + std::to_string(Port) + ".lock");
    server_ = std::make_unique<PgServer>(Port, "/tmp/walbus-be-pg-" + std::to_string(Port));
    server_ok_ = server_->Start();
  }

  static void TearDownTestSuite() {
    if (server_) server_->Stop();
    server_.reset();
    lock_.reset();
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(server_ok_) << "PostgreSQL on port " << Port << " did not start";
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = "/tmp/walbus-be-" + std::string(info->test_suite_name()) + "-" + info->name();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_, ec);
    ASSERT_FALSE(ec) << "cannot create " << dir_ << ": " << ec.message();
    dsn_ = server_->Dsn();
    sql_ = std::make_unique<Pg>(dsn_);
    ASSERT_TRUE(sql_->ok());
    ResetDatabase(*sql_);
  }

  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }
  const std::string& dsn() const { return dsn_; }

  // Starts `walbus run -c config` (stdout/stderr in dir/TAG.out|err) and waits
  // for its "streaming" log line.
  bool StartRun(Child* child, const std::string& config, const std::string& tag,
                milliseconds timeout = 20s) {
    return StartStreaming(child, config, dir_, tag, timeout);
  }

  // SIGTERM, then the exit code (nullopt when it did not stop in time).
  std::optional<int> Stop(Child* child, milliseconds timeout = 20s) {
    return StopChild(child, timeout);
  }

 private:
  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<PgServer> server_;
  static inline bool server_ok_ = false;

  std::string dir_;
  std::string dsn_;
  std::unique_ptr<Pg> sql_;
};

}  // namespace walbus::itest
