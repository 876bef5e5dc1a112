#include "bridge/metrics_server.h"

#include <errno.h>
#include <httplib.h>
#include <pthread.h>
#include <sys/socket.h>

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

constexpr const char* kTextPlain = "text/plain; charset=utf-8";
constexpr const char* kExposition = "text/plain; version=0.0.4; charset=utf-8";

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
  s.retained_wal_bytes = st.retained_wal_bytes.load(std::memory_order_relaxed);
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
  {
    std::lock_guard<std::mutex> lock(st.snapshot.mu);
    s.snapshot_rows = st.snapshot.rows;
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
  x.Sample("walbus_role", {}, s.state == PipelineStats::kStreaming ? "1" : "0");

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
  x.Family("walbus_retained_wal_bytes", "gauge",
           "WAL the replication slot holds on the server (current WAL LSN minus restart_lsn), "
           "read every 15 s; absent until first read.");
  if (s.retained_wal_bytes >= 0) {
    x.Sample("walbus_retained_wal_bytes", {},
             Number(static_cast<uint64_t>(s.retained_wal_bytes)));
  }

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

MetricsServer::MetricsServer() = default;
MetricsServer::~MetricsServer() { Stop(); }

Status MetricsServer::Start(const std::string& listen, SnapshotFn snapshot,
                            int64_t health_grace_ms) {
  Stop();
  std::string host, port_text;
  SplitHostPort(listen, &host, &port_text);
  const std::string where = "metrics.listen " + listen;
  snapshot_ = std::move(snapshot);
  grace_ms_ = health_grace_ms;
  server_ = std::make_unique<httplib::Server>();
  httplib::Server& srv = *server_;
  // SO_REUSEADDR only (a restart over TIME_WAIT); not httplib's default
  // SO_REUSEPORT: a second walbus on the same port must fail, not share it.
  srv.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  srv.set_keep_alive_max_count(1);
  // Scrapers send their request at once; a short read timeout also bounds
  // how long Stop() waits for a connection that never sends one.
  srv.set_read_timeout(0, 500000);
  srv.set_write_timeout(5, 0);
  srv.set_keep_alive_timeout(1);
  srv.new_task_queue = [] { return new httplib::ThreadPool(2); };
  srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_content(RenderMetrics(snapshot_()), kExposition);
  });
  srv.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    Health h = CheckHealth(snapshot_(), grace_ms_);
    res.status = h.status;
    res.set_header("Cache-Control", "no-store");
    res.set_content(h.body + "\n", kTextPlain);
  });
  auto not_allowed = [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("method not allowed; use GET\n", kTextPlain);
  };
  for (const char* path : {"/metrics", "/healthz"}) {
    srv.Post(path, not_allowed);
    srv.Put(path, not_allowed);
    srv.Delete(path, not_allowed);
    srv.Patch(path, not_allowed);
  }
  srv.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("not found; try /metrics or /healthz\n", kTextPlain);
  });

  int port = std::atoi(port_text.c_str());
  errno = 0;
  if (!srv.bind_to_port(host, port)) {
    int e = errno;
    server_.reset();
    if (e == EADDRINUSE) {
      return Status::FailedPrecondition(where +
                                        ": address already in use; set [metrics] listen to "
                                        "another port or \"\"");
    }
    std::string fix = e == EACCES
                          ? "; ports below 1024 need privileges: use another port or \"\""
                          : "; set [metrics] listen to an address of this host (0.0.0.0 for "
                            "all) or \"\"";
    return Status::FailedPrecondition(where + ": cannot listen" +
                                      (e != 0 ? std::string(": ") + std::strerror(e) : "") + fix);
  }
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "walbus-metrics");
    server_->listen_after_bind();
  });
  return Status::Ok();
}

void MetricsServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace walbus::bridge
