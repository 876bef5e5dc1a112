#include "adapters/nats/jetstream_sink.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <utility>

#include "adapters/nats/flush_kicker.h"
#include "adapters/nats/nats_connection.h"
#include "adapters/nats/nats_subject.h"
#include "bridge/core/log.h"

namespace walbus::adapters::nats {
namespace {

constexpr const char* kMsgIdHeader = "Nats-Msg-Id";
constexpr int64_t kStallWaitMs = 100;
// The lag warning (LagWatch) repeats at most this often.
constexpr int64_t kLagWarnEveryUs = 60'000'000;
int64_t NowUnixUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
             .count();
}

std::string Seconds(int64_t us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(us) / 1e6);
  return buf;
}

struct StreamInfoDeleter {
  void operator()(jsStreamInfo* si) const { jsStreamInfo_Destroy(si); }
};
using StreamInfoPtr = std::unique_ptr<jsStreamInfo, StreamInfoDeleter>;

std::string JoinSubjects(const std::vector<std::string>& subjects) {
  std::string out = "[";
  for (size_t i = 0; i < subjects.size(); ++i) {
    if (i > 0) out += ", ";
    out += subjects[i];
  }
  out += ']';
  return out;
}

std::vector<std::string> SubjectsOf(const jsStreamInfo* si) {
  std::vector<std::string> out;
  if (si == nullptr || si->Config == nullptr) return out;
  for (int i = 0; i < si->Config->SubjectsLen; ++i) out.emplace_back(si->Config->Subjects[i]);
  return out;
}

// cnats has no per-message closure for async publishes, but the ack handler
// gets back the natsMsg we created, and js_PublishMsgAsync sends its own
// inbox as the reply subject without touching the message's reply field.
// So the reply field carries "<ticket>:<table>" (never sent on the wire).
void FormatReply(uint64_t ticket, std::string_view table, std::string* out) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, ticket);
  (void)ec;  // 24 bytes always hold a uint64_t
  out->assign(digits, end);
  out->push_back(':');
  out->append(table);
}

bool ParseReply(const char* reply, uint64_t* ticket, std::string_view* table) {
  if (reply == nullptr) return false;
  std::string_view r(reply);
  size_t colon = r.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  auto [ptr, ec] = std::from_chars(r.data(), r.data() + colon, *ticket);
  if (ec != std::errc() || ptr != r.data() + colon) return false;
  *table = r.substr(colon + 1);
  return true;
}

bool TransientJsError(jsErrCode code) {
  return code == JSClusterNotAvailErr || code == JSClusterNotLeaderErr;
}

Status PubAckFailure(const Link& link, natsMsg* msg, std::string_view table,
                     const jsPubAckErr& pae) {
  const char* id = nullptr;
  natsMsgHeader_Get(msg, kMsgIdHeader, &id);
  const char* subject_c = natsMsg_GetSubject(msg);
  std::string subject = subject_c != nullptr ? subject_c : "";
  std::string event = "event " + std::string(id != nullptr ? id : "?") + " (table " +
                      std::string(table) + ")";
  std::string reason = pae.ErrText != nullptr ? pae.ErrText : natsStatus_GetText(pae.Err);
  std::string prefix = "sink " + link.sink + ": ";
  switch (pae.Err) {
    case NATS_TIMEOUT:
      return Status::Unavailable(prefix + "no PubAck for " + event + " on subject '" + subject +
                                 "' within " + std::to_string(link.ack_timeout_ms) + " ms (" +
                                 link.servers + "); unacknowledged events will be re-published");
    case NATS_NO_RESPONDERS:
      if (AnyCovers(link.stream_subjects, subject)) {
        return Status::Unavailable(prefix + "JetStream did not answer for " + event +
                                   " on subject '" + subject + "' (no responders) although stream '" +
                                   link.stream + "' covers it; retrying");
      }
      return Status::Permanent(prefix + event + ": no JetStream stream covers subject '" + subject +
                               "' (the server answered: " + reason + "); stream '" + link.stream +
                               "' has subjects " + JoinSubjects(link.stream_subjects) +
                               "; fix the topic template or the stream's subjects");
    case NATS_ERR:
      if (TransientJsError(pae.ErrCode)) {
        return Status::Unavailable(prefix + "JetStream could not store " + event + ": " + reason +
                                   " (JetStream error " + std::to_string(pae.ErrCode) + ")");
      }
      return Status::Permanent(prefix + "JetStream refused " + event + " on subject '" + subject +
                               "': " + reason + " (JetStream error " +
                               std::to_string(pae.ErrCode) + ")");
    default:
      return Status::Unavailable(prefix + "publishing " + event + " failed: " + reason + " (" +
                                 link.servers + ")");
  }
}

// Runs on the JetStream reply subscription's thread: records and returns.
void OnPubAck(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  Link* link = static_cast<Link*>(closure);
  {
    CallbackScope scope(link);
    if (scope.live() && !link->failed.load(std::memory_order_relaxed)) {
      uint64_t ticket = 0;
      std::string_view table;
      if (!ParseReply(natsMsg_GetReply(msg), &ticket, &table)) {
        link->Fail(Status::Internal("sink " + link->sink +
                                    ": a PubAck came back for a message walbus cannot map to "
                                    "its event (this cnats version changed the reply field)"));
      } else if (pa != nullptr) {
        link->acks->Ack(ticket);  // a duplicate PubAck too: the stream has the event
      } else if (pae != nullptr) {
        link->Fail(PubAckFailure(*link, msg, table, *pae));
      }
    }
  }
  natsMsg_Destroy(msg);
}

Status StreamApiStatus(natsStatus s, jsErrCode code, const std::string& what,
                       const std::string& servers) {
  std::string text = NatsErrorText(s);
  if (s == NATS_NO_RESPONDERS || code == JSNotEnabledForAccountErr || code == JSNotEnabledErr) {
    return Status::FailedPrecondition(what + ": JetStream is not enabled on " + servers + " (" +
                                      text + "); start nats-server with -js or enable JetStream "
                                      "for this account");
  }
  if (s == NATS_NOT_PERMITTED) {
    return Status::FailedPrecondition(what + ": not permitted (" + text +
                                      "); allow the sink's user to use $JS.API.>");
  }
  if (s == NATS_ERR && code != 0 && !TransientJsError(code)) {
    return Status::FailedPrecondition(what + ": " + text + " (JetStream error " +
                                      std::to_string(code) + ")");
  }
  return Status::Unavailable(what + ": " + text + " (" + servers + ")");
}

}  // namespace

struct JetStreamSink::Session {
  std::unique_ptr<Connection> conn;
  std::unique_ptr<jsCtx, JsCtxDeleter> js;
  jsPubOptions pub;
  int64_t max_payload = 0;
  // Stall detection (source thread): messages handed to cnats, the callback
  // count last seen by Flush, and when it last moved.
  uint64_t published = 0;
  uint64_t seen = 0;
  std::chrono::steady_clock::time_point progress_at = std::chrono::steady_clock::now();
  // The stream's Nats-Msg-Id window as the server has it (us; 0 = none),
  // when the lag warning was last written (Unix us), and the commit time
  // last looked at (the clock is read once per transaction, not per event).
  int64_t duplicate_window_us = 0;
  int64_t lag_warned_at_us = 0;
  int64_t lag_checked_commit_us = 0;
  // Sends each batch at Flush (Open only; Check publishes nothing).
  std::unique_ptr<FlushKicker> kicker;
  uint64_t kicked = 0;  // `published` at the last kick

  ~Session() {
    if (!conn) return;
    conn->Retire();  // PubAcks still in the pipe are dropped from here on
    if (kicker) {
      conn->Close();  // a round trip in progress returns at once
      kicker->Stop();
    }
    js.reset();
    conn.reset();
  }
};

JetStreamSink::JetStreamSink(JetStreamOptions options) : options_(std::move(options)) {}

JetStreamSink::~JetStreamSink() { Close(); }

Result<std::unique_ptr<JetStreamSink::Session>> JetStreamSink::Start(AckSink* acks,
                                                                     bool may_create) {
  const NatsOptions& copts = options_.connection;
  const std::string& stream = options_.stream;
  if (stream.empty()) {
    return Status::InvalidArgument("sink " + copts.name + ": no JetStream stream name");
  }
  auto conn = Connection::Connect(copts, acks);
  if (!conn.ok()) return conn.status();
  auto session = std::make_unique<Session>();
  session->conn = std::move(conn).value();
  Link* link = session->conn->link();
  link->stream = stream;
  link->ack_timeout_ms = std::max<uint32_t>(copts.ack_timeout_ms, 100);

  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = std::max<uint32_t>(options_.api_timeout_ms, 100);
  // A little over the pipeline's window: an Ack is reported inside the
  // callback, before cnats counts the message out, and cnats would otherwise
  // make the next Publish wait for that.
  jo.PublishAsync.MaxPending = int64_t{copts.max_pending} + std::max<int64_t>(64, copts.max_pending / 4);
  // Only reached if the pipeline overruns its own window: fail fast rather
  // than hold the source thread.
  jo.PublishAsync.StallWait = kStallWaitMs;
  jo.PublishAsync.AckHandler = OnPubAck;
  jo.PublishAsync.AckHandlerClosure = link;
  jsCtx* raw_js = nullptr;
  natsStatus s = natsConnection_JetStream(&raw_js, session->conn->get(), &jo);
  if (s != NATS_OK) {
    return Status::Internal("sink " + copts.name + ": natsConnection_JetStream: " + NatsErrorText(s));
  }
  session->js.reset(raw_js);
  jsPubOptions_Init(&session->pub);
  // No MaxWait: cnats would track a timer per message (two allocations and
  // an ordered insert under its lock); Flush watches PubAck progress instead.
  session->max_payload = session->conn->max_payload();

  // The stream: read it; create it when missing (and allowed); check that it
  // covers the configured subjects.
  const std::string what = "sink " + copts.name + ": JetStream stream '" + stream + "'";
  jsErrCode code = static_cast<jsErrCode>(0);
  jsStreamInfo* raw_si = nullptr;
  s = js_GetStreamInfo(&raw_si, session->js.get(), stream.c_str(), nullptr, &code);
  StreamInfoPtr si(raw_si);
  if (s == NATS_NOT_FOUND || code == JSStreamNotFoundErr) {
    if (!options_.create_stream) {
      std::string example = options_.subjects.empty() ? "<subjects>" : options_.subjects.front();
      return Status::FailedPrecondition(what + " does not exist on " + link->servers +
                                        "; create it (e.g. nats stream add " + stream +
                                        " --subjects '" + example +
                                        "') or set create_stream = true");
    }
    if (options_.subjects.empty()) {
      return Status::InvalidArgument(what + ": no subjects to create it with");
    }
    if (!may_create) {
      // Check(): it will be created at Open.
      link->stream_subjects = options_.subjects;
      return session;
    }
    std::vector<const char*> subjects;
    for (const std::string& subj : options_.subjects) subjects.push_back(subj.c_str());
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream.c_str();
    cfg.Subjects = subjects.data();
    cfg.SubjectsLen = static_cast<int>(subjects.size());
    cfg.Storage = js_FileStorage;
    cfg.Replicas = std::max<uint32_t>(options_.replicas, 1);
    cfg.Duplicates = static_cast<int64_t>(options_.duplicate_window_ms) * 1000000;
    code = static_cast<jsErrCode>(0);
    raw_si = nullptr;
    s = js_AddStream(&raw_si, session->js.get(), &cfg, nullptr, &code);
    si.reset(raw_si);
    if (s == NATS_ERR && code == JSStreamNameExistErr) {
      // Created by someone else since we looked: use theirs.
      code = static_cast<jsErrCode>(0);
      raw_si = nullptr;
      s = js_GetStreamInfo(&raw_si, session->js.get(), stream.c_str(), nullptr, &code);
      si.reset(raw_si);
    } else if (s == NATS_OK) {
      log::Info("jetstream stream created", {{"sink", copts.name},
                                             {"stream", stream},
                                             {"subjects", JoinSubjects(options_.subjects)}});
    }
    if (s != NATS_OK) return StreamApiStatus(s, code, what + " cannot be created", link->servers);
  } else if (s != NATS_OK) {
    return StreamApiStatus(s, code, what + " cannot be read", link->servers);
  }
  link->stream_subjects = SubjectsOf(si.get());
  if (si != nullptr && si->Config != nullptr) {
    session->duplicate_window_us = si->Config->Duplicates / 1000;
    if (si->Config->Duplicates / 1000000 != static_cast<int64_t>(options_.duplicate_window_ms)) {
      log::Info("jetstream stream has its own duplicate window",
                {{"sink", copts.name},
                 {"stream", stream},
                 {"duplicate_window_s", Seconds(session->duplicate_window_us)},
                 {"configured_s", Seconds(static_cast<int64_t>(options_.duplicate_window_ms) * 1000)},
                 {"note", "duplicate_window only applies when walbus creates the stream"}});
    }
  }
  for (const std::string& want : options_.subjects) {
    if (!AnyCovers(link->stream_subjects, want)) {
      return Status::FailedPrecondition(
          what + " exists with subjects " + JoinSubjects(link->stream_subjects) +
          ", which do not cover '" + want + "'; add '" + want +
          "' to the stream's subjects or configure another stream");
    }
  }
  return session;
}

Status JetStreamSink::Open(AckSink* acks) {
  Close();
  auto session = Start(acks, /*may_create=*/true);
  if (!session.ok()) return session.status();
  session_ = std::move(session).value();
  session_->kicker = std::make_unique<FlushKicker>(
      session_->conn->get(), std::max<int64_t>(options_.connection.ack_timeout_ms, 100));
  log::Info("jetstream sink up", {{"sink", options_.connection.name},
                                  {"url", session_->conn->connected_url()},
                                  {"stream", options_.stream},
                                  {"max_payload", std::to_string(session_->max_payload)}});
  return Status::Ok();
}

void JetStreamSink::Close() { session_.reset(); }

Status JetStreamSink::Publish(const Event& event) {
  if (!session_) return Status::Unavailable("sink " + options_.connection.name + ": not connected");
  Link* link = session_->conn->link();
  if (link->failed.load(std::memory_order_relaxed)) return link->Failure();
  auto describe = [&] {
    return "sink " + link->sink + ": event " + std::string(event.id) + " (table " +
           std::string(event.table) + ")";
  };
  if (static_cast<int64_t>(event.payload.size()) > session_->max_payload) {
    return Status::Permanent(describe() + ": payload of " + std::to_string(event.payload.size()) +
                             " bytes exceeds the NATS server's max_payload of " +
                             std::to_string(session_->max_payload) + " bytes (" + link->servers +
                             "); raise max_payload on the server");
  }
  WatchLag(event);
  subject_.assign(event.topic);
  id_.assign(event.id);
  FormatReply(event.ticket, event.table, &reply_);

  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject_.c_str(), reply_.c_str(), event.payload.data(),
                                static_cast<int>(event.payload.size()));
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, kMsgIdHeader, id_.c_str());
  if (s == NATS_OK) s = js_PublishMsgAsync(session_->js.get(), &msg, &session_->pub);
  natsMsg_Destroy(msg);  // no-op when cnats took the message
  if (s == NATS_OK) {
    ++session_->published;
    return Status::Ok();
  }

  Status why;
  switch (s) {
    case NATS_MAX_PAYLOAD:
      return Status::Permanent(describe() + ": payload of " + std::to_string(event.payload.size()) +
                               " bytes exceeds the NATS server's max_payload of " +
                               std::to_string(session_->conn->max_payload()) + " bytes (" +
                               link->servers + "); raise max_payload on the server");
    case NATS_INVALID_SUBJECT:
      return Status::Permanent(describe() + ": subject '" + subject_ +
                               "' is not a valid NATS subject");
    case NATS_TIMEOUT:
      why = Status::Unavailable(describe() + ": more PubAcks outstanding than max_pending (" +
                                std::to_string(options_.connection.max_pending) + ") for " +
                                std::to_string(kStallWaitMs) + " ms (" + link->servers + ")");
      break;
    default:
      why = ConnectionStatus(s, describe() + ": publish failed");
      if (why.code() == Code::kInternal) why = Status::Unavailable(why.message());
  }
  link->Record(why);
  return why;
}

// The kicker sends what Publish buffered (cnats's own flusher would only after
// a 1 ms nap) and PubAcks arrive on their own: Flush otherwise only reports a
// recorded failure, or declares the server unavailable when PubAcks are owed
// and none came for ack_timeout_ms. Every PubAck passes through OnPubAck,
// which counts itself into link->entered.
Status JetStreamSink::Flush() {
  if (!session_) return Status::Unavailable("sink " + options_.connection.name + ": not connected");
  Session& session = *session_;
  Link* link = session.conn->link();
  if (link->failed.load(std::memory_order_relaxed)) return link->Failure();
  if (session.kicker && session.published != session.kicked) {
    session.kicked = session.published;
    session.kicker->Kick();
  }
  auto now = std::chrono::steady_clock::now();
  uint64_t seen = link->entered.load(std::memory_order_relaxed);
  if (seen != session.seen || session.published <= seen) {
    session.seen = seen;
    session.progress_at = now;
    return Status::Ok();
  }
  if (now - session.progress_at < std::chrono::milliseconds(link->ack_timeout_ms)) {
    return Status::Ok();
  }
  Status why = Status::Unavailable(
      "sink " + link->sink + ": no PubAck from " + link->servers + " for " +
      std::to_string(link->ack_timeout_ms) + " ms with " + std::to_string(session.published - seen) +
      " outstanding; unacknowledged events will be re-published");
  link->Record(why);
  return why;
}

// Re-publishing deduplicates only within the stream's duplicate window of the
// first publish. An event committed longer ago than that window may have been
// published first at any time since its commit, so from here on a rewind (a
// broker outage, a walbus restart) can store it twice: say so, once a minute
// at most. The commit time comes from PostgreSQL's clock; skew between the
// hosts shifts the lag by as much.
void JetStreamSink::WatchLag(const Event& event) {
  Session& session = *session_;
  if (event.commit_time_us == 0 || session.duplicate_window_us <= 0) return;
  if (event.commit_time_us == session.lag_checked_commit_us) return;
  session.lag_checked_commit_us = event.commit_time_us;
  int64_t now = NowUnixUs();
  int64_t lag = now - event.commit_time_us;
  if (lag <= session.duplicate_window_us) return;
  if (session.lag_warned_at_us != 0 && now - session.lag_warned_at_us < kLagWarnEveryUs) return;
  session.lag_warned_at_us = now;
  log::Warn("jetstream lag exceeds the stream's duplicate window: a re-publish after a restart "
            "or outage may store events twice; raise the stream's duplicate window "
            "(duplicate_window, or nats stream edit --dupe-window) above the lag walbus can have",
            {{"sink", options_.connection.name},
             {"stream", options_.stream},
             {"lag_s", Seconds(lag)},
             {"duplicate_window_s", Seconds(session.duplicate_window_us)},
             {"event", event.id}});
}

Status JetStreamSink::Check() {
  auto session = Start(nullptr, /*may_create=*/false);
  if (!session.ok()) return session.status();
  log::Debug("jetstream sink check", {{"sink", options_.connection.name},
                                     {"url", (*session)->conn->connected_url()},
                                     {"stream", options_.stream}});
  return Status::Ok();
}

}  // namespace walbus::adapters::nats
