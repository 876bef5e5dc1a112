// MQTT 3.1.1 / 5.0 packet encoding and decoding for a publish-only client
// (OASIS MQTT Version 5.0, §2 and §3; MQTT 3.1.1 for protocol level 4).
// Encoders append to a caller-owned buffer so a batch of packets is built with
// no allocation once the buffer has grown. Decoders take a complete packet
// body, check every length before reading and report malformed input as
// false; they never read past the body.
// Threads: free functions, no state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace walbus::adapters::mqtt {

inline constexpr int kMqtt311 = 4;  // protocol level byte
inline constexpr int kMqtt5 = 5;

enum PacketType : uint8_t {
  kConnect = 1, kConnack = 2, kPublish = 3, kPuback = 4, kPubrec = 5, kPubrel = 6,
  kPubcomp = 7, kSubscribe = 8, kSuback = 9, kUnsubscribe = 10, kUnsuback = 11,
  kPingreq = 12, kPingresp = 13, kDisconnect = 14, kAuth = 15,
};

// The largest value the remaining-length varint can hold (§1.5.5).
inline constexpr uint32_t kMaxRemainingLength = 268435455;

struct ConnectParams {
  int version = kMqtt5;
  std::string_view client_id;
  std::string_view user;          // empty: none
  std::string_view password;      // empty: none
  bool clean_start = false;
  uint16_t keep_alive_s = 30;
  uint32_t session_expiry_s = 0;  // MQTT 5 only
};
void AppendConnect(std::string* out, const ConnectParams& p);

// What the broker said in CONNACK (§3.2). Defaults are the spec's defaults
// for absent properties.
struct ConnackInfo {
  bool session_present = false;
  uint8_t reason = 0;               // v5 reason code, or the 3.1.1 return code
  uint16_t receive_maximum = 65535;
  uint32_t maximum_packet_size = 0; // 0: no limit announced
  uint8_t maximum_qos = 2;
  bool retain_available = true;
  int32_t server_keep_alive = -1;   // -1: not sent
  std::string reason_string;
};
[[nodiscard]] bool ParseConnack(int version, std::string_view body, ConnackInfo* out);

// Size of the PUBLISH AppendPublish would write, so a caller can compare it
// with the broker's Maximum Packet Size before writing anything.
size_t PublishSize(int version, std::string_view topic, int qos, std::string_view event_id,
                   size_t payload_size);
// PUBLISH (§3.3) with, for MQTT 5, the user property `event-id`. The topic
// must be at most 65535 bytes and the packet within kMaxRemainingLength.
void AppendPublish(std::string* out, int version, std::string_view topic, uint16_t packet_id,
                   int qos, bool retain, std::string_view event_id, std::string_view payload);

// PUBACK, PUBREC, PUBCOMP (§3.4, §3.5, §3.7): packet id and, for MQTT 5,
// the reason code and reason string (a view into body).
struct AckInfo {
  uint16_t packet_id = 0;
  uint8_t reason = 0;
  std::string_view reason_string;
};
[[nodiscard]] bool ParseAck(int version, std::string_view body, AckInfo* out);

// DISCONNECT from the broker (MQTT 5 only, §3.14).
struct DisconnectInfo {
  uint8_t reason = 0;
  std::string_view reason_string;
};
[[nodiscard]] bool ParseDisconnect(std::string_view body, DisconnectInfo* out);

void AppendPubrel(std::string* out, uint16_t packet_id);
void AppendPingreq(std::string* out);
void AppendDisconnect(std::string* out, int version);

// Splits one packet off the front of `in`: returns 1 and sets the first
// header byte, the body and the packet's total size; 0 when more bytes are
// needed; -1 when the remaining length is malformed.
int NextPacket(std::string_view in, uint8_t* header, std::string_view* body, size_t* size);

// "not authorized" for 0x87 and so on (MQTT 5 reason codes, §2.4); the 3.1.1
// CONNACK return codes are mapped to their MQTT 5 equivalents by the caller.
std::string_view ReasonName(uint8_t code);

// Valid MQTT topic name: 1..65535 bytes of UTF-8 without NUL, '+' or '#'.
bool ValidTopicName(std::string_view topic);

}  // namespace walbus::adapters::mqtt
