#include "pgwire/pgoutput.h"

#include <iterator>
#include <string>

#include "pgwire/reader.h"

namespace walbus::pgwire {
namespace {

// Limits of PostgreSQL itself (htup_details.h): a tuple never has more
// attributes, so a larger count can only be corruption.
constexpr uint32_t kMaxTupleAttributeNumber = 1664;

// Smallest encoding of one Relation column: flags, "" name (its NUL),
// type OID, type modifier.
constexpr size_t kMinRelationColumnBytes = 1 + 1 + 4 + 4;

std::string DescribeByte(uint8_t b) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string s;
  if (b >= 0x20 && b < 0x7F) {
    s += '\'';
    s += static_cast<char>(b);
    s += "' ";
  }
  s += "(0x";
  s += kHex[b >> 4];
  s += kHex[b & 0xF];
  s += ')';
  return s;
}

// Names the field being read, for error messages only: formatted when a read
// fails, so that decoding a valid message allocates nothing.
// "new tuple column" + 3 + "kind" -> "new tuple column 3 kind".
struct Field {
  Field(const char* name) : prefix(name) {}  // NOLINT: implicit by design
  Field(std::string_view p, uint32_t i, std::string_view s = {})
      : prefix(p), index(i), suffix(s) {}

  std::string Describe() const {
    std::string s(prefix);
    if (index != 0) {
      s += ' ';
      s += std::to_string(index);
    }
    if (!suffix.empty()) {
      s += ' ';
      s += suffix;
    }
    return s;
  }

  std::string_view prefix;
  uint32_t index = 0;
  std::string_view suffix;
};

// A Reader that turns every failed read into Corruption naming the message
// type, the byte offset of the field and what was wrong.
class MessageReader {
 public:
  MessageReader(std::string_view bytes, std::string_view message)
      : reader_(bytes), message_(message) {}

  void set_message(std::string_view message) { message_ = message; }
  size_t offset() const { return reader_.offset(); }
  size_t remaining() const { return reader_.remaining(); }

  Status Error(size_t offset, std::string_view detail) const {
    std::string m = "pgoutput ";
    m += message_;
    m += " at offset ";
    m += std::to_string(offset);
    m += ": ";
    m += detail;
    return Status::Corruption(std::move(m));
  }

  // Every read is checked; the failure path (formatting the message) is out
  // of line so that the checks of a valid message stay a compare and a branch.
  Status U8(const Field& field, uint8_t* out) { return Check(reader_.ReadU8(out), field, 1); }
  Status U16(const Field& field, uint16_t* out) { return Check(reader_.ReadU16(out), field, 2); }
  Status U32(const Field& field, uint32_t* out) { return Check(reader_.ReadU32(out), field, 4); }
  Status I32(const Field& field, int32_t* out) { return Check(reader_.ReadI32(out), field, 4); }
  Status U64(const Field& field, uint64_t* out) { return Check(reader_.ReadU64(out), field, 8); }
  Status I64(const Field& field, int64_t* out) { return Check(reader_.ReadI64(out), field, 8); }
  Status CString(const Field& field, std::string_view* out) {
    if (reader_.ReadCString(out)) return Status::Ok();
    return Error(offset(), field.Describe() + " has no terminating NUL in the " +
                               std::to_string(remaining()) + " bytes left");
  }
  // An int32 byte count followed by that many bytes, as pq_sendcountedtext
  // and logicalrep_write_message write them.
  Status CountedBytes(const Field& field, std::string_view* out) {
    size_t at = offset();
    int32_t len = 0;
    if (!reader_.ReadI32(&len)) [[unlikely]] return CountedBytesError(at, field, false, 0);
    if (len < 0) [[unlikely]] return CountedBytesError(at, field, true, len);
    if (!reader_.ReadBytes(static_cast<size_t>(len), out)) [[unlikely]] {
      return CountedBytesError(at, field, true, len);
    }
    return Status::Ok();
  }
  // The message must be consumed to its last byte.
  Status Finish() const {
    if (remaining() == 0) return Status::Ok();
    return Error(offset(), std::to_string(remaining()) +
                               " unexpected bytes after the end of the message");
  }

 private:
  Status Check(bool ok, const Field& field, size_t size) const {
    if (ok) [[likely]] return Status::Ok();
    return ReadError(field, size);
  }
  [[gnu::noinline, gnu::cold]] Status ReadError(const Field& field, size_t size) const {
    return Error(offset(), field.Describe() + " needs " + std::to_string(size) +
                               " bytes, only " + std::to_string(remaining()) + " left");
  }
  // have_len: the length was read (and is negative or too large).
  [[gnu::noinline, gnu::cold]] Status CountedBytesError(size_t at, const Field& field,
                                                       bool have_len, int32_t len) const {
    if (!have_len) {
      return Error(at, field.Describe() + " length needs 4 bytes, only " +
                           std::to_string(remaining()) + " left");
    }
    if (len < 0) {
      return Error(at, field.Describe() + " has negative length " + std::to_string(len));
    }
    return Error(at, field.Describe() + " length " + std::to_string(len) + " exceeds the " +
                         std::to_string(remaining()) + " bytes left");
  }

  Reader reader_;
  std::string_view message_;
};

// Which tuple of a message is being read: "old tuple" or "new tuple".
// string_views, so naming a column's field costs no strlen per column.
struct TupleNames {
  std::string_view count;   // "old tuple column count"
  std::string_view column;  // "old tuple column"
};
constexpr TupleNames kOldTuple{"old tuple column count", "old tuple column"};
constexpr TupleNames kNewTuple{"new tuple column count", "new tuple column"};

// logicalrep_write_tuple: int16 column count, then per column a kind byte
// ('n' NULL, 'u' unchanged TOAST, 't' int32 length + text, 'b' binary).
Status ReadTuple(MessageReader* r, const TupleNames& names, std::vector<Column>* columns) {
  size_t at = r->offset();
  uint16_t count = 0;
  WALBUS_RETURN_IF_ERROR(r->U16(Field(names.count, 0), &count));
  if (count > kMaxTupleAttributeNumber) {
    return r->Error(at, std::string(names.count) + " " + std::to_string(count) +
                            " exceeds PostgreSQL's maximum of " +
                            std::to_string(kMaxTupleAttributeNumber));
  }
  // Each column takes at least its kind byte: check before reserving.
  if (count > r->remaining()) {
    return r->Error(at, std::string(names.count) + " " + std::to_string(count) +
                            " exceeds the " + std::to_string(r->remaining()) + " bytes left");
  }
  columns->clear();
  columns->reserve(count);
  for (uint32_t i = 1; i <= count; ++i) {
    size_t kind_at = r->offset();
    uint8_t kind = 0;
    WALBUS_RETURN_IF_ERROR(r->U8(Field(names.column, i, "kind"), &kind));
    switch (kind) {
      case 'n':
        columns->push_back(Column{ColumnKind::kNull, {}});
        break;
      case 'u':
        columns->push_back(Column{ColumnKind::kUnchanged, {}});
        break;
      case 't': {
        std::string_view value;
        WALBUS_RETURN_IF_ERROR(r->CountedBytes(Field(names.column, i), &value));
        columns->push_back(Column{ColumnKind::kText, value});
        break;
      }
      case 'b':
        return r->Error(kind_at, Field(names.column, i).Describe() +
                                     " is in binary format ('b'), which walbus never asks for");
      default:
        return r->Error(kind_at, Field(names.column, i).Describe() + " has unknown kind " +
                                     DescribeByte(kind));
    }
  }
  return Status::Ok();
}

// logicalrep_write_begin
Status DecodeBegin(MessageReader* r, Message* out) {
  Begin m{};
  size_t at = r->offset();
  WALBUS_RETURN_IF_ERROR(r->U64("final_lsn", &m.final_lsn));
  if (m.final_lsn == kInvalidLsn) return r->Error(at, "final_lsn is not set");
  WALBUS_RETURN_IF_ERROR(r->I64("commit time", &m.commit_time_us));
  WALBUS_RETURN_IF_ERROR(r->U32("xid", &m.xid));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  *out = m;
  return Status::Ok();
}

// logicalrep_write_commit
Status DecodeCommit(MessageReader* r, Message* out) {
  Commit m{};
  size_t at = r->offset();
  WALBUS_RETURN_IF_ERROR(r->U8("flags", &m.flags));
  if (m.flags != 0) {
    return r->Error(at, "unrecognized flags " + std::to_string(m.flags) + " (must be 0)");
  }
  WALBUS_RETURN_IF_ERROR(r->U64("commit_lsn", &m.commit_lsn));
  WALBUS_RETURN_IF_ERROR(r->U64("end_lsn", &m.end_lsn));
  WALBUS_RETURN_IF_ERROR(r->I64("commit time", &m.commit_time_us));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  *out = m;
  return Status::Ok();
}

// logicalrep_write_origin
Status DecodeOrigin(MessageReader* r, Message* out) {
  Origin m{};
  WALBUS_RETURN_IF_ERROR(r->U64("origin lsn", &m.commit_lsn));
  WALBUS_RETURN_IF_ERROR(r->CString("origin name", &m.name));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  *out = m;
  return Status::Ok();
}

// logicalrep_write_rel (+ logicalrep_write_namespace, logicalrep_write_attrs)
Status DecodeRelation(MessageReader* r, std::vector<RelationColumn>* columns, Message* out) {
  Relation m{};
  WALBUS_RETURN_IF_ERROR(r->U32("relation oid", &m.oid));
  WALBUS_RETURN_IF_ERROR(r->CString("namespace", &m.nspname));
  WALBUS_RETURN_IF_ERROR(r->CString("relation name", &m.relname));
  size_t at = r->offset();
  uint8_t identity = 0;
  WALBUS_RETURN_IF_ERROR(r->U8("replica identity", &identity));
  if (identity != 'd' && identity != 'n' && identity != 'f' && identity != 'i') {
    return r->Error(at, "unknown replica identity " + DescribeByte(identity));
  }
  m.replica_identity = static_cast<char>(identity);
  at = r->offset();
  uint16_t count = 0;
  WALBUS_RETURN_IF_ERROR(r->U16("column count", &count));
  if (count > kMaxTupleAttributeNumber) {
    return r->Error(at, "column count " + std::to_string(count) +
                            " exceeds PostgreSQL's maximum of " +
                            std::to_string(kMaxTupleAttributeNumber));
  }
  if (size_t{count} * kMinRelationColumnBytes > r->remaining()) {
    return r->Error(at, "column count " + std::to_string(count) + " needs at least " +
                            std::to_string(size_t{count} * kMinRelationColumnBytes) +
                            " bytes, only " + std::to_string(r->remaining()) + " left");
  }
  columns->clear();
  columns->reserve(count);
  for (uint32_t i = 1; i <= count; ++i) {
    RelationColumn c{};
    at = r->offset();
    uint8_t flags = 0;
    WALBUS_RETURN_IF_ERROR(r->U8(Field("column", i, "flags"), &flags));
    // LOGICALREP_IS_REPLICA_IDENTITY is the only flag protocol 1 defines.
    if ((flags & ~uint8_t{1}) != 0) {
      return r->Error(at, "column " + std::to_string(i) + " has unknown flags " +
                              std::to_string(flags));
    }
    c.key = (flags & 1) != 0;
    WALBUS_RETURN_IF_ERROR(r->CString(Field("column", i, "name"), &c.name));
    WALBUS_RETURN_IF_ERROR(r->U32(Field("column", i, "type oid"), &c.type_oid));
    WALBUS_RETURN_IF_ERROR(r->I32(Field("column", i, "type modifier"), &c.type_mod));
    columns->push_back(c);
  }
  WALBUS_RETURN_IF_ERROR(r->Finish());
  m.columns = *columns;
  *out = m;
  return Status::Ok();
}

// logicalrep_write_typ
Status DecodeType(MessageReader* r, Message* out) {
  Type m{};
  WALBUS_RETURN_IF_ERROR(r->U32("type oid", &m.oid));
  WALBUS_RETURN_IF_ERROR(r->CString("namespace", &m.nspname));
  WALBUS_RETURN_IF_ERROR(r->CString("type name", &m.typname));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  *out = m;
  return Status::Ok();
}

// logicalrep_write_insert
Status DecodeInsert(MessageReader* r, std::vector<Column>* new_columns, Message* out) {
  Insert m{};
  WALBUS_RETURN_IF_ERROR(r->U32("relation oid", &m.relation));
  size_t at = r->offset();
  uint8_t marker = 0;
  WALBUS_RETURN_IF_ERROR(r->U8("tuple marker", &marker));
  if (marker != 'N') {
    return r->Error(at, "expected new tuple 'N', got " + DescribeByte(marker));
  }
  WALBUS_RETURN_IF_ERROR(ReadTuple(r, kNewTuple, new_columns));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  m.new_tuple = *new_columns;
  *out = m;
  return Status::Ok();
}

// logicalrep_write_update
Status DecodeUpdate(MessageReader* r, std::vector<Column>* old_columns,
                    std::vector<Column>* new_columns, Message* out) {
  Update m{};  // old_kind 0: no old tuple
  WALBUS_RETURN_IF_ERROR(r->U32("relation oid", &m.relation));
  size_t at = r->offset();
  uint8_t marker = 0;
  WALBUS_RETURN_IF_ERROR(r->U8("tuple marker", &marker));
  if (marker == 'K' || marker == 'O') {
    m.old_kind = static_cast<char>(marker);
    WALBUS_RETURN_IF_ERROR(ReadTuple(r, kOldTuple, old_columns));
    m.old_tuple = *old_columns;
    at = r->offset();
    WALBUS_RETURN_IF_ERROR(r->U8("new tuple marker", &marker));
    if (marker != 'N') {
      return r->Error(at, "expected new tuple 'N' after the old tuple, got " +
                              DescribeByte(marker));
    }
  } else if (marker != 'N') {
    return r->Error(at, "expected 'K', 'O' or 'N', got " + DescribeByte(marker));
  }
  WALBUS_RETURN_IF_ERROR(ReadTuple(r, kNewTuple, new_columns));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  m.new_tuple = *new_columns;
  *out = m;
  return Status::Ok();
}

// logicalrep_write_delete
Status DecodeDelete(MessageReader* r, std::vector<Column>* old_columns, Message* out) {
  Delete m{};
  WALBUS_RETURN_IF_ERROR(r->U32("relation oid", &m.relation));
  size_t at = r->offset();
  uint8_t marker = 0;
  WALBUS_RETURN_IF_ERROR(r->U8("tuple marker", &marker));
  if (marker != 'K' && marker != 'O') {
    return r->Error(at, "expected old tuple 'K' or 'O', got " + DescribeByte(marker));
  }
  m.old_kind = static_cast<char>(marker);
  WALBUS_RETURN_IF_ERROR(ReadTuple(r, kOldTuple, old_columns));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  m.old_tuple = *old_columns;
  *out = m;
  return Status::Ok();
}

// logicalrep_write_truncate
Status DecodeTruncate(MessageReader* r, std::vector<uint32_t>* relations, Message* out) {
  Truncate m{};
  size_t count_at = r->offset();
  uint32_t count = 0;  // an int on the wire: a "negative" count fails the size check
  WALBUS_RETURN_IF_ERROR(r->U32("relation count", &count));
  size_t at = r->offset();
  WALBUS_RETURN_IF_ERROR(r->U8("options", &m.options));
  if ((m.options & ~(kTruncateCascade | kTruncateRestartIdentity)) != 0) {
    return r->Error(at, "unknown options " + std::to_string(m.options));
  }
  if (uint64_t{count} * 4 > r->remaining()) {
    return r->Error(count_at, "relation count " + std::to_string(count) + " needs " +
                                  std::to_string(uint64_t{count} * 4) + " bytes, only " +
                                  std::to_string(r->remaining()) + " left");
  }
  relations->clear();
  relations->reserve(count);
  for (uint32_t i = 1; i <= count; ++i) {
    uint32_t oid = 0;
    WALBUS_RETURN_IF_ERROR(r->U32(Field("relation", i, "oid"), &oid));
    relations->push_back(oid);
  }
  WALBUS_RETURN_IF_ERROR(r->Finish());
  m.relations = *relations;
  *out = m;
  return Status::Ok();
}

// logicalrep_write_message
Status DecodeMessage(MessageReader* r, Message* out) {
  LogicalMessage m{};
  size_t at = r->offset();
  uint8_t flags = 0;
  WALBUS_RETURN_IF_ERROR(r->U8("flags", &flags));
  // MESSAGE_TRANSACTIONAL is the only flag.
  if ((flags & ~uint8_t{1}) != 0) {
    return r->Error(at, "unknown flags " + std::to_string(flags));
  }
  m.transactional = (flags & 1) != 0;
  WALBUS_RETURN_IF_ERROR(r->U64("lsn", &m.lsn));
  WALBUS_RETURN_IF_ERROR(r->CString("prefix", &m.prefix));
  WALBUS_RETURN_IF_ERROR(r->CountedBytes("content", &m.content));
  WALBUS_RETURN_IF_ERROR(r->Finish());
  *out = m;
  return Status::Ok();
}

// Message types PostgreSQL 15 sends only with streaming or two-phase, which
// walbus never asks for.
std::string_view NotInProtocolOne(uint8_t type) {
  switch (type) {
    case 'S': return "Stream Start";
    case 'E': return "Stream Stop";
    case 'c': return "Stream Commit";
    case 'A': return "Stream Abort";
    case 'b': return "Begin Prepare";
    case 'P': return "Prepare";
    case 'K': return "Commit Prepared";
    case 'r': return "Rollback Prepared";
    case 'p': return "Stream Prepare";
    default: return {};
  }
}

}  // namespace

std::string_view MessageName(const Message& m) {
  static constexpr std::string_view kNames[] = {
      "Begin", "Commit", "Origin", "Relation", "Type", "Insert", "Update", "Delete",
      "Truncate", "Message"};
  static_assert(std::size(kNames) == std::variant_size_v<Message>);
  return kNames[m.index()];
}

Status Decoder::Decode(std::string_view bytes, Message* out) {
  MessageReader r(bytes, "message");
  uint8_t type = 0;
  WALBUS_RETURN_IF_ERROR(r.U8("message type", &type));
  switch (type) {
    case 'B': r.set_message("Begin"); return DecodeBegin(&r, out);
    case 'C': r.set_message("Commit"); return DecodeCommit(&r, out);
    case 'O': r.set_message("Origin"); return DecodeOrigin(&r, out);
    case 'R': r.set_message("Relation"); return DecodeRelation(&r, &relation_columns_, out);
    case 'Y': r.set_message("Type"); return DecodeType(&r, out);
    case 'I': r.set_message("Insert"); return DecodeInsert(&r, &new_columns_, out);
    case 'U': r.set_message("Update"); return DecodeUpdate(&r, &old_columns_, &new_columns_, out);
    case 'D': r.set_message("Delete"); return DecodeDelete(&r, &old_columns_, out);
    case 'T': r.set_message("Truncate"); return DecodeTruncate(&r, &relations_, out);
    case 'M': r.set_message("Message"); return DecodeMessage(&r, out);
    default: break;
  }
  std::string_view other = NotInProtocolOne(type);
  if (!other.empty()) {
    return r.Error(0, "message type " + DescribeByte(type) + " (" + std::string(other) +
                          ") is not sent with protocol version 1 without streaming or "
                          "two-phase, which walbus never asks for");
  }
  return r.Error(0, "unknown message type " + DescribeByte(type));
}

}  // namespace walbus::pgwire
