// Backfill: re-reads chosen tables while streaming goes on, with DBLog's
// watermarks (docs/backfill.md), in the instance that holds the slot.
//
// `walbus backfill` registers requests in walbus.backfill and wakes the
// streamer with a logical message. A worker thread with its own ordinary
// connection then, chunk after chunk (primary-key order, `chunk_size` rows):
// writes a low watermark (a transactional pg_logical_emit_message, prefix
// "walbus"), reads the chunk under a REPEATABLE READ snapshot, and writes a
// high watermark. The source thread, in stream order, remembers which keys of
// that table changed around the low watermark; at the high watermark it drops
// the chunk rows the stream changed meanwhile (ChangeWindow) and publishes the
// others as `read` events through the ordinary envelope builder, sinks and
// ack tracker, with ids "<high watermark commit LSN>:<n>". A chunk's progress
// is written to walbus.backfill only once the slot confirmed the high
// watermark's transaction, so a crash or takeover resumes after the last
// chunk every sink acknowledged. The stream is never paused: the source
// thread does no SQL for a backfill.
//
// Threads: the public methods except the destructor are for the source
// thread (the pipeline's); the worker shares only what mu_ guards. Errors of
// the worker are logged and retried, or end the request as `failed` with the
// reason; they never stop streaming. Observe returns only the errors of
// building and publishing events (the pipeline's own errors).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bridge/backfill_store.h"
#include "bridge/backfill_window.h"
#include "bridge/core/lsn.h"
#include "bridge/core/status.h"
#include "bridge/envelope_builder.h"
#include "conf/config.h"
#include "pgwire/pg_conn.h"
#include "pgwire/pgoutput.h"
#include "pgwire/table_reader.h"

namespace walbus::bridge {

// The prefix of walbus's own logical messages (watermarks, wake-ups). They
// are never published.
inline constexpr std::string_view kWalbusMessagePrefix = "walbus";

class Backfill {
 public:
  struct Hooks {
    // Fills a TableInfo's per-sink `included` and topic caches.
    std::function<void(TableInfo*)> prepare;
    // Publishes one event to every sink, like any streamed change.
    std::function<Status(const Built&)> publish;
    // Counts read rows of a table (walbus_snapshot_rows_total{table}); may be empty.
    std::function<void(const std::string& table, uint64_t rows)> count_rows;
  };

  // `builder` outlives this object.
  Backfill(const conf::Config& config, EnvelopeBuilder* builder, Hooks hooks);
  ~Backfill();  // stops the worker (cancelling its query) and joins it
  Backfill(const Backfill&) = delete;
  Backfill& operator=(const Backfill&) = delete;

  // Logical messages, which watermarks need, exist from PostgreSQL 14 on.
  static bool Supported(int server_version) { return server_version >= 140000; }

  // A replication stream started (again): chunks may be issued.
  void OnStreaming();
  // Sees every decoded message before the pipeline handles it. *consumed:
  // walbus's own message (or a user message while source.messages is off),
  // which the pipeline must not publish. At a high watermark this publishes
  // the chunk's read events.
  Status Observe(const pgwire::Message& m, bool* consumed);
  // The slot's confirmed LSN after an Advance.
  void OnConfirmed(Lsn confirmed);
  // The stream is rewound to `confirmed` (reconnect, sink failure): chunks
  // not confirmed are read again.
  void OnRewind(Lsn confirmed);

 private:
  struct Chunk;
  struct Emitted {
    int64_t request = 0;
    uint64_t chunk_no = 0;
    std::optional<pgwire::KeyValues> last_key;
    uint64_t rows = 0;
    uint64_t skipped = 0;
    bool last = false;
  };
  struct Outcome {
    std::string uuid;
    bool redo = false;
    std::string reason;
    uint64_t rows = 0;
    uint64_t skipped = 0;
  };
  struct Target {
    uint32_t oid = 0;
    std::vector<std::string> key_names;
  };

  // Source thread.
  void RefreshTarget();
  bool KeyOf(const TableInfo& t, pgwire::Tuple tuple, pgwire::Tuple fallback, std::string* out);
  void RecordChange(const pgwire::Message& m);
  Status OnHigh(std::string_view uuid);
  void Report(Outcome o);

  // Worker thread.
  void Work();
  Status Step();
  Status Connect();
  Status PersistConfirmed();
  Status Activate();
  Status DoChunk();
  void WaitSignal(int timeout_ms);
  void LogProgress(bool force);
  void PostTarget(uint32_t oid, std::vector<std::string> key_names);
  void Disconnect();

  const conf::Config& config_;
  EnvelopeBuilder* builder_;
  Hooks hooks_;

  // --- source thread only ---
  uint32_t xid_ = 0;
  uint64_t seen_target_version_ = 0;
  Target target_local_;
  ChangeWindow window_;
  const TableInfo* key_table_ = nullptr;  // the stream relation key_idx_ is for
  std::vector<size_t> key_idx_;
  bool key_known_ = false;
  std::string key_scratch_, key_scratch2_;
  std::vector<pgwire::Column> row_scratch_;
  std::optional<Emitted> awaiting_commit_;
  std::deque<std::pair<Lsn, Emitted>> unconfirmed_;
  // The TableInfo read events are built with, per table shape.
  std::unique_ptr<TableInfo> read_table_;
  std::string read_shape_;

  // --- shared, guarded by mu_ ---
  std::mutex mu_;
  std::condition_variable cv_;
  bool signal_ = false;  // something for the worker to look at
  bool stop_ = false;
  bool streaming_ = false;
  bool wake_ = false;
  uint64_t generation_ = 0;  // bumped by each rewind
  std::string expected_uuid_;
  std::unique_ptr<Chunk> ready_;
  std::deque<Outcome> outcomes_;
  std::deque<Emitted> confirmed_;
  Target target_;
  PGcancel* cancel_ = nullptr;
  std::atomic<uint64_t> target_version_{0};
  std::thread worker_;

  // --- worker thread only ---
  pgwire::PgConnPtr conn_;
  uint64_t seen_generation_ = 0;
  std::optional<BackfillRequest> active_;
  pgwire::TableShape shape_;
  std::vector<std::string> key_names_;       // as posted to the source thread
  std::optional<pgwire::KeyValues> cursor_;  // last key emitted (not necessarily confirmed)
  uint64_t issued_ = 0;                      // chunks emitted so far
  bool finishing_ = false;                   // the last chunk is emitted, awaiting confirmation
  struct InFlight {
    std::string uuid;
    uint64_t chunk_no = 0;
    std::optional<pgwire::KeyValues> last_key;
    bool last = false;
  };
  std::optional<InFlight> inflight_;
  int failures_ = 0;
  uint64_t redos_ = 0;
  uint64_t rows_done_ = 0, skipped_done_ = 0;  // emitted for the active request
  int64_t started_ms_ = 0;
  int64_t next_log_ms_ = 0;
  uint64_t rows_at_last_log_ = 0;
  int64_t last_log_ms_ = 0;
  int64_t next_poll_ms_ = 0;
};

}  // namespace walbus::bridge
