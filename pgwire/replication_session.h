// ReplicationSession: one replication=database connection to PostgreSQL,
// from IDENTIFY_SYSTEM through START_REPLICATION and the CopyBoth loop
// (XLogData, primary keepalive, standby status updates), the way
// pg_recvlogical.c drives it.
//
// Threads: libpq allows one thread per PGconn; the source thread owns this.
// A message returned by Next() points into libpq's copy buffer and is valid
// until the next call to Next() (the buffer is freed then).
// Errors: Unavailable when the connection broke (reconnect and resume from the
// slot), FailedPrecondition for server-side misconfiguration (the message
// names the fix), Corruption for bytes that are not the protocol.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "bridge/core/lsn.h"
#include "bridge/core/status.h"
#include "pgwire/pg_conn.h"

namespace walbus::pgwire {

struct SystemInfo {
  std::string system_id;
  uint32_t timeline = 0;
  Lsn xlogpos = 0;
  std::string dbname;
};

struct XLogData {
  Lsn wal_start = 0;  // the LSN of the change (or of the record that produced it)
  Lsn wal_end = 0;    // the server's WAL end when sent
  int64_t send_time_us = 0;
  std::string_view data;  // one pgoutput message
};

struct Keepalive {
  Lsn wal_end = 0;
  int64_t send_time_us = 0;
  bool reply_requested = false;
};

struct StartOptions {
  std::string slot;
  std::string publication;
  bool messages = false;
  Lsn start = 0;  // 0/0: the slot's confirmed_flush_lsn
};

// Microseconds since 2000-01-01 UTC, the protocol's clock.
int64_t PgNowMicros();

class ReplicationSession {
 public:
  static Result<std::unique_ptr<ReplicationSession>> Open(const std::string& conninfo);
  ~ReplicationSession();

  Result<SystemInfo> IdentifySystem();
  // CREATE_REPLICATION_SLOT ... LOGICAL pgoutput. Returns the consistent
  // point. AlreadyExists is reported as FailedPrecondition with sqlstate 42710.
  // With exported_snapshot, the slot's snapshot is exported (EXPORT_SNAPSHOT)
  // and its name stored there: another connection may import it with SET
  // TRANSACTION SNAPSHOT until this session runs its next command or closes.
  Result<Lsn> CreateSlot(const std::string& slot, std::string* sqlstate = nullptr,
                         std::string* exported_snapshot = nullptr);
  Status StartReplication(const StartOptions& options);

  enum class Kind { kNone, kXLogData, kKeepalive };
  // Non-blocking. kNone: nothing buffered; poll socket() for reading, then
  // call ConsumeInput(). Unavailable when the stream ended or broke (with the
  // server's reason: e.g. the publication or slot was dropped).
  Result<Kind> Next(XLogData* data, Keepalive* keepalive);
  Status ConsumeInput();
  // Standby status update ('r'): write/flush/apply positions.
  Status SendStatus(Lsn write, Lsn flush, Lsn apply, bool reply_requested);
  // Ends the CopyBoth stream politely (PQputCopyEnd) so the walsender flushes
  // our last status; best effort.
  void Finish();

  int socket() const;
  PGconn* conn() { return conn_.get(); }

 private:
  explicit ReplicationSession(PgConnPtr conn) : conn_(std::move(conn)) {}
  Status StreamEnded();

  PgConnPtr conn_;
  char* copybuf_ = nullptr;
};

}  // namespace walbus::pgwire
