#include "pgwire/table_reader.h"

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace walbus::pgwire {
namespace {

bool IsOctal(char c) { return c >= '0' && c <= '7'; }
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// An SQL error from a catalog or COPY statement, with the fix for the one a
// user can cause (no USAGE on the schema or no SELECT on the table).
Status SqlError(PGconn* conn, const Status& st, const std::string& state,
                const std::string& what, const TableShape* table = nullptr) {
  if (state == "42501") {
    std::string user = QuoteIdent(PQuser(conn));
    std::string fix = table != nullptr
                          ? "GRANT USAGE ON SCHEMA " + QuoteIdent(table->schema) + " TO " + user +
                                "; GRANT SELECT ON " + table->QuotedName() + " TO " + user
                          : "GRANT the walbus user USAGE on the table's schema and SELECT on it";
    return Status::FailedPrecondition(what + ": " + st.message() + "; " + fix +
                                      " (or take the table out of the publication)");
  }
  return st.WithContext(what);
}

// A catalog number in text form, all of it; false for NULL or anything else.
template <typename T>
bool ParseNumber(const std::optional<std::string>& text, T* out) {
  if (!text || text->empty()) return false;
  const char* end = text->data() + text->size();
  auto [ptr, ec] = std::from_chars(text->data(), end, *out);
  return ec == std::errc() && ptr == end;
}

Status BadCatalogValue(const std::string& what, const char* column,
                       const std::optional<std::string>& text) {
  return Status::Corruption(what + ": " + column + " is '" + text.value_or("NULL") +
                            "', not a number");
}

}  // namespace

std::string TableShape::QuotedName() const { return QuoteIdent(schema) + "." + QuoteIdent(name); }

std::string EstimatedRowsSql(std::string_view rel) {
  const std::string c(rel);
  return "(CASE WHEN " + c + ".relkind = 'p' THEN (SELECT coalesce(sum(greatest(l.reltuples, 0)), "
         "-1) FROM pg_partition_tree(" + c + ".oid) p JOIN pg_class l ON l.oid = p.relid WHERE "
         "p.isleaf) ELSE " + c + ".reltuples END)::float8";
}

Result<TableShape> DescribeTable(PGconn* conn, const std::string& schema, const std::string& name,
                                 const std::string& publication) {
  TableShape t;
  t.schema = schema;
  t.name = name;
  const std::string what = "describing table " + t.Qualified();
  std::string state;
  // For a partitioned root the planner's estimate is the sum over its leaves.
  Result<Rows> rel = Query(
      conn,
      "SELECT c.oid, c.relkind, c.relreplident, " + EstimatedRowsSql("c") +
          " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = " +
          QuoteLiteral(conn, schema) + " AND c.relname = " + QuoteLiteral(conn, name),
      &state);
  if (!rel.ok()) return SqlError(conn, rel.status(), state, what, &t);
  if (rel->empty()) return Status::FailedPrecondition("table " + t.Qualified() + " does not exist");
  const Row& r = (*rel)[0];
  if (!ParseNumber(r[0], &t.oid)) return BadCatalogValue(what, "oid", r[0]);
  t.relkind = r[1].value_or("r").empty() ? 'r' : (*r[1])[0];
  t.replica_identity = r[2].value_or("d").empty() ? 'd' : (*r[2])[0];
  t.estimated_rows = std::strtod(r[3].value_or("-1").c_str(), nullptr);
  const std::string oid = std::to_string(t.oid);

  // The publication's row filter and column list (PostgreSQL 15+).
  const bool listed = !publication.empty() && PQserverVersion(conn) >= 150000;
  std::string published;  // the table's row of pg_publication_tables, if listed
  if (listed) {
    published = "SELECT attnames, rowfilter FROM pg_publication_tables WHERE pubname = " +
                QuoteLiteral(conn, publication) + " AND schemaname = " +
                QuoteLiteral(conn, schema) + " AND tablename = " + QuoteLiteral(conn, name);
    Result<Rows> pub = Query(conn, "SELECT rowfilter FROM (" + published + ") p", &state);
    if (!pub.ok()) return SqlError(conn, pub.status(), state, what, &t);
    if (!pub->empty()) t.row_filter = (*pub)[0][0].value_or("");
  }

  // Columns in attnum order, as logicalrep_write_attrs writes them: neither
  // dropped nor generated. A column list limits them (it is checked to hold
  // the replica identity when the publication publishes updates/deletes).
  Result<Rows> cols = Query(
      conn,
      "SELECT a.attname, a.atttypid::int8, a.atttypmod, format_type(a.atttypid, a.atttypmod), "
      "(a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = "
      "a.attrelid AND i.indisprimary), '{}')))::int, "
      "(a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = "
      "a.attrelid AND i.indisreplident), '{}')))::int "
      "FROM pg_attribute a " +
          (listed ? "LEFT JOIN (" + published + ") p ON true " : std::string()) +
          "WHERE a.attrelid = " + oid +
          " AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' " +
          (listed ? "AND (p.attnames IS NULL OR a.attname = ANY(p.attnames)) " : "") +
          "ORDER BY a.attnum",
      &state);
  if (!cols.ok()) return SqlError(conn, cols.status(), state, what, &t);
  for (const Row& c : *cols) {
    TableColumn tc;
    tc.name = c[0].value_or("");
    if (!ParseNumber(c[1], &tc.type_oid)) return BadCatalogValue(what, "atttypid", c[1]);
    if (!ParseNumber(c[2], &tc.type_mod)) return BadCatalogValue(what, "atttypmod", c[2]);
    tc.type_sql = c[3].value_or("text");
    bool in_pk = c[4].value_or("0") == "1";
    bool in_ident = c[5].value_or("0") == "1";
    switch (t.replica_identity) {
      case 'f': tc.identity = true; break;
      case 'i': tc.identity = in_ident; break;
      case 'n': tc.identity = false; break;
      default: tc.identity = in_pk; break;
    }
    t.columns.push_back(std::move(tc));
  }

  // The primary key in key order; unusable (treated as none) when a column
  // list leaves part of it out, since rows would not carry the whole key.
  Result<Rows> pk = Query(conn,
                          "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                          "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = " + oid +
                              " AND i.indisprimary ORDER BY array_position(i.indkey::int2[], "
                              "a.attnum)",
                          &state);
  if (!pk.ok()) return SqlError(conn, pk.status(), state, what, &t);
  for (const Row& p : *pk) {
    std::string key = p[0].value_or("");
    size_t found = t.columns.size();
    for (size_t i = 0; i < t.columns.size(); ++i) {
      if (t.columns[i].name == key) found = i;
    }
    if (found == t.columns.size()) {
      t.primary_key.clear();
      break;
    }
    t.primary_key.push_back(found);
  }
  return t;
}

Result<std::vector<TableShape>> PublishedTables(PGconn* conn, const std::string& publication) {
  std::string state;
  Result<Rows> pub = Query(
      conn, "SELECT 1 FROM pg_publication WHERE pubname = " + QuoteLiteral(conn, publication),
      &state);
  if (!pub.ok()) return SqlError(conn, pub.status(), state, "reading publication " + publication);
  if (pub->empty()) {
    return Status::FailedPrecondition("publication \"" + publication + "\" does not exist");
  }
  Result<Rows> names = Query(conn,
                             "SELECT schemaname, tablename FROM pg_publication_tables WHERE "
                             "pubname = " + QuoteLiteral(conn, publication) +
                                 " ORDER BY schemaname, tablename",
                             &state);
  if (!names.ok()) return SqlError(conn, names.status(), state, "reading publication " + publication);
  std::vector<TableShape> out;
  out.reserve(names->size());
  for (const Row& r : *names) {
    Result<TableShape> t = DescribeTable(conn, r[0].value_or(""), r[1].value_or(""), publication);
    if (!t.ok()) return t.status();
    out.push_back(std::move(t).value());
  }
  return out;
}

Result<std::string> RangeQuery(PGconn* conn, const TableShape& t, const ReadRange& range) {
  bool keyed = range.after || range.through || range.limit != 0;
  if (keyed && !t.has_primary_key()) {
    return Status::InvalidArgument("table " + t.Qualified() +
                                   " has no primary key: it can only be read whole");
  }
  std::string cols;
  for (const TableColumn& c : t.columns) {
    if (!cols.empty()) cols += ", ";
    cols += QuoteIdent(c.name);
  }
  if (cols.empty()) cols = "NULL";  // cannot happen for a published table with columns
  std::string sql = "SELECT " + cols + " FROM " + (t.relkind == 'r' ? "ONLY " : "") +
                    t.QuotedName();
  std::vector<std::string> where;
  if (!t.row_filter.empty()) where.push_back("(" + t.row_filter + ")");
  std::string key_cols;
  for (size_t k : t.primary_key) {
    if (!key_cols.empty()) key_cols += ", ";
    key_cols += QuoteIdent(t.columns[k].name);
  }
  auto bound = [&](const KeyValues& v, const char* op) -> Result<std::string> {
    if (v.size() != t.primary_key.size()) {
      return Status::InvalidArgument("a key of " + t.Qualified() + " needs " +
                                     std::to_string(t.primary_key.size()) + " values, got " +
                                     std::to_string(v.size()));
    }
    std::string lit;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!lit.empty()) lit += ", ";
      lit += QuoteLiteral(conn, v[i]) + "::" + t.columns[t.primary_key[i]].type_sql;
    }
    return "(" + key_cols + ") " + op + " (" + lit + ")";
  };
  if (range.after) {
    Result<std::string> b = bound(*range.after, ">");
    if (!b.ok()) return b.status();
    where.push_back(*b);
  }
  if (range.through) {
    Result<std::string> b = bound(*range.through, "<=");
    if (!b.ok()) return b.status();
    where.push_back(*b);
  }
  for (size_t i = 0; i < where.size(); ++i) sql += (i == 0 ? " WHERE " : " AND ") + where[i];
  if (t.has_primary_key()) sql += " ORDER BY " + key_cols;
  if (range.limit != 0) sql += " LIMIT " + std::to_string(range.limit);
  return sql;
}

Result<std::unique_ptr<TableReader>> TableReader::Open(PGconn* conn, const TableShape& table,
                                                       const ReadRange& range) {
  Result<std::string> select = RangeQuery(conn, table, range);
  if (!select.ok()) return select.status();
  std::string sql = "COPY (" + *select + ") TO STDOUT";
  PgResultPtr res(PQexec(conn, sql.c_str()));
  if (res && PQresultStatus(res.get()) == PGRES_COPY_OUT) {
    if (static_cast<size_t>(PQnfields(res.get())) != table.columns.size()) {
      return Status::Corruption("COPY of " + table.Qualified() + " sends " +
                                std::to_string(PQnfields(res.get())) + " columns, expected " +
                                std::to_string(table.columns.size()));
    }
    std::unique_ptr<TableReader> r(new TableReader(conn, &table));
    r->columns_.reserve(table.columns.size());
    return r;
  }
  const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
  std::string msg = FirstLine(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn));
  if (PQstatus(conn) != CONNECTION_OK || state == nullptr) {
    return Status::Unavailable("PostgreSQL connection lost while reading " + table.Qualified() +
                               ": " + msg);
  }
  return SqlError(conn, Status::FailedPrecondition(msg), state, "reading " + table.Qualified(),
                  &table);
}

TableReader::~TableReader() {
  if (!finished_) Cancel();
  if (buf_ != nullptr) PQfreemem(buf_);
}

Result<bool> TableReader::Next(Tuple* row) {
  if (finished_) return false;
  // The previous row stays valid (LastKey) until a new one replaces it.
  char* fresh = nullptr;
  int n = PQgetCopyData(conn_, &fresh, /*async=*/0);
  if (n > 0) {
    if (buf_ != nullptr) PQfreemem(buf_);
    buf_ = fresh;
    std::string_view line(buf_, static_cast<size_t>(n));
    if (line.back() != '\n') {
      return Status::Corruption("COPY row of " + table_->Qualified() + " lacks its newline");
    }
    line.remove_suffix(1);
    Status st = DecodeCopyText(line, table_->columns.size(), &text_, &columns_);
    if (!st.ok()) return st.WithContext("COPY row of " + table_->Qualified());
    ++rows_;
    *row = Tuple(columns_.data(), columns_.size());
    return true;
  }
  finished_ = true;
  if (n == -1) {
    // The COPY ended: its command status says whether it succeeded.
    PgResultPtr res(PQgetResult(conn_));
    Status st = Status::Ok();
    if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
      const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
      std::string msg = FirstLine(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn_));
      st = PQstatus(conn_) != CONNECTION_OK || state == nullptr
               ? Status::Unavailable("PostgreSQL connection lost while reading " +
                                     table_->Qualified() + ": " + msg)
               : SqlError(conn_, Status::FailedPrecondition(msg), state,
                          "reading " + table_->Qualified(), table_);
    }
    while (PgResultPtr more{PQgetResult(conn_)}) {
    }
    if (!st.ok()) return st;
    return false;
  }
  return Status::Unavailable("PostgreSQL connection lost while reading " + table_->Qualified() +
                             ": " + FirstLine(PQerrorMessage(conn_)));
}

KeyValues TableReader::LastKey() const {
  KeyValues key;
  key.reserve(table_->primary_key.size());
  for (size_t k : table_->primary_key) {
    if (k < columns_.size()) key.emplace_back(columns_[k].value);
  }
  return key;
}

void TableReader::Cancel() {
  if (finished_) return;
  finished_ = true;
  if (PGcancel* c = PQgetCancel(conn_)) {
    char err[256];
    PQcancel(c, err, sizeof err);
    PQfreeCancel(c);
  }
  // Drain what the server sent before it saw the cancel.
  for (;;) {
    char* b = nullptr;
    int n = PQgetCopyData(conn_, &b, 0);
    if (b != nullptr) PQfreemem(b);
    if (n < 0) break;
  }
  while (PgResultPtr more{PQgetResult(conn_)}) {
  }
}

Status DecodeCopyText(std::string_view line, size_t ncols, std::string* text,
                      std::vector<Column>* columns) {
  columns->clear();
  text->clear();
  // Unescaped text is never longer than the line: views into *text stay put.
  text->reserve(line.size());
  size_t pos = 0;
  for (;;) {
    size_t end = pos;
    bool escaped = false;
    while (end < line.size() && line[end] != '\t') {
      if (line[end] == '\\') {
        escaped = true;
        ++end;  // the escaped character may itself be a tab
      }
      ++end;
    }
    if (end > line.size()) {
      return Status::Corruption("a backslash ends the line at byte " + std::to_string(line.size()));
    }
    std::string_view raw = line.substr(pos, end - pos);
    if (columns->size() == ncols) {
      return Status::Corruption("more than the expected " + std::to_string(ncols) + " columns");
    }
    if (raw == "\\N") {
      columns->push_back({ColumnKind::kNull, {}});
    } else if (!escaped) {
      columns->push_back({ColumnKind::kText, raw});
    } else {
      size_t start = text->size();
      for (size_t i = 0; i < raw.size(); ++i) {
        char c = raw[i];
        if (c != '\\') {
          text->push_back(c);
          continue;
        }
        if (++i >= raw.size()) return Status::Corruption("a backslash ends a value");
        char e = raw[i];
        switch (e) {
          case 'b': text->push_back('\b'); break;
          case 'f': text->push_back('\f'); break;
          case 'n': text->push_back('\n'); break;
          case 'r': text->push_back('\r'); break;
          case 't': text->push_back('\t'); break;
          case 'v': text->push_back('\v'); break;
          case 'x': {
            int v = i + 1 < raw.size() ? HexValue(raw[i + 1]) : -1;
            if (v < 0) {  // "\x" without digits is a plain x, as COPY FROM reads it
              text->push_back('x');
              break;
            }
            ++i;
            int v2 = i + 1 < raw.size() ? HexValue(raw[i + 1]) : -1;
            if (v2 >= 0) {
              v = v * 16 + v2;
              ++i;
            }
            text->push_back(static_cast<char>(v));
            break;
          }
          default:
            if (IsOctal(e)) {
              int v = e - '0';
              for (int k = 0; k < 2 && i + 1 < raw.size() && IsOctal(raw[i + 1]); ++k) {
                v = v * 8 + (raw[++i] - '0');
              }
              text->push_back(static_cast<char>(v & 0xFF));
            } else {
              text->push_back(e);
            }
        }
      }
      columns->push_back({ColumnKind::kText, std::string_view(*text).substr(start)});
    }
    if (end == line.size()) break;
    pos = end + 1;
  }
  if (columns->size() != ncols) {
    return Status::Corruption("has " + std::to_string(columns->size()) + " columns, expected " +
                              std::to_string(ncols));
  }
  return Status::Ok();
}

Relation AsRelation(const TableShape& table, std::vector<RelationColumn>* storage) {
  storage->clear();
  storage->reserve(table.columns.size());
  for (const TableColumn& c : table.columns) {
    storage->push_back({c.identity, c.name, c.type_oid, c.type_mod});
  }
  Relation r;
  r.oid = table.oid;
  r.nspname = table.schema;
  r.relname = table.name;
  r.replica_identity = table.replica_identity;
  r.columns = std::span<const RelationColumn>(storage->data(), storage->size());
  return r;
}

}  // namespace walbus::pgwire
