#include "bridge/pipeline.h"

#include <poll.h>
#include <time.h>

#include <algorithm>

#include "bridge/backfill.h"
#include "bridge/core/log.h"
#include "bridge/glob.h"
#include "conf/redact.h"

namespace walbus::bridge {

namespace {

// The walsender flushes its socket after every message, so a reader that keeps
// up sees one message per read. Events are held back at most this long to
// share one sink flush (one syscall, one broker round trip) among a burst.
constexpr int64_t kCoalesceUs = 250;
constexpr int kMaxBackoffMs = 30000;
constexpr int kDrainMs = 10000;

int NextBackoff(int ms) { return std::min(kMaxBackoffMs, ms == 0 ? 500 : ms * 2); }

bool IsRetryable(const Status& s) { return s.code() == Code::kUnavailable; }

// "sink NAME: reason", unless the adapter already said which sink.
Status ForSink(const Status& st, std::string_view name) {
  std::string prefix = "sink " + std::string(name);
  if (st.message().rfind(prefix, 0) == 0) return st;
  return st.WithContext(prefix);
}

}  // namespace

Pipeline::Pipeline(conf::Config config, SinkFactory make_sinks)
    : config_(std::move(config)), make_sinks_(std::move(make_sinks)) {
  for (size_t i = 0; i < config_.sinks.size(); ++i) {
    SinkSlot s;
    s.config = &config_.sinks[i];
    s.rules = RulesForSinkType(s.config->type);
    // Templates were validated by conf/; a failure here is a walbus bug.
    Result<TopicTemplate> t = TopicTemplate::Parse(s.config->topic, s.rules);
    s.topic = t.ok() ? std::move(t).value()
                     : TopicTemplate::Parse("{db}.{schema}.{table}.{op}", s.rules).value();
    if (!s.config->state_topic.empty()) {
      Result<TopicTemplate> st = TopicTemplate::Parse(s.config->state_topic, s.rules, true);
      if (st.ok()) s.state_topic = std::move(st).value();
    }
    s.window = std::make_unique<AckWindow>(s.config->max_in_flight, nullptr);
    sinks_.push_back(std::move(s));
  }
  stats_.events = std::make_unique<std::atomic<uint64_t>[]>(sinks_.size() * kOpCount);
  stats_.sink_errors = std::make_unique<std::atomic<uint64_t>[]>(sinks_.size());
  stats_.sink_down_since_ms = std::make_unique<std::atomic<int64_t>[]>(sinks_.size());
  stats_.sink_reconnects = std::make_unique<std::atomic<uint64_t>[]>(sinks_.size());
  stats_.pg_down_since_ms.store(MonotonicMs());  // not connected yet
}

Pipeline::~Pipeline() {
  for (SinkSlot& s : sinks_) {
    if (s.sink) s.sink->Close();
  }
}

bool Pipeline::SleepInterruptible(int ms) {
  int64_t until = MonotonicMs() + ms;
  while (!stop_->load()) {
    int64_t left = until - MonotonicMs();
    if (left <= 0) return true;
    wakeup_->Arm();
    if (stop_->load()) break;
    struct pollfd p = {wakeup_->fd(), POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000))) > 0) wakeup_->Drain();
  }
  return false;
}

Status Pipeline::OpenSinks(bool only_failed) {
  for (size_t i = 0; i < sinks_.size(); ++i) {
    SinkSlot& s = sinks_[i];
    if (only_failed && !s.needs_reopen) continue;
    int backoff = 0;
    for (;;) {
      if (stop_->load()) return Status::Ok();
      Status st = s.sink->Open(s.window.get());
      if (st.ok()) {
        if (backoff > 0 || only_failed) {
          log::Info("sink is up", {{"sink", s.sink->name()}});
          stats_.sink_reconnects[i].fetch_add(1);
        }
        stats_.sink_down_since_ms[i].store(0);
        s.needs_reopen = false;
        break;
      }
      if (!IsRetryable(st)) return ForSink(st, s.sink->name());
      stats_.sink_errors[i].fetch_add(1);
      if (stats_.sink_down_since_ms[i].load() == 0) stats_.sink_down_since_ms[i].store(MonotonicMs());
      NoteError(ForSink(st, s.sink->name()));
      backoff = NextBackoff(backoff);
      log::Warn("sink unavailable, retrying",
                {{"sink", s.sink->name()}, {"reason", st.message()},
                 {"retry_in_ms", std::to_string(backoff)}});
      if (!SleepInterruptible(backoff)) return Status::Ok();
    }
  }
  return Status::Ok();
}

Status Pipeline::Prepare() {
  // An ordinary connection for the prerequisites and the catalog.
  Result<pgwire::PgConnPtr> conn = pgwire::Connect(config_.source.dsn, false);
  if (!conn.ok()) return conn.status();
  sql_ = std::move(conn).value();
  PGconn* c = sql_.get();

  int version = PQserverVersion(c);
  if (version < 120000) {
    return Status::FailedPrecondition("PostgreSQL " + std::to_string(version / 10000) +
                                      " is too old; walbus needs 12 or newer");
  }
  Result<pgwire::Rows> wal = pgwire::Query(c, "SHOW wal_level");
  if (!wal.ok()) return wal.status();
  std::string level = wal->empty() ? "" : (*wal)[0][0].value_or("");
  if (level != "logical") {
    return Status::FailedPrecondition(
        "wal_level is '" + level +
        "', logical decoding needs 'logical': set wal_level = logical in postgresql.conf "
        "(RDS/Aurora: rds.logical_replication = 1; Cloud SQL: cloudsql.logical_decoding = on; "
        "Azure: azure.replication_support = logical) and restart PostgreSQL");
  }

  // A slot that must exist but does not is fatal: say so before creating anything.
  if (!config_.source.create_slot) {
    Result<pgwire::Rows> slots = pgwire::Query(
        c, "SELECT 1 FROM pg_replication_slots WHERE slot_name = " +
               pgwire::QuoteLiteral(c, config_.source.slot));
    if (!slots.ok()) return slots.status();
    if (slots->empty()) {
      return Status::FailedPrecondition(
          "replication slot \"" + config_.source.slot +
          "\" does not exist and source.create_slot = false; create it with SELECT "
          "pg_create_logical_replication_slot('" + config_.source.slot +
          "', 'pgoutput') or set create_slot = true");
    }
  }

  const std::string& pub = config_.source.publication;
  Result<pgwire::Rows> pubs = pgwire::Query(
      c, "SELECT 1 FROM pg_publication WHERE pubname = " + pgwire::QuoteLiteral(c, pub));
  if (!pubs.ok()) return pubs.status();
  if (pubs->empty()) {
    if (!config_.source.create_publication) {
      return Status::FailedPrecondition("publication \"" + pub +
                                        "\" does not exist and source.create_publication = "
                                        "false; create it with CREATE PUBLICATION " +
                                        pgwire::QuoteIdent(pub) + " FOR ALL TABLES (or FOR "
                                        "TABLE ...), or set create_publication = true");
    }
    std::string sql = "CREATE PUBLICATION " + pgwire::QuoteIdent(pub);
    if (config_.source.tables.empty()) {
      sql += " FOR ALL TABLES";
    } else {
      std::string tables, schemas;
      for (const std::string& t : config_.source.tables) {
        size_t dot = t.find('.');
        std::string schema = t.substr(0, dot), name = t.substr(dot + 1);
        if (name == "*") {
          schemas += (schemas.empty() ? "" : ", ") + pgwire::QuoteIdent(schema);
        } else {
          tables += (tables.empty() ? "" : ", ") + pgwire::QuoteIdent(schema) + "." +
                    pgwire::QuoteIdent(name);
        }
      }
      sql += " FOR ";
      if (!tables.empty()) sql += "TABLE " + tables;
      if (!schemas.empty()) sql += std::string(tables.empty() ? "" : ", ") + "TABLES IN SCHEMA " + schemas;
    }
    std::string state;
    Status st = pgwire::Exec(c, sql, &state);
    // 42710 / 23505: created concurrently by a twin instance.
    if (!st.ok() && state != "42710" && state != "23505") {
      if (state == "42501") {
        return Status::FailedPrecondition(
            "cannot create publication \"" + pub + "\": " + st.message() +
            "; create it yourself as the tables' owner or a superuser, then set "
            "source.create_publication = false");
      }
      return st.WithContext("creating publication \"" + pub + "\"");
    }
    if (st.ok()) log::Info("created publication", {{"publication", pub}});
  }

  if (db_.empty()) db_ = PQdb(c);
  // Once: the envelope builder keeps a pointer to it (the fetcher reconnects by itself).
  if (!types_) {
    types_ = std::make_unique<pgwire::TypeResolver>(
        pgwire::CatalogTypeFetcher(config_.source.dsn));
  }
  return Status::Ok();
}

Status Pipeline::StartStream() {
  session_.reset();
  streaming_ = false;
  Result<std::unique_ptr<pgwire::ReplicationSession>> rs =
      pgwire::ReplicationSession::Open(config_.source.dsn);
  if (!rs.ok()) return rs.status();
  session_ = std::move(rs).value();
  Result<pgwire::SystemInfo> sys = session_->IdentifySystem();
  if (!sys.ok()) return sys.status();
  if (!builder_) {
    ValueOptions vo;
    vo.numeric_as_number = config_.envelope.numeric_as_number;
    vo.bytea_hex = config_.envelope.bytea_hex;
    PGconn* c = sql_.get();
    builder_ = std::make_unique<EnvelopeBuilder>(
        db_, vo, types_.get(), [this, c](uint32_t relid) -> Result<std::vector<std::string>> {
          Result<pgwire::Rows> rows = pgwire::Query(
              sql_ ? sql_.get() : c,
              "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
              "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = " + std::to_string(relid) +
                  " AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)");
          if (!rows.ok()) return rows.status();
          std::vector<std::string> names;
          for (const pgwire::Row& r : *rows) names.push_back(r[0].value_or(""));
          return names;
        });
    bool want_key = false;
    for (const SinkSlot& s : sinks_) want_key = want_key || s.state_topic.has_value();
    builder_->set_want_key_text(want_key);
    snapshot_ = std::make_unique<InitialSnapshot>(
        InitialSnapshot::Options{config_.source.dsn, config_.source.slot,
                                 config_.source.publication},
        builder_.get(), tracker_.get(), &stats_.snapshot);
  }

  // The slot: exists with pgoutput in this database, or is created.
  const std::string& slot = config_.source.slot;
  PGconn* c = sql_.get();
  Result<pgwire::Rows> rows = pgwire::Query(
      c, "SELECT plugin, database, active_pid, confirmed_flush_lsn FROM pg_replication_slots "
         "WHERE slot_name = " + pgwire::QuoteLiteral(c, slot));
  if (!rows.ok()) return rows.status();
  Lsn slot_confirmed = 0;
  if (rows->empty()) {
    if (!config_.source.create_slot) {
      return Status::FailedPrecondition(
          "replication slot \"" + slot + "\" does not exist and source.create_slot = false; "
          "create it with SELECT pg_create_logical_replication_slot('" + slot +
          "', 'pgoutput') or set create_slot = true");
    }
    // The slot this process streamed from is gone (dropped by hand): a new one
    // would start at the current WAL position and silently skip what was
    // written since the confirmed LSN. Stop and say so instead.
    if (tracker_->confirmed() != 0) {
      return Status::FailedPrecondition(
          "replication slot \"" + slot + "\" disappeared while walbus was using it (confirmed " +
          FormatLsn(tracker_->confirmed()) + "); a new slot would silently skip the changes made "
          "since: re-synchronise the consumers from the tables, then restart walbus (it creates "
          "a new slot)");
    }
    // snapshot = "initial": the progress record exists before the slot does,
    // so a crash right after creating it still leaves the snapshot to complete.
    const bool initial = config_.source.snapshot == "initial";
    if (initial) {
      WALBUS_RETURN_IF_ERROR(snapshot_->BeforeCreateSlot(c));
    } else {
      // A record left by an earlier slot of this name describes nothing now.
      WALBUS_RETURN_IF_ERROR(SnapshotStore(slot).Forget(c));
    }
    std::string state, exported;
    Result<Lsn> point = session_->CreateSlot(slot, &state, initial ? &exported : nullptr);
    if (!point.ok() && state != "42710") {
      Status st = point.status().WithContext("creating replication slot \"" + slot + "\"");
      if (state == "53400" || st.message().find("max_replication_slots") != std::string::npos) {
        return Status::FailedPrecondition(
            st.message() + "; drop a slot nobody uses (see pg_replication_slots) or raise "
                           "max_replication_slots in postgresql.conf and restart PostgreSQL");
      }
      return st;
    }
    if (!point.ok()) {
      // Created by someone else in the meantime: start over with it.
      return Status::Unavailable("replication slot \"" + slot + "\" was created concurrently");
    }
    slot_confirmed = *point;
    // Import the exported snapshot before the session runs anything else.
    if (initial) WALBUS_RETURN_IF_ERROR(snapshot_->Import(c, *point, exported));
    log::Info("created replication slot",
              {{"slot", slot}, {"consistent_point", FormatLsn(*point)}});
  } else {
    const pgwire::Row& r = (*rows)[0];
    if (r[0].value_or("") != "pgoutput") {
      return Status::FailedPrecondition("replication slot \"" + slot + "\" uses plugin '" +
                                        r[0].value_or("") + "', walbus needs pgoutput; use "
                                        "another source.slot or drop that slot");
    }
    if (r[1].value_or("") != db_) {
      return Status::FailedPrecondition("replication slot \"" + slot + "\" belongs to database '" +
                                        r[1].value_or("") + "', not '" + db_ +
                                        "'; use another source.slot");
    }
    if (r[2]) {
      return Status::ResourceExhausted("replication slot \"" + slot +
                                       "\" is active for PID " + *r[2]);
    }
    if (r[3]) ParseLsn(*r[3], &slot_confirmed);
  }
  tracker_->Reset(slot_confirmed);
  WALBUS_RETURN_IF_ERROR(CompleteSnapshot(slot_confirmed));
  if (snapshot_->stopped()) return Status::Ok();  // SIGTERM during the snapshot
  WALBUS_RETURN_IF_ERROR(LoadReadSnapshots(slot_confirmed));
  last_sent_flush_ = tracker_->confirmed();

  pgwire::StartOptions o;
  o.slot = slot;
  o.publication = config_.source.publication;
  // Backfill watermarks are logical messages: asked for whenever the server has them.
  o.messages = config_.source.messages || Backfill::Supported(PQserverVersion(sql_.get()));
  o.start = tracker_->confirmed();
  WALBUS_RETURN_IF_ERROR(session_->StartReplication(o));
  streaming_ = true;
  if (!backfill_ && o.messages) {
    backfill_ = std::make_unique<Backfill>(
        config_, builder_.get(),
        Backfill::Hooks{[this](TableInfo* t) { PrepareTable(t); },
                        [this](const Built& b) { return PublishBuilt(b); },
                        [this](const std::string& table, uint64_t n) {
                          stats_.snapshot.Add(table, n);
                        }});
  }
  if (backfill_) backfill_->OnStreaming();
  builder_->Clear();
  builder_->EndTransaction();
  received_ = std::max(received_, tracker_->confirmed());
  next_status_ms_ = MonotonicMs() + config_.source.status_interval_ms;
  stats_.state.store(PipelineStats::kStreaming);
  stats_.pg_down_since_ms.store(0);
  log::Info("streaming", {{"slot", slot}, {"from", FormatLsn(tracker_->confirmed())},
                          {"publication", config_.source.publication}, {"db", db_}});
  return Status::Ok();
}

Status Pipeline::CompleteSnapshot(Lsn slot_confirmed) {
  Result<bool> unfinished = snapshot_->Unfinished(sql_.get());
  if (!unfinished.ok()) return unfinished.status();
  if (!*unfinished) return Status::Ok();
  if (config_.source.snapshot != "initial") {
    return Status::FailedPrecondition(
        "the initial snapshot of slot \"" + config_.source.slot + "\" is unfinished; set "
        "source.snapshot = \"initial\" to complete it, or DELETE FROM " +
        std::string(kWalbusSchema) + ".snapshots WHERE slot = '" + config_.source.slot +
        "' to give it up");
  }
  stats_.state.store(PipelineStats::kStreaming);
  stats_.pg_down_since_ms.store(0);
  return snapshot_->Run(sql_.get(), slot_confirmed, this, stop_);
}

Status Pipeline::LoadReadSnapshots(Lsn confirmed) {
  read_snapshots_.clear();
  SnapshotStore store(config_.source.slot);
  Result<std::vector<SnapshotStore::ReadSnapshot>> rs =
      store.ReadSnapshotsAfter(sql_.get(), confirmed);
  if (!rs.ok()) return rs.status();
  for (const SnapshotStore::ReadSnapshot& r : *rs) {
    Result<SnapshotVisibility> v = SnapshotVisibility::Parse(r.snapshot, r.lsn);
    if (!v.ok()) return v.status().WithContext("snapshot progress of " + r.table);
    read_snapshots_.emplace_back(r.table, std::move(v).value());
    log::Info("not streaming again the changes the initial snapshot read",
              {{"table", r.table}, {"until", FormatLsn(r.lsn)}});
  }
  return Status::Ok();
}

bool Pipeline::Skipped(const Built& b) const {
  const TableInfo* t = b.table;
  if (t == nullptr) return false;
  if (t->internal) return true;
  return t->skip_visible != nullptr && t->skip_visible->Saw(builder_->xid(), b.commit_lsn);
}

Status Pipeline::WaitForAcks(int timeout_ms) {
  wakeup_->Arm();
  if (stop_->load()) return Status::Ok();
  struct pollfd p = {wakeup_->fd(), POLLIN, 0};
  int n = poll(&p, 1, timeout_ms);
  if (n < 0 && errno != EINTR) return Status::Unavailable("poll failed");
  if (n > 0) wakeup_->Drain();
  return CheckSinkFailures();
}

void Pipeline::PrepareTable(TableInfo* t) {
  t->included.assign(sinks_.size(), 0);
  t->topics.assign(sinks_.size(), {});
  t->skip_visible = nullptr;
  for (const auto& [name, visibility] : read_snapshots_) {
    if (name == t->qualified) t->skip_visible = &visibility;
  }
  if (t->internal) return;  // walbus's own schema: never published
  for (size_t i = 0; i < sinks_.size(); ++i) {
    const auto& include = sinks_[i].config->include;
    bool in = include.empty();
    for (const std::string& g : include) in = in || GlobMatch(g, t->qualified);
    t->included[i] = in ? 1 : 0;
  }
}

void Pipeline::NoteError(const Status& st) {
  std::lock_guard<std::mutex> lock(stats_.error_mu);
  stats_.last_error = st.message();
}

void Pipeline::MaybeLogLag() {
  int64_t now = MonotonicMs();
  if (now < next_lag_log_ms_) return;
  next_lag_log_ms_ = now + 60000;
  Lsn end = stats_.server_wal_end.load(std::memory_order_relaxed);
  Lsn confirmed = tracker_->confirmed();
  if (end <= confirmed) return;
  int64_t ts = tracker_->confirmed_commit_time_us();
  std::string secs = "unknown";
  if (ts != 0) {
    int64_t lag_us = pgwire::PgNowMicros() - ts;
    secs = std::to_string(std::max<int64_t>(0, lag_us) / 1000000);
  }
  log::Info("behind", {{"lag_bytes", std::to_string(end - confirmed)},
                       {"lag_seconds", secs},
                       {"confirmed", FormatLsn(confirmed)},
                       {"server_wal_end", FormatLsn(end)}});
}

void Pipeline::MaybeCheckRetainedWal() {
  int64_t now = MonotonicMs();
  if (now < next_retained_check_ms_ || !sql_) return;
  next_retained_check_ms_ = now + 15000;
  Result<pgwire::Rows> rows = pgwire::Query(
      sql_.get(), "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                  "FROM pg_replication_slots WHERE slot_name = " +
                      pgwire::QuoteLiteral(sql_.get(), config_.source.slot));
  // Best effort: an error here is not a reason to stop streaming; the
  // replication connection reports real trouble.
  if (!rows.ok() || rows->empty() || !(*rows)[0][0]) return;
  int64_t retained = std::atoll((*rows)[0][0]->c_str());
  stats_.retained_wal_bytes.store(retained, std::memory_order_relaxed);
  uint64_t limit = config_.metrics.retained_wal_warn_bytes;
  if (limit != 0 && retained > static_cast<int64_t>(limit) && now >= next_retained_warn_ms_) {
    next_retained_warn_ms_ = now + 60000;
    log::Warn("the replication slot retains more WAL than metrics.retained_wal_warn_bytes: "
              "walbus is behind or a sink is down, and the server's disk fills until it "
              "catches up (see `walbus slot status`)",
              {{"slot", config_.source.slot},
               {"retained_bytes", std::to_string(retained)},
               {"limit_bytes", std::to_string(limit)}});
  }
}

bool Pipeline::Paused() {
  if (!paused_) {
    for (const SinkSlot& s : sinks_) {
      if (s.window->in_flight() >= s.config->max_in_flight) {
        paused_ = true;
        return true;
      }
    }
    return false;
  }
  for (const SinkSlot& s : sinks_) {
    if (s.window->in_flight() > s.config->max_in_flight / 2) return true;
  }
  paused_ = false;
  return false;
}

Status Pipeline::CheckSinkFailures() {
  for (size_t i = 0; i < sinks_.size(); ++i) {
    SinkSlot& s = sinks_[i];
    if (!s.window->failed()) continue;
    std::optional<Status> f = s.window->TakeFailure();
    if (!f || f->ok()) continue;
    stats_.sink_errors[i].fetch_add(1);
    if (IsRetryable(*f)) s.needs_reopen = true;
    return ForSink(*f, s.sink->name());
  }
  return Status::Ok();
}

Status Pipeline::FlushSinks() {
  unflushed_ = 0;
  for (size_t i = 0; i < sinks_.size(); ++i) {
    Status st = sinks_[i].sink->Flush();
    if (!st.ok()) {
      stats_.sink_errors[i].fetch_add(1);
      if (IsRetryable(st)) sinks_[i].needs_reopen = true;
      return ForSink(st, sinks_[i].sink->name());
    }
  }
  return CheckSinkFailures();
}

Status Pipeline::MaybeSendStatus(bool force, bool reply) {
  if (!streaming_) {  // the initial snapshot: nothing may be confirmed yet
    tracker_->Advance();
    return Status::Ok();
  }
  int64_t now = MonotonicMs();
  if (!force && now < next_status_ms_) return Status::Ok();
  Lsn confirmed = tracker_->Advance();
  if (backfill_) backfill_->OnConfirmed(confirmed);
  stats_.confirmed_lsn.store(confirmed, std::memory_order_relaxed);
  stats_.confirmed_commit_time_us.store(tracker_->confirmed_commit_time_us(),
                                        std::memory_order_relaxed);
  next_status_ms_ = now + config_.source.status_interval_ms;
  MaybeLogLag();
  MaybeCheckRetainedWal();
  if (confirmed != last_sent_flush_) {
    log::Debug("confirming", {{"lsn", FormatLsn(confirmed)}});
  }
  last_sent_flush_ = confirmed;
  return session_->SendStatus(std::max(received_, confirmed), confirmed, confirmed, reply);
}

Status Pipeline::WaitForProgress(int timeout_ms, bool watch_socket) {
  // Waiting for WAL (not paused), acknowledgements need not wake the source
  // thread: the next batch or status update counts them. Waking for each
  // one cost a round of syscalls per batch with sinks that acknowledge
  // event by event (JetStream, MQTT). Failures and stop still wake it.
  wakeup_->Arm(/*acks=*/!watch_socket);
  // Re-check after arming: an acknowledgement that landed before Arm() would
  // not write to the eventfd.
  if (stop_->load()) return Status::Ok();
  if (!watch_socket && !Paused()) return Status::Ok();
  struct pollfd fds[2] = {{wakeup_->fd(), POLLIN, 0}, {session_->socket(), POLLIN, 0}};
  int n = poll(fds, watch_socket ? 2 : 1, timeout_ms);
  if (n < 0 && errno != EINTR) return Status::Unavailable("poll failed");
  if (n > 0 && (fds[0].revents & POLLIN)) wakeup_->Drain();
  if (watch_socket && n > 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
    return session_->ConsumeInput();
  }
  return Status::Ok();
}

Status Pipeline::PublishOne(SinkSlot& s, size_t index, const Built& b) {
  Event e;
  const TableInfo* t = b.table;
  e.op = OpName(b.op);
  if (t != nullptr) {
    std::string& topic = t->topics[index][static_cast<int>(b.op)];
    if (topic.empty()) s.topic.Render({db_, t->schema, t->table, e.op, {}}, &topic);
    e.topic = topic;
    e.table = t->qualified;
    if (s.state_topic && (b.op == Op::kInsert || b.op == Op::kUpdate || b.op == Op::kDelete ||
                          b.op == Op::kRead)) {
      s.scratch.clear();
      s.state_topic->Render({db_, t->schema, t->table, e.op, b.key_text}, &s.scratch);
      e.state_topic = s.scratch;
    }
  } else {
    // pg_logical_emit_message(): {db}._message.{prefix} (MQTT: '/' separators).
    s.scratch.clear();
    const char* sep = s.rules == TopicRules::kMqtt ? "/" : ".";
    AppendSanitized(&s.scratch, db_, s.rules);
    s.scratch += sep;
    s.scratch += "_message";
    s.scratch += sep;
    AppendSanitized(&s.scratch, b.message_prefix, s.rules);
    e.topic = s.scratch;
    e.table = "_message";
  }
  e.id = b.id;
  e.payload = b.payload;
  e.commit_lsn = b.commit_lsn;
  e.seq = b.seq;
  e.commit_time_us = b.commit_time_us == 0 ? 0 : b.commit_time_us + pgwire::kPgEpochUnixMicros;
  e.key = b.key_text;
  e.after = b.after;
  e.ticket = s.window->Issue();
  for (;;) {
    Status st = s.sink->Publish(e);
    if (st.ok()) break;
    if (st.code() != Code::kResourceExhausted) {
      stats_.sink_errors[index].fetch_add(1);
      if (IsRetryable(st)) s.needs_reopen = true;
      return ForSink(st, s.sink->name());
    }
    // The client library's own window is full: let it drain. Sleep until an
    // acknowledgement (or 1 ms, for a sink whose room comes from writes):
    // WaitForProgress would return at once unless the pipeline is paused,
    // and this loop would spin a core the broker needs.
    WALBUS_RETURN_IF_ERROR(FlushSinks());
    WALBUS_RETURN_IF_ERROR(MaybeSendStatus(false, false));
    WALBUS_RETURN_IF_ERROR(WaitForAcks(1));
    if (stop_->load()) return Status::Unavailable("stopping");
  }
  stats_.events[index * kOpCount + static_cast<int>(b.op)].fetch_add(1, std::memory_order_relaxed);
  if (unflushed_++ == 0) first_unflushed_us_ = MonotonicUs();
  return Status::Ok();
}

Status Pipeline::PublishBuilt(const Built& b) {
  if (log::Enabled(log::Level::kTrace)) {
    log::Trace("event", {{"id", b.id}, {"payload", b.payload}});
  }
  for (size_t i = 0; i < sinks_.size(); ++i) {
    if (b.table != nullptr && !b.table->included[i]) continue;
    WALBUS_RETURN_IF_ERROR(PublishOne(sinks_[i], i, b));
  }
  return Status::Ok();
}

Status Pipeline::Handle(const pgwire::XLogData& x) {
  pgwire::Message m;
  Status st = decoder_.Decode(x.data, &m);
  if (!st.ok()) return st.WithContext("at " + FormatLsn(x.wal_start));
  if (backfill_) {  // watermarks, and the keys a backfill window must know
    bool consumed = false;
    WALBUS_RETURN_IF_ERROR(backfill_->Observe(m, &consumed));
    if (consumed) return Status::Ok();
  }
  Built b;
  if (auto* begin = std::get_if<pgwire::Begin>(&m)) {
    if (builder_->in_transaction()) {
      return Status::Corruption("pgoutput Begin at " + FormatLsn(x.wal_start) +
                                " inside an open transaction");
    }
    builder_->OnBegin(*begin);
    tracker_->BeginTransaction();
    return Status::Ok();
  }
  if (auto* commit = std::get_if<pgwire::Commit>(&m)) {
    if (!builder_->in_transaction()) {
      return Status::Corruption("pgoutput Commit at " + FormatLsn(x.wal_start) +
                                " without a Begin");
    }
    if (commit->commit_lsn != builder_->commit_lsn()) {
      return Status::Corruption("pgoutput Commit LSN " + FormatLsn(commit->commit_lsn) +
                                " differs from its Begin's " + FormatLsn(builder_->commit_lsn()));
    }
    builder_->EndTransaction();
    tracker_->CommitTransaction(commit->end_lsn, commit->commit_time_us);
    stats_.transactions.fetch_add(1, std::memory_order_relaxed);
    return Status::Ok();
  }
  if (auto* rel = std::get_if<pgwire::Relation>(&m)) {
    Result<TableInfo*> t = builder_->OnRelation(*rel);
    if (!t.ok()) return t.status();
    PrepareTable(*t);
    log::Debug("relation", {{"table", (*t)->qualified}, {"columns", std::to_string((*t)->cols.size())}});
    return Status::Ok();
  }
  // A change walbus cannot turn into an envelope: where it is, so that the
  // fix (or skipping the transaction by hand) can name it.
  auto located = [&](Status s) {
    return s.WithContext("at " + FormatLsn(x.wal_start) + " in the transaction committing at " +
                         FormatLsn(builder_->commit_lsn()));
  };
  if (auto* ins = std::get_if<pgwire::Insert>(&m)) {
    if (Status s = builder_->BuildInsert(*ins, x.wal_start, &b); !s.ok()) return located(s);
    return Skipped(b) ? Status::Ok() : PublishBuilt(b);
  }
  if (auto* upd = std::get_if<pgwire::Update>(&m)) {
    if (Status s = builder_->BuildUpdate(*upd, x.wal_start, &b); !s.ok()) return located(s);
    return Skipped(b) ? Status::Ok() : PublishBuilt(b);
  }
  if (auto* del = std::get_if<pgwire::Delete>(&m)) {
    if (Status s = builder_->BuildDelete(*del, x.wal_start, &b); !s.ok()) return located(s);
    return Skipped(b) ? Status::Ok() : PublishBuilt(b);
  }
  if (auto* tr = std::get_if<pgwire::Truncate>(&m)) {
    for (uint32_t relid : tr->relations) {
      if (Status s = builder_->BuildTruncate(relid, x.wal_start, &b); !s.ok()) return located(s);
      if (!Skipped(b)) WALBUS_RETURN_IF_ERROR(PublishBuilt(b));
    }
    return Status::Ok();
  }
  if (auto* msg = std::get_if<pgwire::LogicalMessage>(&m)) {
    WALBUS_RETURN_IF_ERROR(builder_->BuildMessage(*msg, &b));
    WALBUS_RETURN_IF_ERROR(PublishBuilt(b));
    if (!msg->transactional || !builder_->in_transaction()) {
      // A message outside any transaction is its own unit of confirmation.
      tracker_->CommitTransaction(msg->lsn, 0);
    }
    return Status::Ok();
  }
  // Origin and Type carry nothing walbus publishes (types are resolved by OID).
  return Status::Ok();
}

Status Pipeline::Stream() {
  pgwire::XLogData x;
  pgwire::Keepalive k;
  for (;;) {
    if (stop_->load(std::memory_order_relaxed)) return Status::Ok();
    if (Paused()) {
      WALBUS_RETURN_IF_ERROR(FlushSinks());
      WALBUS_RETURN_IF_ERROR(MaybeSendStatus(false, false));
      int64_t left = std::max<int64_t>(1, next_status_ms_ - MonotonicMs());
      WALBUS_RETURN_IF_ERROR(WaitForProgress(static_cast<int>(std::min<int64_t>(left, 50)), false));
      continue;
    }
    Result<pgwire::ReplicationSession::Kind> kind = session_->Next(&x, &k);
    if (!kind.ok()) return kind.status();
    switch (*kind) {
      case pgwire::ReplicationSession::Kind::kNone: {
        // libpq's buffer is empty. First read whatever the socket already
        // holds (non-blocking).
        if (!consumed_) {
          WALBUS_RETURN_IF_ERROR(session_->ConsumeInput());
          consumed_ = true;
          break;
        }
        consumed_ = false;
        // The socket is empty too. With events pending, let more arrive for
        // the rest of the coalescing window without waking per message, so
        // one sink flush serves the burst. Only inside a transaction: the
        // walsender sends a transaction's messages back to back at its
        // commit, so once the Commit is read the burst is complete and
        // waiting out the window would only delay its subscribers.
        if (unflushed_ > 0 && builder_->in_transaction()) {
          int64_t left = first_unflushed_us_ + kCoalesceUs - MonotonicUs();
          if (left > 0) {
            struct timespec ts = {0, static_cast<long>(left * 1000)};
            nanosleep(&ts, nullptr);
            WALBUS_RETURN_IF_ERROR(session_->ConsumeInput());
            consumed_ = true;
            break;
          }
        }
        // The batch boundary.
        WALBUS_RETURN_IF_ERROR(FlushSinks());
        tracker_->Advance();
        WALBUS_RETURN_IF_ERROR(MaybeSendStatus(false, false));
        int64_t left = std::max<int64_t>(1, next_status_ms_ - MonotonicMs());
        WALBUS_RETURN_IF_ERROR(WaitForProgress(static_cast<int>(left), true));
        since_clock_check_ = 0;
        break;
      }
      case pgwire::ReplicationSession::Kind::kKeepalive:
        consumed_ = false;
        stats_.server_wal_end.store(k.wal_end, std::memory_order_relaxed);
        if (k.reply_requested) WALBUS_RETURN_IF_ERROR(FlushSinks());
        tracker_->OnKeepalive(k.wal_end);
        // Only for the metric: the status update's write position stays the
        // last XLogData, so the walsender keeps sending keepalives (it does
        // while our write position is behind what it sent) until we confirm.
        stats_.received_lsn.store(std::max(received_, k.wal_end), std::memory_order_relaxed);
        WALBUS_RETURN_IF_ERROR(MaybeSendStatus(k.reply_requested, false));
        break;
      case pgwire::ReplicationSession::Kind::kXLogData:
        consumed_ = false;
        received_ = std::max(received_, x.wal_start);
        stats_.received_lsn.store(received_, std::memory_order_relaxed);
        stats_.server_wal_end.store(x.wal_end, std::memory_order_relaxed);
        WALBUS_RETURN_IF_ERROR(Handle(x));
        if (++since_clock_check_ >= 64) {
          since_clock_check_ = 0;
          WALBUS_RETURN_IF_ERROR(CheckSinkFailures());
          WALBUS_RETURN_IF_ERROR(MaybeSendStatus(false, false));
        }
        break;
    }
  }
}

void Pipeline::Rewind() {
  if (backfill_) backfill_->OnRewind(tracker_->confirmed());
  session_.reset();
  streaming_ = false;
  paused_ = false;
  if (snapshot_) snapshot_->Rewind();
  for (SinkSlot& s : sinks_) s.window->Rewind();
  tracker_->Reset(tracker_->confirmed());
  if (builder_) {
    builder_->EndTransaction();
    builder_->Clear();
  }
}

void Pipeline::Drain() {
  if (!session_ || !streaming_) return;
  Status st = FlushSinks();
  int64_t until = MonotonicMs() + kDrainMs;
  while (st.ok() && MonotonicMs() < until) {
    tracker_->Advance();
    bool all = true;
    for (const SinkSlot& s : sinks_) all = all && s.window->in_flight() == 0;
    if (all) break;
    st = FlushSinks();
    if (st.ok()) st = WaitForAcks(20);
  }
  if (!st.ok()) log::Warn("stopping with unacknowledged events", {{"reason", st.message()}});
  Status sent = MaybeSendStatus(true, false);
  session_->Finish();
  log::Info("stopped", {{"confirmed", FormatLsn(tracker_->confirmed())},
                        {"status_update", sent.ok() ? "sent" : sent.message()}});
}

Status Pipeline::Run(const std::atomic<bool>* stop, Wakeup* wakeup) {
  stop_ = stop;
  wakeup_ = wakeup;
  std::vector<AckWindow*> windows;
  for (SinkSlot& s : sinks_) {
    s.window->set_wakeup(wakeup);
    windows.push_back(s.window.get());
  }
  tracker_ = std::make_unique<AckTracker>(windows);

  int backoff = 0;
  Lsn confirmed_at_failure = 0;
  int64_t last_standby_log = -1;
  while (!stop_->load()) {
    Status st = prepared_ ? Status::Ok() : Prepare();
    if (st.ok() && !sinks_.empty() && !sinks_[0].sink) {
      // First time the database name is known: build and open the sinks.
      Result<std::vector<std::unique_ptr<Sink>>> made = make_sinks_(db_);
      if (!made.ok()) return made.status();
      for (size_t i = 0; i < sinks_.size(); ++i) sinks_[i].sink = std::move((*made)[i]);
      st = OpenSinks(false);
      if (!st.ok()) return st;
      if (stop_->load()) break;
    }
    if (st.ok()) {
      prepared_ = true;
      st = StartStream();
      if (st.ok() && !streaming_) {  // stopped during the initial snapshot (progress saved)
        stats_.state.store(PipelineStats::kStopped);
        session_.reset();
        return Status::Ok();
      }
    }
    if (st.ok()) {
      st = Stream();
      if (st.ok()) {  // stop requested
        stats_.state.store(PipelineStats::kStopped);
        Drain();
        return Status::Ok();
      }
    }
    if (IsRetryable(st) && stop_->load()) {
      // A wait cut short by SIGTERM (e.g. for room in a sink): stop the way a
      // stop request does, with the acknowledgement drain, not as an outage.
      stats_.state.store(PipelineStats::kStopped);
      Drain();
      return Status::Ok();
    }
    if (st.code() == Code::kResourceExhausted) {
      // SPEC §5: another instance holds the slot; stand by.
      stats_.state.store(PipelineStats::kStandby);
      stats_.pg_down_since_ms.store(0);  // reachable: standing by is healthy
      session_.reset();
      int64_t now = MonotonicMs();
      if (last_standby_log < 0 || now - last_standby_log >= 60000) {
        log::Info("standing by: " + st.message(),
                  {{"retry_ms", std::to_string(config_.source.standby_retry_ms)}});
        last_standby_log = now;
      }
      SleepInterruptible(static_cast<int>(config_.source.standby_retry_ms));
      continue;
    }
    if (!IsRetryable(st)) {
      // Fatal: confirm what is safely delivered, then stop.
      if (session_) {
        tracker_->Advance();
        (void)MaybeSendStatus(true, false);
      }
      return st;
    }
    bool sink_failed = false;
    for (const SinkSlot& s : sinks_) sink_failed = sink_failed || s.needs_reopen;
    if (session_ && tracker_) {
      tracker_->Advance();
      (void)MaybeSendStatus(true, false);  // best effort: keep what is confirmed
    }
    Rewind();
    NoteError(st);
    stats_.state.store(PipelineStats::kRetrying);
    int64_t now_ms = MonotonicMs();
    for (size_t i = 0; i < sinks_.size(); ++i) {
      if (sinks_[i].needs_reopen && stats_.sink_down_since_ms[i].load() == 0) {
        stats_.sink_down_since_ms[i].store(now_ms);
      }
    }
    if (!sink_failed) {
      if (stats_.pg_down_since_ms.load() == 0) stats_.pg_down_since_ms.store(now_ms);
      stats_.pg_reconnects.fetch_add(1);
      prepared_ = false;  // the server may have restarted: re-check everything
      sql_.reset();
    }
    // The back-off starts over only when something was delivered since the
    // previous failure: an event that breaks the connection every time is
    // retried ever more slowly (up to 30 s), not in a hot loop.
    if (tracker_->confirmed() > confirmed_at_failure) backoff = 0;
    confirmed_at_failure = tracker_->confirmed();
    backoff = NextBackoff(backoff);
    log::Warn(std::string(sink_failed ? "sink failed" : "PostgreSQL unavailable") +
                  (tracker_->confirmed() != 0 ? ", resuming from the confirmed LSN after a pause"
                                              : ", retrying after a pause"),
              {{"reason", st.message()}, {"confirmed", FormatLsn(tracker_->confirmed())},
               {"retry_in_ms", std::to_string(backoff)}});
    if (!SleepInterruptible(backoff)) break;
    if (sink_failed) {
      for (SinkSlot& s : sinks_) {
        if (s.needs_reopen) s.sink->Close();
      }
      WALBUS_RETURN_IF_ERROR(OpenSinks(true));
    }
  }
  return Status::Ok();
}

}  // namespace walbus::bridge
