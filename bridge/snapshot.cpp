#include "bridge/snapshot.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "bridge/core/clock.h"
#include "bridge/core/log.h"

namespace walbus::bridge {
namespace {

constexpr const char* kSavepoint = "walbus_copy";

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

InitialSnapshot::InitialSnapshot(Options options, EnvelopeBuilder* builder, AckTracker* tracker,
                                 SnapshotCounters* counters)
    : options_(std::move(options)),
      builder_(builder),
      tracker_(tracker),
      counters_(counters),
      store_(options_.slot) {}

InitialSnapshot::~InitialSnapshot() {
  reader_.reset();  // before the connection it reads from
}

Status InitialSnapshot::BeforeCreateSlot(PGconn* sql) {
  WALBUS_RETURN_IF_ERROR(store_.EnsureSchema(sql));
  Result<bool> locked = store_.TryLock(sql);
  if (!locked.ok()) return locked.status();
  if (!*locked) {
    return Status::ResourceExhausted("the initial snapshot of slot \"" + options_.slot +
                                     "\" is being taken by another walbus process");
  }
  WALBUS_RETURN_IF_ERROR(store_.Begin(sql));
  // A new snapshot: forget whatever an earlier one left in memory.
  reader_.reset();
  conn_.reset();
  tables_.clear();
  ledger_.Abandon();
  loaded_ = false;
  visibility_.reset();
  next_row_ = used_to_ = reserved_ = 0;
  point_ = 0;
  runs_seen_ = 1;  // the new record's
  return Status::Ok();
}

Status InitialSnapshot::Import(PGconn* sql, Lsn point, const std::string& snapshot_name) {
  // The export lives until the replication session runs its next command:
  // import it before anything else happens there.
  Result<pgwire::PgConnPtr> conn = pgwire::Connect(options_.dsn, false);
  if (!conn.ok()) return conn.status();
  WALBUS_RETURN_IF_ERROR(
      pgwire::Exec(conn->get(), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
  Status st = pgwire::Exec(conn->get(), "SET TRANSACTION SNAPSHOT " +
                                            pgwire::QuoteLiteral(conn->get(), snapshot_name));
  if (!st.ok()) return st.WithContext("importing the slot's exported snapshot");
  conn_ = std::move(conn).value();
  txn_ = ++txn_seq_;
  visibility_.reset();
  point_ = point;
  WALBUS_RETURN_IF_ERROR(store_.SetConsistentPoint(sql, point));
  log::Info("initial snapshot: imported the slot's exported snapshot",
            {{"slot", options_.slot}, {"consistent_point", FormatLsn(point)}});
  return Status::Ok();
}

Result<bool> InitialSnapshot::Unfinished(PGconn* sql) {
  Result<std::optional<SnapshotRecord>> rec = store_.Load(sql);
  if (!rec.ok()) return rec.status();
  return rec->has_value() && !(*rec)->done;
}

void InitialSnapshot::Rewind() {
  ledger_.Abandon();
  rows_since_checkpoint_ = 0;
  if (reader_) {
    // Cancel the COPY and return to the savepoint before it: the
    // transaction, and with it the snapshot, stays usable.
    reader_.reset();
    if (conn_ && !pgwire::Exec(conn_.get(), std::string("ROLLBACK TO SAVEPOINT ") + kSavepoint).ok()) {
      conn_.reset();
    }
  }
}

void InitialSnapshot::Disconnect() {
  reader_.reset();
  conn_.reset();
}

Status InitialSnapshot::EnsureTransaction(PGconn* sql) {
  if (conn_ && PQstatus(conn_.get()) == CONNECTION_OK &&
      PQtransactionStatus(conn_.get()) == PQTRANS_INTRANS) {
    return Status::Ok();
  }
  reader_.reset();
  conn_.reset();
  Result<pgwire::PgConnPtr> conn = pgwire::Connect(options_.dsn, false);
  if (!conn.ok()) return conn.status();
  PGconn* c = conn->get();
  WALBUS_RETURN_IF_ERROR(pgwire::Exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
  // The first statement takes the snapshot; the WAL position read in it is
  // past every commit the snapshot sees.
  const char* sql_text = PQserverVersion(c) >= 130000
                             ? "SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text"
                             : "SELECT txid_current_snapshot()::text, pg_current_wal_lsn()::text";
  Result<pgwire::Rows> r = pgwire::Query(c, sql_text);
  if (!r.ok()) return r.status().WithContext("taking a new snapshot");
  Lsn lsn = 0;
  if (r->empty() || !(*r)[0][0] || !(*r)[0][1] || !ParseLsn(*(*r)[0][1], &lsn)) {
    return Status::Corruption("pg_current_snapshot() returned nothing usable");
  }
  Result<SnapshotVisibility> v = SnapshotVisibility::Parse(*(*r)[0][0], lsn);
  if (!v.ok()) return v.status();
  visibility_ = std::move(v).value();
  conn_ = std::move(conn).value();
  txn_ = ++txn_seq_;
  WALBUS_RETURN_IF_ERROR(store_.CountRun(sql));
  ++runs_seen_;
  log::Info("initial snapshot: the slot's exported snapshot is gone, continuing under a new "
            "snapshot (changes it already holds are not streamed again for tables first read "
            "under it)",
            {{"slot", options_.slot}, {"snapshot", visibility_->text()},
             {"wal_lsn", FormatLsn(lsn)}});
  return Status::Ok();
}

Status InitialSnapshot::Plan(PGconn* sql) {
  // Listed under the snapshot: the tables of the publication at the
  // consistent point (or at the new snapshot when the first run died early).
  PGconn* c = conn_.get();
  Result<pgwire::Rows> pub = pgwire::Query(
      c, "SELECT 1 FROM pg_publication WHERE pubname = " +
             pgwire::QuoteLiteral(c, options_.publication));
  if (!pub.ok()) return pub.status();
  if (pub->empty()) {
    return Status::FailedPrecondition("publication \"" + options_.publication +
                                      "\" does not exist");
  }
  Result<pgwire::Rows> names = pgwire::Query(
      c, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = " +
             pgwire::QuoteLiteral(c, options_.publication) + " ORDER BY schemaname, tablename");
  if (!names.ok()) return names.status();
  std::vector<SnapshotTableProgress> plan;
  for (const pgwire::Row& r : *names) {
    SnapshotTableProgress p;
    p.schema = r[0].value_or("");
    p.name = r[1].value_or("");
    if (p.schema == kWalbusSchema) continue;  // walbus's own tables are never published
    p.position = static_cast<int>(plan.size());
    plan.push_back(std::move(p));
  }
  WALBUS_RETURN_IF_ERROR(store_.SetPlan(sql, plan));
  tables_.clear();
  for (SnapshotTableProgress& p : plan) {
    Table t;
    t.progress = std::move(p);
    tables_.push_back(std::move(t));
  }
  return Status::Ok();
}

Status InitialSnapshot::Run(PGconn* sql, Lsn slot_confirmed, SnapshotHost* host,
                            const std::atomic<bool>* stop) {
  stop_ = stop;
  stopped_ = false;
  Result<std::optional<SnapshotRecord>> rec = store_.Load(sql);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value() || (*rec)->done) return Status::Ok();
  SnapshotRecord& r = **rec;
  Result<bool> locked = store_.TryLock(sql);
  if (!locked.ok()) return locked.status();
  if (!*locked) {
    Disconnect();  // never hold a snapshot open while another process copies
    return Status::ResourceExhausted("the initial snapshot of slot \"" + options_.slot +
                                     "\" is being taken by another walbus process");
  }
  if (r.consistent_point == 0) {
    // The first run died between creating the slot and recording its
    // consistent point; nothing has confirmed the slot since.
    r.consistent_point = slot_confirmed;
    WALBUS_RETURN_IF_ERROR(store_.SetConsistentPoint(sql, slot_confirmed));
  } else if (slot_confirmed > r.consistent_point) {
    return Status::FailedPrecondition(
        "the initial snapshot of slot \"" + options_.slot + "\" is unfinished, but the slot was "
        "confirmed at " + FormatLsn(slot_confirmed) + ", past the snapshot's consistent point " +
        FormatLsn(r.consistent_point) + " (something else streamed from it); drop the slot "
        "(walbus slot drop) to take a new snapshot, or DELETE FROM " +
        std::string(kWalbusSchema) + ".snapshots WHERE slot = '" + options_.slot +
        "' to give this one up");
  }
  point_ = r.consistent_point;
  if (loaded_ && r.runs != runs_seen_) {
    // Another process worked on it while this one did not hold the lock:
    // its record is newer than what this process remembers.
    loaded_ = false;
    Disconnect();
  }
  if (!loaded_ || tables_.empty()) {
    // What the database says is acknowledged; within one process the
    // in-memory state is as new or newer.
    tables_.clear();
    for (SnapshotTableProgress& p : r.tables) {
      Table t;
      t.progress = std::move(p);
      t.acked_next_row = t.progress.first_row;
      tables_.push_back(std::move(t));
    }
    reserved_ = r.next_row;
    used_to_ = std::max(used_to_, reserved_);
    next_row_ = used_to_;
    runs_seen_ = r.runs;
    loaded_ = true;
  }
  WALBUS_RETURN_IF_ERROR(EnsureTransaction(sql));
  if (!r.planned) WALBUS_RETURN_IF_ERROR(Plan(sql));
  WALBUS_RETURN_IF_ERROR(Estimate(sql));

  size_t done = 0;
  for (const Table& t : tables_) done += t.progress.done ? 1 : 0;
  started_ms_ = MonotonicMs();
  next_log_ms_ = started_ms_ + kProgressLogMs;
  next_save_ms_ = started_ms_ + kSaveMs;
  rows_this_run_ = 0;
  log::Info("initial snapshot: copying",
            {{"slot", options_.slot}, {"consistent_point", FormatLsn(point_)},
             {"tables", std::to_string(tables_.size())},
             {"tables_done", std::to_string(done)},
             {"snapshot", visibility_ ? "new" : "exported"}});
  PublishCounters();

  Status st = Status::Ok();
  for (size_t i = 0; i < tables_.size() && st.ok() && !stopped_; ++i) {
    if (!tables_[i].progress.done) st = CopyTable(sql, i, host);
  }
  if (st.ok() && !stopped_) {
    // Every read event must be acknowledged before streaming starts.
    st = DrainAcks(sql, host, -1);
    if (st.ok() && stop_->load()) stopped_ = true;
  }
  if (!st.ok()) {
    SaveBestEffort(sql);
    return st;
  }
  if (stopped_) {
    Status drained = DrainAcks(sql, host, kStopDrainMs);
    WALBUS_RETURN_IF_ERROR(Save(sql));
    // Numbers from here on were never used: a later run continues with them.
    WALBUS_RETURN_IF_ERROR(store_.SetNextRow(sql, used_to_));
    reserved_ = used_to_;
    PublishCounters();
    uint64_t acked = 0;
    for (const Table& t : tables_) acked += t.progress.rows_done;
    log::Info("initial snapshot stopped; it continues at the next start",
              {{"slot", options_.slot}, {"rows_acknowledged", std::to_string(acked)},
               {"unacknowledged", drained.ok() && ledger_.pending() == 0 ? "none" : "some"}});
    return Status::Ok();
  }
  for (const Table& t : tables_) {
    if (!t.progress.done) {
      return Status::Internal("initial snapshot: table " + t.progress.Qualified() +
                              " not done after every read event was acknowledged");
    }
  }
  WALBUS_RETURN_IF_ERROR(Save(sql));
  WALBUS_RETURN_IF_ERROR(store_.SetNextRow(sql, used_to_));
  WALBUS_RETURN_IF_ERROR(store_.Finish(sql));
  store_.Unlock(sql);
  if (conn_) (void)pgwire::Exec(conn_.get(), "COMMIT");
  conn_.reset();
  PublishCounters();
  MaybeLogProgress(true);
  double secs = std::max(0.001, (MonotonicMs() - started_ms_) / 1000.0);
  log::Info("initial snapshot complete",
            {{"slot", options_.slot}, {"tables", std::to_string(tables_.size())},
             {"rows", std::to_string(rows_this_run_)}, {"seconds", Fixed(secs, 3)},
             {"rows_per_s", Fixed(rows_this_run_ / secs, 0)}});
  return Status::Ok();
}

Status InitialSnapshot::Estimate(PGconn* sql) {
  if (tables_.empty()) return Status::Ok();
  // pg_class.reltuples (the sum over the leaves of a partitioned table);
  // -1 when never analysed: the estimated time left is then unknown.
  std::string values;
  for (size_t i = 0; i < tables_.size(); ++i) {
    if (i > 0) values += ", ";
    values += '(';
    values += std::to_string(i);
    values += ", ";
    values += pgwire::QuoteLiteral(sql, tables_[i].progress.schema);
    values += ", ";
    values += pgwire::QuoteLiteral(sql, tables_[i].progress.name);
    values += ')';
  }
  Result<pgwire::Rows> rows = pgwire::Query(
      sql,
      "SELECT v.i, coalesce((SELECT " + pgwire::EstimatedRowsSql("c") +
          " FROM pg_class c WHERE c.oid = to_regclass(format('%I.%I', v.s, v.t))), -1)::float8 "
          "FROM (VALUES " + values + ") AS v(i, s, t)");
  if (!rows.ok()) {
    // Only for the estimated time left: not a reason to stop.
    log::Debug("initial snapshot: no table size estimates", {{"reason", rows.status().message()}});
    return Status::Ok();
  }
  for (const pgwire::Row& row : *rows) {
    size_t i = std::strtoul(row[0].value_or("0").c_str(), nullptr, 10);
    if (i < tables_.size()) tables_[i].estimated_rows = std::strtod(row[1].value_or("-1").c_str(), nullptr);
  }
  return Status::Ok();
}

void InitialSnapshot::SetReadSnapshot(SnapshotTableProgress* p) const {
  if (!visibility_) {
    p->read_snapshot.clear();
    p->read_snapshot_lsn = 0;
  } else {
    p->read_snapshot = visibility_->text();
    p->read_snapshot_lsn = visibility_->wal_lsn();
  }
}

Status InitialSnapshot::CopyTable(PGconn* sql, size_t index, SnapshotHost* host) {
  Table& t = tables_[index];
  SnapshotTableProgress& p = t.progress;
  current_ = index;
  Result<pgwire::TableShape> shape =
      pgwire::DescribeTable(conn_.get(), p.schema, p.name, options_.publication);
  if (!shape.ok()) {
    if (shape.status().code() == Code::kFailedPrecondition &&
        shape.status().message().find("does not exist") != std::string::npos) {
      log::Warn("initial snapshot: table no longer exists, skipped",
                {{"table", p.Qualified()}});
      p.done = true;
      t.dirty = true;
      return Save(sql);
    }
    return shape.status();
  }
  shape_ = std::move(shape).value();
  std::vector<pgwire::RelationColumn> columns;
  Result<std::unique_ptr<TableInfo>> info = builder_->Describe(pgwire::AsRelation(shape_, &columns));
  if (!info.ok()) return info.status();
  info_ = std::move(info).value();
  host->PrepareTable(info_.get());
  bool included = false;
  for (uint8_t in : info_->included) included = included || in != 0;
  if (!included) {
    log::Info("initial snapshot: no sink includes the table, skipped", {{"table", p.Qualified()}});
    p.done = true;
    t.dirty = true;
    return Save(sql);
  }

  const bool keyed = shape_.has_primary_key();
  pgwire::ReadRange range;
  bool marker = false;
  std::string how;
  if (!p.started) {
    p.started = true;
    p.starts = 1;
    p.rows_done = 0;
    p.last_key.reset();
    SetReadSnapshot(&p);
    next_row_ = used_to_;
    how = "start";
  } else if (keyed) {
    // Continue after the last acknowledged key. Under the very transaction
    // that numbered the rows sent before, the rows that follow are the same:
    // give them the same numbers (brokers that deduplicate by id drop them).
    if (p.last_key) range.after = p.last_key;
    ++p.resumes;
    p.resumed_at_rows = p.rows_done;
    next_row_ = t.txn == txn_ ? t.acked_next_row : used_to_;
    how = "resume";
  } else {
    // No key to continue from: start over, announced by a truncate event so
    // a consumer drops what it holds of the table, under the current snapshot.
    marker = true;
    ++p.starts;
    p.rows_done = 0;
    p.last_key.reset();
    SetReadSnapshot(&p);
    next_row_ = used_to_;
    how = "restart";
  }
  if (how != "resume") p.first_row = next_row_ + (marker ? 1 : 0);
  t.txn = txn_;
  t.acked_next_row = next_row_;
  t.base_rows = p.rows_done;
  // Written before any of its events is published.
  t.dirty = true;
  WALBUS_RETURN_IF_ERROR(Save(sql));
  log::Info("initial snapshot: copying table",
            {{"table", p.Qualified()}, {"how", how},
             {"rows_acknowledged", std::to_string(p.rows_done)},
             {"estimated_rows", t.estimated_rows < 0 ? "unknown" : Fixed(t.estimated_rows, 0)},
             {"first_row", std::to_string(next_row_)}});

  if (marker) {
    WALBUS_RETURN_IF_ERROR(Reserve(sql, next_row_));
    Built b;
    WALBUS_RETURN_IF_ERROR(
        builder_->BuildTruncateAt(*info_, point_, static_cast<uint32_t>(next_row_), &b));
    WALBUS_RETURN_IF_ERROR(host->Publish(b));
    used_to_ = std::max(used_to_, ++next_row_);
  }

  WALBUS_RETURN_IF_ERROR(pgwire::Exec(conn_.get(), std::string("SAVEPOINT ") + kSavepoint));
  Result<std::unique_ptr<pgwire::TableReader>> reader =
      pgwire::TableReader::Open(conn_.get(), shape_, range);
  if (!reader.ok()) return reader.status();
  reader_ = std::move(reader).value();
  rows_since_checkpoint_ = 0;
  pgwire::Tuple row;
  Built b;
  for (;;) {
    if (stop_->load(std::memory_order_relaxed)) {
      if (rows_since_checkpoint_ > 0) WALBUS_RETURN_IF_ERROR(Checkpoint(index, false));
      reader_.reset();
      (void)pgwire::Exec(conn_.get(), std::string("ROLLBACK TO SAVEPOINT ") + kSavepoint);
      stopped_ = true;
      return Status::Ok();
    }
    if (host->Paused()) {
      WALBUS_RETURN_IF_ERROR(WaitWhilePaused(sql, host));
      continue;
    }
    Result<bool> more = reader_->Next(&row);
    if (!more.ok()) return more.status();
    if (!*more) break;
    if (next_row_ > std::numeric_limits<uint32_t>::max()) {
      return Status::FailedPrecondition(
          "the initial snapshot has more than 4294967295 rows, the most an event id's "
          "sequence number holds; publish fewer tables per slot (several slots and "
          "publications) or use snapshot = \"never\"");
    }
    if (next_row_ >= reserved_) WALBUS_RETURN_IF_ERROR(Reserve(sql, next_row_));
    Status built = builder_->BuildRead(*info_, row, point_, static_cast<uint32_t>(next_row_), &b);
    if (!built.ok()) return built.WithContext("initial snapshot of " + p.Qualified());
    WALBUS_RETURN_IF_ERROR(host->Publish(b));
    used_to_ = std::max(used_to_, ++next_row_);
    ++t.rows_read;
    ++rows_this_run_;
    if (++rows_since_checkpoint_ >= kCheckpointRows) {
      WALBUS_RETURN_IF_ERROR(Checkpoint(index, false));
      WALBUS_RETURN_IF_ERROR(host->Flush());
      WALBUS_RETURN_IF_ERROR(Confirm(sql, false));
      MaybeLogProgress(false);
    }
  }
  WALBUS_RETURN_IF_ERROR(Checkpoint(index, true));
  uint64_t read = reader_->rows();
  reader_.reset();
  WALBUS_RETURN_IF_ERROR(pgwire::Exec(conn_.get(), std::string("RELEASE SAVEPOINT ") + kSavepoint));
  WALBUS_RETURN_IF_ERROR(host->Flush());
  WALBUS_RETURN_IF_ERROR(Confirm(sql, false));
  PublishCounters();
  log::Info("initial snapshot: table read", {{"table", p.Qualified()},
                                             {"rows", std::to_string(read)}});
  return Status::Ok();
}

Status InitialSnapshot::Checkpoint(size_t index, bool table_end) {
  Table& t = tables_[index];
  SnapshotLedger::Checkpoint c;
  c.table = index;
  uint64_t read = reader_ ? reader_->rows() : 0;
  c.rows_done = t.base_rows + read;
  c.last_key = t.progress.last_key;
  if (reader_ && read > 0 && shape_.has_primary_key()) c.last_key = reader_->LastKey();
  c.next_row = next_row_;
  c.table_end = table_end;
  uint64_t mark = ledger_.Add(std::move(c));
  tracker_->BeginTransaction();
  tracker_->CommitTransaction(point_, 0, mark);
  rows_since_checkpoint_ = 0;
  return Status::Ok();
}

Status InitialSnapshot::Confirm(PGconn* sql, bool force_save) {
  tracker_->Advance();
  bool table_done = false;
  ledger_.Confirm(tracker_->confirmed_mark(), [&](const SnapshotLedger::Checkpoint& c) {
    Table& t = tables_[c.table];
    if (c.rows_done > t.progress.rows_done) acked_since_save_ += c.rows_done - t.progress.rows_done;
    t.progress.rows_done = c.rows_done;
    t.progress.last_key = c.last_key;
    t.acked_next_row = c.next_row;
    if (c.table_end && !t.progress.done) {
      t.progress.done = true;
      table_done = true;
    }
    t.dirty = true;
  });
  if (force_save || table_done || acked_since_save_ >= kSaveRows || MonotonicMs() >= next_save_ms_) {
    return Save(sql);
  }
  return Status::Ok();
}

Status InitialSnapshot::Save(PGconn* sql) {
  next_save_ms_ = MonotonicMs() + kSaveMs;
  acked_since_save_ = 0;
  for (Table& t : tables_) {
    if (!t.dirty) continue;
    WALBUS_RETURN_IF_ERROR(store_.SaveTable(sql, t.progress));
    t.dirty = false;
  }
  return Status::Ok();
}

void InitialSnapshot::SaveBestEffort(PGconn* sql) {
  if (sql == nullptr || PQstatus(sql) != CONNECTION_OK) return;
  Status st = Save(sql);
  if (!st.ok()) log::Warn("initial snapshot: could not save progress", {{"reason", st.message()}});
}

Status InitialSnapshot::Reserve(PGconn* sql, uint64_t row) {
  // Numbers are reserved before use, so a run after a crash never re-uses one.
  reserved_ = row + kReserveRows;
  return store_.SetNextRow(sql, reserved_);
}

Status InitialSnapshot::WaitWhilePaused(PGconn* sql, SnapshotHost* host) {
  // Record what is in flight, so its acknowledgement shows as progress.
  if (rows_since_checkpoint_ > 0) WALBUS_RETURN_IF_ERROR(Checkpoint(current_, false));
  while (host->Paused() && !stop_->load(std::memory_order_relaxed)) {
    WALBUS_RETURN_IF_ERROR(host->Flush());
    WALBUS_RETURN_IF_ERROR(Confirm(sql, false));
    MaybeLogProgress(false);
    WALBUS_RETURN_IF_ERROR(host->WaitForAcks(50));
  }
  return Status::Ok();
}

Status InitialSnapshot::DrainAcks(PGconn* sql, SnapshotHost* host, int timeout_ms) {
  int64_t until = timeout_ms < 0 ? 0 : MonotonicMs() + timeout_ms;
  for (;;) {
    WALBUS_RETURN_IF_ERROR(host->Flush());
    WALBUS_RETURN_IF_ERROR(Confirm(sql, false));
    MaybeLogProgress(false);
    if (ledger_.pending() == 0 && tracker_->Idle()) return Status::Ok();
    if (timeout_ms >= 0 && MonotonicMs() >= until) return Status::Ok();
    if (timeout_ms < 0 && stop_->load(std::memory_order_relaxed)) return Status::Ok();
    WALBUS_RETURN_IF_ERROR(host->WaitForAcks(20));
  }
}

void InitialSnapshot::MaybeLogProgress(bool force) {
  int64_t now = MonotonicMs();
  if (!force && now < next_log_ms_) return;
  next_log_ms_ = now + kProgressLogMs;
  size_t done = 0;
  uint64_t acked = 0;
  double left = 0;
  bool known = true;
  for (size_t i = 0; i < tables_.size(); ++i) {
    const Table& t = tables_[i];
    acked += t.progress.rows_done;
    if (t.progress.done) {
      ++done;
      continue;
    }
    if (t.estimated_rows < 0) {
      known = false;
      continue;
    }
    uint64_t have = t.progress.rows_done;
    if (i == current_ && reader_) have = t.base_rows + reader_->rows();
    left += std::max(0.0, t.estimated_rows - static_cast<double>(have));
  }
  double secs = std::max(0.001, (now - started_ms_) / 1000.0);
  double rate = rows_this_run_ / secs;
  std::string eta = known && rate > 0 ? Fixed(left / rate, 0) : "unknown";
  std::string table = current_ < tables_.size() ? tables_[current_].progress.Qualified() : "";
  log::Info("initial snapshot progress",
            {{"tables", std::to_string(done) + "/" + std::to_string(tables_.size())},
             {"rows", std::to_string(rows_this_run_)},
             {"rows_acknowledged", std::to_string(acked)},
             {"rows_per_s", Fixed(rate, 0)},
             {"eta_s", eta},
             {"table", table}});
}

void InitialSnapshot::PublishCounters() {
  if (counters_ == nullptr) return;
  std::lock_guard<std::mutex> lock(counters_->mu);
  counters_->rows.clear();
  for (const Table& t : tables_) counters_->rows.emplace_back(t.progress.Qualified(), t.rows_read);
}

}  // namespace walbus::bridge
