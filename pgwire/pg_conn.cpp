#include "pgwire/pg_conn.h"

#include "bridge/core/log.h"

namespace walbus::pgwire {

std::string FirstLine(std::string_view message) {
  std::string_view m = message;
  for (std::string_view prefix : {"ERROR:  ", "FATAL:  ", "error: "}) {
    if (m.substr(0, prefix.size()) == prefix) m.remove_prefix(prefix.size());
  }
  size_t nl = m.find('\n');
  std::string line(m.substr(0, nl));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

namespace {

bool Contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

Status ClassifyConnectError(std::string_view raw) {
  std::string msg = FirstLine(raw);
  // libpq prefixes the server's FATAL with "connection to server at ... failed: ".
  size_t failed = msg.find("failed: ");
  std::string reason = failed == std::string::npos ? msg : msg.substr(failed + 8);
  for (std::string_view prefix : {"FATAL:  ", "ERROR:  "}) {
    if (reason.rfind(prefix, 0) == 0) reason.erase(0, prefix.size());
  }
  std::string where = "PostgreSQL";
  // TLS problems: each needs a change to source.dsn (or the server), so
  // retrying would only repeat them.
  if (Contains(reason, "certificate verify failed")) {
    return Status::FailedPrecondition(
        where + " TLS: the server's certificate is not trusted (" + reason +
        "); set sslrootcert= in source.dsn to the CA file that signed it");
  }
  if (Contains(reason, "does not match host name")) {
    return Status::FailedPrecondition(
        where + " TLS: " + reason +
        "; put a host name or address the certificate was issued for in source.dsn "
        "(or use sslmode=verify-ca)");
  }
  if (Contains(reason, "root certificate file")) {
    return Status::FailedPrecondition(
        where + " TLS: " + reason +
        "; set sslrootcert= in source.dsn to the CA file that signed the server's "
        "certificate (or use sslmode=require, which does not verify it)");
  }
  if (Contains(reason, "requires a valid client certificate") ||
      Contains(reason, "certificate authentication failed") ||
      Contains(reason, "alert unknown ca") || Contains(reason, "alert bad certificate") ||
      Contains(reason, "alert certificate required") ||
      Contains(reason, "alert certificate unknown")) {
    return Status::FailedPrecondition(
        where + " rejected walbus's client certificate: " + reason +
        "; set sslcert= and sslkey= in source.dsn to a certificate signed by the server's "
        "ssl_ca_file, whose CN is the role name (or mapped in pg_ident.conf)");
  }
  if (Contains(reason, "certificate file") || Contains(reason, "private key file") ||
      Contains(reason, "certificate present, but not private key") ||
      Contains(reason, "could not load private key")) {
    return Status::FailedPrecondition(where + " TLS: " + reason +
                                      "; fix sslcert=/sslkey= in source.dsn (the key must be "
                                      "mode 0600, owned by the user running walbus)");
  }
  if (Contains(reason, "server does not support SSL")) {
    return Status::FailedPrecondition(where + " TLS: " + reason +
                                      "; turn ssl on in postgresql.conf, or lower sslmode in "
                                      "source.dsn");
  }
  if (Contains(reason, "no pg_hba.conf entry")) {
    // Refused in plain text: maybe only a hostssl line admits this user.
    bool plain = Contains(reason, "no encryption") || Contains(reason, "SSL off");
    return Status::FailedPrecondition(
        where + " refused the connection: " + reason +
        (plain ? "; if pg_hba.conf admits this user over TLS only (hostssl), add "
                 "sslmode=verify-full and sslrootcert= to source.dsn, else add a pg_hba.conf "
                 "`host` line for it"
               : "; add a pg_hba.conf `host` line for this database and user (logical "
                 "replication matches the database name, not the `replication` keyword), then "
                 "reload PostgreSQL"));
  }
  if (Contains(reason, "password authentication failed") ||
      Contains(reason, "no password supplied") || Contains(reason, "authentication failed")) {
    return Status::FailedPrecondition(
        where + " refused the login: " + reason +
        "; fix the password (source.dsn, ${ENV}, ~/.pgpass or PGPASSWORD)");
  }
  if (Contains(reason, "does not exist")) {  // role or database
    return Status::FailedPrecondition(where + ": " + reason + "; fix source.dsn");
  }
  if (Contains(reason, "must be superuser or replication role") ||
      Contains(reason, "permission denied to start WAL sender") ||
      Contains(reason, "must have the REPLICATION")) {
    return Status::FailedPrecondition(
        where + ": " + reason +
        "; grant it with ALTER ROLE <user> REPLICATION (on RDS: GRANT rds_replication TO <user>)");
  }
  if (Contains(reason, "invalid connection option") || Contains(reason, "missing \"=\"") ||
      Contains(reason, "invalid URI") || Contains(reason, "invalid integer value")) {
    return Status::InvalidArgument("source.dsn: " + reason + "; fix the libpq connection string");
  }
  // Keep libpq's "connection to server at HOST, port PORT failed: " (which server).
  std::string at = failed == std::string::npos ? "" : msg.substr(0, failed + 8);
  return Status::Unavailable(where + " is unreachable: " + at + reason +
                             "; check host and port in source.dsn and that PostgreSQL is running");
}

}  // namespace

namespace {

void LogNotice(void* /*arg*/, const PGresult* res) {
  const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  const char* detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
  const char* hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
  std::string_view sev = severity != nullptr ? severity : "NOTICE";
  std::string text = primary != nullptr ? primary : FirstLine(PQresultErrorMessage(res));
  if (detail != nullptr) text.append(" (").append(detail).append(")");
  if (hint != nullptr) text.append("; ").append(hint);
  std::initializer_list<log::Field> fields = {{"severity", sev}, {"message", text}};
  if (sev == "WARNING") {
    log::Warn("PostgreSQL server message", fields);
  } else if (sev == "NOTICE" || sev == "INFO") {
    log::Info("PostgreSQL server message", fields);
  } else {
    log::Debug("PostgreSQL server message", fields);
  }
}

}  // namespace

void LogServerNotices(PGconn* conn) { PQsetNoticeReceiver(conn, LogNotice, nullptr); }

Result<PgConnPtr> Connect(const std::string& conninfo, bool replication) {
  // replication last, so the ordinary connection simply stops before it.
  const char* keys[] = {"dbname", "fallback_application_name", "connect_timeout",
                        replication ? "replication" : nullptr, nullptr};
  const char* values[] = {conninfo.c_str(), "walbus", "10",
                          replication ? "database" : nullptr, nullptr};
  PgConnPtr conn(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
  if (conn == nullptr) return Status::Unavailable("PostgreSQL: out of memory in libpq");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return ClassifyConnectError(PQerrorMessage(conn.get()));
  }
  LogServerNotices(conn.get());
  return conn;
}

Result<Rows> Query(PGconn* conn, const std::string& sql, std::string* sqlstate) {
  PgResultPtr res(PQexec(conn, sql.c_str()));
  ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
    Rows rows;
    int n = PQntuples(res.get()), f = PQnfields(res.get());
    rows.reserve(n);
    for (int i = 0; i < n; ++i) {
      Row row;
      row.reserve(f);
      for (int j = 0; j < f; ++j) {
        if (PQgetisnull(res.get(), i, j)) row.emplace_back(std::nullopt);
        else row.emplace_back(std::string(PQgetvalue(res.get(), i, j),
                                          PQgetlength(res.get(), i, j)));
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }
  const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
  if (sqlstate != nullptr) *sqlstate = state ? state : "";
  std::string msg = FirstLine(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn));
  if (msg.empty()) msg = FirstLine(PQerrorMessage(conn));
  if (PQstatus(conn) != CONNECTION_OK || state == nullptr) {
    return Status::Unavailable("PostgreSQL connection lost: " + msg);
  }
  return Status::FailedPrecondition(msg);
}

Status Exec(PGconn* conn, const std::string& sql, std::string* sqlstate) {
  Result<Rows> r = Query(conn, sql, sqlstate);
  return r.ok() ? Status::Ok() : r.status();
}

std::string QuoteLiteral(PGconn* conn, std::string_view s) {
  char* q = PQescapeLiteral(conn, s.data(), s.size());
  if (q == nullptr) return "''";
  std::string out(q);
  PQfreemem(q);
  return out;
}

std::string QuoteIdent(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace walbus::pgwire
