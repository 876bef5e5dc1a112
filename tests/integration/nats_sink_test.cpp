// The `nats` and `jetstream` sinks against real nats-servers started from
// compose/nats.sh: 56422 (JetStream, default limits), 56423 (max_payload 1024)
// and 56424 (users with publish permissions). A lock file serialises test
// processes, since ctest runs each test as its own process and the ports are fixed.
#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "adapters/nats/jetstream_sink.h"
#include "adapters/nats/nats_sink.h"

namespace walbus::adapters::nats {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kPort = 56422;
constexpr int kSmallPayloadPort = 56423;
constexpr int kPermissionsPort = 56424;

std::string Url(int port) { return "nats://127.0.0.1:" + std::to_string(port); }

bool Compose(const std::string& args, const std::string& env = "") {
  std::string cmd = env + " " WALBUS_SOURCE_DIR "/compose/nats.sh " + args + " >/dev/null";
  return std::system(cmd.c_str()) == 0;
}

// SIGSTOP / SIGCONT the server on `port`: connected, but answering nothing.
bool SignalServer(int port, int sig) {
  std::ifstream in("/tmp/walbus-nats-" + std::to_string(port) + "/nats.pid");
  pid_t pid = 0;
  in >> pid;
  return pid > 0 && ::kill(pid, sig) == 0;
}

// Records what a sink reports, as the pipeline's AckSink would.
class FakeAcks final : public AckSink {
 public:
  void Ack(uint64_t ticket) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (ticket >= seen_.size()) seen_.resize(std::max<size_t>(ticket + 1, seen_.size() * 2));
    if (!seen_[ticket]) {
      seen_[ticket] = true;
      if (ticket > max_individual_) max_individual_ = ticket;
      count_.fetch_add(1);
    } else {
      ++duplicates_;
    }
    cv_.notify_all();
  }
  void AckThrough(uint64_t ticket) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (ticket < through_) backwards_ = true;
    through_ = std::max(through_, ticket);
    through_atomic_.store(through_);
    cv_.notify_all();
  }
  void Fail(Status why) override {
    std::lock_guard<std::mutex> lock(mu_);
    fails_.push_back(std::move(why));
    has_fail_.store(true);
    cv_.notify_all();
  }

  // How many events are acknowledged, for an in-flight bound (tickets 1..n).
  uint64_t acked() const { return std::max(through_atomic_.load(), count_.load()); }
  bool has_fail() const { return has_fail_.load(); }
  bool IsAcked(uint64_t ticket) {
    std::lock_guard<std::mutex> lock(mu_);
    return ticket <= through_ || (ticket < seen_.size() && seen_[ticket]);
  }
  bool WaitAcked(uint64_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return through_ >= n || count_.load() >= n; });
  }
  std::optional<Status> WaitFail(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !fails_.empty(); })) return std::nullopt;
    return fails_.front();
  }
  void WaitProgress(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t before = acked();
    cv_.wait_for(lock, timeout, [&] { return acked() != before || !fails_.empty(); });
  }
  std::vector<Status> fails() {
    std::lock_guard<std::mutex> lock(mu_);
    return fails_;
  }
  uint64_t duplicates() {
    std::lock_guard<std::mutex> lock(mu_);
    return duplicates_;
  }
  bool backwards() {
    std::lock_guard<std::mutex> lock(mu_);
    return backwards_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bool> seen_;
  uint64_t max_individual_ = 0;
  uint64_t through_ = 0;
  uint64_t duplicates_ = 0;
  bool backwards_ = false;
  std::atomic<uint64_t> through_atomic_{0};
  std::atomic<uint64_t> count_{0};
  std::atomic<bool> has_fail_{false};
  std::vector<Status> fails_;
};

struct TestEvent {
  uint64_t ticket;
  std::string topic, id, table, payload;
  Event view() const {
    Event e;
    e.ticket = ticket;
    e.topic = topic;
    e.id = id;
    e.op = "insert";
    e.table = table;
    e.payload = payload;
    return e;
  }
};

std::string EventId(uint64_t i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llX:%u", 0x16B37A0ULL + i / 10, static_cast<unsigned>(i % 10));
  return buf;
}

// `count` events, tickets first_ticket.., ids by index from first_index, over
// `subjects` subjects "<prefix>.s<k>", payloads of about `size` bytes.
std::vector<TestEvent> MakeEvents(size_t count, const std::string& prefix, int subjects,
                                  size_t size = 300, uint64_t first_ticket = 1,
                                  uint64_t first_index = 0) {
  std::vector<TestEvent> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    uint64_t index = first_index + i;
    TestEvent e;
    e.ticket = first_ticket + i;
    e.topic = prefix + ".s" + std::to_string(index % subjects);
    e.id = EventId(index);
    e.table = "public.t" + std::to_string(index % subjects);
    e.payload = "{\"id\":\"" + e.id + "\",\"n\":" + std::to_string(index) + ",\"pad\":\"";
    if (e.payload.size() + 2 < size) e.payload.append(size - e.payload.size() - 2, 'x');
    e.payload += "\"}";
    out.push_back(std::move(e));
  }
  return out;
}

// Publishes like the pipeline: at most max_in_flight unacknowledged, Flush
// after every batch and while waiting for acknowledgements.
Status Drive(Sink& sink, FakeAcks& acks, const std::vector<TestEvent>& events,
             uint64_t max_in_flight = 10000, size_t batch = 1000) {
  uint64_t base = events.empty() ? 0 : events.front().ticket - 1;
  size_t in_batch = 0;
  for (const TestEvent& e : events) {
    while (e.ticket - base - acks.acked() > max_in_flight) {
      WALBUS_RETURN_IF_ERROR(sink.Flush());
      if (acks.has_fail()) return acks.fails().front();
      acks.WaitProgress(2ms);
    }
    WALBUS_RETURN_IF_ERROR(sink.Publish(e.view()));
    if (++in_batch == batch) {
      in_batch = 0;
      WALBUS_RETURN_IF_ERROR(sink.Flush());
    }
  }
  return sink.Flush();
}

// Flushes periodically until everything is acknowledged (or a failure).
bool WaitAllAcked(Sink& sink, FakeAcks& acks, uint64_t n, std::chrono::seconds timeout = 20s) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (acks.WaitAcked(n, 50ms)) return true;
    if (!sink.Flush().ok() || acks.has_fail()) return false;
  }
  return false;
}

// Serialises the processes of this test binary (ctest runs one per test).
class SuiteLock {
 public:
  void Acquire() {
    fd_ = ::open("/tmp/walbus-nats-sink-test.lock", O_CREAT | O_RDWR, 0644);
    if (fd_ >= 0) flock(fd_, LOCK_EX);
  }
  void Release() {
    if (fd_ >= 0) {
      flock(fd_, LOCK_UN);
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_ = -1;
};
SuiteLock g_lock;

void StartServers() {
  g_lock.Acquire();
  ASSERT_TRUE(Compose("reset " + std::to_string(kPort)));
  ASSERT_TRUE(Compose("start " + std::to_string(kPort))) << "compose/nats.sh start failed";
}

void StopServers() {
  for (int port : {kPort, kSmallPayloadPort, kPermissionsPort}) {
    EXPECT_TRUE(Compose("stop " + std::to_string(port)));
  }
  g_lock.Release();
}

NatsOptions Options(int port, const std::string& name = "events") {
  NatsOptions o;
  o.name = name;
  o.urls = Url(port);
  o.max_pending = 10000;
  o.ack_timeout_ms = 5000;
  o.connect_timeout_ms = 2000;
  return o;
}

// The test's own cnats connection, to look at what the server holds.
class Peer {
 public:
  explicit Peer(int port) {
    EXPECT_EQ(natsConnection_ConnectTo(&nc_, Url(port).c_str()), NATS_OK);
    if (nc_ != nullptr) {
      EXPECT_EQ(natsConnection_JetStream(&js_, nc_, nullptr), NATS_OK);
    }
  }
  ~Peer() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
  }
  natsConnection* nc() { return nc_; }
  jsCtx* js() { return js_; }

  void DeleteStream(const char* name) { js_DeleteStream(js_, name, nullptr, nullptr); }
  // -1 when the stream cannot be read.
  int64_t StreamMessages(const char* name) {
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, js_, name, nullptr, nullptr) != NATS_OK) return -1;
    int64_t n = static_cast<int64_t>(si->State.Msgs);
    jsStreamInfo_Destroy(si);
    return n;
  }

 private:
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
};

// ---------------------------------------------------------------- core NATS

class NatsSinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { StartServers(); }
  static void TearDownTestSuite() { StopServers(); }
};

TEST_F(NatsSinkTest, PublishesTenThousandEventsInOrderAndAcknowledgesEveryTicket) {
  Peer peer(kPort);
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&sub, peer.nc(), "test.core.>"), NATS_OK);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  ASSERT_EQ(natsConnection_Flush(peer.nc()), NATS_OK);

  constexpr size_t kEvents = 10000;
  constexpr int kSubjects = 7;
  auto events = MakeEvents(kEvents, "test.core", kSubjects);
  NatsSink sink(Options(kPort));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  Status s = Drive(sink, acks, events);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(WaitAllAcked(sink, acks, kEvents)) << "acked " << acks.acked();
  EXPECT_TRUE(acks.fails().empty());
  EXPECT_FALSE(acks.backwards());
  for (uint64_t t = 1; t <= kEvents; ++t) ASSERT_TRUE(acks.IsAcked(t)) << t;

  // Every message arrived, in order within its subject, with its payload.
  std::vector<size_t> next(kSubjects, 0);  // k-th event of subject s is index k*kSubjects+s
  for (size_t i = 0; i < kEvents; ++i) {
    natsMsg* msg = nullptr;
    ASSERT_EQ(natsSubscription_NextMsg(&msg, sub, 5000), NATS_OK) << "message " << i;
    std::string subject = natsMsg_GetSubject(msg);
    std::string payload(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
    int k = std::stoi(subject.substr(subject.rfind(".s") + 2));
    ASSERT_GE(k, 0);
    ASSERT_LT(k, kSubjects);
    size_t index = next[k]++ * kSubjects + k;
    ASSERT_LT(index, kEvents);
    ASSERT_EQ(subject, events[index].topic);
    ASSERT_EQ(payload, events[index].payload) << "subject " << subject << " position " << next[k] - 1;
  }
  natsMsg* extra = nullptr;
  EXPECT_EQ(natsSubscription_NextMsg(&extra, sub, 200), NATS_TIMEOUT);
  natsMsg_Destroy(extra);
  natsSubscription_Destroy(sub);
  sink.Close();
}

TEST_F(NatsSinkTest, PayloadOverMaxPayloadIsPermanentNamingEventAndTable) {
  ASSERT_TRUE(Compose("start " + std::to_string(kSmallPayloadPort), "WALBUS_NATS_MAX_PAYLOAD=1024"));
  NatsSink sink(Options(kSmallPayloadPort));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto small = MakeEvents(1, "test.big", 1, 500);
  ASSERT_TRUE(sink.Publish(small[0].view()).ok());
  auto big = MakeEvents(1, "test.big", 1, 2000, /*first_ticket=*/2, /*first_index=*/42);
  Status s = sink.Publish(big[0].view());
  EXPECT_EQ(s.code(), Code::kPermanent) << s.ToString();
  EXPECT_NE(s.message().find(big[0].id), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(big[0].table), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1024"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(std::to_string(big[0].payload.size())), std::string::npos);
  // The event before it is still acknowledged normally; the refused one never.
  ASSERT_TRUE(sink.Flush().ok());
  EXPECT_TRUE(acks.WaitAcked(1, 5s));
  EXPECT_FALSE(acks.IsAcked(2));
  sink.Close();
  EXPECT_TRUE(Compose("stop " + std::to_string(kSmallPayloadPort)));
}

TEST_F(NatsSinkTest, ServerKilledMidStreamIsUnavailableThenOpenSucceedsAfterRestart) {
  NatsSink sink(Options(kPort));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto events = MakeEvents(2000, "test.kill", 3);
  ASSERT_TRUE(Drive(sink, acks, events).ok());
  ASSERT_TRUE(WaitAllAcked(sink, acks, events.size()));

  ASSERT_TRUE(Compose("kill " + std::to_string(kPort)));
  // Keep publishing as the pipeline would; the failure must surface, either
  // returned or through Fail, within a few seconds.
  Status seen;
  uint64_t ticket = events.size();
  auto deadline = Clock::now() + 15s;
  while (seen.ok() && Clock::now() < deadline) {
    auto more = MakeEvents(100, "test.kill", 3, 300, ticket + 1, ticket);
    ticket += more.size();
    for (const auto& e : more) {
      seen = sink.Publish(e.view());
      if (!seen.ok()) break;
    }
    if (seen.ok()) seen = sink.Flush();
    if (seen.ok()) {
      if (auto f = acks.WaitFail(20ms)) seen = *f;
    }
  }
  EXPECT_EQ(seen.code(), Code::kUnavailable) << seen.ToString();
  for (const Status& f : acks.fails()) EXPECT_EQ(f.code(), Code::kUnavailable) << f.ToString();
  // While the server is down, Open fails as Unavailable (the pipeline backs off).
  FakeAcks down;
  Status reopen = sink.Open(&down);
  EXPECT_EQ(reopen.code(), Code::kUnavailable) << reopen.ToString();

  ASSERT_TRUE(Compose("start " + std::to_string(kPort)));
  FakeAcks acks2;
  Status opened = sink.Open(&acks2);
  ASSERT_TRUE(opened.ok()) << opened.ToString();
  auto again = MakeEvents(500, "test.kill", 3);
  ASSERT_TRUE(Drive(sink, acks2, again).ok());
  EXPECT_TRUE(WaitAllAcked(sink, acks2, again.size()));
  EXPECT_TRUE(acks2.fails().empty());
  sink.Close();
}

TEST_F(NatsSinkTest, FlushRoundTripTimeoutIsUnavailable) {
  NatsOptions o = Options(kPort);
  o.ack_timeout_ms = 800;
  NatsSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  ASSERT_TRUE(SignalServer(kPort, SIGSTOP));
  auto events = MakeEvents(100, "test.stall", 2);
  for (const auto& e : events) ASSERT_TRUE(sink.Publish(e.view()).ok());
  ASSERT_TRUE(sink.Flush().ok());
  auto fail = acks.WaitFail(5s);
  ASSERT_TRUE(SignalServer(kPort, SIGCONT));
  ASSERT_TRUE(fail.has_value());
  EXPECT_EQ(fail->code(), Code::kUnavailable) << fail->ToString();
  EXPECT_NE(fail->message().find("800 ms"), std::string::npos) << fail->message();
  EXPECT_FALSE(acks.IsAcked(1));
  EXPECT_EQ(sink.Flush().code(), Code::kUnavailable);
  // The pipeline reopens: tickets from the failed session stay unacknowledged.
  FakeAcks fresh;
  ASSERT_TRUE(sink.Open(&fresh).ok());
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(acks.IsAcked(1));
  sink.Close();
}

TEST_F(NatsSinkTest, PermissionViolationIsPermanentAndTheEventIsNeverAcknowledged) {
  std::string conf = "/tmp/walbus-nats-sink-test-users.conf";
  {
    std::ofstream out(conf);
    out << "authorization {\n  users = [\n"
           "    { user: walbus, password: s3cret, permissions: { publish: { allow: [\"ok.>\"] } } }\n"
           "  ]\n}\n";
  }
  ASSERT_TRUE(Compose("start " + std::to_string(kPermissionsPort), "WALBUS_NATS_CONF=" + conf));

  NatsOptions wrong = Options(kPermissionsPort);
  wrong.user = "walbus";
  wrong.password = "not-it";
  NatsSink refused(wrong);
  FakeAcks unused;
  Status s = refused.Open(&unused);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_EQ(s.message().find("not-it"), std::string::npos) << "password in message";

  NatsOptions right = wrong;
  right.password = "s3cret";
  NatsSink sink(right);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  TestEvent ok{1, "ok.public.t", EventId(1), "public.t", "{}"};
  TestEvent denied{2, "denied.public.secret", EventId(2), "public.secret", "{}"};
  ASSERT_TRUE(sink.Publish(ok.view()).ok());
  ASSERT_TRUE(sink.Publish(denied.view()).ok());  // refused asynchronously
  ASSERT_TRUE(sink.Flush().ok());
  auto fail = acks.WaitFail(5s);
  ASSERT_TRUE(fail.has_value());
  EXPECT_EQ(fail->code(), Code::kPermanent) << fail->ToString();
  EXPECT_NE(fail->message().find("denied.public.secret"), std::string::npos) << fail->message();
  EXPECT_NE(fail->message().find("ermission"), std::string::npos) << fail->message();
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(acks.IsAcked(2));
  EXPECT_FALSE(sink.Flush().ok());
  sink.Close();
  EXPECT_TRUE(Compose("stop " + std::to_string(kPermissionsPort)));
  std::remove(conf.c_str());
}

TEST_F(NatsSinkTest, CheckReportsReachableAndUnreachableServers) {
  NatsSink sink(Options(kPort));
  EXPECT_TRUE(sink.Check().ok());
  NatsOptions nowhere = Options(kPort + 50);  // nothing listens there
  nowhere.urls = "nats://walbus:hunter2@127.0.0.1:" + std::to_string(kPort + 50);
  NatsSink down(nowhere);
  Status s = down.Check();
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_EQ(s.message().find("hunter2"), std::string::npos) << s.message();
}

TEST_F(NatsSinkTest, Throughput200kEvents) {
  constexpr size_t kEvents = 200000;
  auto events = MakeEvents(kEvents, "bench.core", 16, 300);
  NatsSink sink(Options(kPort, "bench"));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto start = Clock::now();
  Status s = Drive(sink, acks, events);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(WaitAllAcked(sink, acks, kEvents));
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("core NATS: %zu events of ~300 bytes acknowledged in %.3f s = %.0f events/s\n",
              kEvents, secs, kEvents / secs);
  RecordProperty("events_per_second", static_cast<int>(kEvents / secs));
  sink.Close();
}

// ---------------------------------------------------------------- JetStream

class JetStreamSinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { StartServers(); }
  static void TearDownTestSuite() { StopServers(); }

  static JetStreamOptions JsOptions(int port, const std::string& stream = "WALBUS_TEST") {
    JetStreamOptions o;
    o.connection = Options(port);
    o.stream = stream;
    o.subjects = {"test.>"};
    o.create_stream = true;
    o.duplicate_window_ms = 120000;
    return o;
  }
};

TEST_F(JetStreamSinkTest, CreatesStreamStoresTenThousandWithMsgIdsAndDeduplicatesReplays) {
  Peer peer(kPort);
  peer.DeleteStream("WALBUS_TEST");
  constexpr size_t kEvents = 10000;
  auto events = MakeEvents(kEvents, "test.js", 5);

  JetStreamSink sink(JsOptions(kPort));
  FakeAcks acks;
  Status opened = sink.Open(&acks);
  ASSERT_TRUE(opened.ok()) << opened.ToString();
  Status s = Drive(sink, acks, events);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(WaitAllAcked(sink, acks, kEvents)) << "acked " << acks.acked();
  EXPECT_TRUE(acks.fails().empty());
  EXPECT_EQ(acks.duplicates(), 0u);
  for (uint64_t t = 1; t <= kEvents; ++t) ASSERT_TRUE(acks.IsAcked(t)) << t;

  // The stream as walbus created it.
  jsStreamInfo* si = nullptr;
  ASSERT_EQ(js_GetStreamInfo(&si, peer.js(), "WALBUS_TEST", nullptr, nullptr), NATS_OK);
  EXPECT_EQ(si->State.Msgs, kEvents);
  EXPECT_EQ(si->Config->Storage, js_FileStorage);
  EXPECT_EQ(si->Config->Duplicates, int64_t{120000} * 1000000);
  ASSERT_EQ(si->Config->SubjectsLen, 1);
  EXPECT_STREQ(si->Config->Subjects[0], "test.>");
  jsStreamInfo_Destroy(si);

  // One connection publishes in order, so sequence i+1 holds event i.
  for (size_t i = 0; i < kEvents; ++i) {
    natsMsg* msg = nullptr;
    ASSERT_EQ(js_GetMsg(&msg, peer.js(), "WALBUS_TEST", i + 1, nullptr, nullptr), NATS_OK) << i;
    const char* id = nullptr;
    ASSERT_EQ(natsMsgHeader_Get(msg, "Nats-Msg-Id", &id), NATS_OK) << i;
    EXPECT_EQ(std::string(id), events[i].id);
    EXPECT_EQ(std::string(natsMsg_GetSubject(msg)), events[i].topic);
    EXPECT_EQ(std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)), events[i].payload);
    natsMsg_Destroy(msg);
  }

  // A replay of the same ids (as after a crash): acknowledged, not stored again.
  FakeAcks replay;
  ASSERT_TRUE(sink.Open(&replay).ok());
  ASSERT_TRUE(Drive(sink, replay, events).ok());
  ASSERT_TRUE(WaitAllAcked(sink, replay, kEvents));
  EXPECT_TRUE(replay.fails().empty());
  EXPECT_EQ(peer.StreamMessages("WALBUS_TEST"), static_cast<int64_t>(kEvents));
  sink.Close();
}

TEST_F(JetStreamSinkTest, SubjectNoStreamCoversIsPermanentNamingEventAndReason) {
  Peer peer(kPort);
  JetStreamSink sink(JsOptions(kPort));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  TestEvent stray{1, "other.public.orders.insert", EventId(7), "public.orders", "{}"};
  ASSERT_TRUE(sink.Publish(stray.view()).ok());  // the refusal comes back asynchronously
  ASSERT_TRUE(sink.Flush().ok());
  auto fail = acks.WaitFail(10s);
  ASSERT_TRUE(fail.has_value());
  EXPECT_EQ(fail->code(), Code::kPermanent) << fail->ToString();
  EXPECT_NE(fail->message().find(stray.id), std::string::npos) << fail->message();
  EXPECT_NE(fail->message().find("public.orders"), std::string::npos) << fail->message();
  EXPECT_NE(fail->message().find("no JetStream stream covers subject 'other.public.orders.insert'"),
            std::string::npos)
      << fail->message();
  EXPECT_FALSE(acks.IsAcked(1));
  Status after = sink.Publish(stray.view());
  EXPECT_EQ(after.code(), Code::kPermanent) << after.ToString();
  sink.Close();
}

TEST_F(JetStreamSinkTest, MissingStreamWithoutCreateStreamIsFailedPrecondition) {
  Peer peer(kPort);
  peer.DeleteStream("WALBUS_MISSING");
  JetStreamOptions o = JsOptions(kPort, "WALBUS_MISSING");
  o.create_stream = false;
  JetStreamSink sink(o);
  Status check = sink.Check();
  EXPECT_EQ(check.code(), Code::kFailedPrecondition) << check.ToString();
  EXPECT_NE(check.message().find("WALBUS_MISSING"), std::string::npos) << check.message();
  EXPECT_NE(check.message().find("does not exist"), std::string::npos) << check.message();
  FakeAcks acks;
  Status open = sink.Open(&acks);
  EXPECT_EQ(open.code(), Code::kFailedPrecondition) << open.ToString();
  EXPECT_EQ(peer.StreamMessages("WALBUS_MISSING"), -1) << "created although create_stream = false";

  // With create_stream, Check passes without creating it; Open creates it.
  // (Its own subjects: two streams may not share subjects.)
  JetStreamOptions create = JsOptions(kPort, "WALBUS_MISSING");
  create.subjects = {"missing.>"};
  JetStreamSink creating(create);
  EXPECT_TRUE(creating.Check().ok());
  EXPECT_EQ(peer.StreamMessages("WALBUS_MISSING"), -1);
  Status created = creating.Open(&acks);
  ASSERT_TRUE(created.ok()) << created.ToString();
  EXPECT_EQ(peer.StreamMessages("WALBUS_MISSING"), 0);
  creating.Close();
  peer.DeleteStream("WALBUS_MISSING");
}

TEST_F(JetStreamSinkTest, ExistingStreamNotCoveringTheSubjectsIsFailedPrecondition) {
  Peer peer(kPort);
  peer.DeleteStream("WALBUS_ELSEWHERE");
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {"elsewhere.>"};
  cfg.Name = "WALBUS_ELSEWHERE";
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  ASSERT_EQ(js_AddStream(nullptr, peer.js(), &cfg, nullptr, nullptr), NATS_OK);

  JetStreamSink sink(JsOptions(kPort, "WALBUS_ELSEWHERE"));
  FakeAcks acks;
  Status s = sink.Open(&acks);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("do not cover 'test.>'"), std::string::npos) << s.message();
  EXPECT_EQ(sink.Check().code(), Code::kFailedPrecondition);
  peer.DeleteStream("WALBUS_ELSEWHERE");
}

TEST_F(JetStreamSinkTest, PayloadOverMaxPayloadIsPermanent) {
  ASSERT_TRUE(Compose("start " + std::to_string(kSmallPayloadPort), "WALBUS_NATS_MAX_PAYLOAD=1024"));
  JetStreamSink sink(JsOptions(kSmallPayloadPort));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto big = MakeEvents(1, "test.big", 1, 4000);
  Status s = sink.Publish(big[0].view());
  EXPECT_EQ(s.code(), Code::kPermanent) << s.ToString();
  EXPECT_NE(s.message().find(big[0].id), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(big[0].table), std::string::npos) << s.message();
  sink.Close();
  EXPECT_TRUE(Compose("stop " + std::to_string(kSmallPayloadPort)));
}

TEST_F(JetStreamSinkTest, ServerKilledMidStreamIsUnavailableAndReplayAfterRestartDeduplicates) {
  {
    Peer peer(kPort);
    peer.DeleteStream("WALBUS_TEST");
  }
  JetStreamSink sink(JsOptions(kPort));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto first = MakeEvents(3000, "test.crash", 3);
  ASSERT_TRUE(Drive(sink, acks, first).ok());
  ASSERT_TRUE(WaitAllAcked(sink, acks, first.size()));

  // Keep publishing events 3000.. and kill the server under them.
  auto rest = MakeEvents(20000, "test.crash", 3, 300, 3001, 3000);
  Status seen;
  size_t next = 0;
  bool killed = false;
  auto deadline = Clock::now() + 20s;
  while (seen.ok() && Clock::now() < deadline && next < rest.size()) {
    if (!killed && next >= 1000) {
      ASSERT_TRUE(Compose("kill " + std::to_string(kPort)));
      killed = true;
    }
    while (seen.ok() && rest[next].ticket - acks.acked() > 10000) {
      seen = sink.Flush();
      if (seen.ok()) {
        if (auto f = acks.WaitFail(5ms)) seen = *f;
      }
    }
    if (!seen.ok()) break;
    seen = sink.Publish(rest[next++].view());
    if (seen.ok() && next % 200 == 0) seen = sink.Flush();
    if (seen.ok() && killed) {
      if (auto f = acks.WaitFail(1ms)) seen = *f;
    }
  }
  ASSERT_TRUE(killed);
  EXPECT_EQ(seen.code(), Code::kUnavailable) << seen.ToString();

  ASSERT_TRUE(Compose("start " + std::to_string(kPort)));
  // The pipeline rewinds to the confirmed point and re-publishes everything
  // after it; here: everything, with the same ids.
  std::vector<TestEvent> all = MakeEvents(3000 + next, "test.crash", 3);
  FakeAcks again;
  Status opened = sink.Open(&again);
  ASSERT_TRUE(opened.ok()) << opened.ToString();
  ASSERT_TRUE(Drive(sink, again, all).ok());
  ASSERT_TRUE(WaitAllAcked(sink, again, all.size()));
  Peer peer(kPort);
  EXPECT_EQ(peer.StreamMessages("WALBUS_TEST"), static_cast<int64_t>(all.size()));
  sink.Close();
}

TEST_F(JetStreamSinkTest, MissingPubAcksAreUnavailableAfterAckTimeout) {
  JetStreamOptions o = JsOptions(kPort);
  o.connection.ack_timeout_ms = 800;
  JetStreamSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  ASSERT_TRUE(SignalServer(kPort, SIGSTOP));
  auto events = MakeEvents(100, "test.stall", 2);
  for (const auto& e : events) ASSERT_TRUE(sink.Publish(e.view()).ok());
  Status seen;
  auto start = Clock::now();
  while (seen.ok() && Clock::now() - start < 5s) {
    seen = sink.Flush();  // the pipeline flushes periodically while it waits
    std::this_thread::sleep_for(50ms);
  }
  auto waited = Clock::now() - start;
  ASSERT_TRUE(SignalServer(kPort, SIGCONT));
  EXPECT_EQ(seen.code(), Code::kUnavailable) << seen.ToString();
  EXPECT_NE(seen.message().find("no PubAck"), std::string::npos) << seen.message();
  EXPECT_GE(waited, 750ms);
  EXPECT_EQ(sink.Publish(events[0].view()).code(), Code::kUnavailable);
  // Reopened, the late PubAcks of the old session are never reported.
  FakeAcks fresh;
  ASSERT_TRUE(sink.Open(&fresh).ok());
  std::this_thread::sleep_for(200ms);
  for (uint64_t t = 1; t <= events.size(); ++t) EXPECT_FALSE(acks.IsAcked(t)) << t;
  sink.Close();
}

TEST_F(JetStreamSinkTest, Throughput200kEvents) {
  Peer peer(kPort);
  peer.DeleteStream("WALBUS_BENCH");
  constexpr size_t kEvents = 200000;
  auto events = MakeEvents(kEvents, "bench.js", 16, 300);
  JetStreamOptions o = JsOptions(kPort, "WALBUS_BENCH");
  o.subjects = {"bench.>"};
  JetStreamSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto start = Clock::now();
  Status s = Drive(sink, acks, events);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(WaitAllAcked(sink, acks, kEvents, 60s));
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("JetStream: %zu events of ~300 bytes acknowledged in %.3f s = %.0f events/s\n",
              kEvents, secs, kEvents / secs);
  RecordProperty("events_per_second", static_cast<int>(kEvents / secs));
  EXPECT_EQ(peer.StreamMessages("WALBUS_BENCH"), static_cast<int64_t>(kEvents));
  sink.Close();
  peer.DeleteStream("WALBUS_BENCH");
}

}  // namespace
}  // namespace walbus::adapters::nats
