// RedisSink appends every event to a Redis stream (SPEC.md §2 `redis`):
//   XADD <Event.topic> [MAXLEN ~ n] <id> op <op> id <event id> event <payload>
// with <id> = "<commit LSN as decimal>-<seq>" (id "lsn": a re-delivered event is
// refused as a duplicate, and that refusal counts as acknowledged) or "*"
// (id "auto"). Commands are pipelined: Publish only appends to the output
// buffer (writing it early past 1 MiB), Flush writes the whole buffer with one
// send, and with wait_replicas
// / wait_aof appends `WAIT n timeout` / `WAITAOF 1 0 timeout` after the batch,
// so that the batch is acknowledged only once replicated / on disk.
//
// Threads and ownership: Open, Publish, Flush, Close and Check run on the
// pipeline's source thread, which owns the hiredis connection and its output
// buffer. Open starts one reader thread per connection that owns the reply
// parser: it reads the socket, matches replies in order against a FIFO of
// fixed-size records (ticket, event id, table) that Flush hands over under a
// mutex, and calls AckSink::AckThrough / AckSink::Fail. Close (and a
// re-Open) stops and joins the reader before the connection is freed, so no
// callback runs after Close returns. Publish never waits for replies; a Flush
// with nothing to send waits at most ~2 ms for the reader to make progress,
// so a pipeline that calls Flush while waiting for acknowledgements does not spin.
//
// Errors: Unavailable = connection lost, refused, timed out, a transient
// server state (LOADING, READONLY, ...), or fewer replicas / no AOF fsync
// confirmed within the timeout; the pipeline reopens and re-publishes.
// Permanent = Redis refused an event for good (WRONGTYPE, NOPERM, OOM, a bad
// id); the message names the event id, its table and Redis's reason.
// FailedPrecondition (Open/Check) = wrong credentials, Redis too old (wait_aof
// needs 7.2), AOF off with wait_aof. InvalidArgument = a malformed URL.
// Every failure of a connection is reported once through Fail, and from then
// on also returned by Publish/Flush (Fail comes first, so a rewind caused by
// the returned status clears the reported one too).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "adapters/redis/redis_protocol.h"
#include "bridge/core/sink.h"

namespace walbus::adapters::redis {

struct RedisOptions {
  std::string name;                    // the sink's name, for messages
  std::string url;                     // redis://[user:password@]host[:port][/db]
  std::string user;                    // when set, replaces the URL's user
  std::string password;                // when set, replaces the URL's password
  std::optional<uint64_t> maxlen;      // XADD MAXLEN ~ n (approximate trimming)
  bool auto_id = false;                // id = "auto": Redis picks the entry id ("*")
  uint32_t wait_replicas = 0;          // WAIT n after each batch; 0 = off
  uint32_t wait_timeout_ms = 1000;     // timeout of WAIT / WAITAOF (0: Redis waits for ever,
                                       // and only reply_timeout_ms ends the wait)
  bool wait_aof = false;               // WAITAOF 1 0 after each batch (Redis 7.2+, appendonly yes)
  uint32_t max_in_flight = 10000;      // sizes the reply FIFO (the pipeline enforces the bound)
  uint32_t connect_timeout_ms = 5000;  // TCP connect and the handshake commands
  uint32_t reply_timeout_ms = 30000;   // no reply for this long while some are due: Unavailable;
                                       // also the limit for one blocked write
};

class RedisSink final : public Sink {
 public:
  explicit RedisSink(RedisOptions options);
  ~RedisSink() override;
  RedisSink(const RedisSink&) = delete;
  RedisSink& operator=(const RedisSink&) = delete;

  std::string_view name() const override { return options_.name; }
  std::string_view type() const override { return "redis"; }
  Status Open(AckSink* acks) override;
  Status Publish(const Event& event) override;
  Status Flush() override;
  void Close() override;
  Status Check() override;

 private:
  // The hiredis context, the reader thread, the reply FIFO and the records
  // staged since the last write: everything that lives as long as one connection.
  struct Connection;

  Status WriteOut();        // hands staged records to the reader, writes the buffer
  Status AppendBarriers();  // WAIT / WAITAOF after the batch
  Status NotConnected() const;

  RedisOptions options_;
  std::string maxlen_text_;         // preformatted MAXLEN argument
  std::string wait_replicas_text_;  // preformatted WAIT arguments
  std::string wait_timeout_text_;
  bool barriers_ = false;  // wait_replicas > 0 || wait_aof

  // Source thread only.
  std::unique_ptr<Connection> conn_;
  uint64_t last_ticket_ = 0;
  uint64_t xadds_since_barrier_ = 0;
  char id_buf_[kStreamIdCapacity];  // the entry id of the event being published
};

}  // namespace walbus::adapters::redis
