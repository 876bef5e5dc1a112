// /metrics and /healthz of a real walbus (SPEC §7): PostgreSQL on 55470 and
// Redis on 55471 from compose/, walbus with a stdout and a redis sink, metrics
// on 127.0.0.1:55472 (a standby on 55473). Scraped over plain HTTP/1.1 during
// a 20,000-row load; /healthz follows a Redis outage; a second instance stands
// by; a port in use stops walbus with exit 1; listen = "" listens nowhere.
// The HTTP edges (404, 405, HEAD, oversized or idle requests) are checked on
// a MetricsServer with a fake snapshot on 55474.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <cmath>
#include <set>

#include "bridge/metrics_server.h"
#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kRedisPort = 55471;
constexpr int kMetricsPort = 55472;
constexpr int kStandbyPort = 55473;
constexpr int kSparePort = 55474;
constexpr int kRows = 20000;

// --- a minimal HTTP/1.1 client ------------------------------------------------

struct HttpReply {
  int status = 0;
  std::string headers;  // the head after the status line
  std::string body;
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Connects to 127.0.0.1:port with send/receive timeouts; -1 on failure.
int ConnectLocal(int port, milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct timeval tv = {static_cast<time_t>(timeout.count() / 1000),
                       static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a;
  std::memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads to EOF (the server always closes) and splits status, head and body.
std::optional<HttpReply> ReadReply(int fd) {
  std::string all;
  char buf[8192];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) return {};  // timeout or reset
    all.append(buf, static_cast<size_t>(n));
  }
  size_t head_end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) return {};
  HttpReply r;
  r.status = std::atoi(all.c_str() + 9);
  size_t line_end = all.find("\r\n");
  r.headers = all.substr(line_end + 2, head_end + 2 - (line_end + 2));
  r.body = all.substr(head_end + 4);
  return r;
}

// One request on a new connection; nullopt when nothing answers.
std::optional<HttpReply> Http(int port, const std::string& path, const std::string& method = "GET",
                              milliseconds timeout = 3s) {
  int raw = ConnectLocal(port, timeout);
  if (raw < 0) return {};
  Fd fd(raw);
  // Content-Length: 0 on methods that may carry a body, as real clients send.
  std::string body_header = method == "GET" || method == "HEAD" ? "" : "Content-Length: 0\r\n";
  if (!SendAll(fd.get(), method + " " + path +
                             " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: walbus-itest\r\n"
                             "Accept: */*\r\n" + body_header + "\r\n")) {
    return {};
  }
  return ReadReply(fd.get());
}

// The value of header `name` (case-insensitive), "" when absent.
std::string Header(const HttpReply& r, const std::string& name) {
  std::istringstream in(r.headers);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos || colon != name.size()) continue;
    if (strncasecmp(line.c_str(), name.c_str(), colon) != 0) continue;
    size_t v = line.find_first_not_of(' ', colon + 1);
    return v == std::string::npos ? "" : line.substr(v);
  }
  return "";
}

// --- the exposition text, parsed ---------------------------------------------

struct Scrape {
  std::map<std::string, std::string> types;  // family -> counter | gauge
  std::map<std::string, double> series;      // `name{labels}` -> value
  std::vector<std::string> bad_lines;

  bool Has(const std::string& s) const { return series.count(s) != 0; }
  double Get(const std::string& s) const {
    auto it = series.find(s);
    return it == series.end() ? NAN : it->second;
  }
  // Family of a series: the name before '{'.
  static std::string FamilyOf(const std::string& s) { return s.substr(0, s.find('{')); }
};

Scrape ParseScrape(const std::string& text) {
  Scrape s;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream f(line.substr(7));
      std::string name, type;
      f >> name >> type;
      s.types[name] = type;
      continue;
    }
    if (line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) {
      s.bad_lines.push_back(line);
      continue;
    }
    char* end = nullptr;
    std::string value = line.substr(sp + 1);
    double v = std::strtod(value.c_str(), &end);
    if (end == value.c_str() || *end != '\0') {
      s.bad_lines.push_back(line);
      continue;
    }
    s.series[line.substr(0, sp)] = v;
  }
  return s;
}

std::optional<Scrape> ScrapeMetrics(int port) {
  std::optional<HttpReply> r = Http(port, "/metrics");
  if (!r || r->status != 200) return {};
  return ParseScrape(r->body);
}

// --- listening sockets of a process ------------------------------------------

// 127.0.0.1:port as /proc/net/tcp writes it.
std::string ProcLoopback(int port) { return ProcAddress("0100007F", port); }

// --- the fixture --------------------------------------------------------------

class Metrics : public PgFixtureOnPort<55470> {
 protected:
  std::string WriteWalbusConfig(const std::string& name, const std::string& listen,
                                int grace_ms = 2000, const std::string& extra_metrics = "") {
    std::string path = dir() + "/" + name + ".toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + dsn() + "\"\n"
                    "slot = \"metrics_slot\"\n"
                    "publication = \"metrics_pub\"\n"
                    "status_interval_ms = 200\n"
                    "standby_retry_ms = 500\n"
                    "\n[[sink]]\nname = \"out\"\ntype = \"stdout\"\n"
                    "\n[[sink]]\nname = \"redis\"\ntype = \"redis\"\n"
                    "url = \"redis://127.0.0.1:" + std::to_string(kRedisPort) + "\"\n"
                    "\n[metrics]\nlisten = \"" + listen + "\"\n"
                    "health_grace_ms = " + std::to_string(grace_ms) + "\n" + extra_metrics);
    return path;
  }
};

std::string Listen(int port) { return "127.0.0.1:" + std::to_string(port); }

const char* const kEventSeries[] = {
    "walbus_events_total{sink=\"out\",op=\"insert\"}",
    "walbus_events_total{sink=\"out\",op=\"update\"}",
    "walbus_events_total{sink=\"out\",op=\"delete\"}",
    "walbus_events_total{sink=\"redis\",op=\"insert\"}",
    "walbus_events_total{sink=\"redis\",op=\"update\"}",
    "walbus_events_total{sink=\"redis\",op=\"delete\"}",
};

// Every family of SPEC §7 with its type, and the per-sink series.
void ExpectShape(const Scrape& s) {
  const std::map<std::string, std::string> want = {
      {"walbus_up", "gauge"},
      {"walbus_build_info", "gauge"},
      {"walbus_role", "gauge"},
      {"walbus_events_total", "counter"},
      {"walbus_transactions_total", "counter"},
      {"walbus_received_lsn", "gauge"},
      {"walbus_confirmed_lsn", "gauge"},
      {"walbus_lag_bytes", "gauge"},
      {"walbus_lag_seconds", "gauge"},
      {"walbus_in_flight", "gauge"},
      {"walbus_max_in_flight", "gauge"},
      {"walbus_sink_errors_total", "counter"},
      {"walbus_reconnects_total", "counter"},
      {"walbus_snapshot_rows_total", "counter"},
  };
  for (const auto& [name, type] : want) {
    auto it = s.types.find(name);
    EXPECT_TRUE(it != s.types.end() && it->second == type) << name << " should be a " << type;
  }
  EXPECT_TRUE(s.bad_lines.empty()) << s.bad_lines.front();
  for (const char* series : kEventSeries) EXPECT_TRUE(s.Has(series)) << series;
  for (const char* sink : {"out", "redis"}) {
    std::string l = std::string("{sink=\"") + sink + "\"}";
    EXPECT_TRUE(s.Has("walbus_in_flight" + l)) << sink;
    EXPECT_TRUE(s.Has("walbus_sink_errors_total" + l)) << sink;
    EXPECT_TRUE(s.Has(std::string("walbus_reconnects_total{target=\"sink:") + sink + "\"}"));
  }
  EXPECT_TRUE(s.Has("walbus_reconnects_total{target=\"postgres\"}"));
  EXPECT_EQ(s.Get("walbus_up"), 1);
  for (const auto& [series, value] : s.series) {
    EXPECT_TRUE(s.types.count(Scrape::FamilyOf(series))) << "no # TYPE for " << series;
    EXPECT_GE(value, 0) << series;
  }
}

// Counters (and the confirmed LSN) never go down from one scrape to the next.
void ExpectNonDecreasing(const Scrape& before, const Scrape& after) {
  for (const auto& [series, value] : before.series) {
    std::string family = Scrape::FamilyOf(series);
    auto type = before.types.find(family);
    bool monotonic = (type != before.types.end() && type->second == "counter") ||
                     family == "walbus_confirmed_lsn" || family == "walbus_received_lsn";
    if (!monotonic) continue;
    ASSERT_TRUE(after.Has(series)) << series << " disappeared";
    EXPECT_GE(after.Get(series), value) << series << " went down";
  }
}

// --- tests ----------------------------------------------------------------------

TEST_F(Metrics, ScrapedDuringLoadHealthFollowsRedisAndStandby) {
  auto t0 = Clock::now();
  ComposeBroker redis(ComposeBroker::Kind::kRedis, kRedisPort,
                      "/tmp/walbus-metrics-redis-" + std::to_string(kRedisPort));
  ASSERT_TRUE(redis.Start());
  ASSERT_TRUE(sql().Exec("CREATE TABLE items (id int PRIMARY KEY, note text)"));
  std::string cfg = WriteWalbusConfig("main", Listen(kMetricsPort));
  Child walbus;
  ASSERT_TRUE(StartRun(&walbus, cfg, "main"));

  // Serving on exactly the configured address, and healthy.
  std::vector<std::string> listening = ListeningAddresses(walbus.pid());
  EXPECT_EQ(listening, std::vector<std::string>{ProcLoopback(kMetricsPort)});
  std::optional<HttpReply> health = Http(kMetricsPort, "/healthz");
  ASSERT_TRUE(health.has_value());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok: streaming\n");
  std::optional<HttpReply> first = Http(kMetricsPort, "/metrics");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(Header(*first, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  Scrape prev = ParseScrape(first->body);
  ExpectShape(prev);
  EXPECT_EQ(prev.Get("walbus_role"), 1);
  EXPECT_EQ(prev.Get("walbus_events_total{sink=\"redis\",op=\"insert\"}"), 0);
  RunResult v = RunWalbus({"version"}, dir(), "version");  // "walbus 0.1.0\n..."
  std::string version = v.out.substr(7, v.out.find('\n') - 7);
  EXPECT_EQ(prev.Get("walbus_build_info{version=\"" + version + "\"}"), 1) << first->body;

  // 20,000 rows in 40 transactions from another thread while this one scrapes.
  std::atomic<bool> loaded{false};
  std::string load_error;
  std::thread loader([&] {
    Pg pg(dsn());
    for (int t = 0; t < 40 && load_error.empty(); ++t) {
      int from = t * (kRows / 40) + 1, to = (t + 1) * (kRows / 40);
      load_error = pg.TryExec("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(" +
                              std::to_string(from) + ", " + std::to_string(to) + ") g");
      std::this_thread::sleep_for(20ms);
    }
    loaded.store(true);
  });
  const std::string redis_inserts = "walbus_events_total{sink=\"redis\",op=\"insert\"}";
  const std::string out_inserts = "walbus_events_total{sink=\"out\",op=\"insert\"}";
  std::set<double> seen;  // distinct redis insert counts while loading
  int scrapes = 1;
  auto load_until = Clock::now() + 60s;
  for (;;) {
    bool done = loaded.load();
    std::optional<Scrape> s = ScrapeMetrics(kMetricsPort);
    ASSERT_TRUE(s.has_value()) << "scrape " << scrapes << " failed";
    ++scrapes;
    ExpectShape(*s);
    ExpectNonDecreasing(prev, *s);
    seen.insert(s->Get(redis_inserts));
    prev = std::move(*s);
    if ((done && prev.Get(out_inserts) >= kRows && prev.Get(redis_inserts) >= kRows) ||
        Clock::now() > load_until) {
      break;
    }
    std::this_thread::sleep_for(25ms);
  }
  loader.join();
  ASSERT_EQ(load_error, "");
  EXPECT_EQ(prev.Get(out_inserts), kRows);
  EXPECT_EQ(prev.Get(redis_inserts), kRows);
  EXPECT_GE(prev.Get("walbus_transactions_total"), 40);
  EXPECT_GE(seen.size(), 4u) << "the counter should grow during the load, over " << scrapes
                             << " scrapes";
  // Caught up: the lag returns to 0 and the slot is confirmed as reported.
  Scrape settled;
  bool caught_up = WaitUntil(
      [&] {
        std::optional<Scrape> s = ScrapeMetrics(kMetricsPort);
        if (!s) return false;
        ExpectNonDecreasing(prev, *s);
        settled = std::move(*s);
        return settled.Get("walbus_lag_bytes") == 0 && settled.Get("walbus_in_flight{sink=\"redis\"}") == 0;
      },
      15s, 100ms);
  EXPECT_TRUE(caught_up) << "lag_bytes " << settled.Get("walbus_lag_bytes");
  EXPECT_EQ(settled.Get("walbus_lag_seconds"), 0);
  EXPECT_EQ(settled.Get("walbus_role"), 1);
  // walbus counts a position as confirmed when it sends it: never behind the slot.
  std::optional<uint64_t> slot_confirmed = sql().SlotConfirmed("metrics_slot");
  ASSERT_TRUE(slot_confirmed.has_value());
  EXPECT_GE(settled.Get("walbus_confirmed_lsn"), static_cast<double>(*slot_confirmed));
  EXPECT_GT(settled.Get("walbus_received_lsn"), 0);
  std::printf("[ metrics  ] %d scrapes during the load, %zu distinct counts, %.1f s so far\n",
              scrapes, seen.size(), SecondsSince(t0));

  // Redis goes away: 503 naming the sink once the 2 s grace has passed.
  double errors_before = settled.Get("walbus_sink_errors_total{sink=\"redis\"}");
  redis.Stop();
  auto stopped_at = Clock::now();
  sql().Exec("INSERT INTO items VALUES (" + std::to_string(kRows + 1) + ", 'during outage')");
  HttpReply down;
  bool unhealthy = WaitUntil(
      [&] {
        std::optional<HttpReply> r = Http(kMetricsPort, "/healthz");
        if (r) down = *r;
        return r && r->status == 503;
      },
      8s, 100ms);
  double to_503 = SecondsSince(stopped_at);
  ASSERT_TRUE(unhealthy) << "last /healthz: " << down.status << " " << down.body;
  EXPECT_GE(to_503, 1.5) << "503 before the grace was over";
  EXPECT_LE(to_503, 5.5);
  EXPECT_EQ(down.body.rfind("sink redis unreachable for ", 0), 0u) << down.body;
  EXPECT_EQ(down.body.find('\n'), down.body.size() - 1) << "one line: " << down.body;
  EXPECT_FALSE(Contains(down.body, "dbname=")) << down.body;
  std::optional<Scrape> during = ScrapeMetrics(kMetricsPort);
  ASSERT_TRUE(during.has_value());
  EXPECT_GT(during->Get("walbus_sink_errors_total{sink=\"redis\"}"), errors_before);
  EXPECT_EQ(during->Get("walbus_role"), 0);
  ExpectNonDecreasing(settled, *during);

  // Back: 200 again, the reconnect counted, the outage row delivered.
  ASSERT_TRUE(redis.Start(/*fresh=*/false));
  HttpReply up;
  bool healthy = WaitUntil(
      [&] {
        std::optional<HttpReply> r = Http(kMetricsPort, "/healthz");
        if (r) up = *r;
        return r && r->status == 200 && r->body == "ok: streaming\n";
      },
      40s, 100ms);
  EXPECT_TRUE(healthy) << "last /healthz: " << up.status << " " << up.body;
  std::optional<Scrape> after = ScrapeMetrics(kMetricsPort);
  ASSERT_TRUE(after.has_value());
  ExpectNonDecreasing(*during, *after);
  EXPECT_GE(after->Get("walbus_reconnects_total{target=\"sink:redis\"}"), 1);
  EXPECT_EQ(after->Get("walbus_reconnects_total{target=\"postgres\"}"), 0);
  EXPECT_EQ(after->Get("walbus_role"), 1);
  EXPECT_TRUE(WaitUntil(
      [&] {
        std::optional<Scrape> s = ScrapeMetrics(kMetricsPort);
        return s && s->Get(redis_inserts) >= kRows + 1;
      },
      10s));

  // A second instance with the same slot stands by, healthily.
  std::string cfg2 = WriteWalbusConfig("standby", Listen(kStandbyPort));
  Child standby;
  ASSERT_TRUE(standby.Start({kWalbus, "run", "-c", cfg2}, dir() + "/standby.out",
                            dir() + "/standby.err"));
  ASSERT_TRUE(WaitUntil([&] { return Contains(standby.err(), "standing by"); }, 15s))
      << standby.err();
  std::optional<HttpReply> sb = Http(kStandbyPort, "/healthz");
  ASSERT_TRUE(sb.has_value());
  EXPECT_EQ(sb->status, 200);
  EXPECT_EQ(sb->body, "ok: standing by (slot active for another process)\n");
  std::optional<Scrape> sbm = ScrapeMetrics(kStandbyPort);
  ASSERT_TRUE(sbm.has_value());
  ExpectShape(*sbm);
  EXPECT_EQ(sbm->Get("walbus_role"), 0);
  EXPECT_EQ(sbm->Get(redis_inserts), 0);

  EXPECT_EQ(Stop(&standby), std::optional<int>(0)) << standby.err();
  EXPECT_EQ(Stop(&walbus), std::optional<int>(0)) << walbus.err();
  // Stopped: nothing answers any more.
  EXPECT_FALSE(Http(kMetricsPort, "/healthz", "GET", 1s).has_value());
  std::printf("[ metrics  ] to 503: %.1f s; whole test %.1f s\n", to_503, SecondsSince(t0));
}

TEST_F(Metrics, ListenAddressInUseExitsOneBeforeStreaming) {
  // The test holds the port, as another program would.
  int raw = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(raw, 0);
  Fd holder(raw);
  int yes = 1;  // over TIME_WAIT connections of earlier scrapes; a listener still excludes
  setsockopt(holder.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  struct sockaddr_in a;
  std::memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(kSparePort);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(holder.get(), reinterpret_cast<struct sockaddr*>(&a), sizeof a), 0)
      << "port " << kSparePort << " is busy: " << std::strerror(errno);
  ASSERT_EQ(::listen(holder.get(), 4), 0);

  std::string cfg = WriteWalbusConfig("inuse", Listen(kSparePort));
  RunResult r = RunWalbus({"run", "-c", cfg}, dir(), "inuse", 20s);
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  std::vector<std::string> errors = LinesWith(r.err, "ERROR");
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_TRUE(Contains(errors[0], "metrics.listen 127.0.0.1:55474: address already in use; set "
                                  "[metrics] listen to another port or \"\""))
      << errors[0];
  EXPECT_FALSE(Contains(r.err, "INFO streaming")) << r.err;
  EXPECT_FALSE(sql().SlotExists("metrics_slot")) << "it must stop before touching PostgreSQL";
  EXPECT_EQ(r.out, "");
}

TEST_F(Metrics, EmptyListenServesNothing) {
  ComposeBroker redis(ComposeBroker::Kind::kRedis, kRedisPort,
                      "/tmp/walbus-metrics-redis-" + std::to_string(kRedisPort));
  ASSERT_TRUE(redis.Start());
  std::string cfg = WriteWalbusConfig("off", "");
  Child walbus;
  ASSERT_TRUE(StartRun(&walbus, cfg, "off"));
  EXPECT_EQ(ListeningAddresses(walbus.pid()), std::vector<std::string>{});
  EXPECT_FALSE(Contains(walbus.err(), "metrics listening")) << walbus.err();
  EXPECT_FALSE(Http(kMetricsPort, "/healthz", "GET", 1s).has_value());
  EXPECT_EQ(Stop(&walbus), std::optional<int>(0)) << walbus.err();
}

// The HTTP side of MetricsServer, in-process with a fake snapshot.
TEST_F(Metrics, HttpEdges) {
  std::atomic<int> calls{0};
  bridge::MetricsServer server;
  Status st = server.Start(
      Listen(kSparePort),
      [&calls] {
        ++calls;
        bridge::MetricsSnapshot s;
        s.version = "test";
        s.state = bridge::PipelineStats::kStreaming;
        return s;
      },
      1000);
  ASSERT_TRUE(st.ok()) << st.ToString();

  // A second server on the same address fails with the fix in the message.
  bridge::MetricsServer second;
  Status busy = second.Start(Listen(kSparePort), [] { return bridge::MetricsSnapshot(); }, 0);
  EXPECT_EQ(busy.code(), Code::kFailedPrecondition);
  EXPECT_EQ(busy.message(), "metrics.listen 127.0.0.1:55474: address already in use; set "
                            "[metrics] listen to another port or \"\"");

  // An idle connection that never sends a request does not hold up others.
  int idle_raw = ConnectLocal(kSparePort, 3s);
  ASSERT_GE(idle_raw, 0);
  Fd idle(idle_raw);

  struct Case {
    const char* method;
    const char* path;
    int status;
    const char* body_prefix;  // nullptr: empty body (HEAD)
  };
  const Case cases[] = {
      {"GET", "/metrics", 200, "# HELP walbus_up "},
      {"GET", "/metrics?name[]=walbus_up", 200, "# HELP walbus_up "},
      {"GET", "/healthz", 200, "ok: streaming\n"},
      {"HEAD", "/metrics", 200, nullptr},
      {"HEAD", "/healthz", 200, nullptr},
      {"GET", "/", 404, "not found"},
      {"GET", "/metrics/", 404, "not found"},
      {"GET", "/favicon.ico", 404, "not found"},
      {"POST", "/metrics", 405, "method not allowed"},
      {"DELETE", "/healthz", 405, "method not allowed"},
  };
  for (const Case& c : cases) {
    std::optional<HttpReply> r = Http(kSparePort, c.path, c.method);
    ASSERT_TRUE(r.has_value()) << c.method << " " << c.path;
    EXPECT_EQ(r->status, c.status) << c.method << " " << c.path;
    if (c.body_prefix == nullptr) {
      EXPECT_EQ(r->body, "") << c.method << " " << c.path;
      EXPECT_NE(Header(*r, "Content-Length"), "0") << c.method << " " << c.path;
    } else {
      EXPECT_EQ(r->body.rfind(c.body_prefix, 0), 0u) << c.method << " " << c.path << ": "
                                                     << r->body;
      EXPECT_EQ(Header(*r, "Content-Length"), std::to_string(r->body.size()));
    }
    if (c.status == 405) {
      EXPECT_EQ(Header(*r, "Allow"), "GET, HEAD");
    }
  }

  // Malformed and oversized requests.
  struct Raw {
    std::string request;
    int status;
  };
  const Raw raws[] = {
      {"GARBAGE\r\n\r\n", 400},
      {"GET /metrics\r\n\r\n", 400},
      {"GET /metrics HTTP/2.0\r\n\r\n", 400},
      {"GET /healthz HTTP/1.0\r\n\r\n", 200},
      {"GET /metrics HTTP/1.1\r\nX-Big: " + std::string(10000, 'x') + "\r\n\r\n", 431},
  };
  for (const Raw& raw : raws) {
    int fd_raw = ConnectLocal(kSparePort, 3s);
    ASSERT_GE(fd_raw, 0);
    Fd fd(fd_raw);
    SendAll(fd.get(), raw.request);
    std::optional<HttpReply> r = ReadReply(fd.get());
    std::printf("[ info ] %-30s -> %s\n", raw.request.substr(0, 30).c_str(),
                r ? std::to_string(r->status).c_str() : "closed");
    if (raw.status == 200) {
      ASSERT_TRUE(r.has_value()) << raw.request.substr(0, 40);
      EXPECT_EQ(r->status, 200) << raw.request.substr(0, 40);
    } else if (r.has_value()) {
      // httplib answers malformed or oversized requests with a 4xx (or just
      // closes the connection); never a 200 or a crash.
      EXPECT_GE(r->status, 400) << raw.request.substr(0, 40);
      EXPECT_LT(r->status, 500) << raw.request.substr(0, 40);
    }
  }
  EXPECT_GE(calls.load(), 5);

  // Stop() is prompt even with the idle connection still open.
  auto t = Clock::now();
  server.Stop();
  EXPECT_LT(SecondsSince(t), 2.0);  // bounded by the 0.5 s request read timeout
  EXPECT_FALSE(Http(kSparePort, "/healthz", "GET", 1s).has_value());
}

}  // namespace
}  // namespace walbus::itest

namespace walbus::itest {
namespace {

// The stuck-slot warning: the WAL the slot retains is exported and, above
// [metrics] retained_wal_warn_bytes, logged as a warning.
TEST_F(Metrics, RetainedWalIsExportedAndWarnedAboveTheLimit) {
  ComposeBroker redis(ComposeBroker::Kind::kRedis, kRedisPort,
                      "/tmp/walbus-metrics-redis-" + std::to_string(kRedisPort));
  ASSERT_TRUE(redis.Start());
  std::string cfg = WriteWalbusConfig("retained", Listen(kMetricsPort), 2000,
                                      "retained_wal_warn_bytes = 1024\n");
  Child walbus;
  ASSERT_TRUE(StartRun(&walbus, cfg, "retained"));
  Pg pg(dsn());
  // Some WAL the slot has to keep until walbus confirms past it.
  ASSERT_TRUE(pg.Exec("CREATE TABLE IF NOT EXISTS public.retained(id int primary key, v text);"
                      "INSERT INTO public.retained SELECT g, repeat('x', 200) FROM "
                      "generate_series(1, 2000) g"));
  std::optional<double> retained;
  for (int i = 0; i < 100 && !retained; ++i) {
    std::optional<Scrape> s = ScrapeMetrics(kMetricsPort);
    if (s && s->Has("walbus_retained_wal_bytes")) retained = s->Get("walbus_retained_wal_bytes");
    if (!retained) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(retained.has_value()) << "walbus_retained_wal_bytes never appeared";
  EXPECT_GT(*retained, 1024);
  EXPECT_TRUE(Contains(walbus.err(), "retains more WAL than metrics.retained_wal_warn_bytes"))
      << walbus.err();
  EXPECT_EQ(Stop(&walbus), std::optional<int>(0)) << walbus.err();
}

}  // namespace
}  // namespace walbus::itest
