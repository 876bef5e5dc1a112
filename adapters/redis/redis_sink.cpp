#include "adapters/redis/redis_sink.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

// hiredis 0.14's sds.h lacks the extern "C" guard its other headers have, and
// hiredis.h includes it: it must come first, wrapped.
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <initializer_list>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "adapters/redis/redis_url.h"

namespace walbus::adapters::redis {
namespace {

using Clock = std::chrono::steady_clock;

// Publish writes early once this much output is buffered, so that a huge batch
// neither holds megabytes nor delays the first replies.
constexpr size_t kWriteAtBytes = 1 << 20;
// A bigger output buffer (one huge event) is given back after the write.
constexpr size_t kKeepBufferBytes = 4 << 20;
// A Flush with nothing to send waits this long at most for replies.
constexpr size_t kReadChunk = 64 * 1024;
constexpr int kReaderPollMs = 200;  // how often the reader looks for a stalled server
constexpr size_t kMaxReservedRecords = 1 << 16;

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;
struct ReaderFree {
  void operator()(redisReader* r) const { redisReaderFree(r); }
};
using ReaderPtr = std::unique_ptr<redisReader, ReaderFree>;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

timeval ToTimeval(uint32_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

std::string_view ReplyText(const redisReply* r) {
  return r->str == nullptr ? std::string_view() : std::string_view(r->str, r->len);
}

enum class Kind : uint8_t { kXadd, kWait, kWaitAof };

// One command whose reply is due. Fixed size and no heap: the event id and the
// table are copied inline (cut short with "..." past the capacity, which only
// shortens an error message; PostgreSQL names fit).
struct Pending {
  uint64_t ticket;  // kXadd: the event's; a barrier: the batch's last ticket
  Kind kind;
  bool ack_point;  // a barrier whose good reply acknowledges the batch
  uint8_t id_len;
  uint8_t table_len;
  char id[32];
  char table[128];

  std::string_view Id() const { return {id, id_len}; }
  std::string_view Table() const { return {table, table_len}; }
};

template <size_t N>
void CopyInline(std::string_view from, char (&to)[N], uint8_t* len) {
  static_assert(N <= 255);
  if (from.size() <= N) {
    memcpy(to, from.data(), from.size());
    *len = static_cast<uint8_t>(from.size());
  } else {
    memcpy(to, from.data(), N - 3);
    memcpy(to + N - 3, "...", 3);
    *len = static_cast<uint8_t>(N);
  }
}

// FIFO of Pending that grows by doubling (the pipeline bounds what is in
// flight, so it settles at max_in_flight). Guarded by Connection::mu.
class PendingFifo {
 public:
  void Reserve(size_t n) {
    size_t capacity = 64;
    while (capacity < n) capacity <<= 1;
    slots_.resize(capacity);
  }
  bool empty() const { return count_ == 0; }
  void PushAll(const std::vector<Pending>& records) {
    while (count_ + records.size() > slots_.size()) Grow();
    size_t mask = slots_.size() - 1;
    for (const Pending& p : records) slots_[(head_ + count_++) & mask] = p;
  }
  const Pending& Front() const { return slots_[head_]; }
  void Pop() {
    head_ = (head_ + 1) & (slots_.size() - 1);
    --count_;
  }

 private:
  void Grow() {
    std::vector<Pending> bigger(std::max<size_t>(64, slots_.size() * 2));
    for (size_t i = 0; i < count_; ++i) bigger[i] = slots_[(head_ + i) & (slots_.size() - 1)];
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<Pending> slots_;
  size_t head_ = 0;
  size_t count_ = 0;
};

// What the reader's parser keeps of one reply. hiredis builds replies through
// these functions; returning the capture itself (never null, never freed)
// means no allocation per reply. Only what the sink looks at is kept: the
// type, an integer, the first two integers of an array (WAITAOF), and the
// text of an error or status.
struct ReplyCapture {
  int type = 0;
  long long integer = 0;
  long long elements[2] = {0, 0};
  int element_count = 0;
  size_t text_len = 0;
  char text[512];

  std::string_view Text() const { return {text, text_len}; }
};

void* CaptureString(const redisReadTask* task, char* str, size_t len) {
  auto* r = static_cast<ReplyCapture*>(task->privdata);
  if (task->parent == nullptr) {
    r->type = task->type;
    r->text_len = 0;
    if (task->type != REDIS_REPLY_STRING) {  // an XADD's new entry id is not needed
      r->text_len = std::min(len, sizeof(r->text));
      memcpy(r->text, str, r->text_len);
    }
  }
  return r;
}

void* CaptureArray(const redisReadTask* task, int /*elements*/) {
  auto* r = static_cast<ReplyCapture*>(task->privdata);
  if (task->parent == nullptr) {
    r->type = REDIS_REPLY_ARRAY;
    r->element_count = 0;
  }
  return r;
}

void* CaptureInteger(const redisReadTask* task, long long value) {
  auto* r = static_cast<ReplyCapture*>(task->privdata);
  if (task->parent == nullptr) {
    r->type = REDIS_REPLY_INTEGER;
    r->integer = value;
  } else if (task->parent->parent == nullptr && task->idx >= 0 && task->idx < 2) {
    r->elements[task->idx] = value;
    r->element_count = std::max(r->element_count, task->idx + 1);
  }
  return r;
}

void* CaptureNil(const redisReadTask* task) {
  auto* r = static_cast<ReplyCapture*>(task->privdata);
  if (task->parent == nullptr) r->type = REDIS_REPLY_NIL;
  return r;
}

void CaptureFree(void* /*reply*/) {}

redisReplyObjectFunctions kCaptureFunctions = {CaptureString, CaptureArray, CaptureInteger,
                                               CaptureNil, CaptureFree};

// Runs one command synchronously (handshake and Check only).
Result<ReplyPtr> Run(redisContext* c, std::initializer_list<std::string_view> args,
                     const std::string& where) {
  const char* argv[8];
  size_t lens[8];
  int argc = 0;
  for (std::string_view a : args) {
    argv[argc] = a.data() == nullptr ? "" : a.data();
    lens[argc] = a.size();
    ++argc;
  }
  void* reply = redisCommandArgv(c, argc, argv, lens);
  if (reply == nullptr) {
    return Status::Unavailable(where + ": " + (c->err != 0 ? c->errstr : "no reply"));
  }
  return ReplyPtr(static_cast<redisReply*>(reply));
}

// An error reply during the handshake, as the status that tells the pipeline
// what to do. Never echoes credentials (Redis's messages do not hold them).
Status HandshakeError(std::string_view command, std::string_view error, const std::string& where) {
  std::string reason(error);
  if (error.starts_with("NOAUTH")) {
    return Status::FailedPrecondition(
        where +
        " requires a password: put it in the sink url, "
        "redis://:password@host:port or redis://user:password@host:port (" +
        reason + ")");
  }
  if (error.starts_with("WRONGPASS") || error.starts_with("ERR invalid password") ||
      error.starts_with("ERR invalid username-password") ||
      error.find("without any password configured") != std::string_view::npos) {
    return Status::FailedPrecondition(where + " refused the user/password of the sink url (" +
                                      reason + "): fix the credentials in the url");
  }
  if (error.starts_with("NOPERM")) {
    return Status::FailedPrecondition(where + ": the redis user may not run " +
                                      std::string(command) + ": " + reason +
                                      " (grant it with ACL SETUSER)");
  }
  if (IsTransientError(error)) {
    return Status::Unavailable(where + ": " + std::string(command) + ": " + reason);
  }
  return Status::FailedPrecondition(where + ": " + std::string(command) + " failed: " + reason);
}

struct Handshake {
  ContextPtr ctx;
  std::string where;  // "sink NAME: redis at host:port"
};

// Connects, authenticates, selects the database and checks that the server can
// do what the options ask. Used by Open and Check.
Result<Handshake> Connect(const RedisOptions& o) {
  Result<RedisUrl> parsed = ParseRedisUrl(o.url);
  if (!parsed.ok()) return parsed.status().WithContext("sink " + o.name);
  RedisUrl url = std::move(parsed.value());
  if (!o.user.empty()) url.user = o.user;
  if (!o.password.empty()) url.password = o.password;
  if (!url.user.empty() && url.password.empty()) {
    return Status::InvalidArgument("sink " + o.name + ": redis user '" + url.user +
                                   "' has no password");
  }

  Handshake hs;
  hs.where = "sink " + o.name + ": redis at " + url.Address();
  timeval tv = ToTimeval(o.connect_timeout_ms);
  hs.ctx.reset(redisConnectWithTimeout(url.host.c_str(), url.port, tv));
  if (hs.ctx == nullptr) return Status::Unavailable(hs.where + ": out of memory");
  if (hs.ctx->err != 0) {
    return Status::Unavailable(hs.where + ": cannot connect: " + hs.ctx->errstr);
  }
  if (redisSetTimeout(hs.ctx.get(), tv) != REDIS_OK) {
    return Status::Unavailable(hs.where + ": cannot set the socket timeout: " + hs.ctx->errstr);
  }
  // Finds a peer that vanished without a FIN (host down, cable cut) while
  // replies are due.
  (void)redisEnableKeepAlive(hs.ctx.get());

  if (!url.password.empty()) {
    Result<ReplyPtr> r = url.user.empty()
                             ? Run(hs.ctx.get(), {"AUTH", url.password}, hs.where)
                             : Run(hs.ctx.get(), {"AUTH", url.user, url.password}, hs.where);
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_ERROR)
      return HandshakeError("AUTH", ReplyText(r->get()), hs.where);
  }
  if (url.db != 0) {
    std::string db = std::to_string(url.db);
    Result<ReplyPtr> r = Run(hs.ctx.get(), {"SELECT", db}, hs.where);
    if (!r.ok()) return r.status();
    if ((*r)->type == REDIS_REPLY_ERROR) {
      return HandshakeError("SELECT " + db, ReplyText(r->get()), hs.where);
    }
  }

  Result<ReplyPtr> info = Run(hs.ctx.get(), {"INFO", "server"}, hs.where);
  if (!info.ok()) return info.status();
  std::string_view text = ReplyText(info->get());
  if ((*info)->type == REDIS_REPLY_ERROR) {
    // A user without +info may still XADD; only wait_aof needs the version.
    if (!text.starts_with("NOPERM") || o.wait_aof) return HandshakeError("INFO", text, hs.where);
  } else {
    RedisVersion version;
    if (!ParseRedisVersion(text, &version)) {
      return Status::FailedPrecondition(hs.where +
                                        ": INFO server has no redis_version; "
                                        "is this a Redis server?");
    }
    std::string shown = std::to_string(version.major) + "." + std::to_string(version.minor) + "." +
                        std::to_string(version.patch);
    if (!version.AtLeast(5, 0)) {
      return Status::FailedPrecondition(hs.where + " is Redis " + shown +
                                        ", which has no streams: walbus needs Redis 5.0 or newer");
    }
    if (o.wait_aof && !version.AtLeast(7, 2)) {
      return Status::FailedPrecondition(hs.where + " is Redis " + shown +
                                        ": wait_aof needs WAITAOF, Redis 7.2 or newer; upgrade "
                                        "Redis or set wait_aof = false");
    }
  }
  if (o.wait_aof) {
    Result<ReplyPtr> persistence = Run(hs.ctx.get(), {"INFO", "persistence"}, hs.where);
    if (!persistence.ok()) return persistence.status();
    std::string_view ptext = ReplyText(persistence->get());
    if ((*persistence)->type == REDIS_REPLY_ERROR) return HandshakeError("INFO", ptext, hs.where);
    std::string_view aof;
    if (InfoField(ptext, "aof_enabled", &aof) && aof == "0") {
      return Status::FailedPrecondition(hs.where +
                                        " has the append-only file off: wait_aof needs "
                                        "`appendonly yes` in redis.conf, or set wait_aof = false");
    }
  }
  return hs;
}

}  // namespace

struct RedisSink::Connection {
  // Fixed at Open.
  const RedisOptions* options = nullptr;  // the sink's, which outlives this
  std::string where;                      // "sink NAME: redis at host:port"
  AckSink* acks = nullptr;
  ContextPtr ctx;  // source thread: output buffer and writes; the reader only reads fd
  int fd = -1;
  bool barriers = false;
  std::thread reader;
  std::atomic<bool> stopping{false};
  std::atomic<bool> broken{false};  // failure is set and was reported
  std::atomic<int64_t> last_write_ns{0};

  // Source thread only: records of the commands appended since the last write.
  std::vector<Pending> staged;

  std::mutex mu;
  std::condition_variable progress_cv;
  PendingFifo fifo;               // guarded by mu: commands written whose reply is due, in order
  Status failure;                 // guarded by mu: the first failure; sticks until Close
  bool failure_recorded = false;  // guarded by mu
  uint64_t progress = 0;          // guarded by mu: bumped after each chunk of replies

  // Reader thread only.
  ReaderPtr parser;
  ReplyCapture reply;

  Status Failure() {
    std::lock_guard<std::mutex> lock(mu);
    return failure;
  }

  // Keeps the first failure; true when this one was it. The caller then calls
  // Announce outside the lock.
  bool RecordFailureLocked(Status why) {
    if (failure_recorded) return false;
    failure = std::move(why);
    failure_recorded = true;
    return true;
  }

  // Fail first, then `broken`: the source thread can only return the failure
  // from Publish/Flush once the pipeline has it recorded too, so a rewind that
  // follows the returned status also clears the reported one (no stale
  // failure arrives after it).
  void Announce(Status why) {
    if (!stopping.load(std::memory_order_acquire) && acks != nullptr) acks->Fail(std::move(why));
    broken.store(true, std::memory_order_release);
  }

  void ReportFailure(Status why) {
    bool first;
    {
      std::lock_guard<std::mutex> lock(mu);
      first = RecordFailureLocked(why);
      ++progress;
    }
    progress_cv.notify_all();
    if (first) Announce(std::move(why));
  }

  void WaitForProgress(std::chrono::milliseconds at_most) {
    std::unique_lock<std::mutex> lock(mu);
    if (fifo.empty() || failure_recorded) return;
    uint64_t seen = progress;
    progress_cv.wait_for(lock, at_most, [&] { return progress != seen; });
  }

  void ReadLoop();
  bool ProcessReplies();
  Status Judge(const Pending& p, uint64_t* ack) const;
};

// The reader thread: waits for bytes, feeds the parser, settles replies.
// Never touches ctx (the source thread owns it); reads fd directly.
void RedisSink::Connection::ReadLoop() {
  pthread_setname_np(pthread_self(), "walbus-redis");
  std::vector<char> buf(kReadChunk);
  int64_t last_read_ns = NowNs();
  int64_t stall_limit_ns = (static_cast<int64_t>(options->reply_timeout_ms) +
                            (barriers ? options->wait_timeout_ms : 0)) *
                           1000000;
  for (;;) {
    pollfd pfd{fd, POLLIN, 0};
    int ready = poll(&pfd, 1, kReaderPollMs);
    if (stopping.load(std::memory_order_acquire)) return;
    if (ready < 0) {
      if (errno == EINTR) continue;
      ReportFailure(Status::Unavailable(where + ": poll failed: " + strerror(errno)));
      return;
    }
    if (ready == 0) {
      bool due;
      {
        std::lock_guard<std::mutex> lock(mu);
        due = !fifo.empty();
      }
      int64_t since = std::max(last_read_ns, last_write_ns.load(std::memory_order_relaxed));
      if (due && NowNs() - since > stall_limit_ns) {
        ReportFailure(Status::Unavailable(where + ": no reply for " +
                                          std::to_string(stall_limit_ns / 1000000) + " ms"));
        return;
      }
      continue;
    }
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      int err = errno;
      if (stopping.load(std::memory_order_acquire)) return;
      ReportFailure(Status::Unavailable(where + ": connection lost: " + strerror(err)));
      return;
    }
    if (n == 0) {
      if (stopping.load(std::memory_order_acquire)) return;
      ReportFailure(Status::Unavailable(where + " closed the connection"));
      return;
    }
    last_read_ns = NowNs();
    if (redisReaderFeed(parser.get(), buf.data(), static_cast<size_t>(n)) != REDIS_OK) {
      ReportFailure(Status::Unavailable(where + ": reply parser: out of memory"));
      return;
    }
    if (!ProcessReplies()) return;
  }
}

// Settles every complete reply in the parser against the FIFO, in order, then
// acknowledges through the last good one. Returns false after a failure.
bool RedisSink::Connection::ProcessReplies() {
  uint64_t ack = 0;
  Status failed;
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (;;) {
      void* obj = nullptr;
      if (redisReaderGetReply(parser.get(), &obj) != REDIS_OK) {
        failed = Status::Unavailable(where + ": protocol error: " + parser->errstr);
        break;
      }
      if (obj == nullptr) break;  // the rest of the reply is still on the way
      if (fifo.empty()) {
        failed = Status::Unavailable(where + ": a reply to no command");
        break;
      }
      failed = Judge(fifo.Front(), &ack);
      fifo.Pop();
      if (!failed.ok()) break;
    }
    if (!failed.ok()) first = RecordFailureLocked(failed);
    ++progress;
  }
  progress_cv.notify_all();
  // Replies before a failure are real: those entries are in the stream.
  if (ack != 0) acks->AckThrough(ack);
  if (failed.ok()) return true;
  if (first) Announce(std::move(failed));
  return false;
}

Status RedisSink::Connection::Judge(const Pending& p, uint64_t* ack) const {
  const ReplyCapture& r = reply;
  switch (p.kind) {
    case Kind::kXadd:
      if (r.type == REDIS_REPLY_ERROR) {
        std::string_view why = r.Text();
        // Already in the stream (a re-delivery after a rewind): that is the dedup.
        if (!IsDuplicateIdError(why)) {
          std::string what = " event " + std::string(p.Id()) + " (table " + std::string(p.Table()) +
                             "): " + std::string(why);
          if (IsTransientError(why)) return Status::Unavailable(where + " cannot take" + what);
          std::string fix = why.starts_with("WRONGTYPE")
                                ? "; the stream key holds another Redis type: delete or rename "
                                  "that key, or change the sink's key template"
                            : why.starts_with("NOPERM")
                                ? "; grant the sink's redis user XADD on these keys (ACL SETUSER)"
                            : why.starts_with("OOM")
                                ? "; raise maxmemory or set the sink's maxlen"
                                : "";
          return Status::Permanent(where + " refused" + what + fix);
        }
      } else if (r.type != REDIS_REPLY_STRING && r.type != REDIS_REPLY_STATUS) {
        return Status::Unavailable(where + ": unexpected reply type " + std::to_string(r.type) +
                                   " to XADD of event " + std::string(p.Id()));
      }
      if (!barriers) *ack = p.ticket;
      return Status::Ok();
    case Kind::kWait:
      if (r.type == REDIS_REPLY_ERROR) {
        return Status::Permanent(where + " refused WAIT: " + std::string(r.Text()));
      }
      if (r.type != REDIS_REPLY_INTEGER || r.integer < options->wait_replicas) {
        long long got = r.type == REDIS_REPLY_INTEGER ? r.integer : 0;
        return Status::Unavailable(where + ": only " + std::to_string(got) + " of " +
                                   std::to_string(options->wait_replicas) +
                                   " replicas acknowledged within " +
                                   std::to_string(options->wait_timeout_ms) + " ms (WAIT)");
      }
      if (p.ack_point) *ack = p.ticket;
      return Status::Ok();
    case Kind::kWaitAof:
      if (r.type == REDIS_REPLY_ERROR) {
        return Status::Permanent(where + " refused WAITAOF: " + std::string(r.Text()));
      }
      if (r.type != REDIS_REPLY_ARRAY || r.element_count < 1 || r.elements[0] < 1) {
        return Status::Unavailable(where + " did not confirm the append-only-file fsync within " +
                                   std::to_string(options->wait_timeout_ms) + " ms (WAITAOF)");
      }
      if (p.ack_point) *ack = p.ticket;
      return Status::Ok();
  }
  return Status::Internal(where + ": unknown pending command");
}

RedisSink::RedisSink(RedisOptions options) : options_(std::move(options)) {
  if (options_.maxlen) maxlen_text_ = std::to_string(*options_.maxlen);
  wait_replicas_text_ = std::to_string(options_.wait_replicas);
  wait_timeout_text_ = std::to_string(options_.wait_timeout_ms);
  barriers_ = options_.wait_replicas > 0 || options_.wait_aof;
}

RedisSink::~RedisSink() { Close(); }

Status RedisSink::NotConnected() const {
  return Status::Unavailable("sink " + options_.name + ": not connected to redis");
}

Status RedisSink::Open(AckSink* acks) {
  Close();
  Result<Handshake> hs = Connect(options_);
  if (!hs.ok()) return hs.status();

  auto conn = std::make_unique<Connection>();
  conn->options = &options_;
  conn->where = std::move(hs->where);
  conn->acks = acks;
  conn->ctx = std::move(hs->ctx);
  conn->fd = conn->ctx->fd;
  conn->barriers = barriers_;
  // From now on the socket timeout only bounds a write that makes no progress.
  if (redisSetTimeout(conn->ctx.get(), ToTimeval(options_.reply_timeout_ms)) != REDIS_OK) {
    return Status::Unavailable(conn->where + ": cannot set the socket timeout");
  }
  conn->parser.reset(redisReaderCreateWithFunctions(&kCaptureFunctions));
  if (conn->parser == nullptr) return Status::Internal(conn->where + ": out of memory");
  conn->parser->privdata = &conn->reply;
  size_t records = std::min<size_t>(options_.max_in_flight + 16, kMaxReservedRecords);
  conn->fifo.Reserve(records);
  conn->staged.reserve(records);
  conn->last_write_ns.store(NowNs());
  try {
    conn->reader = std::thread([c = conn.get()] { c->ReadLoop(); });
  } catch (const std::system_error& e) {
    return Status::Internal(conn->where + ": cannot start the reader thread: " + e.what());
  }
  conn_ = std::move(conn);
  last_ticket_ = 0;
  xadds_since_barrier_ = 0;
  return Status::Ok();
}

void RedisSink::Close() {
  if (conn_ == nullptr) return;
  conn_->stopping.store(true, std::memory_order_release);
  if (conn_->reader.joinable()) {
    // Wakes the reader's poll; the fd itself is closed by redisFree below.
    ::shutdown(conn_->fd, SHUT_RDWR);
    conn_->reader.join();
  }
  conn_.reset();
}

Status RedisSink::Publish(const Event& event) {
  Connection* c = conn_.get();
  if (c == nullptr) return NotConnected();
  if (c->broken.load(std::memory_order_acquire)) return c->Failure();

  const char* argv[12];
  size_t lens[12];
  int argc = 0;
  auto add = [&](std::string_view arg) {
    argv[argc] = arg.data() == nullptr ? "" : arg.data();
    lens[argc] = arg.size();
    ++argc;
  };
  add("XADD");
  add(event.topic);
  if (options_.maxlen) {
    add("MAXLEN");
    add("~");
    add(maxlen_text_);
  }
  if (options_.auto_id) {
    add("*");
  } else {
    add(std::string_view(id_buf_, FormatStreamId(event.commit_lsn, event.seq, id_buf_)));
  }
  add("op");
  add(event.op);
  add("id");
  add(event.id);
  add("event");
  add(event.payload);
  if (redisAppendCommandArgv(c->ctx.get(), argc, argv, lens) != REDIS_OK) {
    return Status::Internal(c->where + ": out of memory buffering XADD");
  }

  Pending& p = c->staged.emplace_back();
  p.ticket = event.ticket;
  p.kind = Kind::kXadd;
  p.ack_point = false;
  CopyInline(event.id, p.id, &p.id_len);
  CopyInline(event.table, p.table, &p.table_len);
  last_ticket_ = event.ticket;
  ++xadds_since_barrier_;

  if (sdslen(c->ctx->obuf) >= kWriteAtBytes) return WriteOut();
  return Status::Ok();
}

Status RedisSink::AppendBarriers() {
  Connection* c = conn_.get();
  auto append = [&](Kind kind, bool ack_point,
                    std::initializer_list<std::string_view> args) -> Status {
    const char* argv[4];
    size_t lens[4];
    int argc = 0;
    for (std::string_view a : args) {
      argv[argc] = a.data();
      lens[argc] = a.size();
      ++argc;
    }
    if (redisAppendCommandArgv(c->ctx.get(), argc, argv, lens) != REDIS_OK) {
      return Status::Internal(c->where + ": out of memory buffering WAIT");
    }
    Pending& p = c->staged.emplace_back();
    p.ticket = last_ticket_;
    p.kind = kind;
    p.ack_point = ack_point;
    p.id_len = 0;
    p.table_len = 0;
    return Status::Ok();
  };
  if (options_.wait_replicas > 0) {
    WALBUS_RETURN_IF_ERROR(
        append(Kind::kWait, !options_.wait_aof, {"WAIT", wait_replicas_text_, wait_timeout_text_}));
  }
  if (options_.wait_aof) {
    WALBUS_RETURN_IF_ERROR(append(Kind::kWaitAof, true, {"WAITAOF", "1", "0", wait_timeout_text_}));
  }
  xadds_since_barrier_ = 0;
  return Status::Ok();
}

Status RedisSink::WriteOut() {
  Connection* c = conn_.get();
  if (!c->staged.empty()) {
    // Before the bytes go out: a reply must never arrive ahead of its record.
    std::lock_guard<std::mutex> lock(c->mu);
    c->fifo.PushAll(c->staged);
  }
  c->staged.clear();
  // Our own write loop rather than redisBufferWrite: send(MSG_NOSIGNAL), so a
  // server that went away is an error here and not a SIGPIPE for the whole
  // process, and the buffer keeps its allocation for the next batch.
  char* buf = c->ctx->obuf;
  size_t len = sdslen(buf);
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::send(c->fd, buf + done, len - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string why = (errno == EAGAIN || errno == EWOULDBLOCK)
                            ? "no progress for " + std::to_string(options_.reply_timeout_ms) + " ms"
                            : strerror(errno);
      c->ReportFailure(Status::Unavailable(c->where + ": write failed: " + why));
      return c->Failure();
    }
    done += static_cast<size_t>(n);
  }
  if (sdsalloc(buf) > kKeepBufferBytes) {
    sdsfree(buf);
    c->ctx->obuf = sdsempty();
  } else {
    sdsclear(buf);
  }
  c->last_write_ns.store(NowNs(), std::memory_order_relaxed);
  return Status::Ok();
}

Status RedisSink::Flush() {
  Connection* c = conn_.get();
  if (c == nullptr) return NotConnected();
  if (c->broken.load(std::memory_order_acquire)) return c->Failure();
  if (barriers_ && xadds_since_barrier_ > 0) WALBUS_RETURN_IF_ERROR(AppendBarriers());
  if (!c->staged.empty() || sdslen(c->ctx->obuf) > 0) return WriteOut();
  // Nothing to send. Never wait here: the pipeline sleeps on its own wakeup
  // (notified by AckThrough), and a wait at every batch boundary would add
  // latency to every transaction.
  return Status::Ok();
}

Status RedisSink::Check() {
  Result<Handshake> hs = Connect(options_);
  if (!hs.ok()) return hs.status();
  Result<ReplyPtr> pong = Run(hs->ctx.get(), {"PING"}, hs->where);
  if (!pong.ok()) return pong.status();
  if ((*pong)->type == REDIS_REPLY_ERROR)
    return HandshakeError("PING", ReplyText(pong->get()), hs->where);
  return Status::Ok();
}

}  // namespace walbus::adapters::redis
