#include "adapters/mqtt/mqtt_codec.h"

#include <cstring>

namespace walbus::adapters::mqtt {
namespace {

// Property identifiers (§2.2.2.2) used here.
constexpr uint8_t kPropSessionExpiry = 0x11;
constexpr uint8_t kPropServerKeepAlive = 0x13;
constexpr uint8_t kPropReasonString = 0x1F;
constexpr uint8_t kPropReceiveMaximum = 0x21;
constexpr uint8_t kPropMaximumQos = 0x24;
constexpr uint8_t kPropRetainAvailable = 0x25;
constexpr uint8_t kPropUserProperty = 0x26;
constexpr uint8_t kPropMaximumPacketSize = 0x27;

constexpr std::string_view kEventIdName = "event-id";

size_t VarintSize(uint32_t v) { return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4; }

void PutVarint(std::string* out, uint32_t v) {
  do {
    uint8_t b = v & 0x7F;
    v >>= 7;
    if (v != 0) b |= 0x80;
    out->push_back(static_cast<char>(b));
  } while (v != 0);
}

void PutU16(std::string* out, uint16_t v) {
  char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v & 0xFF)};
  out->append(b, 2);
}

void PutU32(std::string* out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xFF),
               static_cast<char>((v >> 8) & 0xFF), static_cast<char>(v & 0xFF)};
  out->append(b, 4);
}

void PutString(std::string* out, std::string_view s) {
  PutU16(out, static_cast<uint16_t>(s.size()));
  out->append(s);
}

// Reads the body of a packet; every read checks the bytes left first.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : rest_(bytes) {}
  [[nodiscard]] bool ReadU8(uint8_t* v) {
    if (rest_.empty()) return false;
    *v = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return true;
  }
  [[nodiscard]] bool ReadU16(uint16_t* v) {
    if (rest_.size() < 2) return false;
    *v = static_cast<uint16_t>((static_cast<uint8_t>(rest_[0]) << 8) | static_cast<uint8_t>(rest_[1]));
    rest_.remove_prefix(2);
    return true;
  }
  [[nodiscard]] bool ReadU32(uint32_t* v) {
    uint16_t hi, lo;
    if (rest_.size() < 4 || !ReadU16(&hi) || !ReadU16(&lo)) return false;
    *v = (static_cast<uint32_t>(hi) << 16) | lo;
    return true;
  }
  [[nodiscard]] bool ReadVarint(uint32_t* v) {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      uint8_t b;
      if (!ReadU8(&b)) return false;
      value |= static_cast<uint32_t>(b & 0x7F) << (7 * i);
      if ((b & 0x80) == 0) {
        *v = value;
        return true;
      }
    }
    return false;
  }
  [[nodiscard]] bool ReadBytes(size_t n, std::string_view* out) {
    if (rest_.size() < n) return false;
    *out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  [[nodiscard]] bool ReadString(std::string_view* out) {
    uint16_t n;
    return ReadU16(&n) && ReadBytes(n, out);
  }
  size_t remaining() const { return rest_.size(); }

 private:
  std::string_view rest_;
};

// Calls visit(id, reader) for each property of a property block; visit reads
// the ones it knows and returns false for the rest, which are skipped by type.
template <typename Visit>
bool ReadProperties(Reader* r, Visit visit) {
  uint32_t len;
  std::string_view block;
  if (!r->ReadVarint(&len) || !r->ReadBytes(len, &block)) return false;
  Reader p(block);
  while (p.remaining() > 0) {
    uint32_t id;
    if (!p.ReadVarint(&id)) return false;
    bool known = false;
    if (!visit(id, &p, &known)) return false;
    if (known) continue;
    uint8_t b;
    uint16_t s;
    uint32_t w;
    std::string_view v;
    switch (id) {
      case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A:
        if (!p.ReadU8(&b)) return false;
        break;
      case 0x13: case 0x21: case 0x22: case 0x23:
        if (!p.ReadU16(&s)) return false;
        break;
      case 0x02: case 0x11: case 0x18: case 0x27:
        if (!p.ReadU32(&w)) return false;
        break;
      case 0x0B:
        if (!p.ReadVarint(&w)) return false;
        break;
      case 0x03: case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1A: case 0x1C:
      case 0x1F:
        if (!p.ReadString(&v)) return false;
        break;
      case 0x26:
        if (!p.ReadString(&v) || !p.ReadString(&v)) return false;
        break;
      default:
        return false;  // an unknown property is a malformed packet (§2.2.2.2)
    }
  }
  return true;
}

bool ReadReasonString(Reader* r, std::string_view* reason_string) {
  return ReadProperties(r, [&](uint32_t id, Reader* p, bool* known) {
    if (id != kPropReasonString) return true;
    *known = true;
    return p->ReadString(reason_string);
  });
}

}  // namespace

void AppendConnect(std::string* out, const ConnectParams& p) {
  const bool v5 = p.version == kMqtt5;
  std::string props;
  if (v5 && p.session_expiry_s != 0) {
    props.push_back(static_cast<char>(kPropSessionExpiry));
    PutU32(&props, p.session_expiry_s);
  }
  // 3.1.1 allows a password only together with a user name (§3.1.2.9).
  const bool has_user = !p.user.empty() || (!v5 && !p.password.empty());
  const bool has_password = !p.password.empty();
  size_t remaining = 2 + 4 + 1 + 1 + 2 + 2 + p.client_id.size();
  if (v5) remaining += VarintSize(static_cast<uint32_t>(props.size())) + props.size();
  if (has_user) remaining += 2 + p.user.size();
  if (has_password) remaining += 2 + p.password.size();

  out->push_back(static_cast<char>(kConnect << 4));
  PutVarint(out, static_cast<uint32_t>(remaining));
  PutString(out, "MQTT");
  out->push_back(static_cast<char>(p.version));
  uint8_t flags = 0;
  if (has_user) flags |= 0x80;
  if (has_password) flags |= 0x40;
  if (p.clean_start) flags |= 0x02;
  out->push_back(static_cast<char>(flags));
  PutU16(out, p.keep_alive_s);
  if (v5) {
    PutVarint(out, static_cast<uint32_t>(props.size()));
    out->append(props);
  }
  PutString(out, p.client_id);
  if (has_user) PutString(out, p.user);
  if (has_password) PutString(out, p.password);
}

bool ParseConnack(int version, std::string_view body, ConnackInfo* out) {
  Reader r(body);
  uint8_t flags;
  if (!r.ReadU8(&flags) || !r.ReadU8(&out->reason)) return false;
  out->session_present = (flags & 0x01) != 0;
  if (version != kMqtt5) return r.remaining() == 0;
  if (r.remaining() == 0) return true;  // a 3.1.1 broker answering a v5 CONNECT
  std::string_view reason_string;
  bool ok = ReadProperties(&r, [&](uint32_t id, Reader* p, bool* known) {
    *known = true;
    uint8_t b;
    uint16_t s;
    uint32_t w;
    switch (id) {
      case kPropReceiveMaximum:
        if (!p->ReadU16(&s) || s == 0) return false;
        out->receive_maximum = s;
        return true;
      case kPropMaximumPacketSize:
        if (!p->ReadU32(&w) || w == 0) return false;
        out->maximum_packet_size = w;
        return true;
      case kPropMaximumQos:
        if (!p->ReadU8(&b) || b > 1) return false;
        out->maximum_qos = b;
        return true;
      case kPropRetainAvailable:
        if (!p->ReadU8(&b) || b > 1) return false;
        out->retain_available = b == 1;
        return true;
      case kPropServerKeepAlive:
        if (!p->ReadU16(&s)) return false;
        out->server_keep_alive = s;
        return true;
      case kPropReasonString:
        return p->ReadString(&reason_string);
      default:
        *known = false;
        return true;
    }
  });
  if (!ok || r.remaining() != 0) return false;
  out->reason_string.assign(reason_string);
  return true;
}

size_t PublishSize(int version, std::string_view topic, int qos, std::string_view event_id,
                   size_t payload_size) {
  size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) + payload_size;
  if (version == kMqtt5) {
    size_t props = event_id.empty() ? 0 : 1 + 2 + kEventIdName.size() + 2 + event_id.size();
    remaining += VarintSize(static_cast<uint32_t>(props)) + props;
  }
  if (remaining > kMaxRemainingLength) return remaining + 5;
  return 1 + VarintSize(static_cast<uint32_t>(remaining)) + remaining;
}

void AppendPublish(std::string* out, int version, std::string_view topic, uint16_t packet_id,
                   int qos, bool retain, std::string_view event_id, std::string_view payload) {
  size_t props = 0;
  size_t remaining = 2 + topic.size() + (qos > 0 ? 2 : 0) + payload.size();
  if (version == kMqtt5) {
    props = event_id.empty() ? 0 : 1 + 2 + kEventIdName.size() + 2 + event_id.size();
    remaining += VarintSize(static_cast<uint32_t>(props)) + props;
  }
  out->push_back(static_cast<char>((kPublish << 4) | (qos << 1) | (retain ? 1 : 0)));
  PutVarint(out, static_cast<uint32_t>(remaining));
  PutString(out, topic);
  if (qos > 0) PutU16(out, packet_id);
  if (version == kMqtt5) {
    PutVarint(out, static_cast<uint32_t>(props));
    if (props != 0) {
      out->push_back(static_cast<char>(kPropUserProperty));
      PutString(out, kEventIdName);
      PutString(out, event_id);
    }
  }
  out->append(payload);
}

bool ParseAck(int version, std::string_view body, AckInfo* out) {
  Reader r(body);
  if (!r.ReadU16(&out->packet_id) || out->packet_id == 0) return false;
  out->reason = 0;
  out->reason_string = {};
  if (version != kMqtt5) return r.remaining() == 0;
  if (r.remaining() == 0) return true;  // §3.4.2.1: no reason code means success
  if (!r.ReadU8(&out->reason)) return false;
  if (r.remaining() == 0) return true;
  return ReadReasonString(&r, &out->reason_string) && r.remaining() == 0;
}

bool ParseDisconnect(std::string_view body, DisconnectInfo* out) {
  Reader r(body);
  out->reason = 0;
  out->reason_string = {};
  if (r.remaining() == 0) return true;
  if (!r.ReadU8(&out->reason)) return false;
  if (r.remaining() == 0) return true;
  return ReadReasonString(&r, &out->reason_string) && r.remaining() == 0;
}

void AppendPubrel(std::string* out, uint16_t packet_id) {
  out->push_back(static_cast<char>((kPubrel << 4) | 0x02));
  out->push_back(2);
  PutU16(out, packet_id);
}

void AppendPingreq(std::string* out) {
  out->push_back(static_cast<char>(kPingreq << 4));
  out->push_back(0);
}

void AppendDisconnect(std::string* out, int version) {
  out->push_back(static_cast<char>(kDisconnect << 4));
  if (version == kMqtt5) {
    out->push_back(1);
    out->push_back(0);  // normal disconnection: the broker drops the will
  } else {
    out->push_back(0);
  }
}

int NextPacket(std::string_view in, uint8_t* header, std::string_view* body, size_t* size) {
  if (in.size() < 2) return 0;
  uint32_t remaining = 0;
  size_t pos = 1;
  for (int i = 0;; ++i) {
    if (i == 4) return -1;
    if (pos >= in.size()) return 0;
    uint8_t b = static_cast<uint8_t>(in[pos++]);
    remaining |= static_cast<uint32_t>(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) break;
  }
  if (in.size() - pos < remaining) return 0;
  *header = static_cast<uint8_t>(in[0]);
  *body = in.substr(pos, remaining);
  *size = pos + remaining;
  return 1;
}

std::string_view ReasonName(uint8_t code) {
  switch (code) {
    case 0x00: return "success";
    case 0x04: return "disconnect with will message";
    case 0x10: return "no matching subscribers";
    case 0x80: return "unspecified error";
    case 0x81: return "malformed packet";
    case 0x82: return "protocol error";
    case 0x83: return "implementation specific error";
    case 0x84: return "unsupported protocol version";
    case 0x85: return "client identifier not valid";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "server unavailable";
    case 0x89: return "server busy";
    case 0x8A: return "banned";
    case 0x8B: return "server shutting down";
    case 0x8C: return "bad authentication method";
    case 0x8D: return "keep alive timeout";
    case 0x8E: return "session taken over";
    case 0x90: return "topic name invalid";
    case 0x91: return "packet identifier in use";
    case 0x92: return "packet identifier not found";
    case 0x93: return "receive maximum exceeded";
    case 0x94: return "topic alias invalid";
    case 0x95: return "packet too large";
    case 0x96: return "message rate too high";
    case 0x97: return "quota exceeded";
    case 0x98: return "administrative action";
    case 0x99: return "payload format invalid";
    case 0x9A: return "retain not supported";
    case 0x9B: return "QoS not supported";
    case 0x9C: return "use another server";
    case 0x9D: return "server moved";
    case 0x9F: return "connection rate exceeded";
    case 0xA0: return "maximum connect time";
    default: return "unknown reason";
  }
}

bool ValidTopicName(std::string_view topic) {
  if (topic.empty() || topic.size() > 65535) return false;
  size_t i = 0;
  while (i < topic.size()) {
    auto c = static_cast<unsigned char>(topic[i]);
    if (c < 0x80) {
      if (c == 0 || c == '+' || c == '#') return false;
      ++i;
      continue;
    }
    // Well-formed UTF-8 (RFC 3629): no overlongs, surrogates or > U+10FFFF.
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
    else return false;
    if (topic.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(topic[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    i += n + 1;
  }
  return true;
}

}  // namespace walbus::adapters::mqtt
