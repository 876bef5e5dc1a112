// compose/recipes/iot: walbus publishes public.devices changes to MQTT per
// operation, plus each row's latest state as a retained message on
// shop/public/devices/state/<id>. A subscriber that connects AFTER the changes
// must receive exactly the current state of every row (one retained message
// per existing row, equal to the row) and nothing for deleted rows, whose
// retained message walbus clears with an empty retained payload (seen live by
// a subscriber connected during the changes).
#include "recipe_support.h"

namespace walbus::itest::recipes {
namespace {

constexpr int kMqttPort = 56240;

struct MqttLine {
  bool retained = false;
  std::string topic, payload;
};

// mosquitto_sub -F '%r|%t|%p' output: "<retain flag>|<topic>|<payload>" lines.
std::vector<MqttLine> ParseSub(const std::string& text) {
  std::vector<MqttLine> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t a = line.find('|');
    size_t b = a == std::string::npos ? a : line.find('|', a + 1);
    if (b == std::string::npos) continue;
    out.push_back({line.substr(0, a) == "1", line.substr(a + 1, b - a - 1), line.substr(b + 1)});
  }
  return out;
}

class RecipeIot : public PgFixtureOnPort<kPgPort> {};

TEST_F(RecipeIot, LateSubscriberGetsLatestStateOfEachRow) {
  if (!WalbusHas("mqtt")) GTEST_SKIP() << "walbus was built without the MQTT adapter";
  std::string sub = Shell("command -v mosquitto_sub").out;
  sub = sub.substr(0, sub.find('\n'));
  ASSERT_FALSE(sub.empty()) << "mosquitto_sub is needed (apt-get install mosquitto-clients)";
  ComposeBroker mosquitto(ComposeBroker::Kind::kMosquitto, kMqttPort,
                          "/tmp/walbus-recipe-test-mosquitto-56240");
  ASSERT_TRUE(mosquitto.Start());
  ASSERT_TRUE(FreshShop(sql(), kPort, "iot"));
  Pg shop(ShopDsnFor(kPort));
  ASSERT_TRUE(shop.ok());
  const std::string port = std::to_string(kMqttPort);

  // A dashboard connected during the changes.
  Child live;
  ASSERT_TRUE(live.Start({sub, "-h", "127.0.0.1", "-p", port, "-q", "1", "-i", "recipe-iot-live",
                          "-t", "shop/public/devices/#", "-F", "%r|%t|%p"},
                         dir() + "/live.out", dir() + "/live.err"));
  // It is subscribed once it prints a probe published after it started.
  bool subscribed = WaitUntil(
      [&] {
        Shell("mosquitto_pub -h 127.0.0.1 -p " + port +
              " -q 1 -t shop/public/devices/probe -m probe >/dev/null 2>&1");
        return Contains(live.out(), "|shop/public/devices/probe|probe");
      },
      20s, 200ms);
  ASSERT_TRUE(subscribed) << "mosquitto_sub did not subscribe: " << live.err();
  Child w;
  ASSERT_TRUE(StartRecipeWalbus(&w, RecipeFile("iot", "walbus.toml"),
                                {{"SHOP_DSN", ShopDsnFor(kPort)},
                                 {"MQTT_URL", mosquitto.Url()},
                                 {"METRICS_LISTEN", ""}},
                                dir(), "walbus"));

  ASSERT_TRUE(shop.Exec(
      "INSERT INTO devices (id, name, room, temperature, setpoint) VALUES "
      "('thermo-kitchen', 'Kitchen thermostat', 'kitchen', 19.50, 21.00), "
      "('thermo-office', 'Office thermostat', 'office', 20.00, 20.50), "
      "('plug-garage', 'Garage plug', 'garage', NULL, NULL), "
      "('sensor-attic', 'Attic sensor', NULL, 12.25, NULL)"));
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(shop.Exec("UPDATE devices SET temperature = temperature + 0.5, updated_at = now() "
                          "WHERE id = 'thermo-kitchen'"));
  }
  ASSERT_TRUE(shop.Exec("UPDATE devices SET online = false, room = 'loft' WHERE id = 'sensor-attic'"));
  ASSERT_TRUE(shop.Exec("DELETE FROM devices WHERE id = 'plug-garage'"));
  ASSERT_TRUE(shop.Exec("INSERT INTO devices (id, name) VALUES ('tmp-probe', 'Probe')"));
  ASSERT_TRUE(shop.Exec("UPDATE devices SET setpoint = 22.00 WHERE id = 'thermo-office'"));
  ASSERT_TRUE(shop.Exec("DELETE FROM devices WHERE id = 'tmp-probe'"));
  uint64_t wal_end = sql().CurrentWalLsn();
  ASSERT_TRUE(WaitSlotConfirmed(sql(), "walbus_iot", wal_end, 60s)) << w.err();

  // A dashboard connecting now: only retained messages, until 3 s pass.
  ShellResult late = Shell(Quote(sub) + " -h 127.0.0.1 -p " + port +
                           " -i recipe-iot-late -t 'shop/public/devices/state/+' --retained-only"
                           " -W 3 -F '%r|%t|%p' 2>/dev/null");
  std::vector<MqttLine> got = ParseSub(late.out);
  Rows rows = shop.Query(
      "SELECT id, json_build_object('id', id, 'name', name, 'room', room, 'online', online, "
      "'temperature', temperature::text, 'setpoint', setpoint::text)::text FROM devices ORDER BY id");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(got.size(), rows.size()) << "the late subscriber got:\n" << late.out;
  std::map<std::string, std::string> by_topic;
  for (const MqttLine& m : got) {
    EXPECT_TRUE(m.retained) << m.topic;
    EXPECT_EQ(by_topic.count(m.topic), 0u) << "twice: " << m.topic;
    by_topic[m.topic] = m.payload;
  }
  for (const Row& r : rows) {
    std::string topic = "shop/public/devices/state/" + *r[0];
    auto it = by_topic.find(topic);
    ASSERT_NE(it, by_topic.end()) << "no retained state for " << topic << "; got:\n" << late.out;
    rapidjson::Document state, want;
    ASSERT_TRUE(ParseJson(it->second, &state, topic));
    ASSERT_TRUE(ParseJson(*r[1], &want, "expected row"));
    for (auto& col : want.GetObject()) {
      EXPECT_TRUE(Member(state, col.name.GetString()) == col.value)
          << topic << " column " << col.name.GetString() << ": " << it->second << " vs " << *r[1];
    }
    EXPECT_TRUE(Member(state, "updated_at").IsString()) << it->second;
  }
  EXPECT_EQ(by_topic.count("shop/public/devices/state/plug-garage"), 0u) << late.out;
  EXPECT_EQ(by_topic.count("shop/public/devices/state/tmp-probe"), 0u) << late.out;
  EXPECT_TRUE(Contains(by_topic["shop/public/devices/state/thermo-kitchen"], "\"temperature\":\"22.00\""))
      << late.out;

  // The live dashboard saw each delete clear its state topic: an empty payload
  // after the state, and the event on the delete topic.
  bool seen = WaitUntil(
      [&] {
        std::vector<MqttLine> l = ParseSub(live.out());
        return !l.empty() && l.back().topic == "shop/public/devices/state/tmp-probe" &&
               l.back().payload.empty();
      },
      10s);
  std::vector<MqttLine> l = ParseSub(live.out());
  EXPECT_TRUE(seen) << "the live subscriber did not get the last clear; it got:\n" << live.out();
  for (const char* id : {"plug-garage", "tmp-probe"}) {
    std::string topic = std::string("shop/public/devices/state/") + id;
    int state_at = -1, cleared_at = -1;
    for (size_t i = 0; i < l.size(); ++i) {
      if (l[i].topic != topic) continue;
      if (l[i].payload.empty()) {
        cleared_at = static_cast<int>(i);
      } else if (cleared_at < 0) {
        state_at = static_cast<int>(i);
      }
    }
    EXPECT_GE(state_at, 0) << topic << "\n" << live.out();
    EXPECT_GT(cleared_at, state_at) << topic << " was not cleared after its state\n" << live.out();
  }
  size_t deletes = 0, inserts = 0;
  for (const MqttLine& m : l) {
    deletes += m.topic == "shop/public/devices/delete";
    inserts += m.topic == "shop/public/devices/insert";
  }
  EXPECT_EQ(deletes, 2u) << live.out();
  EXPECT_EQ(inserts, 5u) << live.out();

  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

}  // namespace
}  // namespace walbus::itest::recipes
