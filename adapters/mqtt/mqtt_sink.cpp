#include "adapters/mqtt/mqtt_sink.h"

#include <poll.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "adapters/mqtt/mqtt_codec.h"
#include "bridge/core/log.h"

namespace walbus::adapters::mqtt {
namespace {

using Clock = std::chrono::steady_clock;

// Staged bytes are handed to the I/O thread at Flush or when this many have
// collected, so a long batch keeps the socket busy.
constexpr size_t kHandoffAt = 128 * 1024;
// Buffers that grew past this (a burst, a huge event) are released once empty.
constexpr size_t kKeepCapacity = 1024 * 1024;
// At most about this many bytes wait unwritten in walbus (staged, handed off,
// and held by the I/O thread) while the broker reads slower than events come:
// Publish answers ResourceExhausted beyond it. The in-flight window bounds
// events, this bounds bytes: with wide rows 10,000 events are 20+ MB.
constexpr size_t kMaxUnwrittenBytes = 2 * 1024 * 1024;
// Packet identifiers probed for a free one before Publish gives up.
constexpr int kIdProbes = 64;
// QoS 2 packets in flight at most: Mosquitto looks incoming QoS 2 flows up in
// a list, and its throughput falls fourfold from ~1,000 to 10,000 open flows.
constexpr uint32_t kQos2Window = 1024;

std::string Hex(uint8_t code) {
  char buf[8];
  snprintf(buf, sizeof buf, "0x%02X", code);
  return buf;
}

std::string Reason(uint8_t code, std::string_view reason_string) {
  std::string out(ReasonName(code));
  out += " (" + Hex(code) + ")";
  if (!reason_string.empty()) {
    out += ": ";
    out.append(reason_string);
  }
  return out;
}

// 3.1.1 CONNACK return codes as their MQTT 5 reason codes (§3.2.2.3 of 3.1.1).
uint8_t V3ReturnCodeAsReason(uint8_t rc) {
  switch (rc) {
    case 0: return 0x00;
    case 1: return 0x84;
    case 2: return 0x85;
    case 3: return 0x88;
    case 4: return 0x86;
    case 5: return 0x87;
    default: return 0x80;
  }
}

// DISCONNECT reasons that refuse a publish for good: re-sending the same
// event after a reconnect can only be refused again. (Any PUBACK/PUBREC
// reason >= 0x80 but 0x91 is such a refusal.)
bool PermanentRefusal(uint8_t reason) {
  switch (reason) {
    case 0x87: case 0x90: case 0x95: case 0x97: case 0x99: case 0x9A: case 0x9B:
      return true;
    default:
      return false;
  }
}

std::string EventName(std::string_view id, std::string_view table) {
  std::string out = "event ";
  out.append(id);
  out += " (table ";
  out.append(table);
  out += ")";
  return out;
}

}  // namespace

struct MqttSink::Session {
  std::unique_ptr<Transport> transport;
  ConnackInfo connack;
  int version = kMqtt5;
  std::string leftover;  // bytes that followed CONNACK
};

MqttSink::MqttSink(MqttOptions options) : options_(std::move(options)), out_(kKeepCapacity) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // Packet ids cycle through a range a little over twice the pipeline's
  // window (an event with a state topic takes two), so the slot table stays
  // small and warm.
  uint64_t ids = std::max<uint64_t>(2ull * options_.max_in_flight + 2 * kIdProbes, 1024);
  id_limit_ = static_cast<uint16_t>(std::min<uint64_t>(ids, 65535));
  slots_ = std::vector<Slot>(static_cast<size_t>(id_limit_) + 1);
}

MqttSink::~MqttSink() {
  Close();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

std::string MqttSink::PrefixFor(const Endpoint& ep) const {
  std::string out = "mqtt sink " + options_.name;
  if (!ep.display.empty()) out += " (" + ep.display + ")";
  return out;
}

Result<MqttSink::Endpoint> MqttSink::ParseUrl() const {
  Endpoint ep;
  std::string_view url = options_.url;
  std::string_view scheme;
  if (size_t p = url.find("://"); p != std::string_view::npos) {
    scheme = url.substr(0, p);
    url.remove_prefix(p + 3);
  }
  if (scheme == "tcp" || scheme == "mqtt") {
    ep.tls = false;
  } else if (scheme == "ssl" || scheme == "mqtts" || scheme == "tls") {
    ep.tls = true;
  } else {
    return Status::InvalidArgument("mqtt sink " + options_.name +
                                   ": url must start with tcp://, ssl://, mqtt:// or mqtts://");
  }
  if (size_t at = url.rfind('@'); at != std::string_view::npos) {
    return Status::InvalidArgument("mqtt sink " + options_.name +
                                   ": put the credentials in user/password, not in the url");
  }
  if (!url.empty() && url.back() == '/') url.remove_suffix(1);
  std::string_view host = url, port;
  if (!url.empty() && url.front() == '[') {
    size_t close = url.find(']');
    if (close == std::string_view::npos) {
      return Status::InvalidArgument("mqtt sink " + options_.name + ": bad IPv6 address in url");
    }
    host = url.substr(1, close - 1);
    std::string_view rest = url.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return Status::InvalidArgument("mqtt sink " + options_.name + ": bad url");
      }
      port = rest.substr(1);
    }
  } else if (size_t colon = url.rfind(':'); colon != std::string_view::npos) {
    host = url.substr(0, colon);
    port = url.substr(colon + 1);
  }
  if (host.empty() || host.find('/') != std::string_view::npos) {
    return Status::InvalidArgument("mqtt sink " + options_.name + ": url has no host");
  }
  unsigned long p = ep.tls ? 8883 : 1883;
  if (!port.empty()) {
    char* end = nullptr;
    std::string port_s(port);
    p = strtoul(port_s.c_str(), &end, 10);
    if (*end != '\0' || p == 0 || p > 65535) {
      return Status::InvalidArgument("mqtt sink " + options_.name + ": bad port in url");
    }
  }
  ep.host.assign(host);
  ep.port = static_cast<uint16_t>(p);
  ep.display = std::string(ep.tls ? "ssl://" : "tcp://") +
               (ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host) + ":" +
               std::to_string(ep.port);
  return ep;
}

Result<MqttSink::Session> MqttSink::Handshake(const Endpoint& ep, const std::string& client_id,
                                              bool clean_start, uint32_t session_expiry_s,
                                              int version, bool* hung_up) {
  *hung_up = false;
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.connect_timeout_ms);
  TlsFiles tls{ep.tls, options_.tls_ca, options_.tls_cert, options_.tls_key};
  auto t = Transport::Connect(ep.host, ep.port, tls, deadline);
  if (!t.ok()) return t.status();
  Session s;
  s.transport = std::move(t.value());
  s.version = version;

  std::string out;
  ConnectParams cp;
  cp.version = version;
  cp.client_id = client_id;
  cp.user = options_.user;
  cp.password = options_.password;
  cp.clean_start = clean_start;
  cp.keep_alive_s = options_.keep_alive_s;
  cp.session_expiry_s = session_expiry_s;
  AppendConnect(&out, cp);
  WALBUS_RETURN_IF_ERROR(s.transport->WriteAll(out, deadline));

  std::string in;
  for (;;) {
    uint8_t header;
    std::string_view body;
    size_t size;
    int rc = NextPacket(in, &header, &body, &size);
    if (rc < 0) return Status::Unavailable("malformed CONNACK from the broker");
    if (rc == 1) {
      if ((header >> 4) != kConnack) {
        return Status::Unavailable("the broker sent packet type " + std::to_string(header >> 4) +
                                   " instead of CONNACK");
      }
      if (!ParseConnack(version, body, &s.connack)) {
        return Status::Unavailable("malformed CONNACK from the broker");
      }
      if (version != kMqtt5 || body.size() == 2) {
        // A 3.1.1 return code (a 3.1.1-only broker answers a v5 CONNECT so).
        s.connack.reason = V3ReturnCodeAsReason(s.connack.reason);
        if (version == kMqtt5 && s.connack.reason == 0) s.connack.reason = 0x84;
      }
      s.leftover.assign(in, size);
      return s;
    }
    Status st = s.transport->ReadSome(&in, deadline);
    if (!st.ok() && st.code() == Code::kFailedPrecondition) return st;  // client certificate refused
    if (!st.ok()) {
      *hung_up = st.message().find("timed out") == std::string::npos;
      return Status::Unavailable(st.message() + " (before CONNACK)");
    }
  }
}

Status MqttSink::Connect(const Endpoint& ep, const std::string& client_id, bool clean_start,
                         uint32_t session_expiry_s, int* version, Session* out) {
  bool hung_up = false;
  auto session = Handshake(ep, client_id, clean_start, session_expiry_s, *version, &hung_up);
  if (*version == kMqtt5 && (session.ok() ? session->connack.reason == 0x84 : hung_up)) {
    // The broker does not speak MQTT 5 (it refused, or hung up on, the v5
    // CONNECT): use 3.1.1 with a persistent session from now on.
    auto v3 = Handshake(ep, client_id, clean_start, session_expiry_s, kMqtt311, &hung_up);
    if (v3.ok() || session.ok()) {
      session = std::move(v3);
      if (session.ok()) *version = kMqtt311;
    }
  }
  if (!session.ok()) return session.status().WithContext(PrefixFor(ep));
  const ConnackInfo& c = session->connack;
  if (c.reason >= 0x80) {
    std::string why = PrefixFor(ep) + ": the broker refused the connection: " +
                      Reason(c.reason, c.reason_string);
    switch (c.reason) {
      case 0x86:
        return Status::FailedPrecondition(why + " (check the sink's user and password)");
      case 0x87:
        return Status::FailedPrecondition(why + " (check the sink's user, password and the "
                                                "broker's ACL)");
      case 0x85:
        return Status::FailedPrecondition(why + " (check client_id)");
      case 0x84:
        return Status::FailedPrecondition(why + " (the broker speaks neither MQTT 5 nor 3.1.1)");
      case 0x8A: case 0x8C: case 0x9A: case 0x9B: case 0x9C: case 0x9D:
        return Status::FailedPrecondition(why);
      default:
        return Status::Unavailable(why);
    }
  }
  if (c.maximum_qos < options_.qos) {
    return Status::FailedPrecondition(PrefixFor(ep) + ": the broker accepts QoS " +
                                      std::to_string(c.maximum_qos) + " at most; the sink has qos = " +
                                      std::to_string(options_.qos));
  }
  *out = std::move(session.value());
  return Status::Ok();
}

Status MqttSink::Open(AckSink* acks) {
  Close();
  auto ep = ParseUrl();
  if (!ep.ok()) return ep.status();
  endpoint_ = ep.value();
  prefix_ = PrefixFor(endpoint_);
  if (acks == nullptr) return Status::InvalidArgument(Prefix() + ": no AckSink");
  if (options_.qos < 0 || options_.qos > 2) {
    return Status::InvalidArgument(Prefix() + ": qos must be 0, 1 or 2");
  }
  if (options_.client_id.empty()) return Status::InvalidArgument(Prefix() + ": client_id is empty");
  if (wake_fd_ < 0) return Status::Internal(Prefix() + ": eventfd failed");

  Session s;
  const int tried = version_;
  WALBUS_RETURN_IF_ERROR(Connect(endpoint_, options_.client_id, /*clean_start=*/false,
                                 options_.session_expiry_s, &version_, &s));
  if (version_ != tried) {
    log::Info("mqtt broker speaks MQTT 3.1.1 only: events go without the event-id property",
              {{"sink", options_.name}, {"broker", endpoint_.display}});
  }
  transport_ = std::move(s.transport);
  window_ = std::min<uint32_t>(s.connack.receive_maximum, id_limit_ - 2 * kIdProbes);
  if (options_.qos == 2) window_ = std::min(window_, kQos2Window);
  if (options_.qos == 0) window_ = ~0u;
  max_packet_size_ = s.connack.maximum_packet_size;
  retain_available_ = s.connack.retain_available;
  keep_alive_s_ = s.connack.server_keep_alive >= 0
                      ? static_cast<uint16_t>(s.connack.server_keep_alive)
                      : options_.keep_alive_s;

  // Tickets of the previous connection are never acknowledged now.
  for (Slot& slot : slots_) slot.ticket.store(0, std::memory_order_relaxed);
  handoff_.clear();
  if (s.connack.session_present && options_.qos == 2) {
    // QoS 2 flows of an earlier connection that the broker may still hold
    // awaiting PUBREL: release them before their ids are used again, or a
    // broker that follows §4.3.3 to the letter would take a new message with
    // such an id for a duplicate and drop it. After a restart of walbus those
    // ids are unknown, so every id is released once.
    if (!opened_before_) {
      old_qos2_ids_.clear();
      for (uint32_t id = 1; id <= 65535; ++id) old_qos2_ids_.push_back(static_cast<uint16_t>(id));
    }
    for (uint16_t id : old_qos2_ids_) {
      if (id <= id_limit_) slots_[id].ticket.store(kReserved, std::memory_order_relaxed);
      AppendPubrel(&handoff_, id);
    }
  }
  opened_before_ = true;
  old_qos2_ids_.clear();
  handoff_bytes_.store(handoff_.size());
  io_unwritten_.store(0);
  in_flight_.store(0);
  staging_.clear();
  staged_last_ticket_ = 0;
  handoff_last_ticket_ = 0;
  wake_pending_ = false;
  next_seq_ = 1;
  acked_seq_ = 0;
  ack_through_ = 0;
  in_order_ = true;
  in_buf_ = std::move(s.leftover);
  failure_ = Status::Ok();
  failed_.store(false);
  stop_.store(false);
  acks_ = acks;
  if (!handoff_.empty()) {
    wake_pending_ = true;
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  io_ = std::thread([this] { IoLoop(); });
  return Status::Ok();
}

void MqttSink::StopIo() {
  if (!io_.joinable()) return;
  stop_.store(true);
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  io_.join();
}

void MqttSink::Close() {
  StopIo();
  if (transport_ && !failed_.load() && !partial_write_) {
    // Polite goodbye, unless a packet was cut off mid-way (its remaining
    // bytes would swallow the DISCONNECT); the session stays on the broker.
    std::string bye;
    AppendDisconnect(&bye, version_);
    (void)transport_->Write(bye.data(), bye.size());
  }
  if (options_.qos == 2 && transport_) {
    for (uint32_t id = 1; id <= id_limit_; ++id) {
      if (slots_[id].ticket.load(std::memory_order_relaxed) != 0) {
        old_qos2_ids_.push_back(static_cast<uint16_t>(id));
      }
    }
  }
  for (Slot& slot : slots_) slot.ticket.store(0, std::memory_order_relaxed);
  in_flight_.store(0);
  transport_.reset();
  acks_ = nullptr;
  staging_.clear();
  handoff_.clear();
  handoff_bytes_.store(0);
  io_unwritten_.store(0);
}

Status MqttSink::Failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failure_.ok()) return failure_;
  return Status::Unavailable(Prefix() + ": connection failed");
}

uint16_t MqttSink::NextPacketId() {
  for (int i = 0; i < kIdProbes; ++i) {
    next_id_ = next_id_ >= id_limit_ ? 1 : static_cast<uint16_t>(next_id_ + 1);
    if (slots_[next_id_].ticket.load(std::memory_order_acquire) == 0) return next_id_;
  }
  return 0;
}

void MqttSink::StageSlot(uint16_t id, const Event& event, uint16_t owner, uint8_t remaining) {
  Slot& s = slots_[id];
  s.seq = next_seq_;
  s.owner = owner;
  s.remaining = remaining;
  s.id_len = static_cast<uint8_t>(std::min(event.id.size(), sizeof s.id));
  memcpy(s.id, event.id.data(), s.id_len);
  if (event.table.size() <= sizeof s.table) {
    s.table_len = static_cast<uint8_t>(event.table.size());
    memcpy(s.table, event.table.data(), s.table_len);
  } else {
    s.table_len = sizeof s.table;
    memcpy(s.table, event.table.data(), sizeof s.table - 3);
    memcpy(s.table + sizeof s.table - 3, "...", 3);
  }
  s.ticket.store(event.ticket, std::memory_order_release);
}

Status MqttSink::Publish(const Event& event) {
  if (failed_.load(std::memory_order_relaxed)) return Failure();
  if (!transport_) return Status::Unavailable(Prefix() + ": not connected");

  const int qos = options_.qos;
  std::string_view event_id = version_ == kMqtt5 ? event.id : std::string_view();
  if (!ValidTopicName(event.topic)) {
    return Status::Permanent(Prefix() + ": " + EventName(event.id, event.table) + ": \"" +
                             std::string(event.topic) + "\" is not a valid MQTT topic name");
  }
  bool state = !event.state_topic.empty() &&
               (event.op == "insert" || event.op == "update" || event.op == "read" ||
                event.op == "delete");
  std::string_view state_payload = event.op == "delete" ? std::string_view() : event.after;
  if (state) {
    if (!ValidTopicName(event.state_topic)) {
      return Status::Permanent(Prefix() + ": " + EventName(event.id, event.table) +
                               ": state topic \"" + std::string(event.state_topic) +
                               "\" is not a valid MQTT topic name");
    }
    if (!retain_available_) {
      return Status::Permanent(Prefix() + ": the broker does not allow retained messages, "
                                          "which state_topic needs");
    }
  }
  size_t size = PublishSize(version_, event.topic, qos, event_id, event.payload.size());
  size_t state_size =
      state ? PublishSize(version_, event.state_topic, qos, event_id, state_payload.size()) : 0;
  uint64_t limit = max_packet_size_ != 0 ? max_packet_size_ : kMaxRemainingLength + 5;
  if (size > limit || state_size > limit) {
    return Status::Permanent(Prefix() + ": " + EventName(event.id, event.table) + " is " +
                             std::to_string(std::max(size, state_size)) +
                             " bytes as an MQTT packet, over the broker's maximum packet size of " +
                             std::to_string(limit) + " bytes");
  }
  // Bounded memory: while the broker takes bytes slower than they come, wait
  // (an event alone is always taken, however large); the pipeline flushes
  // what is staged before it waits.
  const size_t queued = staging_.size() + handoff_bytes_.load(std::memory_order_relaxed) +
                        io_unwritten_.load(std::memory_order_relaxed);
  if (queued != 0 && queued + size + state_size > kMaxUnwrittenBytes) {
    return Status::ResourceExhausted(Prefix() + ": " + std::to_string(queued) +
                                     " bytes are waiting to be written to the broker");
  }

  if (qos == 0) {
    AppendPublish(&staging_, version_, event.topic, 0, 0, false, event_id, event.payload);
    if (state) {
      AppendPublish(&staging_, version_, event.state_topic, 0, 0, true, event_id, state_payload);
    }
    staged_last_ticket_ = event.ticket;
  } else {
    const uint32_t packets = state ? 2 : 1;
    if (in_flight_.load(std::memory_order_relaxed) + packets > window_) {
      return Status::ResourceExhausted(Prefix() + ": the broker's receive maximum of " +
                                       std::to_string(window_) + " packets is in flight");
    }
    uint16_t id = NextPacketId();
    uint16_t state_id = state && id != 0 ? NextPacketId() : 0;
    if (id == 0 || (state && state_id == 0)) {
      return Status::ResourceExhausted(Prefix() + ": no free packet identifier");
    }
    // The state publish's slot counts both packets and is freed last.
    uint16_t owner = state ? state_id : id;
    in_flight_.fetch_add(packets, std::memory_order_relaxed);
    if (state) StageSlot(state_id, event, owner, 2);
    StageSlot(id, event, owner, state ? 0 : 1);
    AppendPublish(&staging_, version_, event.topic, id, qos, false, event_id, event.payload);
    if (state) {
      AppendPublish(&staging_, version_, event.state_topic, state_id, qos, true, event_id,
                    state_payload);
    }
  }
  ++next_seq_;
  if (staging_.size() >= kHandoffAt) return Flush();
  return Status::Ok();
}

Status MqttSink::Flush() {
  if (failed_.load(std::memory_order_relaxed)) return Failure();
  if (!transport_) return Status::Unavailable(Prefix() + ": not connected");
  if (staging_.empty()) return Status::Ok();
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (handoff_.empty()) {
      handoff_.swap(staging_);
    } else {
      handoff_.append(staging_);
    }
    if (staged_last_ticket_ != 0) handoff_last_ticket_ = staged_last_ticket_;
    handoff_bytes_.store(handoff_.size(), std::memory_order_relaxed);
    wake = !wake_pending_;
    wake_pending_ = true;
  }
  staging_.clear();
  if (staging_.capacity() > kKeepCapacity) std::string().swap(staging_);
  staged_last_ticket_ = 0;
  if (wake) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  return Status::Ok();
}

Status MqttSink::Check() {
  auto ep = ParseUrl();
  if (!ep.ok()) return ep.status();
  Session s;
  // A client id of its own and a clean, expiring session, so a check never
  // takes over (and disconnects) a running walbus with the same client id.
  std::string client_id = options_.client_id.empty() ? "walbus-check" : options_.client_id + "-check";
  int version = version_;
  Status st = Connect(ep.value(), client_id, /*clean_start=*/true, 0, &version, &s);
  if (st.ok()) {
    std::string bye;
    AppendDisconnect(&bye, s.version);
    (void)s.transport->WriteAll(bye, Clock::now() + std::chrono::seconds(1));
  }
  return st;
}

void MqttSink::ReportFailure(Status why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return;
    failure_ = why;
  }
  failed_.store(true);
  if (acks_ != nullptr) acks_->Fail(std::move(why));
}

void MqttSink::FlushAcks() {
  if (ack_through_ != 0) {
    acks_->AckThrough(ack_through_);
    ack_through_ = 0;
  }
}

std::string MqttSink::OldestOutstanding() const {
  const Slot* oldest = nullptr;
  uint64_t oldest_seq = ~uint64_t{0};
  for (uint32_t id = 1; id <= id_limit_; ++id) {
    const Slot& s = slots_[id];
    uint64_t t = s.ticket.load(std::memory_order_acquire);
    if (t != 0 && t != kReserved && s.seq < oldest_seq) {
      oldest = &s;
      oldest_seq = s.seq;
    }
  }
  if (oldest == nullptr) return "";
  return EventName(std::string_view(oldest->id, oldest->id_len),
                   std::string_view(oldest->table, oldest->table_len));
}

void MqttSink::Complete(uint16_t id, uint8_t reason, std::string_view reason_string,
                        uint8_t type) {
  if (id > id_limit_) return;
  Slot& s = slots_[id];
  uint64_t ticket = s.ticket.load(std::memory_order_acquire);
  if (ticket == 0) return;  // not ours (an old flow the broker still answers)
  if (ticket == kReserved) {  // PUBCOMP of a released old flow
    s.ticket.store(0, std::memory_order_release);
    return;
  }
  // A refusal in PUBCOMP comes after PUBREC accepted the message.
  if (reason >= 0x80 && type != kPubcomp) {
    std::string what = Prefix() + ": the broker refused " +
                       EventName(std::string_view(s.id, s.id_len),
                                 std::string_view(s.table, s.table_len)) +
                       ": " + Reason(reason, reason_string);
    ReportFailure(reason == 0x91 ? Status::Unavailable(what) : Status::Permanent(what));
    return;
  }
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  const uint64_t seq = s.seq;
  const uint16_t owner = s.owner;
  Slot& o = slots_[owner];
  if (owner != id) s.ticket.store(0, std::memory_order_release);
  if (--o.remaining != 0) return;  // the other packet of the event is outstanding
  o.ticket.store(0, std::memory_order_release);

  if (in_order_ && seq == acked_seq_ + 1) {
    acked_seq_ = seq;
    ack_through_ = ticket;
    return;
  }
  if (in_order_) {
    // From the first out-of-order acknowledgement on, each event is
    // acknowledged by itself.
    FlushAcks();
    in_order_ = false;
  }
  acks_->Ack(ticket);
}

bool MqttSink::HandlePacket(uint8_t header, std::string_view body) {
  AckInfo ack;
  switch (header >> 4) {
    case kPuback:
    case kPubcomp:
      if (!ParseAck(version_, body, &ack)) break;
      Complete(ack.packet_id, ack.reason, ack.reason_string, header >> 4);
      return true;
    case kPubrec:
      if (!ParseAck(version_, body, &ack)) break;
      if (ack.reason >= 0x80) {
        Complete(ack.packet_id, ack.reason, ack.reason_string, kPubrec);
      } else {
        AppendPubrel(out_.AppendTarget(), ack.packet_id);
      }
      return true;
    case kPingresp:
      ping_outstanding_ = false;
      return true;
    case kDisconnect: {
      DisconnectInfo d;
      if (version_ != kMqtt5 || !ParseDisconnect(body, &d)) break;
      std::string what = Prefix() + ": the broker disconnected: " + Reason(d.reason, d.reason_string);
      if (PermanentRefusal(d.reason)) {
        std::string oldest = OldestOutstanding();
        if (!oldest.empty()) what += "; the refused event is probably " + oldest;
        ReportFailure(Status::Permanent(what));
      } else {
        ReportFailure(Status::Unavailable(what));
      }
      return false;
    }
    default:
      ReportFailure(Status::Unavailable(Prefix() + ": unexpected packet type " +
                                        std::to_string(header >> 4) + " from the broker"));
      return false;
  }
  ReportFailure(Status::Unavailable(Prefix() + ": malformed packet from the broker"));
  return false;
}

void MqttSink::IoLoop() {
  Transport& t = *transport_;
  out_.Reset();
  uint64_t out_last_ticket = 0;  // QoS 0: acknowledged once out_ is written
  struct OnExit {
    MqttSink* self;
    ~OnExit() { self->partial_write_ = self->out_.mid_packet(); }
  } on_exit{this};
  auto last_write = Clock::now();
  auto ping_sent = last_write;
  ping_outstanding_ = false;
  const auto keep_alive = std::chrono::milliseconds(1000 * keep_alive_s_);

  auto fail = [&](const std::string& what) {
    std::string why = Prefix() + ": " + what;
    std::string oldest = OldestOutstanding();
    if (!oldest.empty()) why += " (oldest unacknowledged: " + oldest + ")";
    // A broker that drops the connection every time one event is published
    // (the same event is the oldest unacknowledged at each loss, after each
    // reconnect and re-publish) is refusing that event for good: mosquitto 2.0
    // closes the connection after a PUBLISH over message_size_limit, and its
    // PUBACK 0x95 can be lost to the reset.
    bool lost = what.rfind("connection lost", 0) == 0;
    if (lost && !oldest.empty() && oldest == loss_event_) {
      ++loss_count_;
    } else {
      loss_event_ = lost ? oldest : std::string();
      loss_count_ = lost ? 1 : 0;
    }
    if (loss_count_ >= kLossesMeaningRefusal) {
      ReportFailure(Status::Permanent(
          Prefix() + ": the broker closed the connection " + std::to_string(loss_count_) +
          " times in a row while " + oldest +
          " was the oldest unacknowledged: it refuses that event (for mosquitto, check "
          "message_size_limit); last error: " + what));
      return;
    }
    ReportFailure(Status::Unavailable(why));
  };

  // Reads and handles everything the socket holds. False: the loop must end
  // (a failure was reported, or the broker refused something for good).
  auto read_input = [&]() -> bool {
    for (;;) {
      ssize_t r = t.Read(read_chunk_, sizeof read_chunk_);
      if (r == 0) break;
      if (r < 0) {
        FlushAcks();
        if (!failed_.load()) fail("connection lost: " + t.error());
        return false;
      }
      std::string_view data;
      if (in_buf_.empty()) {
        data = std::string_view(read_chunk_, static_cast<size_t>(r));
      } else {
        in_buf_.append(read_chunk_, static_cast<size_t>(r));
        data = in_buf_;
      }
      for (;;) {
        uint8_t header;
        std::string_view body;
        size_t size;
        int rc = NextPacket(data, &header, &body, &size);
        if (rc < 0) {
          FlushAcks();
          fail("malformed packet from the broker");
          return false;
        }
        if (rc == 0) break;
        if (!HandlePacket(header, body)) {
          FlushAcks();
          return false;
        }
        data.remove_prefix(size);
      }
      if (data.empty()) {
        in_buf_.clear();
      } else if (in_buf_.empty()) {
        in_buf_.assign(data);
      } else {
        in_buf_.erase(0, in_buf_.size() - data.size());
      }
    }
    FlushAcks();
    return true;
  };

  while (!stop_.load(std::memory_order_relaxed)) {
    // Write what is queued.
    while (!out_.empty()) {
      std::string_view bytes = out_.unwritten();
      ssize_t w = t.Write(bytes.data(), bytes.size());
      if (w < 0) {
        // The broker may have answered (a PUBACK refusing an event, a
        // DISCONNECT with a reason) before closing: read that first, so a
        // refusal for good is reported as such and not retried.
        std::string error = t.error();
        if (!read_input()) return;
        if (!failed_.load()) fail("connection lost: " + error);
        return;
      }
      if (w == 0) break;
      out_.Consume(static_cast<size_t>(w));
      last_write = Clock::now();
    }
    io_unwritten_.store(out_.unwritten_size(), std::memory_order_relaxed);
    if (out_.empty() && out_last_ticket != 0) {
      acks_->AckThrough(out_last_ticket);
      out_last_ticket = 0;
    }

    // Keep alive: a PINGREQ when nothing was written for half the interval;
    // no PINGRESP within the interval means the broker is gone.
    int timeout_ms = 1000;
    if (keep_alive_s_ != 0) {
      auto now = Clock::now();
      if (ping_outstanding_ && now - ping_sent > keep_alive) {
        return fail("no answer to PINGREQ within " + std::to_string(keep_alive_s_) + " s");
      }
      if (!ping_outstanding_ && now - last_write >= keep_alive / 2) {
        AppendPingreq(out_.AppendTarget());
        ping_outstanding_ = true;
        ping_sent = now;
        continue;
      }
      auto next = ping_outstanding_ ? ping_sent + keep_alive : last_write + keep_alive / 2;
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
      timeout_ms = static_cast<int>(std::clamp<int64_t>(ms, 1, 1000));
    }

    pollfd fds[2];
    fds[0] = {t.fd(), static_cast<short>(t.read_wants() |
                                         (!out_.empty() ? t.write_wants() : 0)),
              0};
    fds[1] = {wake_fd_, POLLIN, 0};
    int n = ::poll(fds, 2, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(std::string("poll: ") + strerror(errno));
    }
    if (fds[1].revents & POLLIN) {
      uint64_t count;
      (void)!::read(wake_fd_, &count, sizeof count);
      {
        std::lock_guard<std::mutex> lock(mu_);
        taken_.swap(handoff_);  // handoff_ gets taken_'s empty allocation
        if (handoff_last_ticket_ != 0) out_last_ticket = handoff_last_ticket_;
        handoff_last_ticket_ = 0;
        wake_pending_ = false;
        // Counted in io_unwritten_ before handoff_bytes_ drops, so Publish
        // never sees the bytes in neither.
        io_unwritten_.store(out_.unwritten_size() + taken_.size(), std::memory_order_relaxed);
        handoff_bytes_.store(0, std::memory_order_relaxed);
      }
      out_.TakeFrom(&taken_);  // outside the lock: it may move the unwritten bytes
    }
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      // Read first: the broker may have said why in a DISCONNECT.
      fds[0].revents |= POLLIN;
    }
    if (fds[0].revents != 0) {
      if (!read_input()) return;
    }
  }
}

}  // namespace walbus::adapters::mqtt
