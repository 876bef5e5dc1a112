#include "bridge/metrics_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>

#include "bridge/core/log.h"
#include "pgwire/replication_session.h"

namespace walbus::bridge {
namespace {

// --- exposition text ------------------------------------------------------

using Label = std::pair<std::string_view, std::string_view>;

std::string Number(uint64_t v) { return std::to_string(v); }

// Shortest text that reads back as the same double ("0", "1.25", "3e-06").
std::string Number(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

// HELP text escapes only backslash and newline (exposition format 0.0.4).
void AppendHelp(std::string* out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else {
      *out += c;
    }
  }
}

class Exposition {
 public:
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    text_ += "# HELP ";
    text_ += name;
    text_ += ' ';
    AppendHelp(&text_, help);
    text_ += "\n# TYPE ";
    text_ += name;
    text_ += ' ';
    text_ += type;
    text_ += '\n';
  }

  void Sample(std::string_view name, std::initializer_list<Label> labels,
              const std::string& value) {
    text_ += name;
    if (labels.size() > 0) {
      text_ += '{';
      bool first = true;
      for (const Label& l : labels) {
        if (!first) text_ += ',';
        first = false;
        text_ += l.first;
        text_ += "=\"";
        text_ += EscapeLabelValue(l.second);
        text_ += '"';
      }
      text_ += '}';
    }
    text_ += ' ';
    text_ += value;
    text_ += '\n';
  }

  std::string Take() { return std::move(text_); }

 private:
  std::string text_;
};

// --- health ---------------------------------------------------------------

constexpr size_t kMaxReasonBytes = 300;

// One line of at most kMaxReasonBytes: control characters become spaces, and
// a cut never splits a UTF-8 sequence.
std::string OneLine(std::string_view s) {
  std::string out;
  out.reserve(std::min(s.size(), kMaxReasonBytes + 3));
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  if (out.size() > kMaxReasonBytes) {
    size_t cut = kMaxReasonBytes;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "...";
  }
  return out;
}

// "<what> unreachable for N s[: reason]". The pipeline records sink errors as
// "sink NAME: ..."; that prefix is dropped when it repeats `what`.
std::string Unreachable(std::string_view what, int64_t for_ms, std::string_view last_error) {
  std::string line = std::string(what) + " unreachable for " +
                     std::to_string(std::max<int64_t>(0, for_ms) / 1000) + " s";
  std::string prefix = std::string(what) + ": ";
  if (last_error.substr(0, prefix.size()) == prefix) last_error.remove_prefix(prefix.size());
  if (!last_error.empty()) line += ": " + OneLine(last_error);
  return line;
}

// --- HTTP -----------------------------------------------------------------

constexpr size_t kMaxConnections = 32;
constexpr size_t kMaxRequestHead = 8192;
constexpr int64_t kRequestTimeoutMs = 5000;

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
  }
  return "Error";
}

std::string HttpResponse(int status, std::string_view content_type, std::string_view body,
                         bool head_only, std::string_view extra_headers = "") {
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) + "\r\n";
  r += "Content-Type: ";
  r += content_type;
  r += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  r += "Cache-Control: no-store\r\nConnection: close\r\n";
  r += extra_headers;
  r += "\r\n";
  if (!head_only) r += body;
  return r;
}

constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";
constexpr std::string_view kExposition = "text/plain; version=0.0.4; charset=utf-8";

// Answers one request whose head (request line and headers) is `head`.
std::string Respond(std::string_view head, const MetricsServer::SnapshotFn& snapshot,
                    int64_t grace_ms) {
  std::string_view line = head.substr(0, head.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
      line.substr(sp2 + 1, 7) != "HTTP/1.") {
    return HttpResponse(400, kTextPlain, "bad request\n", false);
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find_first_of("?#"));
  bool head_only = method == "HEAD";
  if (path != "/metrics" && path != "/healthz") {
    return HttpResponse(404, kTextPlain, "not found; try /metrics or /healthz\n", head_only);
  }
  if (method != "GET" && !head_only) {
    return HttpResponse(405, kTextPlain, "method not allowed; use GET\n", false,
                        "Allow: GET, HEAD\r\n");
  }
  MetricsSnapshot s = snapshot();
  if (path == "/metrics") return HttpResponse(200, kExposition, RenderMetrics(s), head_only);
  Health h = CheckHealth(s, grace_ms);
  return HttpResponse(h.status, kTextPlain, h.body + "\n", head_only);
}

// The end of the request head ("\r\n\r\n", or "\n\n" from a lax client).
size_t HeadEnd(std::string_view in) {
  size_t crlf = in.find("\r\n\r\n");
  size_t lf = in.find("\n\n");
  return std::min(crlf, lf);
}

constexpr int64_t kLingerMs = 1000;

struct Conn {
  enum Phase { kReading, kWriting, kLingering };
  int fd = -1;
  Phase phase = kReading;
  std::string in;
  std::string out;
  size_t sent = 0;
  int64_t deadline_ms = 0;
};

// Splits a validated "host:port" / "[v6]:port".
void SplitHostPort(const std::string& listen, std::string* host, std::string* port) {
  if (!listen.empty() && listen[0] == '[') {
    size_t close = listen.find(']');
    *host = listen.substr(1, close - 1);
    *port = close + 2 <= listen.size() ? listen.substr(close + 2) : "";
    return;
  }
  size_t colon = listen.rfind(':');
  *host = listen.substr(0, colon);
  *port = colon == std::string::npos ? "" : listen.substr(colon + 1);
}

}  // namespace

// --- snapshot and rendering -------------------------------------------------

MetricsSnapshot SnapshotOf(Pipeline& pipeline, std::string_view version) {
  PipelineStats& st = pipeline.stats();
  MetricsSnapshot s;
  s.version = std::string(version);
  s.transactions = st.transactions.load(std::memory_order_relaxed);
  s.received_lsn = st.received_lsn.load(std::memory_order_relaxed);
  s.confirmed_lsn = st.confirmed_lsn.load(std::memory_order_relaxed);
  s.server_wal_end = st.server_wal_end.load(std::memory_order_relaxed);
  s.confirmed_commit_time_us = st.confirmed_commit_time_us.load(std::memory_order_relaxed);
  s.pg_reconnects = st.pg_reconnects.load(std::memory_order_relaxed);
  s.role = st.role.load();
  s.state = st.state.load();
  s.pg_down_since_ms = st.pg_down_since_ms.load();
  {
    std::lock_guard<std::mutex> lock(st.error_mu);
    s.last_error = st.last_error;
  }
  for (size_t i = 0; i < pipeline.sink_count(); ++i) {
    SinkMetrics m;
    m.name = std::string(pipeline.sink_name(i));
    for (int op = 0; op < kOpCount; ++op) {
      m.events[static_cast<size_t>(op)] =
          st.events[i * kOpCount + static_cast<size_t>(op)].load(std::memory_order_relaxed);
    }
    m.in_flight = pipeline.in_flight(i);
    m.max_in_flight = pipeline.max_in_flight(i);
    m.errors = st.sink_errors[i].load(std::memory_order_relaxed);
    m.reconnects = st.sink_reconnects[i].load(std::memory_order_relaxed);
    m.down_since_ms = st.sink_down_since_ms[i].load();
    s.sinks.push_back(std::move(m));
  }
  // The clocks last, so no "since" read above is later than "now".
  s.now_ms = MonotonicMs();
  s.now_us = pgwire::PgNowMicros();
  return s;
}

uint64_t LagBytes(const MetricsSnapshot& s) {
  return s.server_wal_end > s.confirmed_lsn ? s.server_wal_end - s.confirmed_lsn : 0;
}

double LagSeconds(const MetricsSnapshot& s) {
  if (LagBytes(s) == 0 || s.confirmed_commit_time_us == 0) return 0;
  int64_t us = s.now_us - s.confirmed_commit_time_us;
  return us <= 0 ? 0.0 : static_cast<double>(us) / 1e6;
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string RenderMetrics(const MetricsSnapshot& s) {
  Exposition x;
  x.Family("walbus_up", "gauge", "1 while walbus runs and serves this endpoint.");
  x.Sample("walbus_up", {}, "1");
  x.Family("walbus_build_info", "gauge", "The walbus version, as a label; always 1.");
  x.Sample("walbus_build_info", {{"version", s.version}}, "1");
  x.Family("walbus_role", "gauge",
           "1 while this instance holds the slot and streams; 0 standing by, starting or "
           "reconnecting.");
  x.Sample("walbus_role", {}, s.role == 1 ? "1" : "0");

  x.Family("walbus_events_total", "counter",
           "Events handed to each sink, by operation (insert, update, delete, truncate, read, "
           "message). Events re-sent after a reconnect count again.");
  for (const SinkMetrics& m : s.sinks) {
    for (int op = 0; op < kOpCount; ++op) {
      uint64_t n = m.events[static_cast<size_t>(op)];
      // insert/update/delete always, so dashboards have their series from the start.
      bool always = op <= static_cast<int>(Op::kDelete);
      if (n == 0 && !always) continue;
      x.Sample("walbus_events_total", {{"sink", m.name}, {"op", OpName(static_cast<Op>(op))}},
               Number(n));
    }
  }
  x.Family("walbus_transactions_total", "counter",
           "Committed transactions received from PostgreSQL.");
  x.Sample("walbus_transactions_total", {}, Number(s.transactions));

  x.Family("walbus_received_lsn", "gauge",
           "WAL position received from PostgreSQL, as a number of bytes (X/Y = X*2^32+Y).");
  x.Sample("walbus_received_lsn", {}, Number(s.received_lsn));
  x.Family("walbus_confirmed_lsn", "gauge",
           "WAL position confirmed to the slot (every earlier event acknowledged by every "
           "sink), as a number of bytes.");
  x.Sample("walbus_confirmed_lsn", {}, Number(s.confirmed_lsn));
  x.Family("walbus_lag_bytes", "gauge", "Server WAL end minus the confirmed LSN, in bytes.");
  x.Sample("walbus_lag_bytes", {}, Number(LagBytes(s)));
  x.Family("walbus_lag_seconds", "gauge",
           "Now minus the commit time of the newest confirmed transaction while behind; 0 "
           "when caught up.");
  x.Sample("walbus_lag_seconds", {}, Number(LagSeconds(s)));

  x.Family("walbus_in_flight", "gauge", "Events handed to the sink and not yet acknowledged.");
  for (const SinkMetrics& m : s.sinks) {
    x.Sample("walbus_in_flight", {{"sink", m.name}}, Number(m.in_flight));
  }
  x.Family("walbus_max_in_flight", "gauge",
           "The sink's max_in_flight: reading pauses when walbus_in_flight reaches it.");
  for (const SinkMetrics& m : s.sinks) {
    x.Sample("walbus_max_in_flight", {{"sink", m.name}}, Number(m.max_in_flight));
  }
  x.Family("walbus_sink_errors_total", "counter",
           "Failed connects, publishes, flushes and broker-reported failures per sink.");
  for (const SinkMetrics& m : s.sinks) {
    x.Sample("walbus_sink_errors_total", {{"sink", m.name}}, Number(m.errors));
  }
  x.Family("walbus_reconnects_total", "counter",
           "Reconnects after a failure: target=\"postgres\" or target=\"sink:<name>\".");
  x.Sample("walbus_reconnects_total", {{"target", "postgres"}}, Number(s.pg_reconnects));
  for (const SinkMetrics& m : s.sinks) {
    x.Sample("walbus_reconnects_total", {{"target", "sink:" + m.name}}, Number(m.reconnects));
  }
  x.Family("walbus_snapshot_rows_total", "counter",
           "Rows copied per table by the initial snapshot.");
  for (const auto& [table, rows] : s.snapshot_rows) {
    x.Sample("walbus_snapshot_rows_total", {{"table", table}}, Number(rows));
  }
  return x.Take();
}

Health CheckHealth(const MetricsSnapshot& s, int64_t grace_ms) {
  auto over = [&](int64_t since) {
    if (since == 0) return false;
    return grace_ms == 0 || s.now_ms - since > grace_ms;
  };
  // Sinks first: while sinks are being opened at start-up PostgreSQL also
  // counts as "not connected yet", and the sink is the real cause.
  for (const SinkMetrics& m : s.sinks) {
    if (over(m.down_since_ms)) {
      return {503, Unreachable("sink " + m.name, s.now_ms - m.down_since_ms, s.last_error)};
    }
  }
  if (over(s.pg_down_since_ms)) {
    return {503, Unreachable("postgres", s.now_ms - s.pg_down_since_ms, s.last_error)};
  }
  switch (s.state) {
    case PipelineStats::kStreaming:
      return {200, "ok: streaming"};
    case PipelineStats::kStandby:
      return {200, "ok: standing by (slot active for another process)"};
    case PipelineStats::kStarting:
      return {200, "ok: starting"};
    case PipelineStats::kRetrying: {
      for (const SinkMetrics& m : s.sinks) {
        if (m.down_since_ms != 0) {
          return {200, "ok: reconnecting (" + Unreachable("sink " + m.name,
                                                          s.now_ms - m.down_since_ms, "") +
                           ")"};
        }
      }
      if (s.pg_down_since_ms != 0) {
        return {200, "ok: reconnecting (" +
                         Unreachable("postgres", s.now_ms - s.pg_down_since_ms, "") + ")"};
      }
      return {200, "ok: reconnecting"};
    }
    case PipelineStats::kStopped:
      return {503, "stopping"};
  }
  return {503, "unknown state " + std::to_string(s.state)};
}

// --- server -----------------------------------------------------------------

MetricsServer::~MetricsServer() { Stop(); }

Status MetricsServer::Start(const std::string& listen, SnapshotFn snapshot,
                            int64_t health_grace_ms) {
  Stop();
  std::string host, port;
  SplitHostPort(listen, &host, &port);
  const std::string where = "metrics.listen " + listen;
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* found = nullptr;
  int gai = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (gai != 0) {
    return Status::FailedPrecondition(where + ": cannot resolve " + host + ": " +
                                      gai_strerror(gai) +
                                      "; set [metrics] listen to an address of this host or \"\"");
  }
  std::unique_ptr<struct addrinfo, decltype(&freeaddrinfo)> addrs(found, &freeaddrinfo);
  int fd = -1;
  int first_errno = 0;
  bool in_use = false;
  for (struct addrinfo* a = addrs.get(); a != nullptr && fd < 0; a = a->ai_next) {
    int s = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (s < 0) {
      if (first_errno == 0) first_errno = errno;
      continue;
    }
    // SO_REUSEADDR only allows a restart over TIME_WAIT connections. Not
    // SO_REUSEPORT: a second walbus on the same port must fail, not share it.
    int yes = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(s, a->ai_addr, a->ai_addrlen) != 0 || ::listen(s, 64) != 0) {
      int e = errno;
      if (first_errno == 0) first_errno = e;
      in_use = in_use || e == EADDRINUSE;
      ::close(s);
      continue;
    }
    fd = s;
  }
  if (fd < 0) {
    if (in_use) {
      return Status::FailedPrecondition(where +
                                        ": address already in use; set [metrics] listen to "
                                        "another port or \"\"");
    }
    std::string fix = first_errno == EACCES
                          ? "; ports below 1024 need privileges: use another port or \"\""
                          : "; set [metrics] listen to an address of this host (0.0.0.0 for "
                            "all) or \"\"";
    return Status::FailedPrecondition(where + ": cannot listen: " + std::strerror(first_errno) +
                                      fix);
  }
  int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    int e = errno;
    ::close(fd);
    return Status::FailedPrecondition(where + ": eventfd: " + std::strerror(e));
  }
  listen_fd_ = fd;
  wake_fd_ = wake;
  snapshot_ = std::move(snapshot);
  grace_ms_ = health_grace_ms;
  stop_.store(false);
  thread_ = std::thread([this] { Serve(); });
  return Status::Ok();
}

void MetricsServer::Stop() {
  if (thread_.joinable()) {
    stop_.store(true);
    uint64_t one = 1;
    // A full eventfd counter still wakes the thread; the result is moot.
    ssize_t ignored = ::write(wake_fd_, &one, sizeof one);
    (void)ignored;
    thread_.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  listen_fd_ = -1;
  wake_fd_ = -1;
}

void MetricsServer::Serve() {
  pthread_setname_np(pthread_self(), "walbus-metrics");
  std::vector<Conn> conns;
  std::vector<struct pollfd> fds;
  int64_t next_error_log_ms = 0;
  while (!stop_.load()) {
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, static_cast<short>(conns.size() < kMaxConnections ? POLLIN : 0), 0});
    int64_t now = MonotonicMs();
    int timeout = -1;
    for (const Conn& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.phase == Conn::kWriting ? POLLOUT : POLLIN), 0});
      int64_t left = std::max<int64_t>(0, c.deadline_ms - now);
      if (timeout < 0 || left < timeout) timeout = static_cast<int>(left);
    }
    int n = poll(fds.data(), fds.size(), timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      // ENOMEM and the like: transient; try again shortly.
      if (MonotonicMs() >= next_error_log_ms) {
        log::Warn("metrics server: poll failed", {{"reason", std::strerror(errno)}});
        next_error_log_ms = MonotonicMs() + 60000;
      }
      poll(nullptr, 0, 100);
      continue;
    }
    if (stop_.load()) break;

    now = MonotonicMs();
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      short ev = fds[i + 2].revents;
      bool done = false;
      if (c.phase != Conn::kWriting && (ev & (POLLIN | POLLERR | POLLHUP))) {
        char buf[4096];
        ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
          done = true;  // the peer closed: before a whole request, or after our answer
        } else if (r > 0 && c.phase == Conn::kReading) {
          c.in.append(buf, static_cast<size_t>(r));
          size_t end = HeadEnd(c.in);
          if (end != std::string::npos && end <= kMaxRequestHead) {
            c.out = Respond(std::string_view(c.in).substr(0, end), snapshot_, grace_ms_);
            c.phase = Conn::kWriting;
          } else if (c.in.size() > kMaxRequestHead) {
            c.out = HttpResponse(431, kTextPlain, "request head too large\n", false);
            c.phase = Conn::kWriting;
          }
        }
      }
      if (c.phase == Conn::kWriting && !done) {
        while (c.sent < c.out.size()) {
          ssize_t w = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
          if (w > 0) {
            c.sent += static_cast<size_t>(w);
          } else if (w < 0 && errno == EINTR) {
            continue;
          } else {
            done = w < 0 && errno != EAGAIN;
            break;
          }
        }
        if (!done && c.sent == c.out.size()) {
          // Lingering close: closing with unread request bytes would send a
          // reset that can destroy the answer in the client's buffer, so
          // half-close and read until the client closes (or a second passes).
          ::shutdown(c.fd, SHUT_WR);
          c.phase = Conn::kLingering;
          c.in.clear();
          c.out.clear();
          c.deadline_ms = std::min(c.deadline_ms, now + kLingerMs);
        }
      }
      if (!done && now >= c.deadline_ms) done = true;  // too slow: drop it
      if (done) {
        ::close(c.fd);
        c.fd = -1;
      }
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(), [](const Conn& c) { return c.fd < 0; }),
                conns.end());

    if (fds[1].revents & POLLIN) {
      while (conns.size() < kMaxConnections) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno != EAGAIN && MonotonicMs() >= next_error_log_ms) {
            // EMFILE and the like: the listening socket stays; try again later.
            log::Warn("metrics server: accept failed", {{"reason", std::strerror(errno)}});
            next_error_log_ms = MonotonicMs() + 60000;
          }
          if (errno != EAGAIN) poll(nullptr, 0, 100);  // do not spin on a full fd table
          break;
        }
        Conn c;
        c.fd = fd;
        c.deadline_ms = MonotonicMs() + kRequestTimeoutMs;
        conns.push_back(std::move(c));
      }
    }
  }
  for (Conn& c : conns) ::close(c.fd);
}

}  // namespace walbus::bridge
