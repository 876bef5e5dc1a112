// Small libpq helpers shared by the SQL and replication connections: owned
// handles, connecting with readable error classification, and simple-protocol
// queries (the walsender accepts only the simple protocol).
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/core/status.h"

namespace walbus::pgwire {

struct PgConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

// Rows of text values; nullopt is SQL NULL.
using Row = std::vector<std::optional<std::string>>;
using Rows = std::vector<Row>;

// Connects with `conninfo` (a libpq conninfo string or URI), adding
// replication=database when replication is true and application_name=walbus
// unless set. Errors: FailedPrecondition for authentication, unknown role or
// database, pg_hba refusal, missing replication privilege (a fix is named);
// Unavailable for anything that may pass (refused, timeout, shutting down).
Result<PgConnPtr> Connect(const std::string& conninfo, bool replication);

// Sends the server's NOTICE/WARNING messages on `conn` to walbus's log (one
// record, in the chosen format) instead of libpq's default: a raw
// "WARNING:  ..." line on stderr, which breaks `--log-format json`. WARNING is
// logged as warn, NOTICE and INFO as info, LOG and DEBUG as debug. Connect()
// does this for every connection it opens.
void LogServerNotices(PGconn* conn);

// Runs one simple-protocol statement. Errors carry the server's SQLSTATE
// (`sqlstate`, when not null) and message; a broken connection is Unavailable.
Result<Rows> Query(PGconn* conn, const std::string& sql, std::string* sqlstate = nullptr);
Status Exec(PGconn* conn, const std::string& sql, std::string* sqlstate = nullptr);

// Quoting for the simple protocol.
std::string QuoteLiteral(PGconn* conn, std::string_view s);
std::string QuoteIdent(std::string_view s);

// The first line of libpq's error text, without the "ERROR:  " prefix.
std::string FirstLine(std::string_view message);

}  // namespace walbus::pgwire
