#include "bridge/snapshot_store.h"

#include "bridge/envelope_builder.h"
#include "bridge/walbus_schema.h"

namespace walbus::bridge {
namespace {

using pgwire::QuoteLiteral;

// 'WALB': the advisory-lock class of walbus snapshots.
constexpr const char* kLockClass = "1463897154";

std::string Schema() { return std::string(kWalbusSchema); }

// A statement on the progress tables failed: the privilege error names the fix.
Status StoreError(const Status& st, const std::string& state, PGconn* conn) {
  if (state == "42501") {
    std::string user = pgwire::QuoteIdent(PQuser(conn));
    return Status::FailedPrecondition(
        st.message() + "; walbus keeps the initial snapshot's progress in schema " + Schema() +
        ": GRANT USAGE, CREATE ON SCHEMA " + Schema() + " TO " + user +
        " and GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + Schema() +
        " TO " + user);
  }
  return st.WithContext("snapshot progress");
}

Status Run(PGconn* conn, const std::string& sql) {
  std::string state;
  Status st = pgwire::Exec(conn, sql, &state);
  return st.ok() ? st : StoreError(st, state, conn);
}

Result<pgwire::Rows> Rows(PGconn* conn, const std::string& sql) {
  std::string state;
  Result<pgwire::Rows> r = pgwire::Query(conn, sql, &state);
  if (!r.ok()) return StoreError(r.status(), state, conn);
  return r;
}

}  // namespace

Result<bool> SnapshotStore::SchemaExists(PGconn* conn) {
  std::string state;
  Result<bool> r = WalbusTablesExist(conn, {"snapshot_progress", "snapshots"}, &state);
  if (!r.ok()) return StoreError(r.status(), state, conn);
  return r;
}

Status SnapshotStore::EnsureSchema(PGconn* conn) {
  Result<bool> exists = SchemaExists(conn);
  if (!exists.ok()) return exists.status();
  if (*exists) return Status::Ok();
  WALBUS_RETURN_IF_ERROR(EnsureWalbusSchema(conn, "the initial snapshot's progress"));
  std::string state;
  Status st = pgwire::Exec(
      conn,
      "CREATE TABLE IF NOT EXISTS " + Schema() + ".snapshots ("
      " slot text PRIMARY KEY,"
      " consistent_point pg_lsn,"
      " next_row bigint NOT NULL DEFAULT 0,"
      " tables_total int,"
      " done boolean NOT NULL DEFAULT false,"
      " runs int NOT NULL DEFAULT 1,"
      " started_at timestamptz NOT NULL DEFAULT now(),"
      " finished_at timestamptz);"
      "CREATE TABLE IF NOT EXISTS " + Schema() + ".snapshot_progress ("
      " slot text NOT NULL REFERENCES " + Schema() + ".snapshots ON DELETE CASCADE,"
      " position int NOT NULL,"
      " schema_name text NOT NULL,"
      " table_name text NOT NULL,"
      " consistent_point pg_lsn,"
      " started boolean NOT NULL DEFAULT false,"
      " first_row bigint,"
      " rows_done bigint NOT NULL DEFAULT 0,"
      " last_key text[],"
      " done boolean NOT NULL DEFAULT false,"
      " starts int NOT NULL DEFAULT 0,"
      " resumes int NOT NULL DEFAULT 0,"
      " resumed_at_rows bigint,"
      " read_snapshot text,"
      " read_snapshot_lsn pg_lsn,"
      " updated_at timestamptz NOT NULL DEFAULT now(),"
      " PRIMARY KEY (slot, schema_name, table_name))",
      &state);
  // 42P07/23505: a twin created them at the same moment.
  if (!st.ok() && state != "42P07" && state != "23505") return StoreError(st, state, conn);
  return Status::Ok();
}

Result<std::optional<SnapshotRecord>> SnapshotStore::Load(PGconn* conn) {
  Result<bool> exists = SchemaExists(conn);
  if (!exists.ok()) return exists.status();
  if (!*exists) return std::optional<SnapshotRecord>();
  const std::string slot = QuoteLiteral(conn, slot_);
  Result<pgwire::Rows> head =
      Rows(conn, "SELECT coalesce(consistent_point::text, ''), next_row, tables_total IS NOT "
                 "NULL, done, runs FROM " + Schema() + ".snapshots WHERE slot = " + slot);
  if (!head.ok()) return head.status();
  if (head->empty()) return std::optional<SnapshotRecord>();
  SnapshotRecord rec;
  const pgwire::Row& h = (*head)[0];
  std::string cp = h[0].value_or("");
  if (!cp.empty() && !ParseLsn(cp, &rec.consistent_point)) {
    return Status::Corruption("snapshot progress: bad consistent_point '" + cp + "'");
  }
  rec.next_row = CountValue(h[1]);
  rec.planned = h[2].value_or("f") == "t";
  rec.done = h[3].value_or("f") == "t";
  rec.runs = static_cast<int>(CountValue(h[4]));

  Result<pgwire::Rows> rows = Rows(
      conn, "SELECT position, schema_name, table_name, started, coalesce(first_row, 0), "
            "rows_done, last_key::text, done, starts, resumes, resumed_at_rows, "
            "coalesce(read_snapshot, ''), coalesce(read_snapshot_lsn::text, '') FROM " +
                Schema() + ".snapshot_progress WHERE slot = " + slot + " ORDER BY position");
  if (!rows.ok()) return rows.status();
  for (const pgwire::Row& r : *rows) {
    SnapshotTableProgress t;
    t.position = static_cast<int>(CountValue(r[0]));
    t.schema = r[1].value_or("");
    t.name = r[2].value_or("");
    t.started = r[3].value_or("f") == "t";
    t.first_row = CountValue(r[4]);
    t.rows_done = CountValue(r[5]);
    Result<std::optional<pgwire::KeyValues>> key =
        ParseKeyArray(r[6], "snapshot progress of " + t.Qualified());
    if (!key.ok()) return key.status();
    t.last_key = std::move(key).value();
    t.done = r[7].value_or("f") == "t";
    t.starts = static_cast<int>(CountValue(r[8]));
    t.resumes = static_cast<int>(CountValue(r[9]));
    if (r[10]) t.resumed_at_rows = CountValue(r[10]);
    t.read_snapshot = r[11].value_or("");
    std::string lsn = r[12].value_or("");
    if (!lsn.empty() && !ParseLsn(lsn, &t.read_snapshot_lsn)) {
      return Status::Corruption("snapshot progress: bad read_snapshot_lsn '" + lsn + "'");
    }
    rec.tables.push_back(std::move(t));
  }
  return std::optional<SnapshotRecord>(std::move(rec));
}

Status SnapshotStore::Begin(PGconn* conn) {
  const std::string slot = QuoteLiteral(conn, slot_);
  return Run(conn, "BEGIN; DELETE FROM " + Schema() + ".snapshots WHERE slot = " + slot +
                       "; INSERT INTO " + Schema() + ".snapshots (slot) VALUES (" + slot +
                       "); COMMIT");
}

Status SnapshotStore::SetConsistentPoint(PGconn* conn, Lsn point) {
  return Run(conn, "UPDATE " + Schema() + ".snapshots SET consistent_point = '" +
                       FormatLsn(point) + "' WHERE slot = " + QuoteLiteral(conn, slot_));
}

Status SnapshotStore::SetPlan(PGconn* conn, const std::vector<SnapshotTableProgress>& tables) {
  const std::string slot = QuoteLiteral(conn, slot_);
  std::string sql = "BEGIN; DELETE FROM " + Schema() + ".snapshot_progress WHERE slot = " + slot +
                    "; ";
  if (!tables.empty()) {
    sql += "INSERT INTO " + Schema() +
           ".snapshot_progress (slot, position, schema_name, table_name, consistent_point) "
           "SELECT " + slot + ", position, schema_name, table_name, s.consistent_point FROM " +
           Schema() + ".snapshots s, (VALUES ";
    for (size_t i = 0; i < tables.size(); ++i) {
      if (i > 0) sql += ", ";
      sql += '(';
      sql += std::to_string(tables[i].position);
      sql += ", ";
      sql += QuoteLiteral(conn, tables[i].schema);
      sql += ", ";
      sql += QuoteLiteral(conn, tables[i].name);
      sql += ')';
    }
    sql += ") AS v(position, schema_name, table_name) WHERE s.slot = " + slot + "; ";
  }
  sql += "UPDATE " + Schema() + ".snapshots SET tables_total = " +
         std::to_string(tables.size()) + " WHERE slot = " + slot + "; COMMIT";
  return Run(conn, sql);
}

Status SnapshotStore::CountRun(PGconn* conn) {
  return Run(conn, "UPDATE " + Schema() + ".snapshots SET runs = runs + 1 WHERE slot = " +
                       QuoteLiteral(conn, slot_));
}

Status SnapshotStore::SetNextRow(PGconn* conn, uint64_t next_row) {
  return Run(conn, "UPDATE " + Schema() + ".snapshots SET next_row = " +
                       std::to_string(next_row) + " WHERE slot = " + QuoteLiteral(conn, slot_));
}

Status SnapshotStore::SaveTable(PGconn* conn, const SnapshotTableProgress& t) {
  auto b = [](bool v) { return v ? std::string("true") : std::string("false"); };
  std::string sql =
      "UPDATE " + Schema() + ".snapshot_progress SET started = " + b(t.started) +
      ", first_row = " + std::to_string(t.first_row) +
      ", rows_done = " + std::to_string(t.rows_done) + ", last_key = " +
      (t.last_key ? KeyArraySql(conn, *t.last_key) : std::string("NULL")) +
      ", done = " + b(t.done) +
      ", starts = " + std::to_string(t.starts) + ", resumes = " + std::to_string(t.resumes) +
      ", resumed_at_rows = " +
      (t.resumed_at_rows ? std::to_string(*t.resumed_at_rows) : std::string("NULL")) +
      ", read_snapshot = " +
      (t.read_snapshot.empty() ? std::string("NULL") : QuoteLiteral(conn, t.read_snapshot)) +
      ", read_snapshot_lsn = " +
      (t.read_snapshot.empty() ? std::string("NULL") : "'" + FormatLsn(t.read_snapshot_lsn) + "'") +
      ", updated_at = now() WHERE slot = " + QuoteLiteral(conn, slot_) +
      " AND schema_name = " + QuoteLiteral(conn, t.schema) +
      " AND table_name = " + QuoteLiteral(conn, t.name);
  return Run(conn, sql);
}

Status SnapshotStore::Finish(PGconn* conn) {
  return Run(conn, "UPDATE " + Schema() + ".snapshots SET done = true, finished_at = now() "
                   "WHERE slot = " + QuoteLiteral(conn, slot_));
}

Status SnapshotStore::Forget(PGconn* conn) {
  Result<bool> exists = SchemaExists(conn);
  if (!exists.ok()) return exists.status();
  if (!*exists) return Status::Ok();
  return Run(conn, "DELETE FROM " + Schema() + ".snapshots WHERE slot = " +
                       QuoteLiteral(conn, slot_));
}

Result<bool> SnapshotStore::TryLock(PGconn* conn) {
  // Taken at most once per session (holds would stack), so one unlock frees it.
  const std::string key = std::string(kLockClass) + ", hashtext(" + QuoteLiteral(conn, slot_) + ")";
  Result<pgwire::Rows> r = Rows(
      conn, "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND "
            "pid = pg_backend_pid() AND granted AND objsubid = 2 AND classid = " +
                std::string(kLockClass) + "::oid AND objid = hashtext(" +
                QuoteLiteral(conn, slot_) + ")::oid) THEN true ELSE pg_try_advisory_lock(" + key +
                ") END");
  if (!r.ok()) return r.status();
  return !r->empty() && (*r)[0][0].value_or("f") == "t";
}

void SnapshotStore::Unlock(PGconn* conn) {
  (void)pgwire::Query(conn, "SELECT pg_advisory_unlock(" + std::string(kLockClass) +
                                ", hashtext(" + QuoteLiteral(conn, slot_) + "))");
}

Result<std::vector<SnapshotStore::ReadSnapshot>> SnapshotStore::ReadSnapshotsAfter(
    PGconn* conn, Lsn confirmed) {
  std::vector<ReadSnapshot> out;
  Result<bool> exists = SchemaExists(conn);
  if (!exists.ok()) return exists.status();
  if (!*exists) return out;
  Result<pgwire::Rows> rows = Rows(
      conn, "SELECT schema_name || '.' || table_name, read_snapshot, read_snapshot_lsn::text "
            "FROM " + Schema() + ".snapshot_progress WHERE slot = " + QuoteLiteral(conn, slot_) +
            " AND read_snapshot IS NOT NULL AND read_snapshot_lsn > '" + FormatLsn(confirmed) +
            "'");
  if (!rows.ok()) return rows.status();
  for (const pgwire::Row& r : *rows) {
    ReadSnapshot s;
    s.table = r[0].value_or("");
    s.snapshot = r[1].value_or("");
    if (!ParseLsn(r[2].value_or(""), &s.lsn)) {
      return Status::Corruption("snapshot progress: bad read_snapshot_lsn for " + s.table);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace walbus::bridge
