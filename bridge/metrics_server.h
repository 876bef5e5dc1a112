// MetricsServer: the HTTP endpoint of SPEC §7 on [metrics] listen.
//   GET /metrics  Prometheus text exposition format 0.0.4
//   GET /healthz  200 "ok: ..." or 503 with a one-line reason
// anything else is 404 (405 for another method on those two paths).
//
// Served by cpp-httplib (Debian's libcpp-httplib). Threads: Start() and Stop()
// on the main thread; httplib's listener thread and a pool of 2 workers
// answer (0.5 s to send a request, 5 s to take the answer). It
// sees the pipeline only through the SnapshotFn it is given, which reads
// PipelineStats (atomics; last_error under error_mu) and the sinks' windows.
// Start() binds before it returns, so an address in use is reported to the
// caller (FailedPrecondition: exit 1 before streaming).
//
// Rendering is split out as pure functions over a MetricsSnapshot, so the
// exposition text and the health decision are unit-tested without sockets.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bridge/core/status.h"
#include "bridge/envelope_builder.h"
#include "bridge/pipeline.h"

namespace httplib {
class Server;
}

namespace walbus::bridge {

// One sink's numbers at the moment of a snapshot.
struct SinkMetrics {
  std::string name;
  std::array<uint64_t, kOpCount> events{};  // indexed by Op
  uint64_t in_flight = 0;
  uint64_t max_in_flight = 0;
  uint64_t errors = 0;
  uint64_t reconnects = 0;
  int64_t down_since_ms = 0;  // MonotonicMs() when it became unreachable; 0 = up
};

// Everything /metrics and /healthz show, copied out of PipelineStats at one
// moment. Plain values: the render functions below never read a clock.
struct MetricsSnapshot {
  std::string version;
  uint64_t transactions = 0;
  uint64_t received_lsn = 0;
  uint64_t confirmed_lsn = 0;
  uint64_t server_wal_end = 0;
  // Commit time of the newest confirmed transaction, microseconds since
  // 2000-01-01 (PostgreSQL's epoch); 0 = none confirmed yet.
  int64_t confirmed_commit_time_us = 0;
  int64_t now_us = 0;  // the same clock as confirmed_commit_time_us
  int64_t now_ms = 0;  // MonotonicMs(): the clock of the *_down_since_ms fields
  uint64_t pg_reconnects = 0;
  int64_t retained_wal_bytes = -1;  // -1 = not read yet
  int state = PipelineStats::kStarting;  // walbus_role is 1 in kStreaming, else 0
  int64_t pg_down_since_ms = 0;  // 0 = reachable
  std::string last_error;        // already redacted by whoever recorded it
  std::vector<SinkMetrics> sinks;
  // Rows copied per table by an initial snapshot ("schema.table", rows);
  // empty until snapshots exist.
  std::vector<std::pair<std::string, uint64_t>> snapshot_rows;
};

// Reads the pipeline's stats (safe from any thread while Run() streams).
MetricsSnapshot SnapshotOf(Pipeline& pipeline, std::string_view version);

// Server WAL end − confirmed LSN; 0 when caught up or not known yet.
uint64_t LagBytes(const MetricsSnapshot& s);
// now − commit time of the newest confirmed transaction while behind
// (LagBytes > 0 and a commit time is known); 0 otherwise, never negative.
double LagSeconds(const MetricsSnapshot& s);

// A label value escaped for the text format: \ -> \\, " -> \", newline -> \n.
std::string EscapeLabelValue(std::string_view v);

// The /metrics body: every family with # HELP and # TYPE, samples grouped.
std::string RenderMetrics(const MetricsSnapshot& s);

struct Health {
  int status = 200;  // 200 or 503
  std::string body;  // one line, without the newline
};
// The /healthz decision: 503 once a sink or PostgreSQL has been unreachable
// for longer than grace_ms (0 = at once), or while stopping; else 200.
Health CheckHealth(const MetricsSnapshot& s, int64_t grace_ms);

class MetricsServer {
 public:
  using SnapshotFn = std::function<MetricsSnapshot()>;

  MetricsServer();
  ~MetricsServer();  // Stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds `listen` ("host:port" or "[v6]:port", as conf/ validated it) and
  // starts serving. FailedPrecondition when it cannot bind (address in use,
  // not an address of this host, privileged port), with the fix.
  Status Start(const std::string& listen, SnapshotFn snapshot, int64_t health_grace_ms);
  // Closes the socket and joins the thread; requests in progress are dropped.
  // Idempotent.
  void Stop();

 private:
  SnapshotFn snapshot_;
  int64_t grace_ms_ = 0;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace walbus::bridge
