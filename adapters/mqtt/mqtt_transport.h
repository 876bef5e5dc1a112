// Transport: one TCP or TLS (OpenSSL) connection to a broker, owned by one
// MqttSink. Connect and the blocking helpers wait until a deadline; Read and
// Write never block (the socket is non-blocking) and say which poll events
// they need next. A Transport is used by one thread at a time: the source
// thread during the handshake, then the sink's I/O thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "bridge/core/status.h"

namespace walbus::adapters::mqtt {

struct TlsFiles {
  bool enabled = false;
  std::string ca;    // PEM file of trusted CAs; empty: the system's
  std::string cert;  // client certificate (PEM), optional
  std::string key;   // its private key (PEM), required with cert
};

class Transport {
 public:
  using Deadline = std::chrono::steady_clock::time_point;

  // Resolves host, connects, and for TLS completes the handshake verifying
  // the server's certificate and host name. Unavailable on network errors
  // and timeouts, InvalidArgument when the TLS files cannot be used,
  // FailedPrecondition when the broker's certificate is not trusted or not
  // for `host`, or the broker refuses walbus's client certificate.
  static Result<std::unique_ptr<Transport>> Connect(const std::string& host, uint16_t port,
                                                    const TlsFiles& tls, Deadline deadline);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  int fd() const { return fd_; }
  // > 0: bytes moved; 0: would block (poll for wants()); -1: the connection
  // is closed or failed, error() says why.
  ssize_t Read(char* buf, size_t n);
  ssize_t Write(const char* buf, size_t n);
  // Poll events (POLLIN/POLLOUT) the last would-block Read/Write waits for.
  short read_wants() const { return read_wants_; }
  short write_wants() const { return write_wants_; }
  const std::string& error() const { return error_; }
  // The broker refused walbus's client certificate (a TLS alert); error()
  // says so. With TLS 1.3 this shows only at the first read after the handshake.
  bool cert_rejected() const { return cert_rejected_; }

  // Blocking with a deadline, for the CONNECT/CONNACK exchange.
  Status WriteAll(std::string_view bytes, Deadline deadline);
  // Appends at least one byte to *in, or fails.
  Status ReadSome(std::string* in, Deadline deadline);

 private:
  struct Ssl;
  Transport() = default;
  Status WaitFor(short events, Deadline deadline, std::string_view what);
  static std::string RejectedCertificateMessage(const std::string& where,
                                                const std::string& errors);

  int fd_ = -1;
  std::unique_ptr<Ssl> ssl_;
  short read_wants_ = 0x001;   // POLLIN
  short write_wants_ = 0x004;  // POLLOUT
  std::string error_;
  std::string where_;           // host:port, for messages
  bool cert_rejected_ = false;
};

}  // namespace walbus::adapters::mqtt
