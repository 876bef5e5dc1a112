#include "bridge/backfill_store.h"

#include <algorithm>
#include <cstdlib>

#include "bridge/envelope_builder.h"
#include "bridge/walbus_schema.h"

namespace walbus::bridge {
namespace {

using pgwire::QuoteIdent;
using pgwire::QuoteLiteral;

// The table; its schema is EnsureWalbusSchema's. client_min_messages: the
// "already exists, skipping" notices are no news.
constexpr const char* kCreate =
    "SET client_min_messages = warning; "
    "CREATE TABLE IF NOT EXISTS walbus.backfill ("
    " id bigserial PRIMARY KEY,"
    " slot text NOT NULL,"
    " schema_name text NOT NULL,"
    " table_name text NOT NULL,"
    " state text NOT NULL DEFAULT 'pending'"
    "  CHECK (state IN ('pending', 'running', 'done', 'failed')),"
    " chunk_size integer NOT NULL DEFAULT 1024 CHECK (chunk_size > 0),"
    " last_key text[],"
    " rows bigint NOT NULL DEFAULT 0,"
    " skipped bigint NOT NULL DEFAULT 0,"
    " chunks bigint NOT NULL DEFAULT 0,"
    " requested_at timestamptz NOT NULL DEFAULT now(),"
    " started_at timestamptz,"
    " updated_at timestamptz,"
    " finished_at timestamptz,"
    " error text); "
    "CREATE UNIQUE INDEX IF NOT EXISTS backfill_unfinished ON walbus.backfill "
    "(slot, schema_name, table_name) WHERE state IN ('pending', 'running')";
static_assert(kWalbusSchema == "walbus", "kCreate names the schema");

}  // namespace

Status EnsureBackfillTable(PGconn* conn) {
  WALBUS_RETURN_IF_ERROR(EnsureWalbusSchema(conn, "backfill requests"));
  std::string state;
  Status st = pgwire::Exec(conn, kCreate, &state);
  // A concurrent creator makes IF NOT EXISTS race on the catalog's unique
  // indexes: the second attempt sees the finished objects.
  if (!st.ok() && (state == "23505" || state == "42P07")) {
    st = pgwire::Exec(conn, kCreate, &state);
  }
  if (!st.ok() && state == "42501") {
    const std::string role = QuoteIdent(PQuser(conn));
    return Status::FailedPrecondition(
        "cannot create " + std::string(kWalbusSchema) + ".backfill: " + st.message() +
        "; GRANT USAGE, CREATE ON SCHEMA " + std::string(kWalbusSchema) + " TO " + role);
  }
  if (!st.ok()) return st.WithContext("creating " + std::string(kWalbusSchema) + ".backfill");
  return Status::Ok();
}

Status ParseTableName(PGconn* conn, const std::string& text, std::string* schema,
                      std::string* table) {
  std::string state;
  Result<pgwire::Rows> r = pgwire::Query(
      conn, "SELECT x FROM unnest(parse_ident(" + QuoteLiteral(conn, text) +
                ")) WITH ORDINALITY AS u(x, n) ORDER BY n",
      &state);
  if (!r.ok()) {
    if (state.empty() || r.status().code() == Code::kUnavailable) return r.status();
    return Status::InvalidArgument("\"" + text + "\" is not a table name: " + r.status().message());
  }
  if (r->size() != 2) {
    return Status::InvalidArgument("\"" + text +
                                   "\": name the table as schema.table, e.g. public.orders");
  }
  *schema = (*r)[0][0].value_or("");
  *table = (*r)[1][0].value_or("");
  return Status::Ok();
}

Result<pgwire::TableShape> CheckBackfillable(PGconn* conn, const std::string& publication,
                                             const std::string& schema,
                                             const std::string& table) {
  if (schema == kWalbusSchema) {
    return Status::InvalidArgument("table " + schema + "." + table + " belongs to walbus itself");
  }
  Result<pgwire::Rows> pub = pgwire::Query(
      conn, "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = " +
                QuoteLiteral(conn, publication) + " AND schemaname = " +
                QuoteLiteral(conn, schema) + " AND tablename = " + QuoteLiteral(conn, table) +
                "), EXISTS (SELECT 1 FROM pg_publication WHERE pubname = " +
                QuoteLiteral(conn, publication) +
                "), EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = "
                "c.relnamespace WHERE n.nspname = " + QuoteLiteral(conn, schema) +
                " AND c.relname = " + QuoteLiteral(conn, table) + ")");
  if (!pub.ok()) return pub.status();
  bool in_pub = (*pub)[0][0].value_or("f") == "t";
  bool pub_exists = (*pub)[0][1].value_or("f") == "t";
  if ((*pub)[0][2].value_or("f") != "t") {
    return Status::InvalidArgument("table " + schema + "." + table + " does not exist");
  }

  Result<pgwire::TableShape> shape = pgwire::DescribeTable(conn, schema, table, publication);
  if (!shape.ok()) return shape.status();
  const std::string name = shape->Qualified();
  const std::string quoted = shape->QuotedName();
  if (shape->relkind == 'p') {
    return Status::InvalidArgument(
        "table " + name + " is partitioned: backfill its partitions instead (walbus backfill -c "
        "FILE " + schema + ".<partition> ...)");
  }
  if (shape->relkind != 'r') {
    return Status::InvalidArgument(name + " is not a table (relkind '" +
                                   std::string(1, shape->relkind) + "')");
  }
  if (!pub_exists) {
    return Status::InvalidArgument("publication \"" + publication +
                                   "\" does not exist; start `walbus run` once (it creates it) "
                                   "or CREATE PUBLICATION " + QuoteIdent(publication) +
                                   " FOR TABLE " + quoted);
  }
  if (!in_pub) {
    return Status::InvalidArgument(
        "table " + name + " is not in publication \"" + publication +
        "\": its changes are not streamed, so walbus cannot keep a backfill of it consistent; "
        "add it with ALTER PUBLICATION " + QuoteIdent(publication) + " ADD TABLE " + quoted);
  }
  if (!shape->has_primary_key()) {
    Result<pgwire::Rows> pk = pgwire::Query(
        conn, "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indisprimary AND indrelid = " +
                  std::to_string(shape->oid) + ")");
    if (!pk.ok()) return pk.status();
    if ((*pk)[0][0].value_or("f") == "t") {
      return Status::InvalidArgument(
          "table " + name + ": the column list of publication \"" + publication +
          "\" leaves out part of its primary key, which walbus backfill needs in every row; "
          "add the key columns to the publication's column list");
    }
    return Status::InvalidArgument(
        "table " + name + " has no primary key; walbus backfill reads a table in primary-key "
        "order, chunk by chunk: add one with ALTER TABLE " + quoted + " ADD PRIMARY KEY (...)");
  }
  if (shape->replica_identity == 'n') {
    return Status::InvalidArgument(
        "table " + name + " has REPLICA IDENTITY NOTHING, so the stream does not name the rows "
        "that updates and deletes change; ALTER TABLE " + quoted + " REPLICA IDENTITY DEFAULT");
  }
  if (shape->replica_identity == 'i') {
    // Only an identity index on exactly the primary key tells the stream the
    // key of a deleted row.
    std::vector<size_t> ident;
    for (size_t i = 0; i < shape->columns.size(); ++i) {
      if (shape->columns[i].identity) ident.push_back(i);
    }
    std::vector<size_t> pk = shape->primary_key;
    std::sort(pk.begin(), pk.end());
    if (ident != pk) {
      return Status::InvalidArgument(
          "table " + name + " has REPLICA IDENTITY USING INDEX on other columns than its primary "
          "key, so deletes do not carry the primary key; ALTER TABLE " + quoted +
          " REPLICA IDENTITY DEFAULT (or FULL)");
    }
  }
  return shape;
}

Result<int64_t> RegisterBackfill(PGconn* conn, const std::string& slot, const std::string& schema,
                                 const std::string& table, uint32_t chunk_size, bool* existed) {
  const std::string where = " WHERE slot = " + QuoteLiteral(conn, slot) +
                            " AND schema_name = " + QuoteLiteral(conn, schema) +
                            " AND table_name = " + QuoteLiteral(conn, table) +
                            " AND state IN ('pending', 'running')";
  Result<pgwire::Rows> ins = pgwire::Query(
      conn, "INSERT INTO walbus.backfill (slot, schema_name, table_name, chunk_size) VALUES (" +
                QuoteLiteral(conn, slot) + ", " + QuoteLiteral(conn, schema) + ", " +
                QuoteLiteral(conn, table) + ", " + std::to_string(chunk_size) +
                ") ON CONFLICT (slot, schema_name, table_name) WHERE state IN ('pending', "
                "'running') DO NOTHING RETURNING id");
  if (!ins.ok()) return ins.status();
  *existed = ins->empty();
  if (!ins->empty()) return static_cast<int64_t>(CountValue((*ins)[0][0]));
  Result<pgwire::Rows> old = pgwire::Query(conn, "SELECT id FROM walbus.backfill" + where);
  if (!old.ok()) return old.status();
  if (old->empty()) return Status::Unavailable("backfill request vanished; try again");
  return static_cast<int64_t>(CountValue((*old)[0][0]));
}

Result<BackfillRequest> LoadBackfill(PGconn* conn, int64_t id) {
  const std::string sid = std::to_string(id);
  Result<pgwire::Rows> r = pgwire::Query(
      conn,
      "SELECT id, schema_name, table_name, state, chunk_size, last_key::text, rows, "
      "skipped, chunks, extract(epoch FROM coalesce(finished_at, now()) - coalesce(started_at, "
      "requested_at))::float8, "
      "coalesce(error, '') FROM walbus.backfill WHERE id = " + sid);
  if (!r.ok()) return r.status();
  if (r->empty()) return Status::FailedPrecondition("backfill request " + sid + " does not exist");
  const pgwire::Row& row = (*r)[0];
  BackfillRequest q;
  q.id = id;
  q.schema = row[1].value_or("");
  q.table = row[2].value_or("");
  q.state = row[3].value_or("");
  q.chunk_size = static_cast<uint32_t>(std::max<uint64_t>(1, CountValue(row[4])));
  q.rows = CountValue(row[6]);
  q.skipped = CountValue(row[7]);
  q.chunks = CountValue(row[8]);
  q.seconds = row[9] ? std::strtod(row[9]->c_str(), nullptr) : 0;
  q.error = row[10].value_or("");
  Result<std::optional<pgwire::KeyValues>> key =
      ParseKeyArray(row[5], "backfill request " + sid);
  if (!key.ok()) return key.status();
  q.last_key = std::move(key).value();
  return q;
}

Result<std::optional<BackfillRequest>> NextBackfill(PGconn* conn, const std::string& slot) {
  Result<pgwire::Rows> r = pgwire::Query(
      conn, "SELECT id FROM walbus.backfill WHERE slot = " + QuoteLiteral(conn, slot) +
                " AND state IN ('pending', 'running') ORDER BY id LIMIT 1");
  if (!r.ok()) return r.status();
  if (r->empty()) return std::optional<BackfillRequest>();
  Result<BackfillRequest> q = LoadBackfill(conn, static_cast<int64_t>(CountValue((*r)[0][0])));
  if (!q.ok()) return q.status();
  return std::optional<BackfillRequest>(std::move(q).value());
}

Status MarkBackfillRunning(PGconn* conn, int64_t id) {
  return pgwire::Exec(conn,
                      "UPDATE walbus.backfill SET state = 'running', started_at = "
                      "coalesce(started_at, now()), updated_at = now() WHERE id = " +
                          std::to_string(id) + " AND state = 'pending'");
}

Status SaveBackfillChunk(PGconn* conn, int64_t id, uint64_t chunk_no,
                         const std::optional<pgwire::KeyValues>& last_key, uint64_t rows,
                         uint64_t skipped, bool done) {
  // Conditional on the chunk count, so a retried UPDATE whose first attempt
  // committed (connection lost at COMMIT) does not count the chunk twice.
  return pgwire::Exec(
      conn, "UPDATE walbus.backfill SET last_key = " +
                (last_key ? KeyArraySql(conn, *last_key) : std::string("last_key")) +
                ", rows = rows + " + std::to_string(rows) + ", skipped = skipped + " +
                std::to_string(skipped) + ", chunks = " + std::to_string(chunk_no) +
                ", updated_at = now()" +
                (done ? ", state = 'done', finished_at = now()" : "") + " WHERE id = " +
                std::to_string(id) + " AND chunks = " + std::to_string(chunk_no - 1) +
                " AND state = 'running'");
}

Status FailBackfill(PGconn* conn, int64_t id, const std::string& error) {
  return pgwire::Exec(conn, "UPDATE walbus.backfill SET state = 'failed', error = " +
                                QuoteLiteral(conn, error) +
                                ", finished_at = now(), updated_at = now() WHERE id = " +
                                std::to_string(id) + " AND state IN ('pending', 'running')");
}

}  // namespace walbus::bridge
