// BackfillStore: the backfill requests and their progress, kept in PostgreSQL
// in walbus.backfill (one row per table and request), so that whichever
// walbus instance holds the slot does the work and a restarted or standby
// instance resumes after the last confirmed chunk. Used by `walbus backfill`
// (register, validate, follow) and by the streaming instance's backfill worker
// (claim, save progress, finish).
//
// Free functions over a caller's ordinary libpq connection (one thread at a
// time, the caller's). Errors: Unavailable when the connection broke;
// FailedPrecondition for an SQL error, with the server's message;
// InvalidArgument for a table that cannot be backfilled (the message names the
// cause and the fix).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bridge/core/status.h"
#include "pgwire/pg_conn.h"
#include "pgwire/table_reader.h"

namespace walbus::bridge {

inline constexpr uint32_t kDefaultChunkSize = 1024;

struct BackfillRequest {
  int64_t id = 0;
  std::string schema;
  std::string table;
  std::string state;  // pending | running | done | failed
  uint32_t chunk_size = kDefaultChunkSize;
  std::optional<pgwire::KeyValues> last_key;  // the last confirmed chunk's last key
  uint64_t rows = 0;     // read events emitted and confirmed
  uint64_t skipped = 0;  // chunk rows left out because the stream changed them meanwhile
  uint64_t chunks = 0;
  double seconds = 0;    // since started (or requested, while pending)
  std::string error;     // why it failed

  std::string Qualified() const { return schema + "." + table; }
};

// Schema walbus when missing (EnsureWalbusSchema) and the table (idempotent,
// tolerates a concurrent creator). Whether it exists:
// WalbusTablesExist(conn, {"backfill"}) (the streaming side never creates it).
Status EnsureBackfillTable(PGconn* conn);

// Splits "schema.table" the way PostgreSQL reads an identifier (parse_ident:
// unquoted parts fold to lower case, "Quoted" parts keep theirs).
// InvalidArgument when it is not two parts.
Status ParseTableName(PGconn* conn, const std::string& text, std::string* schema,
                      std::string* table);

// Checks that `schema.table` can be backfilled through `publication`: it
// exists, is a plain table in the publication, has a primary key carried by
// the publication's columns, and its replica identity lets the stream name
// the primary key of every changed row. Returns its shape.
Result<pgwire::TableShape> CheckBackfillable(PGconn* conn, const std::string& publication,
                                             const std::string& schema, const std::string& table);

// Registers a request, or returns the unfinished one for the same slot and
// table (*existed = true). Caller's transaction.
Result<int64_t> RegisterBackfill(PGconn* conn, const std::string& slot, const std::string& schema,
                                 const std::string& table, uint32_t chunk_size, bool* existed);

// The oldest unfinished request of `slot`, if any.
Result<std::optional<BackfillRequest>> NextBackfill(PGconn* conn, const std::string& slot);
Result<BackfillRequest> LoadBackfill(PGconn* conn, int64_t id);

Status MarkBackfillRunning(PGconn* conn, int64_t id);
// Confirmed chunk number `chunk_no` (1-based): its last key (nullopt: an empty
// chunk, keep the previous key) and counts; `done` ends the request. Applied
// once: a repeat of the same chunk_no changes nothing.
Status SaveBackfillChunk(PGconn* conn, int64_t id, uint64_t chunk_no,
                         const std::optional<pgwire::KeyValues>& last_key, uint64_t rows,
                         uint64_t skipped, bool done);
Status FailBackfill(PGconn* conn, int64_t id, const std::string& error);

}  // namespace walbus::bridge
