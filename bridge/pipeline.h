// Pipeline: the source thread. It owns the PostgreSQL connections, the
// decoder, the envelope builder, the ack tracker and the sinks, and runs the
// loop of SPEC §4:
//   read a CopyData message -> decode -> build the envelope -> Publish to every
//   sink whose `include` matches; at the end of each batch Flush the sinks,
//   advance the tracker, and send a standby status update when due.
// When a sink has max_in_flight unacknowledged events it stops reading
// (back-pressure) but keeps sending status updates. When a sink or the server
// fails it rewinds: drops the replication connection, abandons every
// unacknowledged ticket and restarts from the confirmed LSN after a capped
// exponential back-off, so nothing is skipped and nothing is buffered twice.
// With source.snapshot = "initial", an unfinished initial snapshot
// (bridge/snapshot.h) is completed before replication starts, through the
// same sinks and ack tracker; the stream then starts at its consistent point.
// Tables of the schema walbus owns (kWalbusSchema) are never published.
//
// Threads: Run() on one thread. Broker threads only touch the AckWindows.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include "bridge/ack_tracker.h"
#include "bridge/ack_window.h"
#include "bridge/core/clock.h"
#include "bridge/core/sink.h"
#include "bridge/core/status.h"
#include "bridge/envelope_builder.h"
#include "bridge/snapshot.h"
#include "bridge/snapshot_visibility.h"
#include "bridge/topic_template.h"
#include "bridge/wakeup.h"
#include "conf/config.h"
#include "pgwire/pg_conn.h"
#include "pgwire/pgoutput.h"
#include "pgwire/replication_session.h"
#include "pgwire/type_map.h"

namespace walbus::bridge {

// Counters for logs and /metrics; written by the source thread, read anywhere.
struct PipelineStats {
  std::atomic<uint64_t> transactions{0};
  std::atomic<uint64_t> received_lsn{0};
  std::atomic<uint64_t> confirmed_lsn{0};
  std::atomic<uint64_t> server_wal_end{0};
  std::atomic<int64_t> confirmed_commit_time_us{0};
  std::atomic<uint64_t> pg_reconnects{0};
  // WAL the slot holds on the server (current WAL LSN − restart_lsn), read
  // every 15 s; -1 until known.
  std::atomic<int64_t> retained_wal_bytes{-1};
  enum State : int { kStarting = 0, kStreaming, kStandby, kRetrying, kStopped };
  std::atomic<int> state{kStarting};
  // Monotonic ms since which PostgreSQL / a sink has been unreachable; 0 = fine.
  std::atomic<int64_t> pg_down_since_ms{0};
  std::unique_ptr<std::atomic<int64_t>[]> sink_down_since_ms;
  std::unique_ptr<std::atomic<uint64_t>[]> sink_reconnects;
  std::string last_error;  // guarded by error_mu
  std::mutex error_mu;
  // events[sink * kOpCount + op]
  std::unique_ptr<std::atomic<uint64_t>[]> events;
  std::unique_ptr<std::atomic<uint64_t>[]> sink_errors;
  // Rows read per table by the initial snapshot (walbus_snapshot_rows_total).
  SnapshotCounters snapshot;
};

// Builds the sinks once the database name is known (JetStream stream subjects
// and topics derive from {db}).
using SinkFactory =
    std::function<Result<std::vector<std::unique_ptr<Sink>>>(const std::string& db)>;

class Backfill;

class Pipeline : private SnapshotHost {
 public:
  Pipeline(conf::Config config, SinkFactory make_sinks);
  ~Pipeline();

  // Streams until *stop becomes true (then drains for up to 10 s and returns
  // Ok) or a fatal error: FailedPrecondition (server misconfigured), Permanent
  // (a broker refused an event), Corruption (bad protocol bytes).
  Status Run(const std::atomic<bool>* stop, Wakeup* wakeup);

  PipelineStats& stats() { return stats_; }
  size_t sink_count() const { return sinks_.size(); }
  std::string_view sink_name(size_t i) const { return sinks_[i].config->name; }
  uint64_t in_flight(size_t i) const { return sinks_[i].window->in_flight(); }
  uint32_t max_in_flight(size_t i) const { return sinks_[i].config->max_in_flight; }
  std::string_view sink_type(size_t i) const { return sinks_[i].config->type; }

 private:
  struct SinkSlot {
    std::unique_ptr<Sink> sink;
    std::unique_ptr<AckWindow> window;
    const conf::SinkConfig* config;
    TopicTemplate topic;
    std::optional<TopicTemplate> state_topic;
    TopicRules rules;
    bool needs_reopen = false;
    std::string scratch;  // state topic / message topic rendering
  };
  enum class Outcome { kStopped, kRetry, kFatal };

  Status OpenSinks(bool only_failed);
  Status Prepare();                 // SQL checks, publication, slot
  Status StartStream();             // replication session from the confirmed LSN
  // An unfinished initial snapshot of the slot is completed (or, stopped,
  // saved) before replication starts.
  Status CompleteSnapshot(Lsn slot_confirmed);
  // Tables a snapshot read under a newer snapshot than the consistent point:
  // the stream skips the changes those snapshots already held.
  Status LoadReadSnapshots(Lsn confirmed);
  bool Skipped(const Built& b) const;
  Status Stream();                  // the CopyBoth loop until error or stop
  Status Handle(const pgwire::XLogData& x);
  Status PublishBuilt(const Built& b);
  Status PublishOne(SinkSlot& s, size_t index, const Built& b);
  Status FlushSinks();
  Status CheckSinkFailures();
  Status MaybeSendStatus(bool force, bool reply);
  // Back-pressure with hysteresis: pause when a sink reaches max_in_flight,
  // resume when every paused sink is down to half, so the source thread does
  // not wake for every acknowledgement at the boundary.
  bool Paused() override;
  Status WaitForProgress(int timeout_ms, bool watch_socket);
  void Rewind();
  void Drain();
  bool SleepInterruptible(int ms);
  void PrepareTable(TableInfo* t) override;
  // SnapshotHost
  Status Publish(const Built& b) override { return PublishBuilt(b); }
  Status Flush() override { return FlushSinks(); }
  Status WaitForAcks(int timeout_ms) override;
  void NoteError(const Status& st);
  void MaybeLogLag();
  void MaybeCheckRetainedWal();

  conf::Config config_;
  SinkFactory make_sinks_;
  std::vector<SinkSlot> sinks_;
  std::unique_ptr<AckTracker> tracker_;
  std::unique_ptr<pgwire::TypeResolver> types_;
  pgwire::PgConnPtr sql_;
  std::unique_ptr<pgwire::ReplicationSession> session_;
  pgwire::Decoder decoder_;
  std::unique_ptr<EnvelopeBuilder> builder_;
  std::unique_ptr<InitialSnapshot> snapshot_;
  std::unique_ptr<Backfill> backfill_;  // `walbus backfill` requests (bridge/backfill.h)
  std::vector<std::pair<std::string, SnapshotVisibility>> read_snapshots_;  // by schema.table
  std::string db_;
  PipelineStats stats_;

  const std::atomic<bool>* stop_ = nullptr;
  Wakeup* wakeup_ = nullptr;
  Lsn received_ = 0;
  Lsn last_sent_flush_ = 0;
  int64_t next_status_ms_ = 0;
  uint32_t since_clock_check_ = 0;
  // Events published since the last FlushSinks, and when the first of them was.
  uint64_t unflushed_ = 0;
  bool consumed_ = false;  // the last step read the socket and found nothing new
  int64_t first_unflushed_us_ = 0;
  bool prepared_ = false;
  bool streaming_ = false;  // START_REPLICATION succeeded (status updates may be sent)
  bool paused_ = false;
  int64_t next_lag_log_ms_ = 0;
  int64_t next_retained_check_ms_ = 0;
  int64_t next_retained_warn_ms_ = 0;
};

}  // namespace walbus::bridge
