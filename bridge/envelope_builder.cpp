#include "bridge/envelope_builder.h"

#include <time.h>

#include <cstdint>

#include "bridge/json_writer.h"

namespace walbus::bridge {
namespace {

// Literals are appended as string_views: their length is known at compile
// time (append(const char*) would strlen each one, for every event).
using namespace std::string_view_literals;

// Digits written right to left into a stack buffer, then one append: seq
// has one to four digits almost always, where this beats std::to_chars's
// length computation.
void AppendUint(std::string* out, uint64_t v) {
  char buf[20];  // 18446744073709551615
  char* const end = buf + sizeof buf;
  char* p = end;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  out->append(p, static_cast<size_t>(end - p));
}

// What follows the id in every envelope: `","op":"<op>","source":{`, one
// append per event instead of three.
std::string_view OpAndSourceOpen(Op op) {
  switch (op) {
    case Op::kInsert: return "\",\"op\":\"insert\",\"source\":{"sv;
    case Op::kUpdate: return "\",\"op\":\"update\",\"source\":{"sv;
    case Op::kDelete: return "\",\"op\":\"delete\",\"source\":{"sv;
    case Op::kTruncate: return "\",\"op\":\"truncate\",\"source\":{"sv;
    case Op::kRead: return "\",\"op\":\"read\",\"source\":{"sv;
    case Op::kMessage: return "\",\"op\":\"message\",\"source\":{"sv;
  }
  return "\",\"op\":\"?\",\"source\":{"sv;
}

bool IsValidUtf8(std::string_view s) {
  const char* p = s.data();
  const char* end = p + s.size();
  while (p < end) {
    if (static_cast<unsigned char>(*p) < 0x80) {
      ++p;
      continue;
    }
    size_t bad = 0;
    size_t n = CheckUtf8Sequence(p, end, &bad);
    if (n == 0) return false;
    p += n;
  }
  return true;
}

}  // namespace

std::string_view OpName(Op op) {
  switch (op) {
    case Op::kInsert: return "insert";
    case Op::kUpdate: return "update";
    case Op::kDelete: return "delete";
    case Op::kTruncate: return "truncate";
    case Op::kRead: return "read";
    case Op::kMessage: return "message";
  }
  return "?";
}

void AppendPgTimestamp(std::string* out, int64_t pg_micros) {
  int64_t secs = pg_micros / 1000000;
  int64_t micros = pg_micros % 1000000;
  if (micros < 0) {
    micros += 1000000;
    secs -= 1;
  }
  time_t t = static_cast<time_t>(secs + pgwire::kPgEpochUnixMicros / 1000000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  int n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   static_cast<int>(micros));
  out->append(buf, static_cast<size_t>(n));
}

EnvelopeBuilder::EnvelopeBuilder(std::string db, ValueOptions options,
                                 pgwire::TypeResolver* types, PrimaryKeyLookup primary_key)
    : db_(std::move(db)), options_(options), types_(types), primary_key_(std::move(primary_key)) {
  db_json_ = "\"db\":";
  AppendJsonString(&db_json_, db_);
  payload_.reserve(4096);
}

Result<TableInfo*> EnvelopeBuilder::OnRelation(const pgwire::Relation& rel) {
  Result<std::unique_ptr<TableInfo>> t = Describe(rel);
  if (!t.ok()) return t.status();
  TableInfo* raw = t->get();
  tables_[rel.oid] = std::move(t).value();
  return raw;
}

Result<std::unique_ptr<TableInfo>> EnvelopeBuilder::Describe(const pgwire::Relation& rel) {
  auto t = std::make_unique<TableInfo>();
  t->oid = rel.oid;
  t->schema = std::string(rel.nspname);
  t->table = std::string(rel.relname);
  t->qualified = t->schema + "." + t->table;
  t->internal = t->schema == kWalbusSchema;
  t->replica_identity = rel.replica_identity;
  t->source_fields = db_json_ + ",\"schema\":";
  AppendJsonString(&t->source_fields, t->schema);
  t->source_fields += ",\"table\":";
  AppendJsonString(&t->source_fields, t->table);
  t->cols.reserve(rel.columns.size());
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    const pgwire::RelationColumn& c = rel.columns[i];
    TableInfo::Col col;
    col.name = std::string(c.name);
    col.json_key = ',';
    AppendJsonString(&col.json_key, c.name);
    col.json_key += ':';
    Result<pgwire::TypeInfo> type = types_->Resolve(c.type_oid);
    if (!type.ok()) {
      return type.status().WithContext("column " + t->qualified + "." + col.name);
    }
    col.type = *type;
    t->cols.push_back(std::move(col));
    if (c.key) t->key_cols.push_back(i);
  }
  // With REPLICA IDENTITY FULL every column is flagged; the primary key (when
  // there is one) is what a consumer means by "the key".
  if (rel.replica_identity == 'f' && primary_key_) {
    Result<std::vector<std::string>> pk = primary_key_(rel.oid);
    if (!pk.ok()) return pk.status().WithContext("primary key of " + t->qualified);
    if (!pk->empty()) {
      t->key_cols.clear();
      for (const std::string& name : *pk) {
        for (size_t i = 0; i < t->cols.size(); ++i) {
          if (t->cols[i].name == name) t->key_cols.push_back(i);
        }
      }
    }
  }
  return t;
}

TableInfo* EnvelopeBuilder::Find(uint32_t oid) {
  auto it = tables_.find(oid);
  return it == tables_.end() ? nullptr : it->second.get();
}

void EnvelopeBuilder::OnBegin(const pgwire::Begin& b) {
  in_txn_ = true;
  commit_lsn_ = b.final_lsn;
  commit_time_us_ = b.commit_time_us;
  xid_ = b.xid;
  seq_ = 0;
  id_prefix_.clear();
  AppendLsnHex16(&id_prefix_, b.final_lsn);
  id_prefix_ += ':';
  txn_json_ = ",\"commit_lsn\":\"";
  AppendLsn(&txn_json_, b.final_lsn);
  txn_json_ += "\",\"xid\":";
  AppendUint(&txn_json_, b.xid);
  txn_json_ += ",\"ts\":\"";
  AppendPgTimestamp(&txn_json_, b.commit_time_us);
  txn_json_ += '"';
}

void EnvelopeBuilder::AppendHeader(Op op, std::string_view source_fields, Lsn change_lsn) {
  AppendHeaderWith(op, source_fields, change_lsn, id_prefix_, seq_, txn_json_);
}

void EnvelopeBuilder::AppendHeaderWith(Op op, std::string_view source_fields, Lsn change_lsn,
                                       std::string_view id_prefix, uint32_t seq,
                                       std::string_view txn_json) {
  payload_.clear();
  payload_ += "{\"id\":\""sv;
  id_begin_ = payload_.size();
  payload_ += id_prefix;
  AppendUint(&payload_, seq);
  id_end_ = payload_.size();
  payload_ += OpAndSourceOpen(op);
  payload_ += source_fields;
  payload_ += ",\"lsn\":\""sv;
  AppendLsn(&payload_, change_lsn);
  payload_ += '"';
  payload_ += txn_json;
  payload_ += ",\"seq\":"sv;
  AppendUint(&payload_, seq);
  payload_ += '}';
}

Status EnvelopeBuilder::AppendRow(const TableInfo& t, pgwire::Tuple tuple,
                                  pgwire::Tuple fill_from, bool collect_unchanged) {
  // Every key is appended with its leading comma; the first one's becomes
  // the opening brace.
  const size_t open = payload_.size();
  for (size_t i = 0; i < tuple.size(); ++i) {
    const pgwire::Column& c = tuple[i];
    std::string_view text = c.value;
    pgwire::ColumnKind kind = c.kind;
    if (kind == pgwire::ColumnKind::kUnchanged) {
      // Unchanged TOAST: take the old row's value when PostgreSQL sent one,
      // else leave the column out and name it in "unchanged".
      if (i < fill_from.size() && fill_from[i].kind == pgwire::ColumnKind::kText) {
        kind = pgwire::ColumnKind::kText;
        text = fill_from[i].value;
      } else {
        if (collect_unchanged) unchanged_.push_back(static_cast<uint32_t>(i));
        continue;
      }
    }
    payload_ += t.cols[i].json_key;
    if (kind == pgwire::ColumnKind::kNull) {
      payload_ += "null"sv;
      continue;
    }
    Status s = AppendValue(&payload_, t.cols[i].type, text, options_);
    if (!s.ok()) return s.WithContext("column " + t.qualified + "." + t.cols[i].name);
  }
  if (payload_.size() == open) {
    payload_ += "{}"sv;
  } else {
    payload_[open] = '{';
    payload_ += '}';
  }
  return Status::Ok();
}

Status EnvelopeBuilder::AppendKey(const TableInfo& t, pgwire::Tuple tuple,
                                  pgwire::Tuple fallback) {
  key_text_.clear();
  const size_t open = payload_.size();  // as in AppendRow
  bool first = true;
  for (size_t i : t.key_cols) {
    const pgwire::Column* c = &tuple[i];
    if (c->kind == pgwire::ColumnKind::kUnchanged && i < fallback.size()) c = &fallback[i];
    if (!first && want_key_text_) key_text_ += ',';
    first = false;
    payload_ += t.cols[i].json_key;
    if (c->kind != pgwire::ColumnKind::kText) {
      // NULL, or an unchanged out-of-line key value PostgreSQL did not send.
      payload_ += "null"sv;
      continue;
    }
    if (want_key_text_) key_text_ += c->value;
    Status s = AppendValue(&payload_, t.cols[i].type, c->value, options_);
    if (!s.ok()) return s.WithContext("key column " + t.qualified + "." + t.cols[i].name);
  }
  if (payload_.size() == open) {
    payload_ += "{}"sv;
  } else {
    payload_[open] = '{';
    payload_ += '}';
  }
  return Status::Ok();
}

Status EnvelopeBuilder::CheckTuples(Op op, const TableInfo& t, char old_kind,
                                    pgwire::Tuple old_tuple, pgwire::Tuple new_tuple) const {
  // Every tuple PostgreSQL sends has all the relation's columns (logicalrep_write_tuple
  // writes natts of the relation); anything else is not a message we can map.
  const size_t n = t.cols.size();
  bool needs_new = op != Op::kDelete;
  bool needs_old = old_kind != 0;
  size_t bad = SIZE_MAX;
  const char* which = "";
  if (needs_new && new_tuple.size() != n) {
    bad = new_tuple.size();
    which = "new";
  } else if (needs_old && old_tuple.size() != n) {
    bad = old_tuple.size();
    which = "old";
  }
  if (bad != SIZE_MAX) {
    std::string name(OpName(op));
    name[0] = static_cast<char>(name[0] - 'a' + 'A');
    return Status::Corruption("pgoutput " + name + " for " + t.qualified + ": " + which +
                              " tuple has " + std::to_string(bad) +
                              " columns, its Relation message " + std::to_string(n));
  }
  return Status::Ok();
}

Status EnvelopeBuilder::BuildRow(Op op, TableInfo* t, Lsn change_lsn, char old_kind,
                                 pgwire::Tuple old_tuple, pgwire::Tuple new_tuple, Built* out) {
  if (!in_txn_) {
    return Status::Corruption(std::string("pgoutput ") + std::string(OpName(op)) +
                              " outside a transaction");
  }
  WALBUS_RETURN_IF_ERROR(CheckTuples(op, *t, old_kind, old_tuple, new_tuple));
  AppendHeader(op, t->source_fields, change_lsn);
  WALBUS_RETURN_IF_ERROR(AppendChange(op, *t, old_kind, old_tuple, new_tuple));
  out->table = t;
  Finish(op, out);
  return Status::Ok();
}

Status EnvelopeBuilder::AppendChange(Op op, const TableInfo& t, char old_kind,
                                     pgwire::Tuple old_tuple, pgwire::Tuple new_tuple) {
  unchanged_.clear();
  payload_ += ",\"key\":"sv;
  WALBUS_RETURN_IF_ERROR(
      AppendKey(t, op == Op::kDelete ? old_tuple : new_tuple, old_tuple));
  payload_ += ",\"before\":"sv;
  if (old_kind == 'O') {
    WALBUS_RETURN_IF_ERROR(AppendRow(t, old_tuple, {}, false));
  } else {
    payload_ += "null"sv;
  }
  payload_ += ",\"after\":"sv;
  after_begin_ = payload_.size();
  if (op == Op::kDelete) {
    payload_ += "null"sv;
  } else {
    WALBUS_RETURN_IF_ERROR(AppendRow(t, new_tuple, old_tuple, true));
  }
  after_end_ = payload_.size();
  if (!unchanged_.empty()) {
    payload_ += ",\"unchanged\":["sv;
    for (size_t i = 0; i < unchanged_.size(); ++i) {
      if (i > 0) payload_ += ',';
      AppendJsonString(&payload_, t.cols[unchanged_[i]].name);
    }
    payload_ += ']';
  }
  payload_ += '}';
  return Status::Ok();
}

void EnvelopeBuilder::Finish(Op op, Built* out) {
  FinishWith(op, commit_lsn_, commit_time_us_, seq_++, out);
}

void EnvelopeBuilder::FinishWith(Op op, Lsn commit_lsn, int64_t commit_time_us, uint32_t seq,
                                 Built* out) {
  out->op = op;
  out->commit_lsn = commit_lsn;
  out->commit_time_us = commit_time_us;
  out->seq = seq;
  out->id = std::string_view(payload_).substr(id_begin_, id_end_ - id_begin_);
  out->payload = payload_;
  out->after = std::string_view(payload_).substr(after_begin_, after_end_ - after_begin_);
  out->key_text = key_text_;
}

void EnvelopeBuilder::SetReadPoint(Lsn point) {
  if (read_point_ == point && !read_prefix_.empty()) return;
  read_point_ = point;
  read_prefix_.clear();
  AppendLsnHex16(&read_prefix_, point);
  read_prefix_ += ':';
  read_txn_json_ = ",\"commit_lsn\":\"";
  AppendLsn(&read_txn_json_, point);
  read_txn_json_ += "\",\"xid\":null,\"ts\":null";
}

Status EnvelopeBuilder::BuildRead(const TableInfo& t, pgwire::Tuple row, Lsn point,
                                  uint32_t row_number, Built* out) {
  WALBUS_RETURN_IF_ERROR(CheckTuples(Op::kRead, t, 0, {}, row));
  SetReadPoint(point);
  AppendHeaderWith(Op::kRead, t.source_fields, point, read_prefix_, row_number, read_txn_json_);
  WALBUS_RETURN_IF_ERROR(AppendChange(Op::kRead, t, 0, {}, row));
  out->table = &t;
  FinishWith(Op::kRead, point, 0, row_number, out);
  return Status::Ok();
}

Status EnvelopeBuilder::BuildTruncateAt(const TableInfo& t, Lsn point, uint32_t seq,
                                        Built* out) {
  SetReadPoint(point);
  AppendHeaderWith(Op::kTruncate, t.source_fields, point, read_prefix_, seq, read_txn_json_);
  payload_ += ",\"key\":null,\"before\":null,\"after\":";
  after_begin_ = payload_.size();
  payload_ += "null";
  after_end_ = payload_.size();
  payload_ += '}';
  key_text_.clear();
  out->table = &t;
  FinishWith(Op::kTruncate, point, 0, seq, out);
  return Status::Ok();
}

Status EnvelopeBuilder::BuildInsert(const pgwire::Insert& m, Lsn lsn, Built* out) {
  TableInfo* t = Find(m.relation);
  if (t == nullptr) {
    return Status::Corruption("pgoutput Insert for relation " + std::to_string(m.relation) +
                              " that no Relation message described");
  }
  return BuildRow(Op::kInsert, t, lsn, 0, {}, m.new_tuple, out);
}

Status EnvelopeBuilder::BuildUpdate(const pgwire::Update& m, Lsn lsn, Built* out) {
  TableInfo* t = Find(m.relation);
  if (t == nullptr) {
    return Status::Corruption("pgoutput Update for relation " + std::to_string(m.relation) +
                              " that no Relation message described");
  }
  return BuildRow(Op::kUpdate, t, lsn, m.old_kind, m.old_tuple, m.new_tuple, out);
}

Status EnvelopeBuilder::BuildDelete(const pgwire::Delete& m, Lsn lsn, Built* out) {
  TableInfo* t = Find(m.relation);
  if (t == nullptr) {
    return Status::Corruption("pgoutput Delete for relation " + std::to_string(m.relation) +
                              " that no Relation message described");
  }
  return BuildRow(Op::kDelete, t, lsn, m.old_kind, m.old_tuple, {}, out);
}

Status EnvelopeBuilder::BuildTruncate(uint32_t relid, Lsn lsn, Built* out) {
  TableInfo* t = Find(relid);
  if (t == nullptr) {
    return Status::Corruption("pgoutput Truncate for relation " + std::to_string(relid) +
                              " that no Relation message described");
  }
  if (!in_txn_) return Status::Corruption("pgoutput Truncate outside a transaction");
  AppendHeader(Op::kTruncate, t->source_fields, lsn);
  payload_ += ",\"key\":null,\"before\":null,\"after\":";
  after_begin_ = payload_.size();
  payload_ += "null";
  after_end_ = payload_.size();
  payload_ += '}';
  key_text_.clear();
  out->table = t;
  Finish(Op::kTruncate, out);
  return Status::Ok();
}

Status EnvelopeBuilder::BuildMessage(const pgwire::LogicalMessage& m, Built* out) {
  // A non-transactional message stands alone: its own LSN, seq 0, no xid or time.
  std::string saved_prefix, saved_txn;
  uint32_t saved_seq = seq_;
  Lsn saved_commit = commit_lsn_;
  int64_t saved_time = commit_time_us_;
  bool standalone = !m.transactional || !in_txn_;
  if (standalone) {
    saved_prefix = id_prefix_;
    saved_txn = txn_json_;
    id_prefix_.clear();
    AppendLsnHex16(&id_prefix_, m.lsn);
    id_prefix_ += ':';
    txn_json_ = ",\"commit_lsn\":\"";
    AppendLsn(&txn_json_, m.lsn);
    txn_json_ += "\",\"xid\":null,\"ts\":null";
    seq_ = 0;
    commit_lsn_ = m.lsn;
    commit_time_us_ = 0;
  }
  AppendHeader(Op::kMessage, db_json_, m.lsn);
  payload_ += ",\"prefix\":";
  AppendJsonString(&payload_, m.prefix);
  payload_ += ",\"content\":";
  if (IsValidUtf8(m.content)) {
    AppendJsonString(&payload_, m.content);
    payload_ += '}';
  } else {
    payload_ += '"';
    AppendBase64(&payload_, m.content);
    payload_ += "\",\"encoding\":\"base64\"}";
  }
  after_begin_ = after_end_ = payload_.size();
  key_text_.clear();
  out->table = nullptr;
  out->message_prefix = m.prefix;
  Finish(Op::kMessage, out);
  if (standalone) {
    id_prefix_ = std::move(saved_prefix);
    txn_json_ = std::move(saved_txn);
    seq_ = saved_seq;
    commit_lsn_ = saved_commit;
    commit_time_us_ = saved_time;
  }
  return Status::Ok();
}

}  // namespace walbus::bridge
