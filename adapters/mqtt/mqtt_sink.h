// MqttSink publishes each event to an MQTT broker (SPEC.md §2 `mqtt`): MQTT 5
// when the broker speaks it (user property `event-id`), else 3.1.1; persistent
// session (clean start off); QoS 0, 1 or 2. With a state topic it also
// publishes the row's `after` retained (empty on delete) and acknowledges the
// event once both publishes are acknowledged.
//
// Threads: Open, Publish, Flush, Close and Check are called by the source
// thread only. Publish encodes into a buffer the source thread owns; Flush
// hands that buffer to the sink's I/O thread, which alone reads and writes the
// socket after Open, reports acknowledgements (PUBACK/PUBCOMP, or the write for
// QoS 0) and failures through the AckSink, and sends PUBREL and PINGREQ.
//
// Errors: Unavailable (broker down, connection lost) makes the pipeline
// reconnect with Open and re-publish; ResourceExhausted from Publish means the
// packet-identifier window or the broker's Receive Maximum is full, or the
// broker reads so slowly that a few MB wait unwritten in walbus (memory stays
// bounded whatever the pace): Flush and wait for acknowledgements or writes,
// then publish the same event again; Permanent
// names the event (id, table) the broker refused for good and why;
// FailedPrecondition from Open/Check is a refused login or client id.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/mqtt/mqtt_out_buffer.h"
#include "adapters/mqtt/mqtt_transport.h"
#include "bridge/core/sink.h"

namespace walbus::adapters::mqtt {

struct MqttOptions {
  std::string name;             // the sink's name, for messages
  std::string url;              // tcp://host[:1883] ssl://host[:8883] (mqtt://, mqtts:// too)
  std::string client_id;        // required
  int qos = 1;                  // 0, 1 or 2
  std::string user;
  std::string password;         // never printed
  std::string tls_ca;           // with ssl://: CA file; empty = system CAs
  std::string tls_cert;
  std::string tls_key;
  uint32_t max_in_flight = 10000;    // the pipeline's window, in events
  uint32_t connect_timeout_ms = 10000;
  uint16_t keep_alive_s = 30;
  uint32_t session_expiry_s = 86400;  // how long the broker keeps the session
};

class MqttSink final : public Sink {
 public:
  explicit MqttSink(MqttOptions options);
  ~MqttSink() override;

  std::string_view name() const override { return options_.name; }
  std::string_view type() const override { return "mqtt"; }
  Status Open(AckSink* acks) override;
  Status Publish(const Event& event) override;
  Status Flush() override;
  void Close() override;
  Status Check() override;

  // The MQTT protocol level of the current (or last) connection: 5 or 4.
  int protocol_version() const { return version_; }

 private:
  // One outstanding QoS > 0 packet, indexed by packet identifier. `ticket` is
  // published by the source thread with release order and cleared by the I/O
  // thread; the other fields are written before and read after it.
  struct Slot {
    std::atomic<uint64_t> ticket{0};  // 0 free; kReserved: an old QoS 2 flow
    uint64_t seq = 0;                  // event number on this connection
    uint16_t owner = 0;                // the slot whose `remaining` counts the event
    uint8_t remaining = 0;             // packets of the event not yet acknowledged
    uint8_t id_len = 0;
    uint8_t table_len = 0;
    char id[32];
    char table[64];
  };
  static constexpr uint64_t kReserved = ~uint64_t{0};

  struct Endpoint {
    std::string host;
    uint16_t port = 0;
    bool tls = false;
    std::string display;  // scheme://host:port, no credentials
  };
  struct Session;  // the result of one CONNECT/CONNACK exchange

  Result<Endpoint> ParseUrl() const;
  // hung_up: the broker closed the connection before CONNACK.
  Result<Session> Handshake(const Endpoint& ep, const std::string& client_id, bool clean_start,
                            uint32_t session_expiry_s, int version, bool* hung_up);
  // *version: the protocol level to try; set to 4 after a fallback.
  Status Connect(const Endpoint& ep, const std::string& client_id, bool clean_start,
                 uint32_t session_expiry_s, int* version, Session* out);
  std::string PrefixFor(const Endpoint& ep) const;  // "mqtt sink NAME (tcp://host:port)"
  const std::string& Prefix() const { return prefix_; }
  Status Failure() const;      // the stored asynchronous failure
  void StopIo();
  uint16_t NextPacketId();
  void StageSlot(uint16_t id, const Event& event, uint16_t owner, uint8_t remaining);

  // I/O thread.
  void IoLoop();
  bool HandlePacket(uint8_t header, std::string_view body);
  void Complete(uint16_t id, uint8_t reason, std::string_view reason_string, uint8_t type);
  void ReportFailure(Status why);
  void FlushAcks();
  std::string OldestOutstanding() const;

  const MqttOptions options_;
  Endpoint endpoint_;
  std::string prefix_;               // PrefixFor(endpoint_), set by Open
  int version_ = 5;                  // sticky after a 3.1.1 fallback
  AckSink* acks_ = nullptr;
  std::unique_ptr<Transport> transport_;
  std::thread io_;
  int wake_fd_ = -1;                 // eventfd: staged bytes or stop

  // Limits from CONNACK.
  uint32_t window_ = 65535;          // QoS > 0 packets in flight
  uint32_t max_packet_size_ = 0;
  uint16_t keep_alive_s_ = 30;
  bool retain_available_ = true;

  // Source thread.
  std::string staging_;
  uint64_t staged_last_ticket_ = 0;  // QoS 0: the newest ticket in staging_
  uint16_t next_id_ = 0;
  uint16_t id_limit_ = 65535;        // ids cycle through 1..id_limit_
  uint64_t next_seq_ = 1;
  std::vector<Slot> slots_;
  std::vector<uint16_t> old_qos2_ids_;  // flows to release after a reconnect
  bool opened_before_ = false;

  // Shared between the source and the I/O thread.
  mutable std::mutex mu_;
  std::string handoff_;              // guarded by mu_
  uint64_t handoff_last_ticket_ = 0; // guarded by mu_
  Status failure_;                   // guarded by mu_
  std::atomic<bool> failed_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> wake_pending_{false};
  std::atomic<uint32_t> in_flight_{0};  // QoS > 0 packets awaiting their final ack
  // Bytes handed over but not yet written (handoff_, and what the I/O thread
  // holds): Publish waits while they exceed kMaxUnwrittenBytes.
  std::atomic<size_t> handoff_bytes_{0};
  std::atomic<size_t> io_unwritten_{0};

  // I/O thread.
  OutBuffer out_;                    // bytes being written
  std::string taken_;                // handoff_ as taken from the source thread
  std::string in_buf_;               // an incomplete packet
  char read_chunk_[64 * 1024];
  bool ping_outstanding_ = false;
  bool partial_write_ = false;       // read by Close after the join
  // Consecutive connection losses with the same oldest unacknowledged event,
  // across reconnects (I/O threads only; handed over by join).
  static constexpr int kLossesMeaningRefusal = 3;
  std::string loss_event_;
  int loss_count_ = 0;
  uint64_t acked_seq_ = 0;           // every event with seq <= this is acknowledged
  uint64_t ack_through_ = 0;         // its ticket, not yet reported
  bool in_order_ = true;             // acks came in publish order so far
};

}  // namespace walbus::adapters::mqtt
