// TableReader: streams the rows of one published table over an ordinary
// (non-replication) libpq connection, as `COPY (SELECT <columns> FROM <table>
// WHERE <range> ORDER BY <primary key> LIMIT n) TO STDOUT` in text format,
// one row at a time (PQgetCopyData): a table is never held in memory. Each row
// comes out as a pgwire::Tuple in the same shape pgoutput sends (the columns
// pgoutput would send, in attnum order, text values printed by the types'
// output functions, NULL as ColumnKind::kNull), so the envelope builder turns
// it into an envelope exactly as it does a streamed Insert.
//
// Used by the initial snapshot (bridge/snapshot.h: whole tables, resumed after
// the last acknowledged key) and by backfills (chunks: `after` K, `through` U,
// `limit` N).
//
//   TableShape: what pgoutput would describe for a published table (its
//   Relation message), plus the primary key, the publication's row filter and
//   the planner's row estimate. PublishedTables() lists a publication's tables.
//   ReadRange: which rows, by primary key; a table without a primary key can
//   only be read whole.
//
// Ownership and threads: a TableReader borrows the PGconn (one thread, the
// caller's); while it is open nothing else may run on that connection. The
// caller chooses the transaction and snapshot (e.g. BEGIN ISOLATION LEVEL
// REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '...'). Destroying an
// unfinished reader cancels the COPY and drains it, leaving the connection
// usable (inside an aborted transaction if the server reports the cancel as an
// error: roll back before reusing it).
// Errors: Unavailable when the connection broke; FailedPrecondition for an SQL
// error (e.g. permission denied for table: the message names the table and the
// fix); Corruption for COPY data that does not parse or has the wrong number of
// columns; InvalidArgument for a range that the table cannot serve.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/core/status.h"
#include "pgwire/pg_conn.h"
#include "pgwire/pgoutput.h"

namespace walbus::pgwire {

// One column as pgoutput's Relation message would describe it: not dropped,
// not generated, in the publication's column list (PostgreSQL 15+).
struct TableColumn {
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_mod = -1;
  std::string type_sql;   // format_type(): the cast for a key literal
  bool identity = false;  // flagged as replica identity, as pgoutput flags it
};

struct TableShape {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
  char relkind = 'r';            // 'r' table (read with ONLY), 'p' partitioned
  char replica_identity = 'd';   // pg_class.relreplident
  std::vector<TableColumn> columns;
  std::vector<size_t> primary_key;  // indexes into columns, key order; empty: no primary key
  std::string row_filter;           // the publication's WHERE (PostgreSQL 15+); "" none
  double estimated_rows = -1;       // pg_class.reltuples; -1 unknown (never analysed)

  std::string Qualified() const { return schema + "." + name; }  // unquoted, for logs/ids
  std::string QuotedName() const;                                 // "schema"."name"
  bool has_primary_key() const { return !primary_key.empty(); }
};

// The tables of `publication` (pg_publication_tables), ordered by schema and
// name, each described by DescribeTable. FailedPrecondition when the
// publication does not exist.
Result<std::vector<TableShape>> PublishedTables(PGconn* conn, const std::string& publication);
// One table; `publication` (may be empty) supplies the column list and row
// filter. FailedPrecondition when the table does not exist.
Result<TableShape> DescribeTable(PGconn* conn, const std::string& schema, const std::string& name,
                                 const std::string& publication);

// An SQL expression (float8) for the planner's row estimate of the pg_class
// row aliased `rel`: its reltuples, or for a partitioned table the sum over
// its leaves; -1 when never analysed.
std::string EstimatedRowsSql(std::string_view rel);

// Primary-key values in text form (as COPY and pgoutput print them), in key order.
using KeyValues = std::vector<std::string>;

struct ReadRange {
  std::optional<KeyValues> after;    // only rows whose key is > after
  std::optional<KeyValues> through;  // only rows whose key is <= through
  uint64_t limit = 0;                // at most this many rows; 0: no limit
};

// The SELECT a range reads (without COPY), e.g. for EXPLAIN or logs.
// InvalidArgument when `range` needs a primary key the table lacks, or a key
// has the wrong number of values.
Result<std::string> RangeQuery(PGconn* conn, const TableShape& table, const ReadRange& range);

class TableReader {
 public:
  // Starts the COPY. `table` must outlive the reader.
  static Result<std::unique_ptr<TableReader>> Open(PGconn* conn, const TableShape& table,
                                                   const ReadRange& range);
  ~TableReader();
  TableReader(const TableReader&) = delete;
  TableReader& operator=(const TableReader&) = delete;

  // The next row: true and *row set (valid until the next call to Next or the
  // reader's destruction); false at the end (the COPY completed). Blocks
  // until the server sends a row.
  Result<bool> Next(Tuple* row);
  // The primary-key values of the row Next returned last, also after Next
  // reported the end (the table must have a primary key).
  KeyValues LastKey() const;
  uint64_t rows() const { return rows_; }
  bool finished() const { return finished_; }

  // Abandons an unfinished COPY (PQcancel, then drains what is in flight).
  void Cancel();

 private:
  TableReader(PGconn* conn, const TableShape* table) : conn_(conn), table_(table) {}

  PGconn* conn_;
  const TableShape* table_;
  char* buf_ = nullptr;  // libpq's copy buffer for the current row
  std::string text_;     // unescaped values of the current row
  std::vector<Column> columns_;
  uint64_t rows_ = 0;
  bool finished_ = false;
};

// Splits one COPY text-format line (no trailing newline) into `ncols` values,
// undoing COPY's escapes (\N is NULL; \b \f \n \r \t \v \\, octal \ooo and
// hex \xhh; a backslash before any other character stands for that
// character). Values are written into *text and referenced from *columns, which
// stay valid until the next call with the same buffers. Corruption when the
// field count differs or an escape is cut off.
Status DecodeCopyText(std::string_view line, size_t ncols, std::string* text,
                      std::vector<Column>* columns);

// A pgoutput Relation for `table` (what the envelope builder's relation cache
// takes). The spans point into *storage and `table`, which must outlive it.
Relation AsRelation(const TableShape& table, std::vector<RelationColumn>* storage);

}  // namespace walbus::pgwire
