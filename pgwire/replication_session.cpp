#include "pgwire/replication_session.h"

#include <sys/time.h>

#include <cstdio>

#include "pgwire/pgoutput.h"
#include "pgwire/reader.h"

namespace walbus::pgwire {
namespace {

void PutU64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
}

}  // namespace

int64_t PgNowMicros() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec - kPgEpochUnixMicros;
}

Result<std::unique_ptr<ReplicationSession>> ReplicationSession::Open(const std::string& conninfo) {
  Result<PgConnPtr> conn = Connect(conninfo, /*replication=*/true);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<ReplicationSession>(new ReplicationSession(std::move(conn).value()));
}

ReplicationSession::~ReplicationSession() {
  if (copybuf_ != nullptr) PQfreemem(copybuf_);
}

int ReplicationSession::socket() const { return PQsocket(conn_.get()); }

Result<SystemInfo> ReplicationSession::IdentifySystem() {
  Result<Rows> rows = Query(conn_.get(), "IDENTIFY_SYSTEM");
  if (!rows.ok()) return rows.status().WithContext("IDENTIFY_SYSTEM");
  if (rows->size() != 1 || (*rows)[0].size() < 4) {
    return Status::Corruption("IDENTIFY_SYSTEM returned an unexpected result shape");
  }
  const Row& r = (*rows)[0];
  SystemInfo info;
  info.system_id = r[0].value_or("");
  info.timeline = static_cast<uint32_t>(std::stoul(r[1].value_or("0")));
  if (!r[2] || !ParseLsn(*r[2], &info.xlogpos)) {
    return Status::Corruption("IDENTIFY_SYSTEM returned an unparseable xlogpos");
  }
  if (!r[3]) {
    return Status::FailedPrecondition(
        "the connection is not bound to a database; put dbname= in source.dsn");
  }
  info.dbname = *r[3];
  return info;
}

Result<Lsn> ReplicationSession::CreateSlot(const std::string& slot, std::string* sqlstate,
                                           std::string* exported_snapshot) {
  // The pre-PG15 spelling, accepted by 12 through 17.
  std::string sql = "CREATE_REPLICATION_SLOT " + QuoteIdent(slot) + " LOGICAL pgoutput " +
                    (exported_snapshot != nullptr ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
  Result<Rows> rows = Query(conn_.get(), sql, sqlstate);
  if (!rows.ok()) return rows.status();
  Lsn point = 0;
  if (rows->empty() || (*rows)[0].size() < 2 || !(*rows)[0][1] ||
      !ParseLsn(*(*rows)[0][1], &point)) {
    return Status::Corruption("CREATE_REPLICATION_SLOT returned no consistent point");
  }
  if (exported_snapshot != nullptr) {
    // Columns: slot_name, consistent_point, snapshot_name, output_plugin.
    if ((*rows)[0].size() < 3 || !(*rows)[0][2] || (*rows)[0][2]->empty()) {
      return Status::Corruption("CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT returned no "
                                "snapshot name");
    }
    *exported_snapshot = *(*rows)[0][2];
  }
  return point;
}

Status ReplicationSession::StartReplication(const StartOptions& o) {
  std::string sql = "START_REPLICATION SLOT " + QuoteIdent(o.slot) + " LOGICAL " +
                    FormatLsn(o.start) + " (proto_version '1', publication_names " +
                    QuoteLiteral(conn_.get(), QuoteIdent(o.publication)) +
                    (o.messages ? ", messages 'true'" : "") + ")";
  PgResultPtr res(PQexec(conn_.get(), sql.c_str()));
  if (res && PQresultStatus(res.get()) == PGRES_COPY_BOTH) return Status::Ok();
  const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
  std::string msg = FirstLine(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn_.get()));
  std::string code = state ? state : "";
  if (code == "55006") {  // object_in_use: another process streams from the slot
    return Status::ResourceExhausted(msg);
  }
  if (code == "42704") {
    return Status::FailedPrecondition(msg + "; create it, or set source.create_slot = true");
  }
  if (code.empty() || PQstatus(conn_.get()) != CONNECTION_OK) {
    return Status::Unavailable("START_REPLICATION: " + msg);
  }
  return Status::FailedPrecondition("START_REPLICATION: " + msg);
}

Status ReplicationSession::StreamEnded() {
  // The server ended the copy (or failed): its reason is in the next result.
  PgResultPtr res(PQgetResult(conn_.get()));
  if (res && PQresultStatus(res.get()) == PGRES_FATAL_ERROR) {
    const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
    std::string msg = FirstLine(PQresultErrorMessage(res.get()));
    std::string code = state ? state : "";
    if (code == "42704") {  // e.g. publication "x" does not exist
      return Status::FailedPrecondition(
          msg + "; it was dropped while walbus used it, and a recreated publication does not "
                "cover the slot's pending changes (PostgreSQL decodes them with the catalog of "
                "their time): recreate it, run `walbus slot drop -c FILE --yes`, restart walbus "
                "and re-synchronise the consumers from the tables");
    }
    return Status::Unavailable("replication stream ended: " + msg);
  }
  std::string msg = FirstLine(PQerrorMessage(conn_.get()));
  return Status::Unavailable("replication stream ended by the server" +
                             (msg.empty() ? std::string() : ": " + msg));
}

Result<ReplicationSession::Kind> ReplicationSession::Next(XLogData* data, Keepalive* keepalive) {
  if (copybuf_ != nullptr) {
    PQfreemem(copybuf_);
    copybuf_ = nullptr;
  }
  int n = PQgetCopyData(conn_.get(), &copybuf_, /*async=*/1);
  if (n == 0) return Kind::kNone;
  if (n == -1) return StreamEnded();
  if (n < 0) {
    return Status::Unavailable("lost the replication connection: " +
                               FirstLine(PQerrorMessage(conn_.get())));
  }
  std::string_view msg(copybuf_, static_cast<size_t>(n));
  Reader r(msg);
  uint8_t kind;
  if (!r.ReadU8(&kind)) return Status::Corruption("empty CopyData message");
  if (kind == 'w') {
    int64_t t;
    if (!r.ReadU64(&data->wal_start) || !r.ReadU64(&data->wal_end) || !r.ReadI64(&t)) {
      return Status::Corruption("XLogData header truncated at offset " +
                                std::to_string(r.offset()));
    }
    data->send_time_us = t;
    data->data = msg.substr(r.offset());
    return Kind::kXLogData;
  }
  if (kind == 'k') {
    uint8_t reply;
    if (!r.ReadU64(&keepalive->wal_end) || !r.ReadI64(&keepalive->send_time_us) ||
        !r.ReadU8(&reply)) {
      return Status::Corruption("primary keepalive truncated at offset " +
                                std::to_string(r.offset()));
    }
    if (r.remaining() != 0) {
      return Status::Corruption("primary keepalive has " + std::to_string(r.remaining()) +
                                " unexpected trailing bytes");
    }
    keepalive->reply_requested = reply != 0;
    return Kind::kKeepalive;
  }
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", kind);
  return Status::Corruption(std::string("unknown CopyData message type ") + hex);
}

Status ReplicationSession::ConsumeInput() {
  if (PQconsumeInput(conn_.get()) == 0) {
    return Status::Unavailable("lost the replication connection: " +
                               FirstLine(PQerrorMessage(conn_.get())));
  }
  return Status::Ok();
}

Status ReplicationSession::SendStatus(Lsn write, Lsn flush, Lsn apply, bool reply_requested) {
  char buf[1 + 8 * 4 + 1];
  buf[0] = 'r';
  PutU64(buf + 1, write);
  PutU64(buf + 9, flush);
  PutU64(buf + 17, apply);
  PutU64(buf + 25, static_cast<uint64_t>(PgNowMicros()));
  buf[33] = reply_requested ? 1 : 0;
  if (PQputCopyData(conn_.get(), buf, sizeof buf) <= 0 || PQflush(conn_.get()) != 0) {
    return Status::Unavailable("could not send a status update: " +
                               FirstLine(PQerrorMessage(conn_.get())));
  }
  return Status::Ok();
}

void ReplicationSession::Finish() {
  if (PQputCopyEnd(conn_.get(), nullptr) > 0) PQflush(conn_.get());
}

}  // namespace walbus::pgwire
