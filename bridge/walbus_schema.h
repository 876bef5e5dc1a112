// The schema walbus keeps its own state in (kWalbusSchema, never published):
// the initial snapshot's progress (snapshot_store.h) and backfill requests
// (backfill_store.h). The pieces both stores share live here:
//
//   EnsureWalbusSchema  creates the schema only when it is missing, so a role
//                       owning a pre-created `walbus` schema (see
//                       conf/least-privilege.sql) needs no CREATE on the
//                       database (CREATE SCHEMA IF NOT EXISTS checks it first).
//   WalbusSchemaFix     the fix text for a role that cannot create it.
//   WalbusTablesExist   whether walbus.<table> exist (to_regclass).
//   KeyArraySql / ParseKeyArray   a primary key as a text[] literal and back.
//   CountValue          a bigint/int column's text as a number.
//
// Threads: the caller's, on the caller's connection.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "bridge/core/status.h"
#include "pgwire/pg_conn.h"
#include "pgwire/table_reader.h"

namespace walbus::bridge {

// Creates schema walbus when it does not exist. `purpose` names what it is for
// in the error ("the initial snapshot's progress"). FailedPrecondition with
// WalbusSchemaFix when the role may not create it; Unavailable when the
// connection broke.
Status EnsureWalbusSchema(PGconn* conn, std::string_view purpose);

// "GRANT CREATE ON DATABASE "db" TO "role", or create it as an administrator:
// CREATE SCHEMA walbus AUTHORIZATION "role"" for the connection's database and
// role (both quoted as identifiers).
std::string WalbusSchemaFix(PGconn* conn);

// True when every walbus.<name> exists. *state receives the SQLSTATE of a
// failed query when given.
Result<bool> WalbusTablesExist(PGconn* conn, std::initializer_list<std::string_view> names,
                               std::string* state = nullptr);

// ARRAY['v1', 'v2']::text[] for a primary key.
std::string KeyArraySql(PGconn* conn, const pgwire::KeyValues& key);
// The text form of a text[] column (`last_key::text`) as a key: nullopt for
// SQL NULL; Corruption (naming `what`) for a NULL element, a nested array or
// text that is not an array literal.
Result<std::optional<pgwire::KeyValues>> ParseKeyArray(const std::optional<std::string>& text,
                                                       std::string_view what);

// A non-negative integer column's text; 0 for NULL or text that is not one.
uint64_t CountValue(const std::optional<std::string>& v);

}  // namespace walbus::bridge
