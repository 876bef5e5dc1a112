// Broker and process faults against real brokers (SPEC §4, README "Delivery
// guarantee"): walbus is killed with SIGKILL three times while it streams a
// 100,000-row load into JetStream, Redis Streams and MQTT at once; Redis and
// nats-server are stopped and started again under a running walbus; a
// SIGSTOPped Redis with max_in_flight = 100 must pause walbus without its
// memory growing. What the brokers hold is read back with their own clients
// (cnats ordered consumer, hiredis XRANGE, a paho subscriber): every row
// exactly once in JetStream (Nats-Msg-Id) and Redis (id = "lsn"), at least
// once over MQTT QoS 1, in commit order per table.
//
// Own servers and ports: PostgreSQL 55480, nats-server 55481 (monitoring
// 55482), redis-server 55483, mosquitto 55484; files under /tmp/walbus-ft-*.
#include <MQTTAsync.h>
#include <hiredis/hiredis.h>
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPgPort = 55480;
constexpr int kNatsPort = 55481;
constexpr int kNatsHttpPort = 55482;
constexpr int kRedisPort = 55483;
constexpr int kMqttPort = 55484;

const char* const kSlot = "ft_slot";
const char* const kStream = "FT";
// The database is `postgres`: default topics/keys of the table public.load.
const char* const kSubjects = "postgres.>";
const char* const kRedisKey = "postgres.public.load";
const char* const kMqttFilter = "postgres/public/load/#";

std::string Script(const std::string& name) {
  return "'" + std::string(kSourceDir) + "/compose/" + name + "'";
}

// --- brokers --------------------------------------------------------------

// One broker started and stopped through its compose/ script, in its own
// directory under /tmp/walbus-ft-*. Only ever signals the PID in that
// directory's pidfile.
class Broker {
 public:
  Broker(std::string script, int port, std::string dir_var, std::string dir, std::string pidfile,
         std::string env)
      : script_(std::move(script)),
        port_(port),
        dir_(std::move(dir)),
        pidfile_(std::move(pidfile)),
        env_(dir_var + "='" + dir_ + "' " + env) {}
  ~Broker() { Stop(); }

  // Stops whatever ran in the directory, deletes it, starts a new server.
  bool StartFresh() {
    Run("stop");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    return Start();
  }
  bool Start() {
    ShellResult r = Run("start");
    if (r.code != 0) {
      ADD_FAILURE() << script_ << " start " << port_ << " failed: " << r.out;
      return false;
    }
    started_ = true;
    return true;
  }
  // The script's `stop` (SIGTERM, SIGKILL if it lingers); a no-op when not started.
  void Stop() {
    if (!started_) return;
    Resume();
    Run("stop");
    started_ = false;
  }
  // The script's `kill` (SIGKILL at once); nats.sh only.
  bool Kill() {
    Resume();
    bool ok = Run("kill").code == 0;
    started_ = false;
    return ok;
  }
  pid_t Pid() const { return ReadPidFile(dir_ + "/" + pidfile_); }
  // SIGSTOP / SIGCONT to the server's PID (from its pidfile).
  bool Pause() {
    pid_t pid = Pid();
    paused_pid_ = pid;
    return pid > 0 && ::kill(pid, SIGSTOP) == 0;
  }
  bool Resume() {
    if (paused_pid_ <= 0) return true;
    bool ok = ::kill(paused_pid_, SIGCONT) == 0;
    paused_pid_ = 0;
    return ok;
  }
  const std::string& dir() const { return dir_; }

 private:
  ShellResult Run(const std::string& cmd) {
    return Shell(env_ + " " + Script(script_) + " " + cmd + " " + std::to_string(port_) + " 2>&1");
  }
  std::string script_;
  int port_;
  std::string dir_, pidfile_, env_;
  bool started_ = false;
  pid_t paused_pid_ = 0;
};

std::unique_ptr<Broker> MakeNats() {
  return std::make_unique<Broker>("nats.sh", kNatsPort, "WALBUS_NATS_DIR", "/tmp/walbus-ft-nats",
                                  "nats.pid",
                                  "WALBUS_NATS_HTTP_PORT=" + std::to_string(kNatsHttpPort));
}
std::unique_ptr<Broker> MakeRedis() {
  return std::make_unique<Broker>("redis.sh", kRedisPort, "WALBUS_REDIS_DIR",
                                  "/tmp/walbus-ft-redis", "redis.pid", "WALBUS_REDIS_AOF=1");
}
std::unique_ptr<Broker> MakeMosquitto() {
  return std::make_unique<Broker>("mosquitto.sh", kMqttPort, "WALBUS_MQTT_DIR",
                                  "/tmp/walbus-ft-mqtt", "mosquitto.pid", "WALBUS_MQTT_PERSIST=1");
}

// --- what the brokers hold ---------------------------------------------------

// One message as a broker stored or delivered it.
struct Delivery {
  std::string where;     // "JetStream seq 12", "Redis 123-4", "MQTT #7"
  std::string topic;     // subject / stream key / MQTT topic
  std::string payload;   // the envelope
  std::string carried;   // Nats-Msg-Id / Redis field `id` / MQTT user property event-id
  std::string entry_id;  // Redis entry id; "" elsewhere
};

struct Stored {
  bool ok = false;
  int64_t info_msgs = -1;  // JetStream: State.Msgs; Redis: XLEN
  std::vector<Delivery> items;
};

// Every message of JetStream stream `stream`, in stream-sequence order, through
// an ordered consumer.
Stored ReadJetStream(const std::string& stream) {
  Stored s;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* sub = nullptr;
  std::string url = "nats://127.0.0.1:" + std::to_string(kNatsPort);
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK ||
      natsConnection_JetStream(&js, nc, nullptr) != NATS_OK) {
    ADD_FAILURE() << "cannot connect to nats-server at " << url;
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return s;
  }
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus st = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &jerr);
  if (st != NATS_OK) {
    ADD_FAILURE() << "stream info of " << stream << ": " << natsStatus_GetText(st) << " ("
                  << jerr << ")";
  } else {
    s.info_msgs = static_cast<int64_t>(si->State.Msgs);
    jsStreamInfo_Destroy(si);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Ordered = true;
    st = js_SubscribeSync(&sub, js, kSubjects, nullptr, &so, &jerr);
    if (st != NATS_OK) {
      ADD_FAILURE() << "ordered consumer on " << stream << ": " << natsStatus_GetText(st) << " ("
                    << jerr << ")";
    } else {
      natsSubscription_SetPendingLimits(sub, -1, -1);
      s.items.reserve(static_cast<size_t>(s.info_msgs));
      for (;;) {
        natsMsg* m = nullptr;
        // After the last stored message: nothing more within the timeout.
        int64_t wait = static_cast<int64_t>(s.items.size()) >= s.info_msgs ? 300 : 10000;
        st = natsSubscription_NextMsg(&m, sub, wait);
        if (st != NATS_OK) break;
        Delivery d;
        d.topic = natsMsg_GetSubject(m);
        d.payload.assign(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
        const char* id = nullptr;
        if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr) d.carried = id;
        jsMsgMetaData* meta = nullptr;
        if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
          d.where = "JetStream seq " + std::to_string(meta->Sequence.Stream);
          jsMsgMetaData_Destroy(meta);
        } else {
          d.where = "JetStream #" + std::to_string(s.items.size() + 1);
        }
        natsMsg_Destroy(m);
        s.items.push_back(std::move(d));
      }
      if (static_cast<int64_t>(s.items.size()) < s.info_msgs) {
        ADD_FAILURE() << "the ordered consumer delivered " << s.items.size() << " of "
                      << s.info_msgs << " messages: " << natsStatus_GetText(st);
      } else {
        s.ok = true;
      }
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return s;
}

// Every entry of the Redis stream `key`, in entry-id order (XRANGE pages).
Stored ReadRedis(const std::string& key) {
  Stored s;
  std::unique_ptr<redisContext, decltype(&redisFree)> c(redisConnect("127.0.0.1", kRedisPort),
                                                       &redisFree);
  if (!c || c->err) {
    ADD_FAILURE() << "cannot connect to redis-server on " << kRedisPort << ": "
                  << (c ? c->errstr : "out of memory");
    return s;
  }
  auto cmd = [&](const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return std::unique_ptr<redisReply, decltype(&freeReplyObject)>(
        static_cast<redisReply*>(redisCommandArgv(c.get(), static_cast<int>(argv.size()),
                                                  argv.data(), lens.data())),
        &freeReplyObject);
  };
  {
    auto r = cmd({"XLEN", key});
    if (!r || r->type != REDIS_REPLY_INTEGER) {
      ADD_FAILURE() << "XLEN " << key << " failed";
      return s;
    }
    s.info_msgs = r->integer;
  }
  std::string start = "-";
  for (;;) {
    auto r = cmd({"XRANGE", key, start, "+", "COUNT", "10000"});
    if (!r || r->type != REDIS_REPLY_ARRAY) {
      ADD_FAILURE() << "XRANGE " << key << " " << start << " failed"
                    << (r && r->type == REDIS_REPLY_ERROR ? ": " + std::string(r->str, r->len) : "");
      return s;
    }
    if (r->elements == 0) break;
    for (size_t i = 0; i < r->elements; ++i) {
      const redisReply* entry = r->element[i];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
          entry->element[0]->type != REDIS_REPLY_STRING ||
          entry->element[1]->type != REDIS_REPLY_ARRAY) {
        ADD_FAILURE() << "unexpected XRANGE entry shape";
        return s;
      }
      Delivery d;
      d.entry_id.assign(entry->element[0]->str, entry->element[0]->len);
      d.where = "Redis " + d.entry_id;
      d.topic = key;
      const redisReply* fields = entry->element[1];
      for (size_t f = 0; f + 1 < fields->elements; f += 2) {
        std::string name(fields->element[f]->str, fields->element[f]->len);
        std::string value(fields->element[f + 1]->str, fields->element[f + 1]->len);
        if (name == "id") d.carried = value;
        if (name == "event") d.payload = value;
      }
      start = "(" + d.entry_id;
      s.items.push_back(std::move(d));
    }
  }
  s.ok = true;
  return s;
}

// An independent MQTT 5 subscriber (paho.mqtt.c) that records every message.
class MqttCollector {
 public:
  MqttCollector(const std::string& client_id) {
    std::string url = "tcp://127.0.0.1:" + std::to_string(kMqttPort);
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.MQTTVersion = MQTTVERSION_5;
    if (MQTTAsync_createWithOptions(&client_, url.c_str(), client_id.c_str(),
                                    MQTTCLIENT_PERSISTENCE_NONE, nullptr,
                                    &co) != MQTTASYNC_SUCCESS ||
        MQTTAsync_setCallbacks(client_, this, &MqttCollector::OnLost, &MqttCollector::OnMessage,
                               nullptr) != MQTTASYNC_SUCCESS) {
      return;
    }
    MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer5;
    opts.cleanstart = 1;
    opts.keepAliveInterval = 30;
    opts.onSuccess5 = &MqttCollector::OnDone;
    opts.onFailure5 = &MqttCollector::OnFailed;
    opts.context = this;
    ok_ = MQTTAsync_connect(client_, &opts) == MQTTASYNC_SUCCESS && WaitDone();
  }
  ~MqttCollector() {
    if (client_ != nullptr) {
      MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
      d.timeout = 1000;
      if (MQTTAsync_isConnected(client_)) MQTTAsync_disconnect(client_, &d);
      std::this_thread::sleep_for(50ms);
      MQTTAsync_destroy(&client_);
    }
  }
  bool ok() const { return ok_; }

  bool Subscribe(const std::string& filter, int qos) {
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    r.onSuccess5 = &MqttCollector::OnDone;
    r.onFailure5 = &MqttCollector::OnFailed;
    r.context = this;
    return MQTTAsync_subscribe(client_, filter.c_str(), qos, &r) == MQTTASYNC_SUCCESS &&
           WaitDone();
  }

  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_.size();
  }
  std::vector<Delivery> Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }
  std::string lost() {
    std::lock_guard<std::mutex> lock(mu_);
    return lost_;
  }

 private:
  static void OnDone(void* ctx, MQTTAsync_successData5*) { static_cast<MqttCollector*>(ctx)->Done(1); }
  static void OnFailed(void* ctx, MQTTAsync_failureData5*) {
    static_cast<MqttCollector*>(ctx)->Done(-1);
  }
  static void OnLost(void* ctx, char* cause) {
    auto* self = static_cast<MqttCollector*>(ctx);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->lost_ = cause != nullptr ? cause : "connection lost";
  }
  static int OnMessage(void* ctx, char* topic, int topic_len, MQTTAsync_message* m) {
    auto* self = static_cast<MqttCollector*>(ctx);
    Delivery d;
    d.topic = topic_len > 0 ? std::string(topic, static_cast<size_t>(topic_len)) : topic;
    d.payload.assign(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen));
    for (int i = 0; i < m->properties.count; ++i) {
      const MQTTProperty& p = m->properties.array[i];
      if (p.identifier == MQTTPROPERTY_CODE_USER_PROPERTY &&
          std::string(p.value.data.data, static_cast<size_t>(p.value.data.len)) == "event-id") {
        d.carried.assign(p.value.value.data, static_cast<size_t>(p.value.value.len));
      }
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    std::lock_guard<std::mutex> lock(self->mu_);
    d.where = "MQTT #" + std::to_string(self->messages_.size() + 1);
    self->messages_.push_back(std::move(d));
    return 1;
  }
  void Done(int v) {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = v;
    cv_.notify_all();
  }
  bool WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, 10s, [&] { return done_ != 0; });
    bool ok = done_ == 1;
    done_ = 0;
    return ok;
  }

  MQTTAsync client_ = nullptr;
  bool ok_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  int done_ = 0;
  std::string lost_;
  std::vector<Delivery> messages_;
};

// --- checking deliveries -------------------------------------------------------

struct Summary {
  size_t total = 0;       // messages of the table public.load
  size_t distinct = 0;    // rows seen
  size_t duplicates = 0;  // total - distinct
  size_t missing = 0;
  size_t bad = 0;           // not an insert of public.load with a key in range, or unparsable
  size_t id_mismatch = 0;   // carried id / entry id / a row under two ids
  size_t order_breaks = 0;  // see Analyze
  std::string dup_ranges;   // "a-b x2, c x3, ..."
};

// Compresses the rows whose count is above one into ranges.
std::string DuplicateRanges(const std::vector<int>& count, size_t limit = 40) {
  std::string out;
  size_t ranges = 0;
  size_t n = count.size();
  for (size_t r = 1; r < n;) {
    if (count[r] <= 1) {
      ++r;
      continue;
    }
    size_t end = r;
    while (end + 1 < n && count[end + 1] == count[r]) ++end;
    if (ranges++ < limit) {
      if (!out.empty()) out += ", ";
      out += std::to_string(r);
      if (end > r) out += "-" + std::to_string(end);
      out += " x" + std::to_string(count[r]);
    }
    r = end + 1;
  }
  if (ranges > limit) out += ", ... (" + std::to_string(ranges) + " ranges)";
  return out.empty() ? "none" : out;
}

// Checks what `sink` holds for a load of rows 1..rows (one insert each, row
// order = commit order) of the table public.load:
//  - exactly_once (JetStream, Redis): along the stored order, every message is
//    strictly after the previous one in (commit_lsn, seq) and in row number;
//  - otherwise (MQTT): re-sends may repeat earlier rows, but the first
//    occurrences come in row order (nothing skipped and delivered later).
// In both, a carried id (Nats-Msg-Id, Redis `id` field, MQTT event-id) must be
// the envelope's id, a Redis entry id "<commit LSN decimal>-<seq>", and a row
// always has the same id.
Summary Analyze(const std::string& sink, const std::vector<Delivery>& ds, int rows,
                bool exactly_once) {
  Summary s;
  std::vector<int> count(static_cast<size_t>(rows) + 1, 0);
  std::vector<std::string> id_of_row(static_cast<size_t>(rows) + 1);
  uint64_t last_lsn = 0;
  int64_t last_seq = -1;
  int last_row = 0;
  int next_first = 1;  // the next row expected to appear for the first time
  auto fail = [&](size_t* counter, const std::string& what) {
    if ((*counter)++ < 5) ADD_FAILURE() << sink << ": " << what;
  };
  for (const Delivery& d : ds) {
    std::optional<Envelope> e = ParseEnvelopeLine(d.topic + "\t" + d.payload);
    if (!e) {
      fail(&s.bad, d.where + ": not a JSON envelope: " + d.payload.substr(0, 200));
      continue;
    }
    const rapidjson::Value& key = (*e)["key"];
    if (e->table != "public.load" || e->op != "insert" || !key.IsObject() || !key.HasMember("id") ||
        !key["id"].IsInt() || key["id"].GetInt() < 1 || key["id"].GetInt() > rows) {
      fail(&s.bad, d.where + ": unexpected envelope: " + e->json.substr(0, 200));
      continue;
    }
    int row = key["id"].GetInt();
    ++s.total;
    if (!d.carried.empty() && d.carried != e->id) {
      fail(&s.id_mismatch, d.where + ": carries id " + d.carried + " but the envelope's is " + e->id);
    }
    if (d.carried.empty() && sink != "MQTT") {
      fail(&s.id_mismatch, d.where + ": carries no event id (Nats-Msg-Id / field id)");
    }
    if (!d.entry_id.empty()) {
      std::string want = std::to_string(e->commit_lsn) + "-" + std::to_string(e->seq);
      if (d.entry_id != want) {
        fail(&s.id_mismatch, d.where + ": entry id is not <commit LSN decimal>-<seq> = " + want);
      }
    }
    std::string& known = id_of_row[static_cast<size_t>(row)];
    if (known.empty()) {
      known = e->id;
    } else if (known != e->id) {
      fail(&s.id_mismatch, d.where + ": row " + std::to_string(row) + " with id " + e->id +
                               ", earlier with " + known);
    }
    if (exactly_once) {
      bool after = e->commit_lsn > last_lsn || (e->commit_lsn == last_lsn && e->seq > last_seq);
      if (!after || row <= last_row) {
        fail(&s.order_breaks, d.where + ": row " + std::to_string(row) + " (" + e->id +
                                  ") stored after row " + std::to_string(last_row) + " (" +
                                  FormatLsn(last_lsn) + ":" + std::to_string(last_seq) + ")");
      }
      last_lsn = e->commit_lsn;
      last_seq = e->seq;
      last_row = row;
    } else if (count[static_cast<size_t>(row)] == 0) {
      if (row != next_first) {
        fail(&s.order_breaks, d.where + ": row " + std::to_string(row) +
                                  " arrived for the first time before row " +
                                  std::to_string(next_first));
      }
      next_first = std::max(next_first, row + 1);
    }
    ++count[static_cast<size_t>(row)];
  }
  int first_missing = 0;
  for (int r = 1; r <= rows; ++r) {
    if (count[static_cast<size_t>(r)] > 0) {
      ++s.distinct;
    } else if (s.missing++ == 0) {
      first_missing = r;
    }
  }
  s.duplicates = s.total - s.distinct;
  s.dup_ranges = DuplicateRanges(count);
  std::printf("[ info ] %s: %zu messages, %zu distinct rows of %d, %zu duplicates, %zu missing%s, "
              "%zu bad, %zu id mismatches, %zu order breaks\n",
              sink.c_str(), s.total, s.distinct, rows, s.duplicates, s.missing,
              s.missing ? (" (first: row " + std::to_string(first_missing) + ")").c_str() : "",
              s.bad, s.id_mismatch, s.order_breaks);
  if (s.duplicates > 0) {
    std::printf("[ info ] %s duplicated rows: %s\n", sink.c_str(), s.dup_ranges.c_str());
  }
  std::fflush(stdout);
  return s;
}

void ExpectExactlyOnce(const std::string& sink, const Stored& st, int rows) {
  ASSERT_TRUE(st.ok) << sink << " could not be read";
  EXPECT_EQ(st.info_msgs, rows) << sink << " message count (stream info / XLEN)";
  Summary s = Analyze(sink, st.items, rows, true);
  EXPECT_EQ(s.total, static_cast<size_t>(rows)) << sink;
  EXPECT_EQ(s.missing, 0u) << sink;
  EXPECT_EQ(s.duplicates, 0u) << sink << " duplicated rows: " << s.dup_ranges;
  EXPECT_EQ(s.bad, 0u) << sink;
  EXPECT_EQ(s.id_mismatch, 0u) << sink;
  EXPECT_EQ(s.order_breaks, 0u) << sink;
}

// --- the load -------------------------------------------------------------------

// `CALL fill(...)` through its own connection in its own thread: `batches`
// transactions of `per` rows (ids in order), `pause` seconds between commits,
// payloads of 32 * width characters.
class Loader {
 public:
  Loader(const std::string& dsn, int batches, int per, double pause, int width)
      : start_(Clock::now()) {
    thread_ = std::thread([this, dsn, batches, per, pause, width] {
      Pg pg(dsn);
      char sql[200];
      std::snprintf(sql, sizeof sql, "CALL fill(%d, %d, %.3f, %d)", batches, per, pause, width);
      error_ = pg.TryExec(sql);
      seconds_ = SecondsSince(start_);
      done_.store(true);
    });
  }
  ~Loader() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  bool done() const { return done_.load(); }
  double elapsed() const { return SecondsSince(start_); }
  // Sleeps until `t` seconds after the start (returns at once if later).
  void SleepUntil(double t) const {
    while (elapsed() < t) std::this_thread::sleep_for(10ms);
  }
  const std::string& error() const { return error_; }  // after Join()
  double seconds() const { return seconds_; }           // after Join()

 private:
  Clock::time_point start_;
  std::atomic<bool> done_{false};
  std::string error_;
  double seconds_ = 0;
  std::thread thread_;
};

// --- fixture ----------------------------------------------------------------------

class BrokerFaults : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-ft-" + std::to_string(kPgPort) + ".lock");
    server_ = std::make_unique<PgServer>(kPgPort, "/tmp/walbus-ft-pg");
    server_ok_ = server_->Start();
  }
  static void TearDownTestSuite() {
    if (server_) server_->Stop();
    server_.reset();
    lock_.reset();
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(server_ok_) << "PostgreSQL on port " << kPgPort << " did not start";
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::string("/tmp/walbus-ft-") + info->name();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_, ec);
    ASSERT_FALSE(ec) << "cannot create " << dir_;
    dsn_ = server_->Dsn();
    sql_ = std::make_unique<Pg>(dsn_);
    ASSERT_TRUE(sql_->ok());
    ResetDatabase(*sql_);
    ASSERT_TRUE(sql_->Exec(
        "CREATE TABLE load (id int PRIMARY KEY, payload text);"
        "CREATE PROCEDURE fill(batches int, per int, pause float8, width int) LANGUAGE plpgsql "
        "AS $$ BEGIN "
        "  FOR i IN 0 .. batches - 1 LOOP "
        "    INSERT INTO load SELECT g, repeat(md5(g::text), width) "
        "      FROM generate_series(i * per + 1, i * per + per) g; "
        "    COMMIT; "
        "    PERFORM pg_sleep(pause); "
        "  END LOOP; "
        "END $$;"));
    start_ = Clock::now();
  }

  void TearDown() override {
    std::printf("[ info ] %s took %.1f s\n",
                ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                SecondsSince(start_));
    // Brokers are stopped by their destructors (members of the test body).
  }

  std::string WriteConfig(int status_interval_ms, const std::string& sinks) {
    std::string path = dir_ + "/walbus.toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + dsn_ + "\"\n"
                    "slot = \"" + kSlot + "\"\n"
                    "publication = \"ft_pub\"\n"
                    "status_interval_ms = " + std::to_string(status_interval_ms) + "\n"
                    "standby_retry_ms = 300\n"
                    "\n[metrics]\nlisten = \"\"\n" +
                    sinks);
    return path;
  }

  static std::string JetStreamSink() {
    return "\n[[sink]]\nname = \"ft_js\"\ntype = \"jetstream\"\nurl = \"nats://127.0.0.1:" +
           std::to_string(kNatsPort) + "\"\nstream = \"" + kStream + "\"\n";
  }
  static std::string RedisSink(const std::string& extra = "") {
    return "\n[[sink]]\nname = \"ft_redis\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:" +
           std::to_string(kRedisPort) + "\"\nid = \"lsn\"\n" + extra;
  }
  static std::string MqttSink() {
    return "\n[[sink]]\nname = \"ft_mqtt\"\ntype = \"mqtt\"\nurl = \"tcp://127.0.0.1:" +
           std::to_string(kMqttPort) + "\"\nqos = 1\n";
  }

  // Starts `walbus run` and waits for its "streaming" line.
  bool StartWalbus(Child* child, const std::string& config, const std::string& tag,
                   milliseconds timeout = 30s) {
    return StartStreaming(child, config, dir_, tag, timeout);
  }

  // Waits until the slot's confirmed_flush_lsn reaches `target`.
  bool WaitConfirmed(uint64_t target, milliseconds timeout, uint64_t* confirmed) {
    return WaitUntil(
        [&] {
          *confirmed = sql_->SlotConfirmed(kSlot).value_or(0);
          return *confirmed >= target;
        },
        timeout, 100ms);
  }

  // After the load: confirmed reaches the WAL end, then SIGTERM exits 0 and
  // the final confirmed position is still at or past it.
  // `hwm_kb`, when given, gets walbus's VmHWM (peak RSS) just before SIGTERM.
  void CatchUpAndStop(Child* walbus, uint64_t wal_end, long* hwm_kb = nullptr,
                      milliseconds timeout = 90s) {
    uint64_t confirmed = 0;
    auto t0 = Clock::now();
    bool caught_up = WaitConfirmed(wal_end, timeout, &confirmed);
    EXPECT_TRUE(caught_up) << "confirmed_flush_lsn " << FormatLsn(confirmed)
                           << " never reached the WAL end " << FormatLsn(wal_end)
                           << "; walbus stderr:\n" << Tail(walbus->err(), 30);
    std::printf("[ info ] slot confirmed %s >= WAL end %s %.1f s after the load\n",
                FormatLsn(confirmed).c_str(), FormatLsn(wal_end).c_str(), SecondsSince(t0));
    ASSERT_TRUE(walbus->Running()) << "walbus exited: " << Tail(walbus->err(), 30);
    if (hwm_kb != nullptr) *hwm_kb = ProcStatusKb(walbus->pid(), "VmHWM");
    ASSERT_TRUE(walbus->Signal(SIGTERM));
    std::optional<int> code = walbus->Wait(20s);
    EXPECT_EQ(code, std::optional<int>(0)) << "SIGTERM; stderr:\n" << Tail(walbus->err(), 30);
    confirmed = sql_->SlotConfirmed(kSlot).value_or(0);
    EXPECT_GE(confirmed, wal_end) << "final confirmed_flush_lsn " << FormatLsn(confirmed);
  }

  static std::string Tail(const std::string& text, size_t lines) {
    std::vector<std::string> all;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) all.push_back(line);
    std::string out;
    for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
      out += all[i] + "\n";
    }
    return out;
  }

  // Prints walbus's WARN/ERROR lines and returns how many rewinds it logged.
  static size_t ReportLog(const std::string& tag, const std::string& err) {
    size_t rewinds = LinesWith(err, "sink failed").size();
    size_t retries = LinesWith(err, "sink unavailable").size();
    size_t ups = LinesWith(err, "sink is up").size();
    std::printf("[ info ] %s: %zu rewinds (\"sink failed\"), %zu sink reconnect retries, "
                "%zu \"sink is up\"\n",
                tag.c_str(), rewinds, retries, ups);
    size_t shown = 0;
    std::istringstream in(err);
    std::string line;
    while (std::getline(in, line)) {
      if ((Contains(line, "WARN") || Contains(line, "ERROR") || Contains(line, "FATAL") ||
           Contains(line, "sink is up")) &&
          shown++ < 40) {
        std::printf("[  log ] %s\n", line.substr(0, 400).c_str());
      }
    }
    std::fflush(stdout);
    return rewinds;
  }

  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }
  const std::string& dsn() const { return dsn_; }

 private:
  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<PgServer> server_;
  static inline bool server_ok_ = false;

  std::string dir_, dsn_;
  std::unique_ptr<Pg> sql_;
  Clock::time_point start_;
};

// --- 1. kill -9 of walbus x3 into JetStream + Redis + MQTT ---------------------------

TEST_F(BrokerFaults, KillWalbusThreeTimesIntoJetStreamAndRedis) {
  constexpr int kRows = 100000;
  constexpr int kBatch = 1000;
  constexpr int kKills = 3;
  auto nats = MakeNats();
  auto redis = MakeRedis();
  auto mosquitto = MakeMosquitto();
  ASSERT_TRUE(nats->StartFresh());
  ASSERT_TRUE(redis->StartFresh());
  ASSERT_TRUE(mosquitto->StartFresh());

  // The subscriber is there before anything is published.
  MqttCollector sub("walbus-ft-subscriber");
  ASSERT_TRUE(sub.ok()) << "paho subscriber cannot connect to mosquitto on " << kMqttPort;
  ASSERT_TRUE(sub.Subscribe(kMqttFilter, 1));

  // The default status interval (1 s): the slot lags what the brokers hold,
  // so every kill -9 makes PostgreSQL re-send what they already have.
  std::string cfg = WriteConfig(1000, JetStreamSink() + RedisSink() + MqttSink());

  std::random_device rd;
  unsigned seed = rd();
  if (const char* env = std::getenv("WALBUS_FT_SEED")) seed = static_cast<unsigned>(std::atol(env));
  std::mt19937 rng(seed);
  std::vector<double> kill_at;
  for (int k = 0; k < kKills; ++k) {
    std::uniform_real_distribution<double> in(1.0 + 3.0 * k, 3.0 + 3.0 * k);
    kill_at.push_back(in(rng));
  }
  std::printf("[ info ] seed %u (WALBUS_FT_SEED to repeat), kill -9 at %.2f s, %.2f s, %.2f s "
              "into the load\n",
              seed, kill_at[0], kill_at[1], kill_at[2]);

  std::vector<std::unique_ptr<Child>> runs;
  runs.push_back(std::make_unique<Child>());
  ASSERT_TRUE(StartWalbus(runs.back().get(), cfg, "run0"));

  // ~11 s: 100 commits 0.1 s apart, so the three kills fall inside the load.
  Loader load(dsn(), kRows / kBatch, kBatch, 0.1, 1);
  for (int k = 0; k < kKills; ++k) {
    while (load.elapsed() < kill_at[k] && !load.done()) std::this_thread::sleep_for(10ms);
    Child& victim = *runs.back();
    ASSERT_TRUE(victim.Running()) << "run" << k << " exited early: " << victim.err();
    ASSERT_TRUE(victim.Signal(SIGKILL));
    EXPECT_EQ(victim.Wait(10s), std::optional<int>(128 + SIGKILL));
    std::printf("[ info ] killed run%d at %.2f s (load %s, MQTT subscriber has %zu)\n", k,
                load.elapsed(), load.done() ? "done" : "running", sub.count());
    runs.push_back(std::make_unique<Child>());
    ASSERT_TRUE(StartWalbus(runs.back().get(), cfg, "run" + std::to_string(k + 1)));
  }
  load.Join();
  ASSERT_EQ(load.error(), "") << "the load failed";
  std::printf("[ info ] load of %d rows took %.2f s\n", kRows, load.seconds());
  uint64_t wal_end = sql().CurrentWalLsn();
  ASSERT_EQ(sql().Scalar("SELECT count(*) FROM load"), std::optional<std::string>("100000"));

  Child& last = *runs.back();
  CatchUpAndStop(&last, wal_end);
  size_t rewinds = 0;
  for (size_t r = 0; r < runs.size(); ++r) {
    rewinds += ReportLog("run" + std::to_string(r), runs[r]->err());
    EXPECT_TRUE(LinesWith(runs[r]->err(), "ERROR").empty()) << "run" << r << ":\n"
                                                            << runs[r]->err();
  }
  std::printf("[ info ] rewinds over all runs: %zu\n", rewinds);

  auto t_read = Clock::now();
  Stored js = ReadJetStream(kStream);
  Stored rs = ReadRedis(kRedisKey);
  std::printf("[ info ] read %zu JetStream messages and %zu Redis entries in %.1f s\n",
              js.items.size(), rs.items.size(), SecondsSince(t_read));
  ExpectExactlyOnce("JetStream", js, kRows);
  ExpectExactlyOnce("Redis", rs, kRows);

  // MQTT QoS 1: the broker may still be delivering; wait until every row is
  // there (or nothing new arrives for a while).
  size_t last_count = 0;
  auto last_change = Clock::now();
  auto mqtt_deadline = Clock::now() + 60s;
  while (Clock::now() < mqtt_deadline) {
    size_t n = sub.count();
    if (n != last_count) {
      last_count = n;
      last_change = Clock::now();
    }
    if (n >= static_cast<size_t>(kRows) && SecondsSince(last_change) > 1.0) break;
    if (SecondsSince(last_change) > 10.0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(sub.lost(), "") << "the MQTT subscriber lost its connection";
  Summary m = Analyze("MQTT", sub.Snapshot(), kRows, false);
  EXPECT_EQ(m.missing, 0u) << "MQTT rows never delivered";
  EXPECT_EQ(m.bad, 0u);
  EXPECT_EQ(m.id_mismatch, 0u);
  EXPECT_EQ(m.order_breaks, 0u);
  std::printf("[ info ] checked %zu JetStream + %zu Redis + %zu MQTT messages; duplicates: "
              "JetStream %zu, Redis %zu, MQTT %zu\n",
              js.items.size(), rs.items.size(), m.total,
              js.items.size() > static_cast<size_t>(kRows) ? js.items.size() - kRows : 0,
              rs.items.size() > static_cast<size_t>(kRows) ? rs.items.size() - kRows : 0,
              m.duplicates);
}

// --- 2. Redis and nats-server down under a running walbus ---------------------------

TEST_F(BrokerFaults, BrokerOutageRedisAndNats) {
  constexpr int kRows = 60000;
  constexpr int kBatch = 1000;
  auto nats = MakeNats();
  auto redis = MakeRedis();
  ASSERT_TRUE(nats->StartFresh());
  ASSERT_TRUE(redis->StartFresh());

  std::string cfg = WriteConfig(200, JetStreamSink() + RedisSink());
  Child walbus;
  ASSERT_TRUE(StartWalbus(&walbus, cfg, "run"));

  // ~26 s of load: 60 commits 0.4 s apart.
  Loader load(dsn(), kRows / kBatch, kBatch, 0.4, 1);

  // Redis: `compose/redis.sh stop` (SIGTERM; the script has no kill) for 4 s,
  // then started again on the same port and directory (AOF reloaded).
  load.SleepUntil(3.0);
  ASSERT_TRUE(walbus.Running()) << walbus.err();
  pid_t redis_pid = redis->Pid();
  redis->Stop();
  double redis_down = load.elapsed();
  std::printf("[ info ] redis-server (pid %d) stopped at %.2f s\n", static_cast<int>(redis_pid),
              redis_down);
  load.SleepUntil(redis_down + 4.0);
  EXPECT_TRUE(walbus.Running()) << "walbus exited while Redis was down:\n" << walbus.err();
  ASSERT_TRUE(redis->Start());
  std::printf("[ info ] redis-server started again (pid %d) at %.2f s\n",
              static_cast<int>(redis->Pid()), load.elapsed());

  // walbus reconnects on its back-off (up to 4 s more) and streams again;
  // the NATS outage starts only after that, so the two are separate faults.
  bool redis_up = WaitUntil(
      [&] { return Contains(walbus.err(), "sink is up sink=ft_redis") || !walbus.Running(); }, 20s);
  EXPECT_TRUE(redis_up && walbus.Running()) << "no \"sink is up\" for Redis:\n" << walbus.err();
  std::printf("[ info ] walbus reconnected to Redis at %.2f s\n", load.elapsed());
  uint64_t confirmed_before = sql().SlotConfirmed(kSlot).value_or(0);
  load.SleepUntil(load.elapsed() + 2.0);
  uint64_t confirmed_after = sql().SlotConfirmed(kSlot).value_or(0);
  std::printf("[ info ] confirmed %s -> %s over 2 s of streaming between the outages\n",
              FormatLsn(confirmed_before).c_str(), FormatLsn(confirmed_after).c_str());
  EXPECT_GT(confirmed_after, confirmed_before) << "walbus did not resume after Redis came back";

  // nats-server: `compose/nats.sh kill` (SIGKILL) for 4 s, then started again
  // with the same JetStream store.
  ASSERT_TRUE(walbus.Running()) << walbus.err();
  ASSERT_FALSE(load.done()) << "the load ended before the NATS outage";
  pid_t nats_pid = nats->Pid();
  ASSERT_TRUE(nats->Kill());
  double nats_down = load.elapsed();
  std::printf("[ info ] nats-server (pid %d) killed -9 at %.2f s (load %s)\n",
              static_cast<int>(nats_pid), nats_down, load.done() ? "done" : "running");
  load.SleepUntil(nats_down + 4.0);
  EXPECT_TRUE(walbus.Running()) << "walbus exited while nats-server was down:\n" << walbus.err();
  ASSERT_TRUE(nats->Start());
  std::printf("[ info ] nats-server started again (pid %d) at %.2f s (load %s)\n",
              static_cast<int>(nats->Pid()), load.elapsed(), load.done() ? "done" : "running");

  load.Join();
  ASSERT_EQ(load.error(), "") << "the load failed";
  std::printf("[ info ] load of %d rows took %.2f s\n", kRows, load.seconds());
  uint64_t wal_end = sql().CurrentWalLsn();
  ASSERT_EQ(sql().Scalar("SELECT count(*) FROM load"), std::optional<std::string>("60000"));

  CatchUpAndStop(&walbus, wal_end);
  std::string err = walbus.err();
  size_t rewinds = ReportLog("walbus", err);
  std::printf("[ info ] rewinds seen in walbus's stderr: %zu\n", rewinds);
  // The failure of each sink and its recovery are logged.
  auto mentions = [&](std::string_view what, std::string_view sink) {
    size_t n = 0;
    for (const std::string& line : LinesWith(err, what)) n += Contains(line, sink);
    return n;
  };
  EXPECT_GE(mentions("sink failed", "ft_redis") + mentions("sink unavailable", "ft_redis"), 1u)
      << "no log line of the Redis failure:\n" << err;
  EXPECT_GE(mentions("sink failed", "ft_js") + mentions("sink unavailable", "ft_js"), 1u)
      << "no log line of the JetStream failure:\n" << err;
  EXPECT_GE(mentions("sink is up", "ft_redis"), 1u) << "no log line of Redis's recovery:\n" << err;
  EXPECT_GE(mentions("sink is up", "ft_js"), 1u) << "no log line of JetStream's recovery:\n" << err;
  EXPECT_GE(rewinds, 2u) << "expected at least one rewind per outage";
  EXPECT_TRUE(LinesWith(err, "ERROR").empty()) << err;

  Stored js = ReadJetStream(kStream);
  Stored rs = ReadRedis(kRedisKey);
  ExpectExactlyOnce("JetStream", js, kRows);
  ExpectExactlyOnce("Redis", rs, kRows);
  std::printf("[ info ] faults: Redis stopped 4 s (SIGTERM), nats-server killed 4 s (SIGKILL); "
              "checked %zu JetStream + %zu Redis messages\n",
              js.items.size(), rs.items.size());
}

// --- 3. a stalled Redis: back-pressure, bounded memory ---------------------------------

TEST_F(BrokerFaults, SlowConsumerRedisStoppedPausesWithFlatMemory) {
  constexpr int kRows = 60000;
  constexpr int kBatch = 1000;
  constexpr int kMaxInFlight = 100;
  auto redis = MakeRedis();
  ASSERT_TRUE(redis->StartFresh());

  std::string cfg = WriteConfig(200, RedisSink("max_in_flight = " + std::to_string(kMaxInFlight) + "\n"));
  Child walbus;
  ASSERT_TRUE(StartWalbus(&walbus, cfg, "run"));

  // 1 kB rows, so that buffering what arrives during the stall would show:
  // 60 commits of 1,000 rows 0.1 s apart.
  Loader load(dsn(), kRows / kBatch, kBatch, 0.1, 32);
  auto sent_lsn = [&]() -> uint64_t {
    std::optional<std::string> v =
        sql().Scalar("SELECT coalesce(sent_lsn::text, '0/0') FROM pg_stat_replication WHERE pid = "
                     "(SELECT active_pid FROM pg_replication_slots WHERE slot_name = '" +
                     std::string(kSlot) + "')");
    return v ? ParseLsn(*v).value_or(0) : 0;
  };

  // Baseline: the largest VmRSS over the second before the stall, while
  // walbus streams the load.
  load.SleepUntil(1.5);
  long base_kb = 0;
  while (load.elapsed() < 2.5) {
    base_kb = std::max(base_kb, ProcStatusKb(walbus.pid()));
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_GT(base_kb, 0) << "no VmRSS for walbus pid " << walbus.pid();
  ASSERT_FALSE(load.done()) << "the load finished before the stall";

  pid_t redis_pid = redis->Pid();
  ASSERT_TRUE(redis->Pause()) << "SIGSTOP redis-server pid " << redis_pid;
  double stop_at = load.elapsed();
  uint64_t wal_at_stop = sql().CurrentWalLsn();
  long peak_kb = 0;
  uint64_t sent_1s = 0, wal_1s = 0;
  while (load.elapsed() < stop_at + 3.0) {
    peak_kb = std::max(peak_kb, ProcStatusKb(walbus.pid()));
    if (sent_1s == 0 && load.elapsed() >= stop_at + 1.5) {
      sent_1s = sent_lsn();
      wal_1s = sql().CurrentWalLsn();
    }
    std::this_thread::sleep_for(50ms);
  }
  uint64_t sent_end = sent_lsn();
  uint64_t wal_end_stall = sql().CurrentWalLsn();
  bool still_running = walbus.Running();
  bool load_running = !load.done();
  ASSERT_TRUE(redis->Resume());
  std::printf("[ info ] redis-server (pid %d) SIGSTOPped %.2f s .. %.2f s; walbus VmRSS %ld kB "
              "before, peak %ld kB during (+%ld kB); WAL grew %.1f MB during the stall (%s)\n",
              static_cast<int>(redis_pid), stop_at, load.elapsed(), base_kb, peak_kb,
              peak_kb - base_kb, (wal_end_stall - wal_at_stop) / 1e6,
              load_running ? "load still running" : "load done");
  std::printf("[ info ] walsender sent_lsn over the last 1.5 s of the stall: %s -> %s (+%.1f kB) "
              "while the WAL grew %.1f MB\n",
              FormatLsn(sent_1s).c_str(), FormatLsn(sent_end).c_str(),
              (sent_end - sent_1s) / 1e3, (wal_end_stall - wal_1s) / 1e6);
  EXPECT_TRUE(still_running) << "walbus exited during the stall:\n" << walbus.err();
  EXPECT_LT(peak_kb - base_kb, 20 * 1024) << "walbus grew by " << (peak_kb - base_kb)
                                          << " kB while Redis was stopped";
  // Paused: walbus stopped reading, so once the socket buffers were full the
  // walsender could send nothing more although the WAL kept growing.
  EXPECT_GT(wal_end_stall - wal_1s, 4u << 20) << "the load did not keep writing during the stall";
  EXPECT_LT(sent_end - sent_1s, 1u << 20) << "the walsender kept sending: walbus did not pause";

  load.Join();
  ASSERT_EQ(load.error(), "") << "the load failed";
  std::printf("[ info ] load of %d rows took %.2f s\n", kRows, load.seconds());
  uint64_t wal_end = sql().CurrentWalLsn();
  ASSERT_EQ(sql().Scalar("SELECT count(*) FROM load"), std::optional<std::string>("60000"));
  long hwm_kb = -1;
  CatchUpAndStop(&walbus, wal_end, &hwm_kb);
  std::printf("[ info ] walbus VmHWM (peak RSS over the run) %ld kB\n", hwm_kb);
  size_t rewinds = ReportLog("walbus", walbus.err());
  std::printf("[ info ] rewinds seen in walbus's stderr: %zu\n", rewinds);
  EXPECT_EQ(rewinds, 0u) << "a 3 s stall is within the reply timeout: no rewind expected";
  EXPECT_TRUE(LinesWith(walbus.err(), "ERROR").empty()) << walbus.err();

  Stored rs = ReadRedis(kRedisKey);
  ExpectExactlyOnce("Redis", rs, kRows);
}

}  // namespace
}  // namespace walbus::itest
