// RedisSink against a real redis-server started by compose/redis.sh: what the
// stream holds after publishing is compared with what was published, and the
// failure paths (refusal, server killed, credentials, WAIT) are checked.
#include "adapters/redis/redis_sink.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace walbus::adapters::redis {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kPort = 56379;      // the suite's server
constexpr int kKillPort = 56381;  // killed and restarted by one test
constexpr int kAuthPort = 56382;  // started with a password by one test

std::string Url(int port) { return "redis://127.0.0.1:" + std::to_string(port); }

// Runs compose/redis.sh CMD PORT with extra environment; its exit status.
int Compose(const std::string& cmd, int port, const std::string& env = "") {
  std::string line = env + " WALBUS_REDIS_DIR=/tmp/walbus-redis-test-" + std::to_string(port) +
                     " '" WALBUS_SOURCE_DIR "/compose/redis.sh' " + cmd + " " +
                     std::to_string(port) + " >/dev/null";
  return std::system(line.c_str());
}

pid_t ServerPid(int port) {
  std::ifstream in("/tmp/walbus-redis-test-" + std::to_string(port) + "/redis.pid");
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// A synchronous client to look at what the sink wrote.
class Client {
 public:
  explicit Client(int port, const std::string& password = "") {
    ctx_.reset(redisConnect("127.0.0.1", port));
    if (ctx_ && !ctx_->err && !password.empty()) Cmd({"AUTH", password});
  }
  bool ok() const { return ctx_ && !ctx_->err; }

  struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
  };
  using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

  ReplyPtr Cmd(std::vector<std::string> args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return ReplyPtr(static_cast<redisReply*>(
        redisCommandArgv(ctx_.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
  }
  long long Int(std::vector<std::string> args) {
    ReplyPtr r = Cmd(std::move(args));
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  }

 private:
  struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  std::unique_ptr<redisContext, ContextFree> ctx_;
};

// Records what the sink reports, as the pipeline would.
class FakeAcks : public AckSink {
 public:
  void Ack(uint64_t ticket) override { AckThrough(ticket); }
  void AckThrough(uint64_t ticket) override {
    uint64_t seen = through_.load();
    if (ticket <= seen) backwards_.store(true);
    while (ticket > seen && !through_.compare_exchange_weak(seen, ticket)) {
    }
  }
  void Fail(Status why) override {
    std::lock_guard<std::mutex> lock(mu_);
    failures_.push_back(std::move(why));
  }

  uint64_t through() const { return through_.load(); }
  bool went_backwards() const { return backwards_.load(); }
  std::vector<Status> failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }
  bool failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return !failures_.empty();
  }

 private:
  std::atomic<uint64_t> through_{0};
  std::atomic<bool> backwards_{false};
  std::mutex mu_;
  std::vector<Status> failures_;
};

// One event with the bytes its views point into.
struct TestEvent {
  std::string topic, id, op, table, payload;
  Lsn commit_lsn = 0;
  uint32_t seq = 0;

  Event View(uint64_t ticket) const {
    Event e;
    e.ticket = ticket;
    e.topic = topic;
    e.id = id;
    e.op = op;
    e.table = table;
    e.payload = payload;
    e.commit_lsn = commit_lsn;
    e.seq = seq;
    return e;
  }
};

std::string EventId(Lsn lsn, uint32_t seq) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%016llX:%u", static_cast<unsigned long long>(lsn), seq);
  return buf;
}

// `count` events in transactions of 7, spread round-robin over `keys` keys.
std::vector<TestEvent> MakeEvents(const std::string& prefix, int count, int keys,
                                  Lsn first_lsn = 0x16B3000) {
  static const char* kOps[] = {"insert", "update", "delete"};
  std::vector<TestEvent> events;
  events.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    TestEvent e;
    e.commit_lsn = first_lsn + static_cast<Lsn>(i / 7) * 0x100;
    e.seq = static_cast<uint32_t>(i % 7);
    int k = i % keys;
    e.topic = prefix + ".public.t" + std::to_string(k);
    e.table = "public.t" + std::to_string(k);
    e.op = kOps[i % 3];
    e.id = EventId(e.commit_lsn, e.seq);
    e.payload = "{\"id\":\"" + e.id + "\",\"op\":\"" + e.op +
                "\",\"after\":{\"n\":" + std::to_string(i) + ",\"s\":\"caf\xc3\xa9 \\\"q\\\"\"}}";
    events.push_back(std::move(e));
  }
  return events;
}

// Publishes with a Flush every `batch` events, as the pipeline does at the end
// of each batch. Returns the first error.
Status PublishAll(RedisSink& sink, const std::vector<TestEvent>& events, uint64_t first_ticket,
                  size_t batch = 500) {
  for (size_t i = 0; i < events.size(); ++i) {
    WALBUS_RETURN_IF_ERROR(sink.Publish(events[i].View(first_ticket + i)));
    if ((i + 1) % batch == 0) WALBUS_RETURN_IF_ERROR(sink.Flush());
  }
  return sink.Flush();
}

// Flushes until every ticket up to `ticket` is acknowledged, a failure is
// reported, or the time is up (as the pipeline waits for acknowledgements).
Status WaitForAcks(RedisSink& sink, FakeAcks& acks, uint64_t ticket,
                   std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = Clock::now() + limit;
  while (acks.through() < ticket && !acks.failed() && Clock::now() < deadline) {
    WALBUS_RETURN_IF_ERROR(sink.Flush());
  }
  return Status::Ok();
}

RedisOptions Options(int port = kPort) {
  RedisOptions o;
  o.name = "events";
  o.url = Url(port);
  o.connect_timeout_ms = 2000;
  return o;
}

class RedisSinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(Compose("start", kPort), 0) << "compose/redis.sh start failed";
  }
  static void TearDownTestSuite() { (void)Compose("stop", kPort); }

  void SetUp() override {
    client_ = std::make_unique<Client>(kPort);
    ASSERT_TRUE(client_->ok());
    client_->Cmd({"FLUSHALL"});
  }

  std::unique_ptr<Client> client_;
};

TEST_F(RedisSinkTest, PublishesEveryEventInOrderAndDeduplicatesRedelivery) {
  const int kCount = 10000;
  std::vector<TestEvent> events = MakeEvents("shop", kCount, 3);
  RedisSink sink(Options());
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  Status st = PublishAll(sink, events, 1);
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = WaitForAcks(sink, acks, kCount);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_FALSE(acks.failed()) << acks.failures()[0].ToString();
  EXPECT_EQ(acks.through(), static_cast<uint64_t>(kCount));
  EXPECT_FALSE(acks.went_backwards());

  // Every entry, per key, in publish order, with its id and fields.
  size_t checked = 0;
  for (int k = 0; k < 3; ++k) {
    std::string key = "shop.public.t" + std::to_string(k);
    std::vector<const TestEvent*> expected;
    for (const TestEvent& e : events) {
      if (e.topic == key) expected.push_back(&e);
    }
    EXPECT_EQ(client_->Int({"XLEN", key}), static_cast<long long>(expected.size()));
    Client::ReplyPtr range = client_->Cmd({"XRANGE", key, "-", "+"});
    ASSERT_TRUE(range && range->type == REDIS_REPLY_ARRAY);
    ASSERT_EQ(range->elements, expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      const TestEvent& e = *expected[i];
      redisReply* entry = range->element[i];
      ASSERT_EQ(entry->element[0]->str, std::to_string(e.commit_lsn) + "-" + std::to_string(e.seq));
      redisReply* fields = entry->element[1];
      ASSERT_EQ(fields->elements, 6u);
      EXPECT_EQ(std::string(fields->element[0]->str), "op");
      EXPECT_EQ(std::string(fields->element[1]->str), e.op);
      EXPECT_EQ(std::string(fields->element[2]->str), "id");
      EXPECT_EQ(std::string(fields->element[3]->str), e.id);
      EXPECT_EQ(std::string(fields->element[4]->str), "event");
      ASSERT_EQ(std::string(fields->element[5]->str, fields->element[5]->len), e.payload);
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<size_t>(kCount));

  // The pipeline rewinds: reconnect, re-publish the same events under new
  // tickets. Redis refuses every one as a duplicate, which acknowledges it.
  ASSERT_TRUE(sink.Open(&acks).ok());
  st = PublishAll(sink, events, kCount + 1);
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = WaitForAcks(sink, acks, 2 * kCount);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_FALSE(acks.failed()) << acks.failures()[0].ToString();
  EXPECT_EQ(acks.through(), static_cast<uint64_t>(2 * kCount));
  long long total = 0;
  for (int k = 0; k < 3; ++k) total += client_->Int({"XLEN", "shop.public.t" + std::to_string(k)});
  EXPECT_EQ(total, kCount);
  sink.Close();
}

TEST_F(RedisSinkTest, AutoIdLetsRedisChoose) {
  std::vector<TestEvent> events = MakeEvents("auto", 300, 1);
  RedisOptions o = Options();
  o.auto_id = true;
  RedisSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  ASSERT_TRUE(PublishAll(sink, events, 1).ok());
  ASSERT_TRUE(WaitForAcks(sink, acks, 300).ok());
  ASSERT_FALSE(acks.failed());
  EXPECT_EQ(acks.through(), 300u);
  // Published twice: with "*" Redis cannot tell a duplicate, so both stay.
  ASSERT_TRUE(PublishAll(sink, events, 301).ok());
  ASSERT_TRUE(WaitForAcks(sink, acks, 600).ok());
  EXPECT_EQ(client_->Int({"XLEN", "auto.public.t0"}), 600);
  Client::ReplyPtr range = client_->Cmd({"XRANGE", "auto.public.t0", "-", "+", "COUNT", "1"});
  ASSERT_TRUE(range && range->elements == 1);
  std::string id = range->element[0]->element[0]->str;
  EXPECT_NE(id, std::to_string(events[0].commit_lsn) + "-0");  // a millisecond time, not the LSN
  EXPECT_EQ(std::string(range->element[0]->element[1]->element[3]->str), events[0].id);
}

TEST_F(RedisSinkTest, MaxlenTrimsApproximately) {
  std::vector<TestEvent> events = MakeEvents("trim", 5000, 1);
  RedisOptions o = Options();
  o.maxlen = 100;
  RedisSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  ASSERT_TRUE(PublishAll(sink, events, 1).ok());
  ASSERT_TRUE(WaitForAcks(sink, acks, 5000).ok());
  ASSERT_FALSE(acks.failed());
  long long len = client_->Int({"XLEN", "trim.public.t0"});
  EXPECT_GE(len, 100);
  EXPECT_LT(len, 500);
}

TEST_F(RedisSinkTest, PayloadsAreBinarySafeAndMayBeLarge) {
  std::vector<TestEvent> events = MakeEvents("big", 4, 1);
  events[1].payload = std::string("a\0b\r\n$3\r\n", 9);  // the literal's 9 bytes, NUL included
  events[2].payload = std::string(3 << 20, 'z');  // past the early-write threshold
  RedisSink sink(Options());
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  ASSERT_TRUE(PublishAll(sink, events, 1).ok());
  ASSERT_TRUE(WaitForAcks(sink, acks, 4).ok());
  ASSERT_FALSE(acks.failed());
  Client::ReplyPtr range = client_->Cmd({"XRANGE", "big.public.t0", "-", "+"});
  ASSERT_TRUE(range && range->elements == 4);
  for (size_t i = 0; i < 4; ++i) {
    redisReply* event = range->element[i]->element[1]->element[5];
    EXPECT_EQ(std::string(event->str, event->len), events[i].payload) << i;
  }
}

TEST_F(RedisSinkTest, ServerThatStopsAnsweringIsUnavailable) {
  std::vector<TestEvent> events = MakeEvents("pause", 10, 1);
  RedisOptions o = Options();
  o.reply_timeout_ms = 400;
  RedisSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  client_->Cmd({"CLIENT", "PAUSE", "3000", "WRITE"});
  ASSERT_TRUE(PublishAll(sink, events, 1).ok());
  Status st = WaitForAcks(sink, acks, 10, std::chrono::seconds(2));
  client_->Cmd({"CLIENT", "UNPAUSE"});
  ASSERT_TRUE(acks.failed());
  Status why = acks.failures()[0];
  EXPECT_EQ(why.code(), Code::kUnavailable) << why.ToString();
  EXPECT_NE(why.message().find("no reply for 400 ms"), std::string::npos) << why.message();
  EXPECT_EQ(acks.through(), 0u);
}

TEST_F(RedisSinkTest, SelectsTheDatabaseOfTheUrl) {
  std::vector<TestEvent> events = MakeEvents("db", 10, 1);
  RedisOptions o = Options();
  o.url += "/2";
  RedisSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  ASSERT_TRUE(PublishAll(sink, events, 1).ok());
  ASSERT_TRUE(WaitForAcks(sink, acks, 10).ok());
  EXPECT_EQ(client_->Int({"XLEN", "db.public.t0"}), 0);
  client_->Cmd({"SELECT", "2"});
  EXPECT_EQ(client_->Int({"XLEN", "db.public.t0"}), 10);
}

TEST_F(RedisSinkTest, WrongTypeIsPermanentAndNamesTheEvent) {
  std::vector<TestEvent> events = MakeEvents("wt", 20, 2);
  client_->Cmd({"SET", "wt.public.t1", "a string"});
  RedisSink sink(Options());
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  Status st = PublishAll(sink, events, 1, 5);
  // The refusal arrives asynchronously: through Fail, and from then on from
  // Publish/Flush as well.
  if (st.ok()) st = WaitForAcks(sink, acks, 20, std::chrono::seconds(5));
  ASSERT_TRUE(acks.failed());
  Status why = acks.failures()[0];
  EXPECT_EQ(why.code(), Code::kPermanent) << why.ToString();
  EXPECT_NE(why.message().find(events[1].id), std::string::npos) << why.message();
  EXPECT_NE(why.message().find("public.t1"), std::string::npos) << why.message();
  EXPECT_NE(why.message().find("WRONGTYPE"), std::string::npos) << why.message();
  EXPECT_EQ(acks.through(), 1u);  // the event before the refused one is in its stream
  Status again = sink.Publish(events[0].View(100));
  EXPECT_EQ(again.code(), Code::kPermanent);
  EXPECT_EQ(acks.failures().size(), 1u);  // reported once
}

TEST_F(RedisSinkTest, KilledServerIsUnavailableAndOpenSucceedsAfterRestart) {
  ASSERT_EQ(Compose("start", kKillPort), 0);
  std::vector<TestEvent> events = MakeEvents("kill", 20000, 3);
  RedisSink sink(Options(kKillPort));
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  pid_t pid = ServerPid(kKillPort);
  ASSERT_GT(pid, 0);

  Status st;
  uint64_t ticket = 0;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  for (size_t i = 0; st.ok() && !acks.failed() && Clock::now() < deadline; ++i) {
    if (i == 5000) {
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
    }
    st = sink.Publish(events[i % events.size()].View(++ticket));
    if (st.ok() && i % 250 == 0) st = sink.Flush();
  }
  Status why = !st.ok() ? st : acks.failures().at(0);
  EXPECT_EQ(why.code(), Code::kUnavailable) << why.ToString();
  EXPECT_NE(why.message().find("127.0.0.1:56381"), std::string::npos) << why.message();
  EXPECT_LT(acks.through(), ticket);

  // While it is down Open says so; after the restart it connects again.
  Status down = sink.Open(&acks);
  EXPECT_EQ(down.code(), Code::kUnavailable) << down.ToString();
  ASSERT_EQ(Compose("start", kKillPort), 0);
  FakeAcks after;
  st = sink.Open(&after);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(
      PublishAll(sink, std::vector<TestEvent>(events.begin(), events.begin() + 100), 1).ok());
  ASSERT_TRUE(WaitForAcks(sink, after, 100).ok());
  EXPECT_EQ(after.through(), 100u);
  EXPECT_FALSE(after.failed());
  sink.Close();
  (void)Compose("stop", kKillPort);
}

TEST_F(RedisSinkTest, AuthenticatesWithPasswordOrUserAndRefusesWrongOnes) {
  ASSERT_EQ(Compose("start", kAuthPort, "WALBUS_REDIS_OPTS='--requirepass s3cret'"), 0);
  {
    Client admin(kAuthPort, "s3cret");
    ASSERT_TRUE(admin.ok());
    admin.Cmd({"FLUSHALL"});
    admin.Cmd({"ACL", "SETUSER", "walbus", "reset", "on", ">w4lbus-pw", "~*", "+@all"});
  }
  std::vector<TestEvent> events = MakeEvents("auth", 10, 1);
  std::string base = "127.0.0.1:" + std::to_string(kAuthPort);
  for (const std::string& url : {"redis://:s3cret@" + base, "redis://walbus:w4lbus-pw@" + base}) {
    RedisOptions o = Options(kAuthPort);
    o.url = url;
    RedisSink sink(o);
    EXPECT_TRUE(sink.Check().ok()) << url;
    FakeAcks acks;
    Status st = sink.Open(&acks);
    ASSERT_TRUE(st.ok()) << url << ": " << st.ToString();
    ASSERT_TRUE(PublishAll(sink, events, 1).ok());
    ASSERT_TRUE(WaitForAcks(sink, acks, 10).ok());
    EXPECT_EQ(acks.through(), 10u) << url;
  }
  // The user and password may also come from the options rather than the url.
  {
    RedisOptions o = Options(kAuthPort);
    o.user = "walbus";
    o.password = "w4lbus-pw";
    RedisSink sink(o);
    EXPECT_TRUE(sink.Check().ok());
  }
  struct Bad {
    std::string url;
    std::string says;
  };
  for (const Bad& bad : {Bad{"redis://walbus:hunter22@" + base, "refused the user/password"},
                         Bad{"redis://:hunter22@" + base, "refused the user/password"},
                         Bad{"redis://" + base, "requires a password"}}) {
    RedisOptions o = Options(kAuthPort);
    o.url = bad.url;
    RedisSink sink(o);
    FakeAcks acks;
    Status st = sink.Open(&acks);
    EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
    EXPECT_NE(st.message().find(bad.says), std::string::npos) << st.message();
    EXPECT_EQ(st.message().find("hunter22"), std::string::npos) << st.message();
    Status check = sink.Check();
    EXPECT_EQ(check.code(), Code::kFailedPrecondition) << check.ToString();
  }
  (void)Compose("stop", kAuthPort);
}

TEST_F(RedisSinkTest, WaitReplicasWithoutReplicasIsNotAnAck) {
  std::vector<TestEvent> events = MakeEvents("wait", 10, 1);
  RedisOptions o = Options();
  o.wait_replicas = 1;
  o.wait_timeout_ms = 100;
  RedisSink sink(o);
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  Status st = PublishAll(sink, events, 1);
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = WaitForAcks(sink, acks, 10, std::chrono::seconds(5));
  ASSERT_TRUE(acks.failed());
  Status why = acks.failures()[0];
  EXPECT_EQ(why.code(), Code::kUnavailable) << why.ToString();
  EXPECT_NE(why.message().find("only 0 of 1 replicas"), std::string::npos) << why.message();
  EXPECT_EQ(acks.through(), 0u);
  EXPECT_EQ(sink.Flush().code(), Code::kUnavailable);
}

TEST_F(RedisSinkTest, WaitAofNeedsRedis72) {
  Client::ReplyPtr info = client_->Cmd({"INFO", "server"});
  ASSERT_TRUE(info && info->type == REDIS_REPLY_STRING);
  std::string text(info->str, info->len);
  RedisVersion version;
  ASSERT_TRUE(ParseRedisVersion(text, &version));
  if (version.AtLeast(7, 2)) GTEST_SKIP() << "this redis-server has WAITAOF";
  RedisOptions o = Options();
  o.wait_aof = true;
  RedisSink sink(o);
  FakeAcks acks;
  Status st = sink.Open(&acks);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("7.2"), std::string::npos) << st.message();
  EXPECT_EQ(sink.Check().code(), Code::kFailedPrecondition);
}

TEST_F(RedisSinkTest, CheckReportsOkOrTheReason) {
  RedisSink good(Options());
  EXPECT_TRUE(good.Check().ok());
  RedisSink closed(Options(1));  // nothing listens on port 1
  Status st = closed.Check();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("127.0.0.1:1"), std::string::npos) << st.message();
  RedisOptions bad = Options();
  bad.url = "http://127.0.0.1:6379";
  EXPECT_EQ(RedisSink(bad).Check().code(), Code::kInvalidArgument);
}

TEST_F(RedisSinkTest, IdleFlushDoesNotSpinOrBlock) {
  RedisSink sink(Options());
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto start = Clock::now();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(sink.Flush().ok());
  // Nothing is due: no waiting at all.
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(200));
}

// A quick figure, not a benchmark: 200,000 small events through one sink.
TEST_F(RedisSinkTest, ThroughputOfSmallEvents) {
  const int kCount = 200000;
  std::vector<TestEvent> events = MakeEvents("bench", kCount, 3);
  RedisSink sink(Options());
  FakeAcks acks;
  ASSERT_TRUE(sink.Open(&acks).ok());
  auto start = Clock::now();
  // Like the pipeline: at most max_in_flight (10000) unacknowledged events.
  for (int i = 0; i < kCount; ++i) {
    while (static_cast<uint64_t>(i) >= acks.through() + 10000) {
      ASSERT_TRUE(sink.Flush().ok());
    }
    ASSERT_TRUE(
        sink.Publish(events[static_cast<size_t>(i)].View(static_cast<uint64_t>(i) + 1)).ok());
    if ((i + 1) % 1000 == 0) {
      ASSERT_TRUE(sink.Flush().ok());
    }
  }
  ASSERT_TRUE(sink.Flush().ok());
  ASSERT_TRUE(WaitForAcks(sink, acks, kCount, std::chrono::seconds(30)).ok());
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_EQ(acks.through(), static_cast<uint64_t>(kCount));
  std::printf("redis sink: %d events (%zu-byte payloads) in %.3f s = %.0f events/s\n", kCount,
              events[0].payload.size(), seconds, kCount / seconds);
  EXPECT_GT(kCount / seconds, 20000.0);
}

}  // namespace
}  // namespace walbus::adapters::redis
