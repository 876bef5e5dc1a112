#include "adapters/mqtt/mqtt_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

namespace walbus::adapters::mqtt {
namespace {

// The broker's alert says it refused walbus's client certificate (or that it
// needs one): a configuration problem, not an outage.
bool IsCertificateAlert(unsigned long e) {
  switch (ERR_GET_REASON(e)) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
      return true;
    default:
      return false;
  }
}

// Drains OpenSSL's error queue into one line; *cert_alert (when given) is set
// if one of the errors is a certificate alert from the peer.
std::string SslErrors(bool* cert_alert = nullptr) {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    if (cert_alert != nullptr && IsCertificateAlert(e)) *cert_alert = true;
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

// How long Connect waits after a TLS 1.3 handshake for the broker's verdict
// on the client certificate (see there).
constexpr auto kPostHandshakeWait = std::chrono::milliseconds(200);

int MillisLeft(Transport::Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

struct Transport::Ssl {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{nullptr, SSL_CTX_free};
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl{nullptr, SSL_free};
};

Transport::~Transport() {
  if (ssl_ && ssl_->ssl) SSL_shutdown(ssl_->ssl.get());  // best effort close_notify
  ssl_.reset();
  if (fd_ >= 0) ::close(fd_);
}

Status Transport::WaitFor(short events, Deadline deadline, std::string_view what) {
  for (;;) {
    pollfd p{fd_, events, 0};
    int ms = MillisLeft(deadline);
    if (ms == 0) return Status::Unavailable("timed out " + std::string(what));
    int n = ::poll(&p, 1, ms);
    if (n > 0) return Status::Ok();
    if (n < 0 && errno != EINTR) {
      return Status::Unavailable(std::string(what) + ": poll: " + strerror(errno));
    }
  }
}

Result<std::unique_ptr<Transport>> Transport::Connect(const std::string& host, uint16_t port,
                                                      const TlsFiles& tls, Deadline deadline) {
  std::unique_ptr<Transport> t(new Transport());
  const std::string where = host + ":" + std::to_string(port);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (gai != 0) {
    return Status::Unavailable("cannot resolve " + host + ": " + gai_strerror(gai));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addrs(found, freeaddrinfo);

  std::string last_error = "no address";
  for (addrinfo* a = addrs.get(); a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = strerror(errno);
      continue;
    }
    t->fd_ = fd;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    if (errno == EINPROGRESS) {
      Status st = t->WaitFor(POLLOUT, deadline, "connecting to " + where);
      int err = 0;
      socklen_t len = sizeof err;
      if (st.ok() && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) break;
      last_error = st.ok() ? strerror(err) : st.message();
    } else {
      last_error = strerror(errno);
    }
    ::close(fd);
    t->fd_ = -1;
  }
  if (t->fd_ < 0) return Status::Unavailable("cannot connect to " + where + ": " + last_error);

  int one = 1;
  setsockopt(t->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  if (!tls.enabled) return t;

  // OpenSSL writes with write(2): a reset connection must give EPIPE rather
  // than kill walbus (paho does the same).
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { ::signal(SIGPIPE, SIG_IGN); });

  t->ssl_ = std::make_unique<Ssl>();
  t->ssl_->ctx.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX* ctx = t->ssl_->ctx.get();
  if (ctx == nullptr) return Status::Internal("TLS: " + SslErrors());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!tls.ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, tls.ca.c_str(), nullptr) != 1) {
      return Status::InvalidArgument("tls_ca " + tls.ca + ": " + SslErrors());
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return Status::InvalidArgument("TLS: cannot load the system CAs: " + SslErrors());
  }
  if (!tls.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert.c_str()) != 1) {
      return Status::InvalidArgument("tls_cert " + tls.cert + ": " + SslErrors());
    }
    const std::string& key = tls.key.empty() ? tls.cert : tls.key;
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return Status::InvalidArgument("tls_key " + key + ": " + SslErrors());
    }
  }
  t->ssl_->ssl.reset(SSL_new(ctx));
  SSL* ssl = t->ssl_->ssl.get();
  if (ssl == nullptr) return Status::Internal("TLS: " + SslErrors());
  SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_set_fd(ssl, t->fd_);
  SSL_set_tlsext_host_name(ssl, host.c_str());
  // A literal address is checked against the certificate's IP entries.
  if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) != 1) {
    SSL_set1_host(ssl, host.c_str());
  }
  for (;;) {
    ERR_clear_error();
    int rc = SSL_connect(ssl);
    if (rc == 1) break;
    int err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      WALBUS_RETURN_IF_ERROR(t->WaitFor(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline,
                                        "in the TLS handshake with " + where));
      continue;
    }
    // A certificate problem needs a change of configuration: retrying would
    // only repeat it, so it is FailedPrecondition, not Unavailable.
    long verify = SSL_get_verify_result(ssl);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      return Status::FailedPrecondition(
          "TLS handshake with " + where + " failed: the broker's certificate is not issued for " +
          host + "; put a host name or address the certificate names in the url");
    }
    if (verify != X509_V_OK) {
      return Status::FailedPrecondition(
          "TLS handshake with " + where + " failed: the broker's certificate is not trusted (" +
          X509_verify_cert_error_string(verify) + "); set tls_ca to the CA file that signed it");
    }
    bool cert_alert = false;
    std::string errors = SslErrors(&cert_alert);
    if (cert_alert) {
      t->cert_rejected_ = true;
      return Status::FailedPrecondition(RejectedCertificateMessage(where, errors));
    }
    return Status::Unavailable("TLS handshake with " + where + " failed: " + errors);
  }
  t->where_ = where;
  // With TLS 1.3 the client's handshake ends before the broker has checked
  // the client certificate; a broker that refuses it answers with an alert
  // and closes. Writing CONNECT into that race can end in a reset that
  // hides the alert, so first give the broker a moment to answer: its
  // session tickets (accepted) or the alert (refused), whichever comes.
  // SSL_peek processes those records without consuming application data.
  if (SSL_version(ssl) >= TLS1_3_VERSION) {
    auto until = std::min(deadline, std::chrono::steady_clock::now() + kPostHandshakeWait);
    pollfd p{t->fd_, POLLIN, 0};
    if (::poll(&p, 1, MillisLeft(until)) > 0) {
      char byte;
      ERR_clear_error();
      int rc = SSL_peek(ssl, &byte, 1);
      if (rc <= 0) {
        int err = SSL_get_error(ssl, rc);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
          bool cert_alert = false;
          std::string errors = SslErrors(&cert_alert);
          if (cert_alert) {
            t->cert_rejected_ = true;
            return Status::FailedPrecondition(RejectedCertificateMessage(where, errors));
          }
          // Anything else shows up again at the first read or write.
        }
      }
    }
  }
  return t;
}

std::string Transport::RejectedCertificateMessage(const std::string& where,
                                                  const std::string& errors) {
  return "the broker " + where + " rejected walbus's TLS client certificate (" + errors +
         "); set tls_cert and tls_key to a certificate signed by a CA the broker trusts";
}

ssize_t Transport::Read(char* buf, size_t n) {
  if (!ssl_) {
    for (;;) {
      ssize_t r = ::recv(fd_, buf, n, 0);
      if (r > 0) return r;
      if (r == 0) {
        error_ = "the broker closed the connection";
        return -1;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        read_wants_ = POLLIN;
        return 0;
      }
      error_ = strerror(errno);
      return -1;
    }
  }
  ERR_clear_error();
  int r = SSL_read(ssl_->ssl.get(), buf, static_cast<int>(n));
  if (r > 0) return r;
  switch (SSL_get_error(ssl_->ssl.get(), r)) {
    case SSL_ERROR_WANT_READ: read_wants_ = POLLIN; return 0;
    case SSL_ERROR_WANT_WRITE: read_wants_ = POLLOUT; return 0;
    case SSL_ERROR_ZERO_RETURN: error_ = "the broker closed the connection"; return -1;
    case SSL_ERROR_SYSCALL:
      error_ = errno != 0 ? strerror(errno) : "the broker closed the connection";
      return -1;
    default: {
      bool cert_alert = false;
      std::string errors = SslErrors(&cert_alert);
      if (cert_alert) cert_rejected_ = true;
      error_ = cert_alert ? RejectedCertificateMessage(where_, errors) : "TLS: " + errors;
      return -1;
    }
  }
}

ssize_t Transport::Write(const char* buf, size_t n) {
  if (!ssl_) {
    for (;;) {
      ssize_t w = ::send(fd_, buf, n, MSG_NOSIGNAL);
      if (w >= 0) return w == 0 ? (write_wants_ = POLLOUT, 0) : w;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        write_wants_ = POLLOUT;
        return 0;
      }
      error_ = strerror(errno);
      return -1;
    }
  }
  ERR_clear_error();
  int w = SSL_write(ssl_->ssl.get(), buf, static_cast<int>(std::min<size_t>(n, 1 << 30)));
  if (w > 0) return w;
  switch (SSL_get_error(ssl_->ssl.get(), w)) {
    case SSL_ERROR_WANT_READ: write_wants_ = POLLIN; return 0;
    case SSL_ERROR_WANT_WRITE: write_wants_ = POLLOUT; return 0;
    case SSL_ERROR_SYSCALL:
      error_ = errno != 0 ? strerror(errno) : "the broker closed the connection";
      return -1;
    default: {
      bool cert_alert = false;
      std::string errors = SslErrors(&cert_alert);
      if (cert_alert) cert_rejected_ = true;
      error_ = cert_alert ? RejectedCertificateMessage(where_, errors) : "TLS: " + errors;
      return -1;
    }
  }
}

Status Transport::WriteAll(std::string_view bytes, Deadline deadline) {
  while (!bytes.empty()) {
    ssize_t w = Write(bytes.data(), bytes.size());
    if (w < 0) return cert_rejected_ ? Status::FailedPrecondition(error_) : Status::Unavailable(error_);
    if (w == 0) {
      WALBUS_RETURN_IF_ERROR(WaitFor(write_wants_, deadline, "writing to the broker"));
      continue;
    }
    bytes.remove_prefix(static_cast<size_t>(w));
  }
  return Status::Ok();
}

Status Transport::ReadSome(std::string* in, Deadline deadline) {
  char buf[4096];
  for (;;) {
    ssize_t r = Read(buf, sizeof buf);
    if (r < 0) return cert_rejected_ ? Status::FailedPrecondition(error_) : Status::Unavailable(error_);
    if (r > 0) {
      in->append(buf, static_cast<size_t>(r));
      return Status::Ok();
    }
    WALBUS_RETURN_IF_ERROR(WaitFor(read_wants_, deadline, "waiting for the broker"));
  }
}

}  // namespace walbus::adapters::mqtt
