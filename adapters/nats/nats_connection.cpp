#include "adapters/nats/nats_connection.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

#include "adapters/nats/nats_subject.h"
#include "adapters/nats/nkey.h"
#include "bridge/core/log.h"

namespace walbus::adapters::nats {
namespace {

using Clock = std::chrono::steady_clock;

// How long ~Connection waits for cnats to finish with a Link before parking
// it anyway, and how long a parked Link is kept after that.
constexpr auto kQuiesceWait = std::chrono::seconds(2);
constexpr auto kGrace = std::chrono::seconds(2);
constexpr auto kGraceWithoutClosedCallback = std::chrono::seconds(60);

// Retired Links, freed once cnats cannot reach them any more. A callback that
// cnats's delivery thread has dequeued but not yet entered when the connection
// closes is the reason for the grace period: it runs within microseconds.
class Parking {
 public:
  void Add(std::unique_ptr<Link> link) {
    std::lock_guard<std::mutex> lock(mu_);
    Sweep();
    links_.push_back(std::move(link));
  }

 private:
  void Sweep() {
    auto now = Clock::now();
    std::erase_if(links_, [&](const std::unique_ptr<Link>& l) {
      bool closed;
      {
        std::lock_guard<std::mutex> link_lock(l->mu);
        closed = l->closed;
      }
      auto age = now - l->retired_at;
      bool quiet = l->entered.load() == l->left.load();
      return quiet && (closed ? age >= kGrace : age >= kGraceWithoutClosedCallback);
    });
  }

  std::mutex mu_;
  std::vector<std::unique_ptr<Link>> links_;
};

Parking& TheParking() {
  static Parking parking;
  return parking;
}

std::string CopyLastError(natsConnection* nc) {
  const char* text = nullptr;
  natsConnection_GetLastError(nc, &text);
  return text != nullptr ? std::string(text) : std::string();
}

// --- cnats connection callbacks: they run on cnats's async-callback thread;
// each records and returns.

void OnDisconnected(natsConnection*, void* closure) {
  Link* link = static_cast<Link*>(closure);
  CallbackScope scope(link);
  if (!scope.live()) return;
  log::Warn("nats sink down: connection lost", {{"sink", link->sink}, {"servers", link->servers}});
  link->Fail(Status::Unavailable("sink " + link->sink + ": lost the connection to the NATS server (" +
                                 link->servers + "); unacknowledged events will be re-published"));
}

void OnClosed(natsConnection*, void* closure) {
  Link* link = static_cast<Link*>(closure);
  CallbackScope scope(link);
  bool live = scope.live();
  {
    std::lock_guard<std::mutex> lock(link->mu);
    link->closed = true;
    link->cv.notify_all();
  }
  if (live) {
    link->Fail(Status::Unavailable("sink " + link->sink + ": the connection to the NATS server (" +
                                   link->servers + ") was closed"));
  }
}

void OnAsyncError(natsConnection* nc, natsSubscription*, natsStatus err, void* closure) {
  Link* link = static_cast<Link*>(closure);
  CallbackScope scope(link);
  if (!scope.live()) return;
  std::string text = CopyLastError(nc);
  if (text.empty()) text = natsStatus_GetText(err);
  if (err == NATS_NOT_PERMITTED) {
    // A publish (or the JetStream reply subscription) was refused for good.
    // The server names the subject; cnats does not say which event it was.
    link->Fail(Status::Permanent("sink " + link->sink + ": the NATS server refused: " + text +
                                 "; grant the sink's user this permission"));
    return;
  }
  if (err == NATS_CONNECTION_AUTH_FAILED) {
    link->Fail(Status::Unavailable("sink " + link->sink + ": the NATS server rejected the credentials: " +
                                   text));
    return;
  }
  log::Warn("nats asynchronous error", {{"sink", link->sink}, {"error", text}});
}

// A TLS connection the server closed right after the handshake, with no
// -ERR: what nats-server does (TLS 1.3) when it rejects walbus's client
// certificate or requires one. cnats only sees a missing PONG or a failed
// SSL write, which a network blip could also cause, so it counts as a
// configuration problem only once it happened kTlsRejectionsMeaningRefusal
// times in a row for the same sink (reset by a successful connect).
constexpr int kTlsRejectionsMeaningRefusal = 3;

bool LooksLikeTlsRejection(natsStatus s, const std::string& text) {
  if (s != NATS_PROTOCOL_ERROR && s != NATS_IO_ERROR && s != NATS_CONNECTION_CLOSED) return false;
  return text.find("PONG") != std::string::npos || text.find("SSL_") != std::string::npos;
}

// Consecutive TLS rejections per sink name; the source thread is the only
// caller of Connect for a sink, but check and run share the process.
int CountTlsRejection(const std::string& sink, bool rejected) {
  static std::mutex mu;
  static std::map<std::string, int> counts;
  std::lock_guard<std::mutex> lock(mu);
  if (!rejected) {
    counts.erase(sink);
    return 0;
  }
  return ++counts[sink];
}

Status OptionFailure(natsStatus s, const std::string& what) {
  return Status::FailedPrecondition(what + ": " + NatsErrorText(s));
}

}  // namespace

void Link::Fail(Status why) {
  if (failed.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(mu);
    failure = why;
  }
  if (!retired.load() && acks != nullptr) acks->Fail(std::move(why));
}

void Link::Record(Status why) {
  if (failed.exchange(true)) return;
  std::lock_guard<std::mutex> lock(mu);
  failure = std::move(why);
}

Status Link::Failure() {
  std::lock_guard<std::mutex> lock(mu);
  if (failure.ok()) return Status::Unavailable("sink " + sink + ": the NATS connection failed");
  return failure;
}

std::string NatsErrorText(natsStatus s) {
  std::string out = natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  const char* detail = nats_GetLastError(&last);
  if (last == s && detail != nullptr && *detail != '\0' && out != detail) {
    out += " (";
    out += detail;
    out += ')';
  }
  return out;
}

Status ConnectionStatus(natsStatus s, const std::string& what) {
  switch (s) {
    case NATS_OK:
      return Status::Ok();
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_IO_ERROR:
    case NATS_TIMEOUT:
    case NATS_STALE_CONNECTION:
    case NATS_INSUFFICIENT_BUFFER:
    case NATS_NO_RESPONDERS:
    case NATS_SLOW_CONSUMER:
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_DRAINING:
      return Status::Unavailable(what + ": " + NatsErrorText(s));
    default:
      return Status::Internal(what + ": " + NatsErrorText(s));
  }
}

Result<std::unique_ptr<Connection>> Connection::Connect(const NatsOptions& options, AckSink* acks) {
  auto link = std::make_unique<Link>();
  link->sink = options.name;
  link->servers = RedactUrls(options.urls);
  link->acks = acks;
  const std::string where = "sink " + options.name + " (" + link->servers + ")";

  std::vector<std::string> urls = SplitList(options.urls);
  if (urls.empty()) return Status::InvalidArgument(where + ": no NATS server URL");
  std::vector<const char*> url_ptrs;
  bool tls = !options.tls_ca.empty() || !options.tls_cert.empty();
  for (const std::string& u : urls) {
    url_ptrs.push_back(u.c_str());
    if (u.rfind("tls://", 0) == 0) tls = true;
  }

  natsOptions* raw_opts = nullptr;
  natsStatus s = natsOptions_Create(&raw_opts);
  if (s != NATS_OK) return Status::Internal(where + ": natsOptions_Create: " + NatsErrorText(s));
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> opts(raw_opts, natsOptions_Destroy);

  s = natsOptions_SetServers(opts.get(), url_ptrs.data(), static_cast<int>(url_ptrs.size()));
  if (s != NATS_OK) return OptionFailure(s, where + ": bad server URL list");
  std::string client_name = "walbus:" + options.name;
  natsOptions_SetName(opts.get(), client_name.c_str());
  if (!options.user.empty() || !options.password.empty()) {
    s = natsOptions_SetUserInfo(opts.get(), options.user.c_str(), options.password.c_str());
    if (s != NATS_OK) return OptionFailure(s, where + ": user/password");
  }
  if (!options.token.empty()) {
    s = natsOptions_SetToken(opts.get(), options.token.c_str());
    if (s != NATS_OK) return OptionFailure(s, where + ": token");
  }
  if (!options.creds.empty()) {
    // cnats reads the file only while connecting, and reports a missing one
    // like any connect failure (which would be retried for ever): check it here.
    if (FILE* f = std::fopen(options.creds.c_str(), "r"); f != nullptr) {
      std::fclose(f);
    } else {
      return Status::FailedPrecondition(where + ": cannot use creds file " + options.creds + ": " +
                                        std::strerror(errno) + "; fix the sink's creds path");
    }
    s = natsOptions_SetUserCredentialsFromFiles(opts.get(), options.creds.c_str(), nullptr);
    if (s != NATS_OK) return OptionFailure(s, where + ": cannot use creds file " + options.creds);
  }
  if (!options.nkey_seed.empty()) {
    Result<std::string> pub = UserPublicKeyFromSeedFile(options.nkey_seed);
    if (!pub.ok()) return pub.status().WithContext(where);
    // cnats reads the seed again from the file to sign each connect's nonce.
    s = natsOptions_SetNKeyFromSeed(opts.get(), pub.value().c_str(), options.nkey_seed.c_str());
    if (s != NATS_OK) return OptionFailure(s, where + ": cannot use nkey_seed file " + options.nkey_seed);
  }
  if (tls) {
    s = natsOptions_SetSecure(opts.get(), true);
    if (s != NATS_OK) return OptionFailure(s, where + ": TLS is not available in this cnats build");
    if (!options.tls_ca.empty()) {
      s = natsOptions_LoadCATrustedCertificates(opts.get(), options.tls_ca.c_str());
      if (s != NATS_OK) return OptionFailure(s, where + ": cannot load tls_ca " + options.tls_ca);
    }
    if (!options.tls_cert.empty() || !options.tls_key.empty()) {
      s = natsOptions_LoadCertificatesChain(opts.get(), options.tls_cert.c_str(),
                                            options.tls_key.c_str());
      if (s != NATS_OK) {
        return OptionFailure(s, where + ": cannot load tls_cert " + options.tls_cert +
                                    " / tls_key " + options.tls_key);
      }
    }
  }

  const int64_t ack_timeout = std::max<int64_t>(options.ack_timeout_ms, 100);
  natsOptions_SetTimeout(opts.get(), std::max<int64_t>(options.connect_timeout_ms, 100));
  // No client-side reconnect. A disconnect is reported at once
  // (OnDisconnected) and the pipeline rewinds and calls Open, which connects
  // afresh over the whole server list (cluster failover included). A cnats
  // reconnect would instead replay its reconnect buffer -- events published
  // after the disconnect -- ahead of the rewind's re-publish of the earlier
  // ones, and a stream would keep them out of commit order.
  natsOptions_SetAllowReconnect(opts.get(), false);
  // Inbound (PubAck) backlog room for the whole window, a big write buffer
  // (one write(2) per 256 KB at most), and a write deadline so a stuck socket
  // fails instead of blocking the source thread.
  natsOptions_SetMaxPendingMsgs(opts.get(),
                                static_cast<int>(std::max<int64_t>(65536, 2 * int64_t{options.max_pending})));
  natsOptions_SetIOBufSize(opts.get(), 256 * 1024);
  natsOptions_SetWriteDeadline(opts.get(), ack_timeout);
  natsOptions_SetPingInterval(opts.get(), 20000);
  natsOptions_SetMaxPingsOut(opts.get(), 3);
  natsOptions_SetFailRequestsOnDisconnect(opts.get(), true);

  Link* l = link.get();
  natsOptions_SetDisconnectedCB(opts.get(), OnDisconnected, l);
  natsOptions_SetClosedCB(opts.get(), OnClosed, l);
  natsOptions_SetErrorHandler(opts.get(), OnAsyncError, l);

  natsConnection* raw_nc = nullptr;
  s = natsConnection_Connect(&raw_nc, opts.get());
  if (s != NATS_OK) {
    std::string text = NatsErrorText(s);
    link->retired_at = Clock::now();
    link->retired.store(true);
    TheParking().Add(std::move(link));
    if (tls && LooksLikeTlsRejection(s, text)) {
      std::string why =
          where + ": the server closed the TLS connection right after the handshake (" + text +
          "): it rejects walbus's client certificate or requires one; set tls_cert and tls_key "
          "to a certificate signed by a CA in the server's tls ca_file";
      if (CountTlsRejection(options.name, true) >= kTlsRejectionsMeaningRefusal) {
        return Status::FailedPrecondition(why);
      }
      return Status::Unavailable(why);
    }
    switch (s) {
      case NATS_CONNECTION_AUTH_FAILED:
      case NATS_NOT_PERMITTED:
        return Status::FailedPrecondition(
            where + ": the server refused the credentials (" + text +
            "); check user/password, token, creds or nkey_seed");
      case NATS_SSL_ERROR:
        if (text.find("hostname mismatch") != std::string::npos ||
            text.find("IP address mismatch") != std::string::npos) {
          return Status::FailedPrecondition(
              where + ": TLS: the server's certificate is not issued for the host in the url (" +
              text + "); put a host name or address the certificate names in the url");
        }
        if (text.find("certificate verify failed") != std::string::npos ||
            text.find("unable to get local issuer") != std::string::npos ||
            text.find("self-signed") != std::string::npos ||
            text.find("self signed") != std::string::npos) {
          return Status::FailedPrecondition(
              where + ": TLS: the server's certificate is not trusted (" + text +
              "); set tls_ca to the CA file that signed it");
        }
        return Status::FailedPrecondition(where + ": TLS: " + text +
                                          "; check tls_ca/tls_cert/tls_key and the URL scheme");
      case NATS_SECURE_CONNECTION_REQUIRED:
        return Status::FailedPrecondition(where + ": TLS: " + text +
                                          "; the server requires TLS: use a tls:// url and tls_ca");
      case NATS_SECURE_CONNECTION_WANTED:
        return Status::FailedPrecondition(where + ": TLS: " + text +
                                          "; the server does not offer TLS: use a nats:// url "
                                          "without tls_ca/tls_cert/tls_key");
      case NATS_INVALID_ARG:
      case NATS_ADDRESS_MISSING:
        return Status::FailedPrecondition(where + ": bad server URL: " + text);
      default:
        return Status::Unavailable(where + ": cannot connect: " + text);
    }
  }

  CountTlsRejection(options.name, false);
  auto conn = std::make_unique<Connection>(Key());
  conn->nc_.reset(raw_nc);
  conn->link_ = std::move(link);
  return conn;
}

Connection::~Connection() {
  Link* link = link_.get();
  link->retired.store(true);
  nc_.reset();  // natsConnection_Destroy: closes, joins cnats's read loop and flusher
  {
    std::unique_lock<std::mutex> lock(link->mu);
    link->cv.wait_for(lock, kQuiesceWait, [&] { return link->closed; });
  }
  auto deadline = Clock::now() + kQuiesceWait;
  while (link->entered.load() != link->left.load() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  link->retired_at = Clock::now();
  TheParking().Add(std::move(link_));
}

std::string Connection::connected_url() const {
  char url[512] = {0};
  if (natsConnection_GetConnectedUrl(nc_.get(), url, sizeof url) != NATS_OK) return {};
  return RedactUrls(url);
}

}  // namespace walbus::adapters::nats
