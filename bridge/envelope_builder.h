// EnvelopeBuilder: turns decoded pgoutput row changes into SPEC §3 envelopes.
// It owns the relation cache (a Relation message always replaces the entry;
// a change for an unknown relation is Corruption) with everything derived
// once per relation: JSON keys, value kinds, key columns, per-sink topic
// caches. Per event it appends into one reused buffer: no allocation in
// steady state.
//
// Threads: source thread only. Views in a Built are valid until the next
// Build* call.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bridge/core/lsn.h"
#include "bridge/core/status.h"
#include "bridge/value_writer.h"
#include "pgwire/pgoutput.h"
#include "pgwire/type_map.h"

namespace walbus::bridge {

class SnapshotVisibility;

// Names of a relation's primary-key columns (empty when it has none), for
// REPLICA IDENTITY FULL tables whose Relation message flags every column.
using PrimaryKeyLookup = std::function<Result<std::vector<std::string>>(uint32_t relid)>;

// The schema walbus owns in the source database (initial-snapshot progress).
// Changes to its tables are never published, even by a FOR ALL TABLES
// publication, and the snapshot never copies them.
inline constexpr std::string_view kWalbusSchema = "walbus";

enum class Op : uint8_t { kInsert, kUpdate, kDelete, kTruncate, kRead, kMessage };
inline constexpr int kOpCount = 6;
std::string_view OpName(Op op);

struct TableInfo {
  struct Col {
    std::string name;
    std::string json_key;  // ",\"name\":" already escaped, with a leading comma
    pgwire::TypeInfo type;
  };
  uint32_t oid = 0;
  std::string schema;
  std::string table;
  std::string qualified;      // schema.table
  std::string source_fields;  // "db":..,"schema":..,"table":.., already escaped
  char replica_identity = 'd';
  bool internal = false;  // in kWalbusSchema: never published
  std::vector<Col> cols;
  std::vector<size_t> key_cols;
  // Owned by the pipeline: per sink, whether `include` matches, and rendered
  // topics per op (empty until first used).
  std::vector<uint8_t> included;
  // A cache filled on first use while publishing (source thread only).
  mutable std::vector<std::array<std::string, kOpCount>> topics;
  // Set by the pipeline for a table an initial snapshot read under a
  // snapshot taken after the slot's consistent point: changes of
  // transactions that snapshot already saw are not published again
  // (bridge/snapshot_visibility.h). Null: publish everything.
  const SnapshotVisibility* skip_visible = nullptr;
};

struct Built {
  const TableInfo* table = nullptr;  // null for messages
  Op op = Op::kInsert;
  Lsn commit_lsn = 0;
  uint32_t seq = 0;
  int64_t commit_time_us = 0;  // Begin's commit time; 0 for a non-transactional message
  std::string_view id;
  std::string_view payload;
  std::string_view key_text;  // key values joined by ',' (only when want_key_text)
  std::string_view after;     // the "after" JSON value
  std::string_view message_prefix;
};

class EnvelopeBuilder {
 public:
  EnvelopeBuilder(std::string db, ValueOptions options, pgwire::TypeResolver* types,
                  PrimaryKeyLookup primary_key);

  void set_want_key_text(bool v) { want_key_text_ = v; }
  const std::string& db() const { return db_; }

  // Relation: replaces the cached entry. Resolves column types (catalog
  // lookups for non-built-in OIDs happen here, once per OID).
  Result<TableInfo*> OnRelation(const pgwire::Relation& rel);
  // The same description without caching it, for rows read outside the
  // stream (initial snapshot, backfill): the caller owns the TableInfo (and
  // fills `included`/`topics` as for a streamed one).
  Result<std::unique_ptr<TableInfo>> Describe(const pgwire::Relation& rel);
  TableInfo* Find(uint32_t oid);
  // Forget every relation (after a reconnect the server re-sends them).
  void Clear() { tables_.clear(); }

  void OnBegin(const pgwire::Begin& begin);
  bool in_transaction() const { return in_txn_; }
  // The open transaction's commit LSN (Begin.final_lsn).
  Lsn commit_lsn() const { return commit_lsn_; }
  // The open transaction's xid (Begin.xid).
  uint32_t xid() const { return xid_; }
  void EndTransaction() { in_txn_ = false; }

  // change_lsn: the XLogData's WAL start, the change's own position.
  Status BuildInsert(const pgwire::Insert& m, Lsn change_lsn, Built* out);
  Status BuildUpdate(const pgwire::Update& m, Lsn change_lsn, Built* out);
  Status BuildDelete(const pgwire::Delete& m, Lsn change_lsn, Built* out);
  Status BuildTruncate(uint32_t relid, Lsn change_lsn, Built* out);
  // Transactional messages use the transaction's ids; others the message's LSN, seq 0.
  Status BuildMessage(const pgwire::LogicalMessage& m, Built* out);

  // Rows read outside the stream, independent of any open transaction:
  // a `read` event with id "<point as 16 hex digits>:<row_number>",
  // source.lsn = commit_lsn = point, xid and ts null, seq = row_number;
  // key and after as for an Insert of `row` (before null).
  Status BuildRead(const TableInfo& t, pgwire::Tuple row, Lsn point, uint32_t row_number,
                   Built* out);
  // A `truncate` event with the same ids as BuildRead (the initial snapshot's
  // "start this table over" marker).
  Status BuildTruncateAt(const TableInfo& t, Lsn point, uint32_t seq, Built* out);

 private:
  Status BuildRow(Op op, TableInfo* t, Lsn change_lsn, char old_kind, pgwire::Tuple old_tuple,
                  pgwire::Tuple new_tuple, Built* out);
  Status CheckTuples(Op op, const TableInfo& t, char old_kind, pgwire::Tuple old_tuple,
                     pgwire::Tuple new_tuple) const;
  // key, before, after, unchanged and the closing brace.
  Status AppendChange(Op op, const TableInfo& t, char old_kind, pgwire::Tuple old_tuple,
                      pgwire::Tuple new_tuple);
  void AppendHeader(Op op, std::string_view source_fields, Lsn change_lsn);
  void AppendHeaderWith(Op op, std::string_view source_fields, Lsn change_lsn,
                        std::string_view id_prefix, uint32_t seq, std::string_view txn_json);
  void SetReadPoint(Lsn point);
  Status AppendRow(const TableInfo& t, pgwire::Tuple tuple, pgwire::Tuple fill_from,
                   bool collect_unchanged);
  Status AppendKey(const TableInfo& t, pgwire::Tuple tuple, pgwire::Tuple fallback);
  void Finish(Op op, Built* out);
  void FinishWith(Op op, Lsn commit_lsn, int64_t commit_time_us, uint32_t seq, Built* out);

  std::string db_;
  std::string db_json_;  // "db":"..." escaped
  ValueOptions options_;
  pgwire::TypeResolver* types_;
  PrimaryKeyLookup primary_key_;
  bool want_key_text_ = false;
  std::unordered_map<uint32_t, std::unique_ptr<TableInfo>> tables_;

  // Transaction state, formatted once per transaction.
  bool in_txn_ = false;
  Lsn commit_lsn_ = 0;
  int64_t commit_time_us_ = 0;
  uint32_t seq_ = 0;
  uint32_t xid_ = 0;
  std::string id_prefix_;  // "00000000016B37A0:"
  std::string txn_json_;   // ,"commit_lsn":"..","xid":N,"ts":".."

  // Ids of read events, formatted once per point.
  Lsn read_point_ = 0;
  std::string read_prefix_;
  std::string read_txn_json_;

  // Per-event buffers, reused.
  std::string payload_;
  std::string key_text_;
  std::vector<uint32_t> unchanged_;
  size_t id_begin_ = 0, id_end_ = 0, after_begin_ = 0, after_end_ = 0;
};

// "2026-11-23T18:42:00.123456Z" from microseconds since 2000-01-01 UTC.
void AppendPgTimestamp(std::string* out, int64_t pg_micros);

}  // namespace walbus::bridge
