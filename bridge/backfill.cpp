#include "bridge/backfill.h"

#include <time.h>

#include <algorithm>
#include <random>

#include "bridge/core/clock.h"
#include "bridge/core/log.h"
#include "bridge/walbus_schema.h"

namespace walbus::bridge {
namespace {

constexpr int kPollMs = 10000;         // look for requests without a wake-up
constexpr int kProgressMs = 10000;     // progress log period
constexpr int kMaxBackoffMs = 30000;
constexpr int kMaxFailures = 5;        // consecutive failures of one request before it fails
constexpr size_t kMaxChunkBytes = 64u << 20;  // a chunk of wide rows stops early

std::string NewUuid() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (int half = 0; half < 2; ++half) {
    uint64_t v = rng();
    for (int i = 0; i < 16; ++i) out.push_back(kHex[(v >> (i * 4)) & 15]);
  }
  return out;
}

bool IsTableGone(const Status& st) {
  return st.message().find("does not exist") != std::string::npos;
}

}  // namespace

struct Backfill::Chunk {
  std::string uuid;
  int64_t request = 0;
  uint64_t chunk_no = 0;
  pgwire::TableShape shape;
  XidSnapshot snapshot;
  ChunkRows rows;
  std::optional<pgwire::KeyValues> last_key;
  bool last = false;
};

Backfill::Backfill(const conf::Config& config, EnvelopeBuilder* builder, Hooks hooks)
    : config_(config), builder_(builder), hooks_(std::move(hooks)) {}

Backfill::~Backfill() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    signal_ = true;
    if (cancel_ != nullptr) {
      char err[256];
      PQcancel(cancel_, err, sizeof err);
    }
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

// --- source thread ---------------------------------------------------------

void Backfill::OnStreaming() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    streaming_ = true;
    signal_ = true;
  }
  cv_.notify_all();
  if (!worker_.joinable()) worker_ = std::thread(&Backfill::Work, this);
}

void Backfill::RefreshTarget() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    target_local_ = target_;
    seen_target_version_ = target_version_.load(std::memory_order_acquire);
  }
  window_.Reset();
  key_table_ = nullptr;
}

bool Backfill::KeyOf(const TableInfo& t, pgwire::Tuple tuple, pgwire::Tuple fallback,
                     std::string* out) {
  if (&t != key_table_) {
    key_table_ = &t;
    key_idx_.clear();
    key_known_ = !target_local_.key_names.empty();
    for (const std::string& name : target_local_.key_names) {
      size_t found = t.cols.size();
      for (size_t i = 0; i < t.cols.size(); ++i) {
        if (t.cols[i].name == name) found = i;
      }
      if (found == t.cols.size()) key_known_ = false;
      key_idx_.push_back(found);
    }
  }
  if (!key_known_) return false;
  out->clear();
  for (size_t i : key_idx_) {
    const pgwire::Column* c = i < tuple.size() ? &tuple[i] : nullptr;
    if ((c == nullptr || c->kind == pgwire::ColumnKind::kUnchanged) && i < fallback.size()) {
      c = &fallback[i];
    }
    if (c == nullptr || c->kind != pgwire::ColumnKind::kText) return false;
    AppendKeyPart(out, c->value);
  }
  return true;
}

void Backfill::RecordChange(const pgwire::Message& m) {
  const uint32_t oid = target_local_.oid;
  auto table = [&]() -> const TableInfo* { return builder_->Find(oid); };
  if (auto* ins = std::get_if<pgwire::Insert>(&m)) {
    if (ins->relation != oid) return;
    const TableInfo* t = table();
    if (t != nullptr && KeyOf(*t, ins->new_tuple, {}, &key_scratch_)) {
      window_.Record(xid_, key_scratch_);
    } else {
      window_.RecordUnknown(xid_);
    }
  } else if (auto* upd = std::get_if<pgwire::Update>(&m)) {
    if (upd->relation != oid) return;
    const TableInfo* t = table();
    if (t == nullptr || !KeyOf(*t, upd->new_tuple, upd->old_tuple, &key_scratch_)) {
      window_.RecordUnknown(xid_);
      return;
    }
    // A changed key: the row left its old key (a delete there) and took the new one.
    if (upd->old_kind != 0) {
      if (!KeyOf(*t, upd->old_tuple, {}, &key_scratch2_)) {
        window_.RecordUnknown(xid_);
        return;
      }
      if (key_scratch2_ != key_scratch_) window_.Record(xid_, key_scratch2_);
    }
    window_.Record(xid_, key_scratch_);
  } else if (auto* del = std::get_if<pgwire::Delete>(&m)) {
    if (del->relation != oid) return;
    const TableInfo* t = table();
    if (t != nullptr && KeyOf(*t, del->old_tuple, {}, &key_scratch_)) {
      window_.Record(xid_, key_scratch_);
    } else {
      window_.RecordUnknown(xid_);
    }
  } else if (auto* tr = std::get_if<pgwire::Truncate>(&m)) {
    for (uint32_t r : tr->relations) {
      if (r == oid) window_.RecordUnknown(xid_);
    }
  }
}

Status Backfill::Observe(const pgwire::Message& m, bool* consumed) {
  *consumed = false;
  if (auto* b = std::get_if<pgwire::Begin>(&m)) {
    xid_ = b->xid;
    return Status::Ok();
  }
  if (auto* c = std::get_if<pgwire::Commit>(&m)) {
    if (awaiting_commit_) {
      unconfirmed_.emplace_back(c->end_lsn, std::move(*awaiting_commit_));
      awaiting_commit_.reset();
    }
    return Status::Ok();
  }
  if (target_version_.load(std::memory_order_acquire) != seen_target_version_) RefreshTarget();
  if (auto* rel = std::get_if<pgwire::Relation>(&m)) {
    // The builder replaces its entry: find the key columns again.
    if (rel->oid == target_local_.oid) key_table_ = nullptr;
    return Status::Ok();
  }
  if (auto* msg = std::get_if<pgwire::LogicalMessage>(&m)) {
    if (msg->prefix != kWalbusMessagePrefix) {
      // pgoutput sends messages whenever walbus asked for them for backfills;
      // the user's only reach the sinks when source.messages is on.
      *consumed = !config_.source.messages;
      return Status::Ok();
    }
    *consumed = true;
    std::string_view content = msg->content;
    if (content.rfind("low ", 0) == 0) {
      std::string_view uuid = content.substr(4);
      bool ours;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ours = !expected_uuid_.empty() && uuid == expected_uuid_;
      }
      if (ours) window_.MarkLow();
      return Status::Ok();
    }
    if (content.rfind("high ", 0) == 0) return OnHigh(content.substr(5));
    if (content == "backfill") {
      {
        std::lock_guard<std::mutex> lock(mu_);
        wake_ = true;
        signal_ = true;
      }
      cv_.notify_all();
    }
    return Status::Ok();
  }
  if (target_local_.oid != 0) RecordChange(m);
  return Status::Ok();
}

void Backfill::Report(Outcome o) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    outcomes_.push_back(std::move(o));
    signal_ = true;
  }
  cv_.notify_all();
}

Status Backfill::OnHigh(std::string_view uuid) {
  std::unique_ptr<Chunk> c;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ready_ || ready_->uuid != uuid) return Status::Ok();  // not (or no longer) ours
    c = std::move(ready_);
    if (expected_uuid_ == uuid) expected_uuid_.clear();
  }
  ChangeWindow::Verdict v;
  if (c->shape.oid != target_local_.oid) {
    v.redo = true;
    v.reason = "the table being tracked changed";
  } else {
    v = window_.Close(c->rows.keys(), c->snapshot);
  }
  if (!v.redo && !builder_->in_transaction()) {
    v.redo = true;
    v.reason = "the high watermark came outside a transaction";
  }
  if (v.redo) {
    Report({std::string(uuid), true, v.reason, 0, 0});
    return Status::Ok();
  }

  // The TableInfo for read events comes from the chunk's own description, so
  // rows and columns always match, whatever the stream's cached relation is.
  std::string shape_id = std::to_string(c->shape.oid);
  for (const pgwire::TableColumn& col : c->shape.columns) {
    shape_id += '|' + col.name + ':' + std::to_string(col.type_oid) + ':' +
                std::to_string(col.type_mod);
  }
  for (size_t k : c->shape.primary_key) shape_id += ',' + std::to_string(k);
  if (!read_table_ || shape_id != read_shape_) {
    std::vector<pgwire::RelationColumn> cols;
    std::vector<uint8_t> in_key(c->shape.columns.size(), 0);
    for (size_t k : c->shape.primary_key) in_key[k] = 1;
    for (size_t i = 0; i < c->shape.columns.size(); ++i) {
      const pgwire::TableColumn& col = c->shape.columns[i];
      cols.push_back({in_key[i] != 0, col.name, col.type_oid, col.type_mod});
    }
    pgwire::Relation rel;
    rel.oid = c->shape.oid;
    rel.nspname = c->shape.schema;
    rel.relname = c->shape.name;
    rel.replica_identity = 'd';  // the key of a read event is the primary key
    rel.columns = std::span<const pgwire::RelationColumn>(cols.data(), cols.size());
    Result<std::unique_ptr<TableInfo>> t = builder_->Describe(rel);
    if (!t.ok()) return t.status().WithContext("backfill of " + c->shape.Qualified());
    read_table_ = std::move(t).value();
    read_shape_ = std::move(shape_id);
  }
  hooks_.prepare(read_table_.get());

  // Every read event of the chunk shares the high watermark's commit LSN.
  const Lsn point = builder_->commit_lsn();
  uint32_t n = 0;
  for (size_t i = 0; i < c->rows.size(); ++i) {
    if (v.drop[i] != 0) continue;
    Built b;
    pgwire::Tuple row = c->rows.Row(i, &row_scratch_);
    WALBUS_RETURN_IF_ERROR(builder_->BuildRead(*read_table_, row, point, n, &b));
    WALBUS_RETURN_IF_ERROR(hooks_.publish(b));
    ++n;
  }
  if (n > 0 && hooks_.count_rows) hooks_.count_rows(c->shape.Qualified(), n);
  log::Debug("backfill chunk", {{"table", c->shape.Qualified()},
                                {"chunk", std::to_string(c->chunk_no)},
                                {"rows", std::to_string(n)},
                                {"skipped", std::to_string(v.dropped)},
                                {"at", FormatLsn(point)}});
  awaiting_commit_ = Emitted{c->request, c->chunk_no, c->last_key, n, v.dropped, c->last};
  Report({std::string(uuid), false, {}, n, v.dropped});
  return Status::Ok();
}

void Backfill::OnConfirmed(Lsn confirmed) {
  if (unconfirmed_.empty() || unconfirmed_.front().first > confirmed) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!unconfirmed_.empty() && unconfirmed_.front().first <= confirmed) {
      confirmed_.push_back(std::move(unconfirmed_.front().second));
      unconfirmed_.pop_front();
    }
    signal_ = true;
  }
  cv_.notify_all();
}

void Backfill::OnRewind(Lsn confirmed) {
  OnConfirmed(confirmed);
  unconfirmed_.clear();
  awaiting_commit_.reset();
  window_.Reset();
  key_table_ = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generation_;
    expected_uuid_.clear();
    ready_.reset();
    outcomes_.clear();
    streaming_ = false;
    signal_ = true;
  }
  cv_.notify_all();
}

// --- worker thread ---------------------------------------------------------

void Backfill::WaitSignal(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(std::max(1, timeout_ms)),
               [this] { return signal_ || stop_; });
  signal_ = false;
}

void Backfill::PostTarget(uint32_t oid, std::vector<std::string> key_names) {
  std::lock_guard<std::mutex> lock(mu_);
  target_.oid = oid;
  target_.key_names = std::move(key_names);
  target_version_.fetch_add(1, std::memory_order_release);
}

void Backfill::Disconnect() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancel_ != nullptr) PQfreeCancel(cancel_);
    cancel_ = nullptr;
  }
  conn_.reset();
}

Status Backfill::Connect() {
  Result<pgwire::PgConnPtr> c = pgwire::Connect(config_.source.dsn, false);
  if (!c.ok()) return c.status();
  // Watermarks must reach the WAL on disk at once (the walsender only sends
  // what is flushed); a stuck lock must not hold a chunk forever.
  WALBUS_RETURN_IF_ERROR(pgwire::Exec(
      c->get(), "SET synchronous_commit = on; SET lock_timeout = '5s'; "
                "SET application_name = 'walbus backfill'"));
  conn_ = std::move(c).value();
  std::lock_guard<std::mutex> lock(mu_);
  cancel_ = PQgetCancel(conn_.get());
  if (stop_ && cancel_ != nullptr) {
    char err[256];
    PQcancel(cancel_, err, sizeof err);
  }
  return Status::Ok();
}

void Backfill::Work() {
  int backoff = 0;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
    Status st = Step();
    if (st.ok()) {
      backoff = 0;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
    bool lost = st.code() == Code::kUnavailable;
    if (lost) {
      Disconnect();
    } else if (active_) {
      // An SQL error of this request (e.g. a lock timeout, the table was
      // dropped or its SELECT privilege revoked): a few tries, then it fails.
      if (++failures_ >= kMaxFailures || IsTableGone(st)) {
        std::string why = st.message();
        log::Error("backfill failed", {{"table", active_->Qualified()},
                                       {"request", std::to_string(active_->id)},
                                       {"reason", why}});
        if (conn_) (void)FailBackfill(conn_.get(), active_->id, why);
        active_.reset();
        inflight_.reset();
        finishing_ = false;
        failures_ = 0;
        PostTarget(0, {});
        continue;
      }
    }
    backoff = std::min(kMaxBackoffMs, backoff == 0 ? 1000 : backoff * 2);
    log::Warn("backfill: " + st.message() + "; retrying",
              {{"retry_in_ms", std::to_string(backoff)}});
    int64_t until = MonotonicMs() + backoff;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_ && MonotonicMs() < until) {
      cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(1, until - MonotonicMs())));
    }
  }
  // Chunks confirmed during the final drain: saved now, or read again later.
  if (conn_) (void)PersistConfirmed();
  Disconnect();
}

Status Backfill::PersistConfirmed() {
  for (;;) {
    Emitted e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (confirmed_.empty()) return Status::Ok();
      e = confirmed_.front();
    }
    WALBUS_RETURN_IF_ERROR(SaveBackfillChunk(conn_.get(), e.request, e.chunk_no, e.last_key,
                                             e.rows, e.skipped, e.last));
    {
      std::lock_guard<std::mutex> lock(mu_);
      confirmed_.pop_front();
    }
    if (e.last && active_ && active_->id == e.request) {
      double secs = static_cast<double>(MonotonicMs() - started_ms_) / 1000.0;
      log::Info("backfill done", {{"table", active_->Qualified()},
                                  {"request", std::to_string(active_->id)},
                                  {"rows", std::to_string(rows_done_)},
                                  {"skipped", std::to_string(skipped_done_)},
                                  {"chunks", std::to_string(issued_)},
                                  {"seconds", std::to_string(static_cast<int64_t>(secs))}});
      active_.reset();
      finishing_ = false;
      PostTarget(0, {});
      next_poll_ms_ = 0;  // the next request, if any, at once
    }
  }
}

Status Backfill::Activate() {
  Result<bool> exists = WalbusTablesExist(conn_.get(), {"backfill"});
  if (!exists.ok()) return exists.status();
  if (!*exists) return Status::Ok();
  Result<std::optional<BackfillRequest>> next = NextBackfill(conn_.get(), config_.source.slot);
  if (!next.ok()) return next.status();
  if (!*next) return Status::Ok();
  BackfillRequest q = std::move(**next);
  Result<pgwire::TableShape> shape =
      CheckBackfillable(conn_.get(), config_.source.publication, q.schema, q.table);
  if (!shape.ok()) {
    if (shape.status().code() == Code::kUnavailable) return shape.status();
    log::Error("backfill failed", {{"table", q.Qualified()},
                                   {"request", std::to_string(q.id)},
                                   {"reason", shape.status().message()}});
    WALBUS_RETURN_IF_ERROR(FailBackfill(conn_.get(), q.id, shape.status().message()));
    next_poll_ms_ = 0;
    return Status::Ok();
  }
  WALBUS_RETURN_IF_ERROR(MarkBackfillRunning(conn_.get(), q.id));
  shape_ = std::move(shape).value();
  cursor_ = q.last_key;
  issued_ = q.chunks;
  rows_done_ = q.rows;
  skipped_done_ = q.skipped;
  finishing_ = false;
  inflight_.reset();
  failures_ = 0;
  redos_ = 0;
  int64_t now = MonotonicMs();
  started_ms_ = now - static_cast<int64_t>(q.seconds * 1000);
  last_log_ms_ = now;
  rows_at_last_log_ = rows_done_ + skipped_done_;
  next_log_ms_ = now + kProgressMs;
  key_names_.clear();
  for (size_t k : shape_.primary_key) key_names_.push_back(shape_.columns[k].name);
  PostTarget(shape_.oid, key_names_);
  log::Info(q.chunks > 0 ? "backfill resuming" : "backfill started",
            {{"table", q.Qualified()},
             {"request", std::to_string(q.id)},
             {"chunk_size", std::to_string(q.chunk_size)},
             {"rows_done", std::to_string(q.rows)},
             {"estimated_rows", shape_.estimated_rows < 0
                                    ? std::string("unknown")
                                    : std::to_string(static_cast<int64_t>(shape_.estimated_rows))}});
  active_ = std::move(q);
  return Status::Ok();
}

void Backfill::LogProgress(bool force) {
  int64_t now = MonotonicMs();
  if (!active_ || (!force && now < next_log_ms_)) return;
  next_log_ms_ = now + kProgressMs;
  uint64_t done = rows_done_ + skipped_done_;
  double secs = std::max(0.001, static_cast<double>(now - last_log_ms_) / 1000.0);
  double rate = static_cast<double>(done - std::min(done, rows_at_last_log_)) / secs;
  last_log_ms_ = now;
  rows_at_last_log_ = done;
  std::string eta = "unknown";
  if (shape_.estimated_rows >= 0 && rate > 0) {
    double left = std::max(0.0, shape_.estimated_rows - static_cast<double>(done));
    eta = std::to_string(static_cast<int64_t>(left / rate));
  }
  log::Info("backfill progress", {{"table", active_->Qualified()},
                                  {"rows", std::to_string(rows_done_)},
                                  {"skipped", std::to_string(skipped_done_)},
                                  {"chunks", std::to_string(issued_)},
                                  {"rows_per_s", std::to_string(static_cast<int64_t>(rate))},
                                  {"eta_s", eta}});
  if (redos_ > 0) {
    log::Info("backfill chunks read again", {{"table", active_->Qualified()},
                                              {"count", std::to_string(redos_)}});
    redos_ = 0;
  }
}

Status Backfill::Step() {
  if (!conn_) WALBUS_RETURN_IF_ERROR(Connect());
  WALBUS_RETURN_IF_ERROR(PersistConfirmed());

  uint64_t gen;
  bool streaming, wake;
  std::deque<Outcome> outcomes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gen = generation_;
    streaming = streaming_;
    wake = wake_;
    wake_ = false;
    outcomes.swap(outcomes_);
  }
  if (gen != seen_generation_) {
    // The stream was rewound: what was not confirmed is read again, from the
    // progress saved with the confirmed chunks (PersistConfirmed ran above).
    inflight_.reset();
    finishing_ = false;
    outcomes.clear();
    if (active_) {
      Result<BackfillRequest> q = LoadBackfill(conn_.get(), active_->id);
      if (!q.ok()) return q.status();
      if (q->state != "running") {
        active_.reset();
        PostTarget(0, {});
      } else {
        cursor_ = q->last_key;
        issued_ = q->chunks;
        rows_done_ = q->rows;
        skipped_done_ = q->skipped;
      }
    }
    seen_generation_ = gen;
  }
  for (Outcome& o : outcomes) {
    if (!inflight_ || o.uuid != inflight_->uuid) continue;
    if (o.redo) {
      ++redos_;
      log::Debug("backfill chunk read again", {{"reason", o.reason}});
      inflight_.reset();
      continue;
    }
    if (inflight_->last_key) cursor_ = inflight_->last_key;
    issued_ = inflight_->chunk_no;
    rows_done_ += o.rows;
    skipped_done_ += o.skipped;
    failures_ = 0;
    if (inflight_->last) finishing_ = true;
    inflight_.reset();
  }

  int64_t now = MonotonicMs();
  if (!active_) {
    if (!wake && now < next_poll_ms_) {
      WaitSignal(static_cast<int>(next_poll_ms_ - now));
      return Status::Ok();
    }
    next_poll_ms_ = now + kPollMs;
    return Activate();
  }
  if (now >= next_log_ms_) {
    // Still wanted? A request ended from outside (state set to 'failed') stops here.
    Result<BackfillRequest> q = LoadBackfill(conn_.get(), active_->id);
    if (!q.ok()) return q.status();
    if (q->state != "running") {
      log::Info("backfill stopped: its request is no longer running",
                {{"table", active_->Qualified()}, {"request", std::to_string(active_->id)},
                 {"state", q->state}});
      active_.reset();
      inflight_.reset();
      finishing_ = false;
      PostTarget(0, {});
      return Status::Ok();
    }
    LogProgress(false);
  }
  if (finishing_ || inflight_ || !streaming) {
    WaitSignal(1000);
    return Status::Ok();
  }
  return DoChunk();
}

Status Backfill::DoChunk() {
  const std::string uuid = NewUuid();
  const uint64_t gen = seen_generation_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (generation_ != gen || !streaming_ || stop_) return Status::Ok();
    expected_uuid_ = uuid;
  }
  auto abandon = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    if (expected_uuid_ == uuid) expected_uuid_.clear();
    if (ready_ && ready_->uuid == uuid) ready_.reset();
  };
  PGconn* pg = conn_.get();
  const std::string emit = "SELECT pg_logical_emit_message(true, " +
                           pgwire::QuoteLiteral(pg, kWalbusMessagePrefix) + ", ";

  Status st = pgwire::Exec(pg, emit + pgwire::QuoteLiteral(pg, "low " + uuid) + ")");
  if (!st.ok()) {
    abandon();
    return st.WithContext("writing the low watermark");
  }

  // The chunk, under one snapshot taken after the low watermark committed.
  // ACCESS SHARE (what any SELECT takes) before the snapshot, so that the
  // description and the rows agree even if an ALTER TABLE is waiting.
  auto c = std::make_unique<Chunk>();
  c->uuid = uuid;
  c->request = active_->id;
  c->chunk_no = issued_ + 1;
  st = pgwire::Exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (st.ok()) {
    st = [&]() -> Status {
      WALBUS_RETURN_IF_ERROR(pgwire::Exec(pg, "LOCK TABLE ONLY " + shape_.QuotedName() +
                                                  " IN ACCESS SHARE MODE"));
      Result<pgwire::Rows> snap = pgwire::Query(pg, "SELECT pg_current_snapshot()::text");
      if (!snap.ok()) return snap.status();
      if (snap->empty() || !(*snap)[0][0] ||
          !XidSnapshot::Parse(*(*snap)[0][0], &c->snapshot)) {
        return Status::Corruption("pg_current_snapshot() returned something unexpected");
      }
      Result<pgwire::TableShape> shape = pgwire::DescribeTable(
          pg, active_->schema, active_->table, config_.source.publication);
      if (!shape.ok()) return shape.status();
      if (!shape->has_primary_key()) {
        return Status::FailedPrecondition("table " + shape->Qualified() +
                                          " no longer has a primary key");
      }
      c->shape = std::move(shape).value();
      // The source thread recognises changed rows by these key columns.
      std::vector<std::string> key_names;
      for (size_t k : c->shape.primary_key) key_names.push_back(c->shape.columns[k].name);
      if (key_names != key_names_ || c->shape.oid != shape_.oid) {
        key_names_ = key_names;
        shape_.oid = c->shape.oid;
        PostTarget(c->shape.oid, std::move(key_names));
        return Status::Unavailable("the primary key of " + c->shape.Qualified() +
                                   " changed (or the table was created again); reading the "
                                   "chunk again");
      }
      pgwire::ReadRange range;
      range.after = cursor_;
      range.limit = active_->chunk_size;
      Result<std::unique_ptr<pgwire::TableReader>> reader =
          pgwire::TableReader::Open(pg, c->shape, range);
      if (!reader.ok()) return reader.status();
      c->rows = ChunkRows(c->shape.columns.size());
      bool capped = false;
      pgwire::Tuple row;
      for (;;) {
        Result<bool> more = (*reader)->Next(&row);
        if (!more.ok()) return more.status();
        if (!*more) break;
        c->rows.Add(row, EncodeKey(row, c->shape.primary_key));
        if (c->rows.bytes() >= kMaxChunkBytes) {
          capped = true;
          break;
        }
      }
      if (c->rows.size() > 0) c->last_key = (*reader)->LastKey();
      reader->reset();  // cancels an unfinished COPY
      c->last = !capped && c->rows.size() < active_->chunk_size;
      return Status::Ok();
    }();
    Status end = pgwire::Exec(pg, "ROLLBACK");
    if (st.ok()) st = end;
  }
  if (!st.ok()) {
    abandon();
    return st.WithContext("reading a chunk of " + active_->Qualified());
  }

  InFlight f{uuid, c->chunk_no, c->last_key, c->last};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (generation_ != gen || stop_) {
      if (expected_uuid_ == uuid) expected_uuid_.clear();
      return Status::Ok();
    }
    ready_ = std::move(c);
  }
  st = pgwire::Exec(pg, emit + pgwire::QuoteLiteral(pg, "high " + uuid) + ")");
  if (!st.ok()) {
    abandon();
    return st.WithContext("writing the high watermark");
  }
  inflight_ = std::move(f);
  return Status::Ok();
}

}  // namespace walbus::bridge
