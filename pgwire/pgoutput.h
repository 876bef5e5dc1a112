// pgoutput protocol version 1: the messages of PostgreSQL's built-in logical
// decoding plugin (the payload of one XLogData), as written by proto.c's
// logicalrep_write_* functions. Decoder checks every length and invariant
// proto.c checks, and more: any malformed or unexpected byte is
// Status::Corruption naming the message type and byte offset, and the session
// must stop (never skip). Views and spans in a decoded Message point into the
// input bytes or into the Decoder's scratch vectors: valid until the next
// Decode call on the same Decoder and while the input bytes live.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "bridge/core/lsn.h"
#include "bridge/core/status.h"

namespace walbus::pgwire {

// commit_time_us: microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL epoch).
// PostgreSQL's epoch in Unix microseconds: add it to get Unix time.
constexpr int64_t kPgEpochUnixMicros = 946'684'800'000'000;
struct Begin {
  Lsn final_lsn;
  int64_t commit_time_us;
  uint32_t xid;
};
struct Commit {
  uint8_t flags;
  Lsn commit_lsn;
  Lsn end_lsn;
  int64_t commit_time_us;
};
// Sent after Begin when the transaction was made with a replication origin.
struct Origin {
  Lsn commit_lsn;
  std::string_view name;
};
struct RelationColumn {
  bool key;  // part of the replica identity (every column with FULL)
  std::string_view name;
  uint32_t type_oid;
  int32_t type_mod;
};
// nspname is empty for pg_catalog (proto.c saves the bytes).
// replica_identity: 'd' default, 'n' nothing, 'f' full, 'i' index.
struct Relation {
  uint32_t oid;
  std::string_view nspname;
  std::string_view relname;
  char replica_identity;
  std::span<const RelationColumn> columns;
};
// Sent before a Relation for each column type that is not built in. For a
// domain, oid is the domain's and the names are those of its base type.
struct Type {
  uint32_t oid;
  std::string_view nspname;
  std::string_view typname;
};
// kUnchanged is an unchanged out-of-line TOAST value that was not sent: it is
// not NULL and must never be turned into NULL.
enum class ColumnKind : char { kNull = 'n', kUnchanged = 'u', kText = 't' };
struct Column {
  ColumnKind kind;
  std::string_view value;  // empty unless kText
};
using Tuple = std::span<const Column>;
struct Insert {
  uint32_t relation;
  Tuple new_tuple;
};
// old_kind: 0 (no old tuple), 'K' (replica identity columns, others NULL) or
// 'O' (the whole old row, REPLICA IDENTITY FULL).
struct Update {
  uint32_t relation;
  char old_kind;
  Tuple old_tuple;
  Tuple new_tuple;
};
struct Delete {
  uint32_t relation;
  char old_kind;  // 'K' or 'O'
  Tuple old_tuple;
};
inline constexpr uint8_t kTruncateCascade = 1;
inline constexpr uint8_t kTruncateRestartIdentity = 2;
struct Truncate {
  uint8_t options;  // kTruncateCascade | kTruncateRestartIdentity
  std::span<const uint32_t> relations;
};
// pg_logical_emit_message(). content is raw bytes (not necessarily UTF-8).
struct LogicalMessage {
  bool transactional;
  Lsn lsn;
  std::string_view prefix;
  std::string_view content;
};

using Message = std::variant<Begin, Commit, Origin, Relation, Type, Insert, Update, Delete,
                             Truncate, LogicalMessage>;

// "Begin", "Commit", "Origin", "Relation", "Type", "Insert", "Update",
// "Delete", "Truncate", "Message" (the protocol's names).
std::string_view MessageName(const Message& m);

// Decodes one pgoutput message. Not thread-safe; one per replication session.
// No heap allocation per message in steady state: the scratch vectors keep
// their capacity. On error *out is unspecified.
class Decoder {
 public:
  Status Decode(std::string_view bytes, Message* out);

 private:
  std::vector<RelationColumn> relation_columns_;
  std::vector<Column> old_columns_;
  std::vector<Column> new_columns_;
  std::vector<uint32_t> relations_;
};

}  // namespace walbus::pgwire
