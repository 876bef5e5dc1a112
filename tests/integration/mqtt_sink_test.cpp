// MqttSink against a real Mosquitto 2.0 started from compose/mosquitto.sh:
// what a paho subscriber receives is compared with what the sink published.
#include "adapters/mqtt/mqtt_sink.h"

#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "adapters/mqtt/mqtt_codec.h"

namespace walbus::adapters::mqtt {
namespace {

using namespace std::chrono_literals;

constexpr int kPort = 56883;

std::string Script() { return std::string(WALBUS_SOURCE_DIR) + "/compose/mosquitto.sh"; }
std::string BrokerDir(int port) { return "/tmp/walbus-mqtt-test-" + std::to_string(port); }
std::string Url(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// Starts a fresh broker; env holds extra WALBUS_MQTT_* assignments.
void StartBroker(int port, const std::string& env = "") {
  std::string dir = BrokerDir(port);
  std::string cmd = "WALBUS_MQTT_DIR=" + dir + " " + Script() + " stop " + std::to_string(port) +
                    "; rm -rf " + dir + "; " + env + " WALBUS_MQTT_DIR=" + dir + " " + Script() +
                    " start " + std::to_string(port) + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// Starts the broker again in the same directory (after KillBroker).
void RestartBroker(int port) {
  std::string cmd = "WALBUS_MQTT_DIR=" + BrokerDir(port) + " " + Script() + " start " +
                    std::to_string(port) + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

void StopBroker(int port) {
  std::string cmd = "WALBUS_MQTT_DIR=" + BrokerDir(port) + " " + Script() + " stop " +
                    std::to_string(port);
  (void)std::system(cmd.c_str());
}

void KillBroker(int port) {
  std::ifstream f(BrokerDir(port) + "/mosquitto.pid");
  pid_t pid = 0;
  f >> pid;
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(20ms);
}

// Records what the sink reports.
class TestAcks : public AckSink {
 public:
  void Ack(uint64_t ticket) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (ticket > through_) acked_.insert(ticket);
    cv_.notify_all();
  }
  void AckThrough(uint64_t ticket) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (ticket > through_) {
      through_ = ticket;
      acked_.erase(acked_.begin(), acked_.upper_bound(ticket));
    }
    cv_.notify_all();
  }
  void Fail(Status why) override {
    std::lock_guard<std::mutex> lock(mu_);
    fails_.push_back(std::move(why));
    cv_.notify_all();
  }

  // Acknowledged tickets among 1..last.
  uint64_t Count(uint64_t last) {
    std::lock_guard<std::mutex> lock(mu_);
    return CountLocked(last);
  }
  // Acknowledged tickets among first..last.
  uint64_t CountRange(uint64_t first, uint64_t last) {
    std::lock_guard<std::mutex> lock(mu_);
    return CountLocked(last) - CountLocked(first - 1);
  }
  bool WaitAll(uint64_t last, std::chrono::milliseconds timeout) { return WaitRange(1, last, timeout); }
  bool WaitRange(uint64_t first, uint64_t last, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    auto done = [&] { return CountLocked(last) - CountLocked(first - 1) == last - first + 1; };
    return cv_.wait_for(lock, timeout, [&] { return done() || !fails_.empty(); }) && done();
  }
  void WaitSome(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout);
  }
  Status WaitFail(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !fails_.empty(); });
    return fails_.empty() ? Status::Ok() : fails_.front();
  }
  std::vector<Status> fails() {
    std::lock_guard<std::mutex> lock(mu_);
    return fails_;
  }

 private:
  uint64_t CountLocked(uint64_t last) {
    uint64_t n = std::min(through_, last);
    for (uint64_t t : acked_) n += t <= last ? 1 : 0;
    return n;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t through_ = 0;
  std::set<uint64_t> acked_;
  std::vector<Status> fails_;
};

// An independent MQTT 5 subscriber (paho.mqtt.c); its callback only records.
class Subscriber {
 public:
  struct Message {
    std::string topic;
    std::string payload;
    std::string event_id;
    bool retained = false;
  };

  Subscriber(int port, const std::string& client_id) {
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.MQTTVersion = MQTTVERSION_5;
    ok_ = MQTTAsync_createWithOptions(&client_, Url(port).c_str(), client_id.c_str(),
                                      MQTTCLIENT_PERSISTENCE_NONE, nullptr, &co) == MQTTASYNC_SUCCESS &&
          MQTTAsync_setCallbacks(client_, this, nullptr, &Subscriber::OnMessage, nullptr) ==
              MQTTASYNC_SUCCESS;
    if (!ok_) return;
    MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer5;
    opts.cleanstart = 1;
    opts.onSuccess5 = &Subscriber::OnDone;
    opts.onFailure5 = &Subscriber::OnFailed;
    opts.context = this;
    ok_ = MQTTAsync_connect(client_, &opts) == MQTTASYNC_SUCCESS && WaitDone();
  }
  ~Subscriber() {
    if (client_ != nullptr) {
      MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
      d.timeout = 1000;
      if (MQTTAsync_isConnected(client_)) MQTTAsync_disconnect(client_, &d);
      std::this_thread::sleep_for(20ms);
      MQTTAsync_destroy(&client_);
    }
  }
  bool ok() const { return ok_; }

  bool Subscribe(const std::string& filter, int qos) {
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    r.onSuccess5 = &Subscriber::OnDone;
    r.onFailure5 = &Subscriber::OnFailed;
    r.context = this;
    return MQTTAsync_subscribe(client_, filter.c_str(), qos, &r) == MQTTASYNC_SUCCESS && WaitDone();
  }

  // Waits until n messages arrived (or the timeout), returns what arrived.
  std::vector<Message> WaitFor(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return messages_.size() >= n; });
    return messages_;
  }

 private:
  static void OnDone(void* ctx, MQTTAsync_successData5*) {
    auto* self = static_cast<Subscriber*>(ctx);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->done_ = 1;
    self->cv_.notify_all();
  }
  static void OnFailed(void* ctx, MQTTAsync_failureData5*) {
    auto* self = static_cast<Subscriber*>(ctx);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->done_ = -1;
    self->cv_.notify_all();
  }
  static int OnMessage(void* ctx, char* topic, int topic_len, MQTTAsync_message* m) {
    auto* self = static_cast<Subscriber*>(ctx);
    Message msg;
    msg.topic = topic_len > 0 ? std::string(topic, static_cast<size_t>(topic_len)) : topic;
    msg.payload.assign(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen));
    msg.retained = m->retained != 0;
    for (int i = 0; i < m->properties.count; ++i) {
      const MQTTProperty& p = m->properties.array[i];
      if (p.identifier == MQTTPROPERTY_CODE_USER_PROPERTY &&
          std::string(p.value.data.data, static_cast<size_t>(p.value.data.len)) == "event-id") {
        msg.event_id.assign(p.value.value.data, static_cast<size_t>(p.value.value.len));
      }
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->messages_.push_back(std::move(msg));
    self->cv_.notify_all();
    return 1;
  }
  bool WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, 5s, [&] { return done_ != 0; });
    bool ok = done_ == 1;
    done_ = 0;
    return ok;
  }

  MQTTAsync client_ = nullptr;
  bool ok_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  int done_ = 0;
  std::vector<Message> messages_;
};

// Owns the strings an Event points into.
struct TestEvent {
  uint64_t ticket = 0;
  std::string topic, id, op = "insert", table = "public.orders", payload, state_topic, key, after;
  Event view() const {
    Event e;
    e.ticket = ticket;
    e.topic = topic;
    e.id = id;
    e.op = op;
    e.table = table;
    e.payload = payload;
    e.state_topic = state_topic;
    e.key = key;
    e.after = after;
    return e;
  }
};

std::string EventId(uint64_t n) {
  char buf[40];
  snprintf(buf, sizeof buf, "00000000016B37A0:%llu", static_cast<unsigned long long>(n));
  return buf;
}

MqttOptions Options(int port, const std::string& client_id, int qos) {
  MqttOptions o;
  o.name = "test";
  o.url = Url(port);
  o.client_id = client_id;
  o.qos = qos;
  o.max_in_flight = 1000;
  o.connect_timeout_ms = 3000;
  return o;
}

// Publishes the events as the pipeline would: Flush every `batch`, keep at
// most max_in_flight unacknowledged, wait and retry on ResourceExhausted.
Status PublishAll(MqttSink* sink, TestAcks* acks, const std::vector<TestEvent>& events,
                  uint64_t max_in_flight, size_t batch = 100) {
  const uint64_t first = events.empty() ? 1 : events.front().ticket;
  for (size_t i = 0; i < events.size();) {
    const TestEvent& e = events[i];
    if (e.ticket - first - acks->CountRange(first, e.ticket) >= max_in_flight) {
      WALBUS_RETURN_IF_ERROR(sink->Flush());
      acks->WaitSome(10ms);
      continue;
    }
    Status st = sink->Publish(e.view());
    if (st.code() == Code::kResourceExhausted) {
      WALBUS_RETURN_IF_ERROR(sink->Flush());
      acks->WaitSome(10ms);
      continue;
    }
    WALBUS_RETURN_IF_ERROR(st);
    if (++i % batch == 0) WALBUS_RETURN_IF_ERROR(sink->Flush());
  }
  return sink->Flush();
}

class MqttSinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { StartBroker(kPort, "WALBUS_MQTT_PERSIST=0"); }
  static void TearDownTestSuite() { StopBroker(kPort); }
};

// Publishes n events over `topics` topics at the given QoS and checks that
// every ticket is acknowledged and every event arrives in order per topic.
void RoundTrip(int qos, size_t n, int topics, const std::string& prefix) {
  Subscriber sub(kPort, prefix + "-sub");
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(sub.Subscribe(prefix + "/#", 1));

  MqttSink sink(Options(kPort, prefix + "-sink", qos));
  TestAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  EXPECT_EQ(sink.protocol_version(), 5);
  std::vector<TestEvent> events(n);
  for (size_t i = 0; i < n; ++i) {
    TestEvent& e = events[i];
    e.ticket = i + 1;
    e.topic = prefix + "/shop/public/t" + std::to_string(i % topics) + "/insert";
    e.id = EventId(i);
    e.payload = "{\"id\":\"" + e.id + "\",\"n\":" + std::to_string(i) + ",\"pad\":\"" +
                std::string(200, 'x') + "\"}";
  }
  Status st = PublishAll(&sink, &acks, events, 1000);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(acks.WaitAll(n, 20s)) << acks.Count(n) << " of " << n << " acknowledged";
  EXPECT_TRUE(acks.fails().empty());

  auto got = sub.WaitFor(n, 20s);
  ASSERT_EQ(got.size(), n);
  std::map<std::string, std::vector<size_t>> per_topic;
  std::map<std::string, size_t> by_id;
  for (size_t i = 0; i < n; ++i) by_id[events[i].id] = i;
  for (const auto& m : got) {
    ASSERT_EQ(by_id.count(m.event_id), 1u) << "event-id property missing or unknown: " << m.event_id;
    size_t i = by_id[m.event_id];
    EXPECT_EQ(m.topic, events[i].topic);
    EXPECT_EQ(m.payload, events[i].payload);
    EXPECT_FALSE(m.retained);
    per_topic[m.topic].push_back(i);
  }
  EXPECT_EQ(per_topic.size(), static_cast<size_t>(topics));
  for (const auto& [topic, seq] : per_topic) {
    EXPECT_TRUE(std::is_sorted(seq.begin(), seq.end())) << topic << " out of order";
    std::set<size_t> unique(seq.begin(), seq.end());
    EXPECT_EQ(unique.size(), seq.size()) << topic << " has duplicates";
  }
  sink.Close();
}

TEST_F(MqttSinkTest, Qos1FiveThousandEventsInOrderWithEventId) { RoundTrip(1, 5000, 7, "rt1"); }

TEST_F(MqttSinkTest, Qos0) { RoundTrip(0, 500, 3, "rt0"); }

TEST_F(MqttSinkTest, Qos2) { RoundTrip(2, 1500, 3, "rt2"); }

// A new sink with the same client id finds the persistent session and first
// releases every QoS 2 flow an earlier walbus may have left open.
TEST_F(MqttSinkTest, Qos2AgainOnTheExistingSession) { RoundTrip(2, 500, 3, "rt2"); }

TEST_F(MqttSinkTest, StateTopicKeepsLatestRowRetained) {
  MqttSink sink(Options(kPort, "state-sink", 1));
  TestAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  std::vector<TestEvent> events;
  auto add = [&](const std::string& op, int key, const std::string& after) {
    TestEvent e;
    e.ticket = events.size() + 1;
    e.op = op;
    e.id = EventId(events.size());
    e.topic = "st/shop/public/orders/" + op;
    e.key = std::to_string(key);
    e.state_topic = "st/shop/public/orders/state/" + e.key;
    e.after = after;
    e.payload = "{\"op\":\"" + op + "\",\"after\":" + after + "}";
    events.push_back(e);
  };
  for (int round = 0; round < 3; ++round) {
    for (int key = 1; key <= 3; ++key) {
      add(round == 0 ? "insert" : "update", key,
          "{\"id\":" + std::to_string(key) + ",\"v\":" + std::to_string(round) + "}");
    }
  }
  add("delete", 2, "null");
  Status st = PublishAll(&sink, &acks, events, 1000, 4);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(acks.WaitAll(events.size(), 10s));

  Subscriber late(kPort, "state-late");
  ASSERT_TRUE(late.ok());
  ASSERT_TRUE(late.Subscribe("st/shop/public/orders/state/#", 1));
  auto got = late.WaitFor(2, 3s);
  std::this_thread::sleep_for(300ms);  // anything more would be wrong
  got = late.WaitFor(2, 0ms);
  std::map<std::string, std::string> state;
  for (const auto& m : got) {
    EXPECT_TRUE(m.retained) << m.topic;
    state[m.topic] = m.payload;
  }
  EXPECT_EQ(state.size(), 2u);
  EXPECT_EQ(state["st/shop/public/orders/state/1"], "{\"id\":1,\"v\":2}");
  EXPECT_EQ(state["st/shop/public/orders/state/3"], "{\"id\":3,\"v\":2}");
  EXPECT_EQ(state.count("st/shop/public/orders/state/2"), 0u) << "delete left a retained message";
  sink.Close();
}

TEST_F(MqttSinkTest, BrokerKilledMidStreamThenBack) {
  constexpr int port = kPort + 1;
  StartBroker(port);
  MqttSink sink(Options(port, "kill-sink", 1));
  TestAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  std::vector<TestEvent> events(200000);
  for (size_t i = 0; i < events.size(); ++i) {
    events[i].ticket = i + 1;
    events[i].topic = "kill/t";
    events[i].id = EventId(i);
    events[i].payload = std::string(300, 'k');
  }
  std::thread killer([&] {
    std::this_thread::sleep_for(150ms);
    KillBroker(port);
  });
  Status st = PublishAll(&sink, &acks, events, 1000);
  killer.join();
  // The failure shows either in a Publish/Flush or through Fail.
  if (st.ok()) st = acks.WaitFail(5s);
  if (st.ok()) st = sink.Flush();
  printf("  after the kill: %s\n", st.ToString().c_str());
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  auto fails = acks.fails();
  ASSERT_FALSE(fails.empty());
  EXPECT_EQ(fails[0].code(), Code::kUnavailable) << fails[0].ToString();
  EXPECT_LT(acks.Count(events.size()), events.size());

  // Down: Open fails with Unavailable, quickly.
  Status down = sink.Open(&acks);
  printf("  Open while down: %s\n", down.ToString().c_str());
  EXPECT_EQ(down.code(), Code::kUnavailable) << down.ToString();

  RestartBroker(port);
  TestAcks acks2;
  Status open = sink.Open(&acks2);
  ASSERT_TRUE(open.ok()) << open.ToString();
  std::vector<TestEvent> more(100);
  for (size_t i = 0; i < more.size(); ++i) {
    more[i].ticket = events.size() + 1 + i;
    more[i].topic = "kill/t";
    more[i].id = EventId(events.size() + i);
    more[i].payload = "after restart";
  }
  ASSERT_TRUE(PublishAll(&sink, &acks2, more, 1000).ok());
  EXPECT_TRUE(acks2.WaitRange(more.front().ticket, more.back().ticket, 5s));
  EXPECT_TRUE(acks2.fails().empty());
  sink.Close();
  StopBroker(port);
}

TEST_F(MqttSinkTest, FrozenBrokerIsDetectedByKeepAlive) {
  constexpr int port = kPort + 6;
  StartBroker(port);
  MqttOptions o = Options(port, "frozen-sink", 1);
  o.keep_alive_s = 1;
  MqttSink sink(o);
  TestAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  std::ifstream f(BrokerDir(port) + "/mosquitto.pid");
  pid_t pid = 0;
  f >> pid;
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  TestEvent e;
  e.ticket = 1;
  e.topic = "frozen/t";
  e.id = EventId(1);
  e.payload = "{}";
  EXPECT_TRUE(sink.Publish(e.view()).ok());
  EXPECT_TRUE(sink.Flush().ok());
  Status why = acks.WaitFail(5s);
  ::kill(pid, SIGCONT);
  printf("  Fail: %s\n", why.ToString().c_str());
  EXPECT_EQ(why.code(), Code::kUnavailable) << why.ToString();
  EXPECT_NE(why.message().find("PINGREQ"), std::string::npos) << why.message();
  EXPECT_EQ(sink.Publish(e.view()).code(), Code::kUnavailable);
  sink.Close();
  StopBroker(port);
}

TEST_F(MqttSinkTest, WrongPasswordIsAClearError) {
  constexpr int port = kPort + 2;
  StartBroker(port, "WALBUS_MQTT_PASSWD=walbus:right-secret");
  MqttOptions o = Options(port, "auth-sink", 1);
  o.user = "walbus";
  o.password = "wrong-secret-42";
  MqttSink sink(o);
  TestAcks acks;
  Status open = sink.Open(&acks);
  printf("  Open: %s\n", open.ToString().c_str());
  EXPECT_EQ(open.code(), Code::kFailedPrecondition) << open.ToString();
  EXPECT_NE(open.message().find("refused the connection"), std::string::npos) << open.message();
  EXPECT_TRUE(open.message().find("bad user name or password") != std::string::npos ||
              open.message().find("not authorized") != std::string::npos)
      << open.message();
  EXPECT_EQ(open.message().find("wrong-secret-42"), std::string::npos);
  Status check = sink.Check();
  EXPECT_EQ(check.code(), Code::kFailedPrecondition) << check.ToString();
  EXPECT_EQ(check.message().find("wrong-secret-42"), std::string::npos);

  o.password = "right-secret";
  MqttSink good(o);
  Status ok = good.Check();
  EXPECT_TRUE(ok.ok()) << ok.ToString();
  StopBroker(port);
}

TEST_F(MqttSinkTest, RefusedPublishIsPermanentAndNamesTheEvent) {
  constexpr int port = kPort + 3;
  // Anonymous clients may write below ok/ only.
  std::string acl_path = "/tmp/walbus-mqtt-test-" + std::to_string(port) + ".acl";
  {
    std::ofstream acl(acl_path);
    acl << "topic readwrite ok/#\n";
  }
  (void)std::system(("chmod 644 " + acl_path).c_str());
  StartBroker(port, "WALBUS_MQTT_EXTRA='acl_file " + acl_path + "'");

  MqttSink sink(Options(port, "acl-sink", 1));
  TestAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  TestEvent e;
  e.ticket = 1;
  e.topic = "denied/shop/public/secrets/insert";
  e.id = EventId(7);
  e.table = "public.secrets";
  e.payload = "{}";
  ASSERT_TRUE(sink.Publish(e.view()).ok());
  ASSERT_TRUE(sink.Flush().ok());
  Status why = acks.WaitFail(5s);
  printf("  Fail: %s\n", why.ToString().c_str());
  EXPECT_EQ(why.code(), Code::kPermanent) << why.ToString();
  EXPECT_NE(why.message().find(e.id), std::string::npos) << why.message();
  EXPECT_NE(why.message().find("public.secrets"), std::string::npos) << why.message();
  EXPECT_NE(why.message().find("not authorized"), std::string::npos) << why.message();
  EXPECT_EQ(acks.Count(1), 0u);
  sink.Close();
  StopBroker(port);
}

TEST_F(MqttSinkTest, OversizedEventIsPermanent) {
  constexpr int port = kPort + 4;
  StartBroker(port, "WALBUS_MQTT_EXTRA='max_packet_size 1000'");
  MqttSink sink(Options(port, "size-sink", 1));
  TestAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  TestEvent e;
  e.ticket = 1;
  e.topic = "size/t";
  e.id = EventId(9);
  e.table = "public.blobs";
  e.payload = std::string(2000, 'b');
  Status st = sink.Publish(e.view());
  if (st.ok()) st = sink.Flush();
  if (st.ok()) st = acks.WaitFail(5s);
  printf("  %s\n", st.ToString().c_str());
  EXPECT_EQ(st.code(), Code::kPermanent) << st.ToString();
  EXPECT_NE(st.message().find(e.id), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("public.blobs"), std::string::npos) << st.message();
  sink.Close();
  StopBroker(port);
}

TEST_F(MqttSinkTest, MessageSizeLimitIsPermanent) {
  // message_size_limit (unlike max_packet_size) is not announced in CONNACK:
  // Mosquitto answers the oversized PUBLISH with a refusal.
  constexpr int port = kPort + 5;
  StartBroker(port, "WALBUS_MQTT_EXTRA='message_size_limit 1000'");
  MqttSink sink(Options(port, "limit-sink", 1));
  TestAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  TestEvent small, big;
  small.ticket = 1;
  small.topic = big.topic = "limit/t";
  small.id = EventId(1);
  small.payload = "{}";
  big.ticket = 2;
  big.id = EventId(2);
  big.table = "public.blobs";
  big.payload = std::string(2000, 'b');
  ASSERT_TRUE(sink.Publish(small.view()).ok());
  Status st = sink.Publish(big.view());
  if (st.ok()) st = sink.Flush();
  if (st.ok()) st = acks.WaitFail(5s);
  printf("  %s\n", st.ToString().c_str());
  EXPECT_EQ(st.code(), Code::kPermanent) << st.ToString();
  EXPECT_NE(st.message().find(big.id), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("public.blobs"), std::string::npos) << st.message();
  sink.Close();
  StopBroker(port);
}

// A broker that only speaks MQTT 3.1.1: it answers a v5 CONNECT with the
// 3.1.1 "unacceptable protocol version" and acknowledges QoS 1 publishes.
class FakeV311Broker {
 public:
  FakeV311Broker() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeV311Broker() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  std::vector<int> levels() {
    std::lock_guard<std::mutex> lock(mu_);
    return levels_;
  }
  std::vector<std::string> payloads() {
    std::lock_guard<std::mutex> lock(mu_);
    return payloads_;
  }

 private:
  void Run() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      Serve(c);
      ::close(c);
    }
  }
  void Serve(int c) {
    std::string in;
    char buf[4096];
    for (;;) {
      uint8_t header;
      std::string_view body;
      size_t size;
      int rc = NextPacket(in, &header, &body, &size);
      if (rc < 0) return;
      if (rc == 0) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) return;
        in.append(buf, static_cast<size_t>(n));
        continue;
      }
      std::string reply;
      switch (header >> 4) {
        case kConnect: {
          int level = body.size() > 6 ? body[6] : 0;
          {
            std::lock_guard<std::mutex> lock(mu_);
            levels_.push_back(level);
          }
          if (level != 4) {
            (void)!::send(c, "\x20\x02\x00\x01", 4, MSG_NOSIGNAL);
            return;
          }
          reply.assign("\x20\x02\x00\x00", 4);
          break;
        }
        case kPublish: {
          size_t topic_len = (static_cast<uint8_t>(body[0]) << 8) | static_cast<uint8_t>(body[1]);
          std::string_view id = body.substr(2 + topic_len, 2);
          {
            std::lock_guard<std::mutex> lock(mu_);
            payloads_.emplace_back(body.substr(2 + topic_len + 2));
          }
          reply = std::string("\x40\x02", 2) + std::string(id);
          break;
        }
        case kPingreq:
          reply.assign("\xD0\x00", 2);
          break;
        case kDisconnect:
          return;
      }
      if (!reply.empty()) (void)!::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
      in.erase(0, size);
    }
  }
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<int> levels_;
  std::vector<std::string> payloads_;
};

TEST_F(MqttSinkTest, FallsBackToMqtt311) {
  FakeV311Broker broker;
  ASSERT_NE(broker.port(), 0);
  MqttSink sink(Options(broker.port(), "v311-sink", 1));
  TestAcks acks;
  Status open = sink.Open(&acks);
  ASSERT_TRUE(open.ok()) << open.ToString();
  EXPECT_EQ(sink.protocol_version(), 4);
  EXPECT_EQ(broker.levels(), (std::vector<int>{5, 4}));
  std::vector<TestEvent> events(50);
  for (size_t i = 0; i < events.size(); ++i) {
    events[i].ticket = i + 1;
    events[i].topic = "v311/t";
    events[i].id = EventId(i);
    events[i].payload = "{\"n\":" + std::to_string(i) + "}";
  }
  ASSERT_TRUE(PublishAll(&sink, &acks, events, 1000, 7).ok());
  EXPECT_TRUE(acks.WaitAll(events.size(), 5s));
  auto got = broker.payloads();
  ASSERT_EQ(got.size(), events.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], events[i].payload);  // no properties
  sink.Close();
  // A reconnect goes straight to 3.1.1.
  ASSERT_TRUE(sink.Open(&acks).ok());
  EXPECT_EQ(broker.levels(), (std::vector<int>{5, 4, 4}));
  sink.Close();
}

TEST_F(MqttSinkTest, Tls) {
  constexpr int port = kPort + 7;
  constexpr int tls_port = kPort + 8;
  const std::string dir = "/tmp/walbus-mqtt-test-tls";
  std::string make_certs =
      "rm -rf " + dir + " && mkdir -p " + dir + " && cd " + dir +
      " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1"
      " -subj '/CN=walbus test CA' && openssl req -newkey rsa:2048 -nodes -keyout server.key"
      " -out server.csr -subj '/CN=127.0.0.1' && echo 'subjectAltName=IP:127.0.0.1' > ext.cnf"
      " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
      " -out server.crt -days 1 -extfile ext.cnf && chmod 644 * >/dev/null 2>&1";
  ASSERT_EQ(std::system(("(" + make_certs + ") >/dev/null 2>&1").c_str()), 0);
  StartBroker(port, "WALBUS_MQTT_EXTRA='listener " + std::to_string(tls_port) +
                        " 127.0.0.1\ncafile " + dir + "/ca.crt\ncertfile " + dir +
                        "/server.crt\nkeyfile " + dir + "/server.key'");

  MqttOptions o = Options(tls_port, "tls-sink", 1);
  o.url = "mqtts://127.0.0.1:" + std::to_string(tls_port);
  o.tls_ca = dir + "/ca.crt";
  MqttSink sink(o);
  TestAcks acks;
  Status open = sink.Open(&acks);
  ASSERT_TRUE(open.ok()) << open.ToString();
  std::vector<TestEvent> events(2000);
  for (size_t i = 0; i < events.size(); ++i) {
    events[i].ticket = i + 1;
    events[i].topic = "tls/t";
    events[i].id = EventId(i);
    events[i].payload = std::string(300, 's');
  }
  ASSERT_TRUE(PublishAll(&sink, &acks, events, 1000).ok());
  EXPECT_TRUE(acks.WaitAll(events.size(), 10s));
  sink.Close();

  // Without the test CA the broker's certificate is not trusted: a
  // configuration problem (walbus stops with the fix), not an outage.
  o.tls_ca.clear();
  MqttSink untrusted(o);
  Status bad = untrusted.Check();
  printf("  untrusted: %s\n", bad.ToString().c_str());
  EXPECT_EQ(bad.code(), Code::kFailedPrecondition) << bad.ToString();
  EXPECT_NE(bad.message().find("certificate"), std::string::npos) << bad.message();
  StopBroker(port);
}

TEST_F(MqttSinkTest, CheckReportsDownBroker) {
  MqttSink sink(Options(kPort + 9, "nobody", 1));
  Status st = sink.Check();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("127.0.0.1:" + std::to_string(kPort + 9)), std::string::npos);
}

}  // namespace
}  // namespace walbus::adapters::mqtt
