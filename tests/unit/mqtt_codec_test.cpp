#include "adapters/mqtt/mqtt_codec.h"

#include <gtest/gtest.h>

#include <string>

namespace walbus::adapters::mqtt {
namespace {

std::string Bytes(std::initializer_list<int> b) {
  std::string out;
  for (int c : b) out.push_back(static_cast<char>(c));
  return out;
}

TEST(MqttCodec, NextPacketNeedsTheWholePacket) {
  std::string packet = Bytes({0x40, 0x02, 0x00, 0x07, 0x40});  // PUBACK id 7, then a partial one
  uint8_t header;
  std::string_view body;
  size_t size;
  for (size_t n = 0; n < 4; ++n) {
    EXPECT_EQ(NextPacket(std::string_view(packet).substr(0, n), &header, &body, &size), 0) << n;
  }
  ASSERT_EQ(NextPacket(packet, &header, &body, &size), 1);
  EXPECT_EQ(header >> 4, kPuback);
  EXPECT_EQ(body, Bytes({0x00, 0x07}));
  EXPECT_EQ(size, 4u);
  EXPECT_EQ(NextPacket(std::string_view(packet).substr(4), &header, &body, &size), 0);
}

TEST(MqttCodec, NextPacketRejectsAFiveByteLength) {
  std::string packet = Bytes({0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01});
  uint8_t header;
  std::string_view body;
  size_t size;
  EXPECT_EQ(NextPacket(packet, &header, &body, &size), -1);
}

std::string ConnackV5Body() {
  std::string props = Bytes({0x21, 0x00, 0x14,                    // receive maximum 20
                             0x27, 0x00, 0x00, 0x03, 0xE8,        // maximum packet size 1000
                             0x24, 0x01,                          // maximum QoS 1
                             0x25, 0x00,                          // retain not available
                             0x13, 0x00, 0x3C,                    // server keep alive 60
                             0x22, 0x00, 0x0A,                    // topic alias maximum (skipped)
                             0x1F, 0x00, 0x02, 'h', 'i',          // reason string
                             0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'});  // user property (skipped)
  return Bytes({0x01, 0x00, static_cast<int>(props.size())}) + props;
}

TEST(MqttCodec, ParsesConnackV5) {
  ConnackInfo c;
  ASSERT_TRUE(ParseConnack(kMqtt5, ConnackV5Body(), &c));
  EXPECT_TRUE(c.session_present);
  EXPECT_EQ(c.reason, 0);
  EXPECT_EQ(c.receive_maximum, 20);
  EXPECT_EQ(c.maximum_packet_size, 1000u);
  EXPECT_EQ(c.maximum_qos, 1);
  EXPECT_FALSE(c.retain_available);
  EXPECT_EQ(c.server_keep_alive, 60);
  EXPECT_EQ(c.reason_string, "hi");
}

TEST(MqttCodec, EveryTruncatedConnackIsRejected) {
  std::string body = ConnackV5Body();
  for (size_t n = 0; n < body.size(); ++n) {
    ConnackInfo c;
    // Two bytes is the 3.1.1 form, which a v5 client accepts from a 3.1.1 broker.
    if (n == 2) continue;
    EXPECT_FALSE(ParseConnack(kMqtt5, body.substr(0, n), &c)) << n;
  }
}

TEST(MqttCodec, RejectsUnknownAndInvalidProperties) {
  ConnackInfo c;
  EXPECT_FALSE(ParseConnack(kMqtt5, Bytes({0x00, 0x00, 0x02, 0x7F, 0x00}), &c));  // unknown id
  EXPECT_FALSE(ParseConnack(kMqtt5, Bytes({0x00, 0x00, 0x03, 0x21, 0x00, 0x00}), &c));  // rx max 0
  EXPECT_FALSE(ParseConnack(kMqtt5, Bytes({0x00, 0x00, 0x00, 0x00}), &c));  // trailing byte
}

TEST(MqttCodec, ParsesConnack311) {
  ConnackInfo c;
  ASSERT_TRUE(ParseConnack(kMqtt311, Bytes({0x00, 0x04}), &c));
  EXPECT_FALSE(c.session_present);
  EXPECT_EQ(c.reason, 4);
  EXPECT_FALSE(ParseConnack(kMqtt311, Bytes({0x00, 0x04, 0x00}), &c));
}

TEST(MqttCodec, ParsesAcks) {
  AckInfo a;
  ASSERT_TRUE(ParseAck(kMqtt5, Bytes({0x12, 0x34}), &a));
  EXPECT_EQ(a.packet_id, 0x1234);
  EXPECT_EQ(a.reason, 0);
  ASSERT_TRUE(ParseAck(kMqtt5, Bytes({0x00, 0x01, 0x87}), &a));
  EXPECT_EQ(a.reason, 0x87);
  std::string with_string = Bytes({0x00, 0x01, 0x90, 0x06, 0x1F, 0x00, 0x03, 'b', 'a', 'd'});
  ASSERT_TRUE(ParseAck(kMqtt5, with_string, &a));
  EXPECT_EQ(a.reason, 0x90);
  EXPECT_EQ(a.reason_string, "bad");
  for (size_t n = 4; n < with_string.size(); ++n) {
    EXPECT_FALSE(ParseAck(kMqtt5, with_string.substr(0, n), &a)) << n;
  }
  EXPECT_FALSE(ParseAck(kMqtt5, Bytes({0x00}), &a));
  EXPECT_FALSE(ParseAck(kMqtt5, Bytes({0x00, 0x00}), &a));  // packet id 0
  EXPECT_FALSE(ParseAck(kMqtt311, Bytes({0x00, 0x01, 0x00}), &a));
}

TEST(MqttCodec, ParsesDisconnect) {
  DisconnectInfo d;
  ASSERT_TRUE(ParseDisconnect("", &d));
  EXPECT_EQ(d.reason, 0);
  ASSERT_TRUE(ParseDisconnect(Bytes({0x95}), &d));
  EXPECT_EQ(d.reason, 0x95);
  EXPECT_EQ(ReasonName(d.reason), "packet too large");
  EXPECT_FALSE(ParseDisconnect(Bytes({0x95, 0x05, 0x1F}), &d));
}

TEST(MqttCodec, PublishSizeMatchesWhatIsWritten) {
  for (int version : {kMqtt311, kMqtt5}) {
    for (int qos : {0, 1, 2}) {
      for (size_t payload_size : {0, 10, 200, 20000, 3000000}) {
        std::string payload(payload_size, 'p');
        std::string out;
        AppendPublish(&out, version, "a/b/c", 513, qos, qos == 2, "00000000016B37A0:3", payload);
        ASSERT_EQ(out.size(), PublishSize(version, "a/b/c", qos, "00000000016B37A0:3", payload_size));
        uint8_t header;
        std::string_view body;
        size_t size;
        ASSERT_EQ(NextPacket(out, &header, &body, &size), 1);
        EXPECT_EQ(size, out.size());
        EXPECT_EQ(header, (kPublish << 4) | (qos << 1) | (qos == 2 ? 1 : 0));
        EXPECT_EQ(body.substr(0, 7), Bytes({0x00, 0x05, 'a', '/', 'b', '/', 'c'}));
        if (qos > 0) {
          EXPECT_EQ(body.substr(7, 2), Bytes({0x02, 0x01}));
        }
        EXPECT_EQ(body.substr(body.size() - payload_size), payload);
        if (version == kMqtt5) {
          std::string_view props = body.substr(qos > 0 ? 9 : 7);
          EXPECT_EQ(props.substr(0, 12),
                    Bytes({0x1F, 0x26, 0x00, 0x08, 'e', 'v', 'e', 'n', 't', '-', 'i', 'd'}));
        }
      }
    }
  }
}

TEST(MqttCodec, ConnectCarriesSessionAndCredentials) {
  std::string out;
  ConnectParams p;
  p.version = kMqtt5;
  p.client_id = "walbus-x";
  p.user = "u";
  p.password = "pw";
  p.clean_start = false;
  p.keep_alive_s = 30;
  p.session_expiry_s = 86400;
  AppendConnect(&out, p);
  uint8_t header;
  std::string_view body;
  size_t size;
  ASSERT_EQ(NextPacket(out, &header, &body, &size), 1);
  EXPECT_EQ(size, out.size());
  EXPECT_EQ(header, kConnect << 4);
  EXPECT_EQ(body.substr(0, 10), Bytes({0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0xC0, 0x00, 0x1E}));
  EXPECT_EQ(body.substr(10, 6), Bytes({0x05, 0x11, 0x00, 0x01, 0x51, 0x80}));

  // 3.1.1: a password needs the user-name flag; clean session is bit 1.
  out.clear();
  p.version = kMqtt311;
  p.user = "";
  p.clean_start = true;
  AppendConnect(&out, p);
  ASSERT_EQ(NextPacket(out, &header, &body, &size), 1);
  EXPECT_EQ(body.substr(6, 2), Bytes({0x04, 0xC2}));
}

TEST(MqttCodec, TopicNames) {
  EXPECT_TRUE(ValidTopicName("shop/public/orders/insert"));
  EXPECT_TRUE(ValidTopicName("shop/öffentlich/Straße/insert"));
  EXPECT_FALSE(ValidTopicName(""));
  EXPECT_FALSE(ValidTopicName("shop/+/x"));
  EXPECT_FALSE(ValidTopicName("shop/#"));
  EXPECT_FALSE(ValidTopicName(std::string("a\0b", 3)));
  EXPECT_FALSE(ValidTopicName("\xC3"));             // truncated sequence
  EXPECT_FALSE(ValidTopicName("\xC0\xAF"));         // overlong
  EXPECT_FALSE(ValidTopicName("\xED\xA0\x80"));     // surrogate
  EXPECT_FALSE(ValidTopicName(std::string(65536, 'a')));
}

}  // namespace
}  // namespace walbus::adapters::mqtt
