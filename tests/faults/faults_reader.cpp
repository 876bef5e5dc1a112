// faults_reader: the fault suite's independent view of the brokers. It reads
// back what each broker holds, or records what a live subscriber receives,
// with the brokers' own client libraries (cnats, hiredis, paho.mqtt.c) and no
// walbus code, into tab-separated files that tests/faults/check.py reads.
//
//   faults_reader js-dump    --url URLS --stream NAME --subjects FILTER --out FILE
//   faults_reader redis-dump --host H --port P --keys K1,K2,... --out FILE
//   faults_reader mqtt-sub   --url tcp://H:P --client-id ID --topic FILTER --out FILE
//   faults_reader nats-sub   --url nats://H:P --subject FILTER --out FILE
//
// Output lines (the payload, a compact JSON envelope, is always the last
// field; one with a tab or a line break would be written as an `X` line):
//   js-dump:    "#stream\tmsgs\tfirst_seq\tlast_seq", then "seq\tsubject\tmsg_id\tpayload"
//   redis-dump: "#xlen\tkey\tN" per key, then "key\tentry_id\tid_field\tpayload"
//   *-sub:      "C\tepoch\tunix_time\tdetail" on every (re)connection (epoch counts them),
//               "L\tepoch\tunix_time\tcause" when the connection is lost,
//               "E\tepoch\tunix_time\terror" for an asynchronous error (slow consumer...),
//               "M\tepoch\ttopic\tpayload" per message received
//
// The dumps exit 0 when everything the broker reported was read, 1 otherwise.
// The subscribers run until SIGTERM or SIGINT, flush and exit 0; they start
// only once subscribed (exit 1 if that takes more than 30 s) and then
// reconnect on their own for as long as they run.
#include <MQTTAsync.h>
#include <hiredis/hiredis.h>
#include <nats/nats.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

using Args = std::map<std::string, std::string>;

bool ParseArgs(int argc, char** argv, int first, Args* out) {
  for (int i = first; i < argc; i += 2) {
    std::string name = argv[i];
    if (name.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::fprintf(stderr, "faults_reader: expected --name value, got '%s'\n", argv[i]);
      return false;
    }
    (*out)[name.substr(2)] = argv[i + 1];
  }
  return true;
}

bool Need(const Args& args, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (args.count(n) == 0) {
      std::fprintf(stderr, "faults_reader: missing --%s\n", n);
      return false;
    }
  }
  return true;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// One output file shared by callback threads. Lines are flushed at once, so a
// line that is in the file was received, even if this process dies later.
class Out {
 public:
  explicit Out(const std::string& path) : f_(std::fopen(path.c_str(), "w"), &std::fclose) {
    if (!f_) std::fprintf(stderr, "faults_reader: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
  }
  bool ok() const { return f_ != nullptr; }

  // Fields joined by tabs; the last one is a payload, checked for separators.
  void Line(std::initializer_list<std::string_view> fields) {
    std::string line;
    size_t i = 0;
    bool bad = false;
    for (std::string_view f : fields) {
      if (i++ > 0) line += '\t';
      if (i == fields.size() && f.find_first_of("\t\r\n") != std::string_view::npos) bad = true;
      line.append(f.data(), f.size());
    }
    if (bad) {
      // Keep the line count honest: the checker reports `X` lines as bad payloads.
      std::string hex;
      for (unsigned char c : line) {
        static const char* kDigits = "0123456789abcdef";
        hex += kDigits[c >> 4];
        hex += kDigits[c & 15];
      }
      line = "X\t" + hex;
    }
    line += '\n';
    std::lock_guard<std::mutex> lock(mu_);
    std::fwrite(line.data(), 1, line.size(), f_.get());
    std::fflush(f_.get());
  }

 private:
  std::mutex mu_;
  std::unique_ptr<FILE, decltype(&std::fclose)> f_;
};

std::string Fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

// Blocks SIGTERM/SIGINT in this thread and every thread started after it, so
// that WaitForStop() receives them.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

void WaitForStop(const sigset_t& set) {
  int sig = 0;
  sigwait(&set, &sig);
}

using NatsConnectionPtr = std::unique_ptr<natsConnection, decltype(&natsConnection_Destroy)>;

// Connects with `opts`, retrying every 500 ms for 30 s (the server may still be
// starting); null, with the reason on stderr, when it never answers.
NatsConnectionPtr ConnectNats(natsOptions* opts, const std::string& url) {
  natsConnection* nc = nullptr;
  natsStatus st = NATS_NO_SERVER;
  for (int attempt = 0; attempt < 60; ++attempt) {
    st = natsConnection_Connect(&nc, opts);
    if (st == NATS_OK) break;
    std::this_thread::sleep_for(500ms);
  }
  if (st != NATS_OK) {
    std::fprintf(stderr, "faults_reader: cannot connect to %s: %s\n", url.c_str(),
                 natsStatus_GetText(st));
    return NatsConnectionPtr(nullptr, &natsConnection_Destroy);
  }
  return NatsConnectionPtr(nc, &natsConnection_Destroy);
}

// --- JetStream ------------------------------------------------------------------

int JsDump(const Args& args) {
  if (!Need(args, {"url", "stream", "subjects", "out"})) return 2;
  Out out(args.at("out"));
  if (!out.ok()) return 1;
  const std::string& stream = args.at("stream");
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  std::unique_ptr<natsOptions, decltype(&natsOptions_Destroy)> opts_owner(opts, &natsOptions_Destroy);
  // A comma-separated list: natsOptions_SetURL takes one URL only.
  std::vector<std::string> urls;
  const std::string& list = args.at("url");
  for (size_t start = 0; start < list.size();) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) urls.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  std::vector<const char*> servers;
  for (const std::string& u : urls) servers.push_back(u.c_str());
  natsOptions_SetServers(opts, servers.data(), static_cast<int>(servers.size()));
  natsOptions_SetTimeout(opts, 5000);
  natsOptions_SetMaxReconnect(opts, 60);
  natsOptions_SetReconnectWait(opts, 500);

  NatsConnectionPtr nc_owner = ConnectNats(opts, args.at("url"));
  if (!nc_owner) return 1;
  natsConnection* nc = nc_owner.get();
  natsStatus st = NATS_OK;
  jsCtx* js = nullptr;
  if (natsConnection_JetStream(&js, nc, nullptr) != NATS_OK) {
    std::fprintf(stderr, "faults_reader: no JetStream context\n");
    return 1;
  }
  std::unique_ptr<jsCtx, decltype(&jsCtx_Destroy)> js_owner(js, &jsCtx_Destroy);

  // Stream info, retried: just after a leader change the stream may answer
  // "unavailable" for a few seconds.
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  for (int attempt = 0; attempt < 60; ++attempt) {
    st = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &jerr);
    if (st == NATS_OK) break;
    std::this_thread::sleep_for(500ms);
  }
  if (st != NATS_OK) {
    std::fprintf(stderr, "faults_reader: stream info of %s: %s (%d)\n", stream.c_str(),
                 natsStatus_GetText(st), static_cast<int>(jerr));
    return 1;
  }
  uint64_t msgs = si->State.Msgs, first = si->State.FirstSeq, last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  out.Line({"#stream", std::to_string(msgs), std::to_string(first), std::to_string(last)});

  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Ordered = true;
  natsSubscription* sub = nullptr;
  st = js_SubscribeSync(&sub, js, args.at("subjects").c_str(), nullptr, &so, &jerr);
  if (st != NATS_OK) {
    std::fprintf(stderr, "faults_reader: ordered consumer on %s: %s (%d)\n", stream.c_str(),
                 natsStatus_GetText(st), static_cast<int>(jerr));
    return 1;
  }
  std::unique_ptr<natsSubscription, decltype(&natsSubscription_Destroy)> sub_owner(sub, &natsSubscription_Destroy);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  uint64_t got = 0, last_seq = 0;
  for (;;) {
    natsMsg* m = nullptr;
    // Past the last stored message: a short wait confirms nothing more comes.
    int64_t wait = got >= msgs ? 1000 : 30000;
    st = natsSubscription_NextMsg(&m, sub, wait);
    if (st != NATS_OK) break;
    std::unique_ptr<natsMsg, decltype(&natsMsg_Destroy)> m_owner(m, &natsMsg_Destroy);
    const char* id = nullptr;
    if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK || id == nullptr) id = "";
    jsMsgMetaData* meta = nullptr;
    uint64_t seq = 0;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
      seq = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    last_seq = seq;
    ++got;
    out.Line({std::to_string(seq), natsMsg_GetSubject(m), id,
              std::string_view(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)))});
  }
  natsSubscription_Unsubscribe(sub);
  std::fprintf(stderr, "faults_reader: %s: read %llu of %llu messages (last seq %llu)\n",
               stream.c_str(), static_cast<unsigned long long>(got),
               static_cast<unsigned long long>(msgs), static_cast<unsigned long long>(last_seq));
  return got >= msgs ? 0 : 1;
}

// --- Redis -----------------------------------------------------------------------

using Reply = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;

Reply Command(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return Reply(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()),
                                                         argv.data(), lens.data())),
               &freeReplyObject);
}

int RedisDump(const Args& args) {
  if (!Need(args, {"port", "keys", "out"})) return 2;
  Out out(args.at("out"));
  if (!out.ok()) return 1;
  std::string host = args.count("host") ? args.at("host") : "127.0.0.1";
  std::unique_ptr<redisContext, decltype(&redisFree)> c(
      redisConnect(host.c_str(), std::atoi(args.at("port").c_str())), &redisFree);
  if (!c || c->err) {
    std::fprintf(stderr, "faults_reader: cannot connect to redis %s:%s: %s\n", host.c_str(),
                 args.at("port").c_str(), c ? c->errstr : "out of memory");
    return 1;
  }
  std::vector<std::string> keys;
  std::string all = args.at("keys");
  for (size_t start = 0; start <= all.size();) {
    size_t comma = all.find(',', start);
    if (comma == std::string::npos) comma = all.size();
    if (comma > start) keys.push_back(all.substr(start, comma - start));
    start = comma + 1;
  }
  for (const std::string& key : keys) {
    Reply len = Command(c.get(), {"XLEN", key});
    if (!len || len->type != REDIS_REPLY_INTEGER) {
      std::fprintf(stderr, "faults_reader: XLEN %s failed\n", key.c_str());
      return 1;
    }
    out.Line({"#xlen", key, std::to_string(len->integer)});
    long long got = 0;
    std::string start = "-";
    for (;;) {
      Reply r = Command(c.get(), {"XRANGE", key, start, "+", "COUNT", "5000"});
      if (!r || r->type != REDIS_REPLY_ARRAY) {
        std::fprintf(stderr, "faults_reader: XRANGE %s %s failed\n", key.c_str(), start.c_str());
        return 1;
      }
      if (r->elements == 0) break;
      for (size_t i = 0; i < r->elements; ++i) {
        const redisReply* e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_ARRAY) {
          std::fprintf(stderr, "faults_reader: unexpected XRANGE entry in %s\n", key.c_str());
          return 1;
        }
        std::string entry(e->element[0]->str, e->element[0]->len);
        std::string id, event;
        const redisReply* f = e->element[1];
        for (size_t j = 0; j + 1 < f->elements; j += 2) {
          std::string_view name(f->element[j]->str, f->element[j]->len);
          std::string_view value(f->element[j + 1]->str, f->element[j + 1]->len);
          if (name == "id") id = value;
          if (name == "event") event = value;
        }
        out.Line({key, entry, id, event});
        start = "(" + entry;
        ++got;
      }
    }
    if (got != len->integer) {
      std::fprintf(stderr, "faults_reader: %s: XLEN %lld but XRANGE gave %lld\n", key.c_str(),
                   len->integer, got);
      return 1;
    }
  }
  return 0;
}

// --- MQTT subscriber ---------------------------------------------------------------

struct MqttSub {
  Out* out = nullptr;
  MQTTAsync client = nullptr;
  std::string topic;
  std::atomic<int> epoch{0};
  std::atomic<bool> subscribed{false};

  static void OnConnected(void* ctx, char* cause) {
    auto* self = static_cast<MqttSub*>(ctx);
    int e = ++self->epoch;
    self->out->Line({"C", std::to_string(e), Fmt(Now()), cause != nullptr ? cause : "connected"});
    // The persistent session normally keeps the subscription; subscribing
    // again is harmless and covers a broker that lost the session.
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    r.context = self;
    r.onSuccess = [](void* c, MQTTAsync_successData*) {
      static_cast<MqttSub*>(c)->subscribed.store(true);
    };
    r.onFailure = [](void* c, MQTTAsync_failureData* d) {
      auto* s = static_cast<MqttSub*>(c);
      s->out->Line({"E", std::to_string(s->epoch.load()), Fmt(Now()),
                    std::string("subscribe failed: ") + (d && d->message ? d->message : "?")});
    };
    int rc = MQTTAsync_subscribe(self->client, self->topic.c_str(), 1, &r);
    if (rc != MQTTASYNC_SUCCESS) {
      self->out->Line({"E", std::to_string(e), Fmt(Now()), "subscribe call failed rc=" + std::to_string(rc)});
    }
  }
  static void OnLost(void* ctx, char* cause) {
    auto* self = static_cast<MqttSub*>(ctx);
    self->out->Line({"L", std::to_string(self->epoch.load()), Fmt(Now()), cause != nullptr ? cause : "lost"});
  }
  static int OnMessage(void* ctx, char* topic, int topic_len, MQTTAsync_message* m) {
    auto* self = static_cast<MqttSub*>(ctx);
    std::string_view t = topic_len > 0 ? std::string_view(topic, static_cast<size_t>(topic_len))
                                       : std::string_view(topic);
    self->out->Line({"M", std::to_string(self->epoch.load()), t,
                     std::string_view(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen))});
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;  // handled: paho sends the PUBACK
  }
};

int MqttSubscribe(const Args& args) {
  if (!Need(args, {"url", "client-id", "topic", "out"})) return 2;
  sigset_t stop = BlockStopSignals();
  Out out(args.at("out"));
  if (!out.ok()) return 1;
  MqttSub sub;
  sub.out = &out;
  sub.topic = args.at("topic");
  if (MQTTAsync_create(&sub.client, args.at("url").c_str(), args.at("client-id").c_str(),
                       MQTTCLIENT_PERSISTENCE_NONE, nullptr) != MQTTASYNC_SUCCESS ||
      MQTTAsync_setCallbacks(sub.client, &sub, &MqttSub::OnLost, &MqttSub::OnMessage, nullptr) !=
          MQTTASYNC_SUCCESS ||
      MQTTAsync_setConnected(sub.client, &sub, &MqttSub::OnConnected) != MQTTASYNC_SUCCESS) {
    std::fprintf(stderr, "faults_reader: cannot create the MQTT client\n");
    return 1;
  }
  // MQTT 3.1.1 with clean session off: the broker keeps the subscription and
  // queues QoS 1 messages while this client is away.
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  co.MQTTVersion = MQTTVERSION_3_1_1;
  co.cleansession = 0;
  co.keepAliveInterval = 10;
  co.automaticReconnect = 1;
  co.minRetryInterval = 1;
  co.maxRetryInterval = 2;
  co.connectTimeout = 5;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!sub.subscribed.load()) {
    if (sub.epoch.load() == 0 && !MQTTAsync_isConnected(sub.client)) {
      MQTTAsync_connect(sub.client, &co);
    }
    for (int i = 0; i < 20 && !sub.subscribed.load(); ++i) std::this_thread::sleep_for(50ms);
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "faults_reader: MQTT subscriber not subscribed after 30 s\n");
      return 1;
    }
  }
  std::fprintf(stderr, "faults_reader: MQTT subscriber ready\n");
  WaitForStop(stop);
  MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
  d.timeout = 1000;
  MQTTAsync_disconnect(sub.client, &d);
  std::this_thread::sleep_for(200ms);
  MQTTAsync_destroy(&sub.client);
  return 0;
}

// --- NATS core subscriber -------------------------------------------------------------

struct NatsSub {
  Out* out = nullptr;
  std::atomic<int> epoch{0};

  static void OnMessage(natsConnection*, natsSubscription*, natsMsg* m, void* ctx) {
    auto* self = static_cast<NatsSub*>(ctx);
    self->out->Line({"M", std::to_string(self->epoch.load()), natsMsg_GetSubject(m),
                     std::string_view(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)))});
    natsMsg_Destroy(m);
  }
  static void OnDisconnected(natsConnection*, void* ctx) {
    auto* self = static_cast<NatsSub*>(ctx);
    self->out->Line({"L", std::to_string(self->epoch.load()), Fmt(Now()), "disconnected"});
  }
  static void OnReconnected(natsConnection*, void* ctx) {
    auto* self = static_cast<NatsSub*>(ctx);
    int e = ++self->epoch;
    self->out->Line({"C", std::to_string(e), Fmt(Now()), "reconnected"});
  }
  static void OnError(natsConnection*, natsSubscription*, natsStatus err, void* ctx) {
    auto* self = static_cast<NatsSub*>(ctx);
    self->out->Line({"E", std::to_string(self->epoch.load()), Fmt(Now()), natsStatus_GetText(err)});
  }
};

int NatsSubscribe(const Args& args) {
  if (!Need(args, {"url", "subject", "out"})) return 2;
  sigset_t stop = BlockStopSignals();
  Out out(args.at("out"));
  if (!out.ok()) return 1;
  NatsSub ctx;
  ctx.out = &out;
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  std::unique_ptr<natsOptions, decltype(&natsOptions_Destroy)> opts_owner(opts, &natsOptions_Destroy);
  natsOptions_SetURL(opts, args.at("url").c_str());
  natsOptions_SetMaxReconnect(opts, -1);
  natsOptions_SetReconnectWait(opts, 100);
  natsOptions_SetDisconnectedCB(opts, &NatsSub::OnDisconnected, &ctx);
  natsOptions_SetReconnectedCB(opts, &NatsSub::OnReconnected, &ctx);
  natsOptions_SetErrorHandler(opts, &NatsSub::OnError, &ctx);
  NatsConnectionPtr nc_owner = ConnectNats(opts, args.at("url"));
  if (!nc_owner) return 1;
  natsConnection* nc = nc_owner.get();
  natsStatus st = NATS_OK;
  ctx.epoch = 1;
  out.Line({"C", "1", Fmt(Now()), "connected"});
  natsSubscription* sub = nullptr;
  st = natsConnection_Subscribe(&sub, nc, args.at("subject").c_str(), &NatsSub::OnMessage, &ctx);
  if (st == NATS_OK) st = natsSubscription_SetPendingLimits(sub, -1, -1);
  if (st == NATS_OK) st = natsConnection_Flush(nc);
  if (st != NATS_OK) {
    std::fprintf(stderr, "faults_reader: cannot subscribe to %s: %s\n", args.at("subject").c_str(),
                 natsStatus_GetText(st));
    return 1;
  }
  std::unique_ptr<natsSubscription, decltype(&natsSubscription_Destroy)> sub_owner(sub, &natsSubscription_Destroy);
  std::fprintf(stderr, "faults_reader: NATS subscriber ready\n");
  WaitForStop(stop);
  natsSubscription_Unsubscribe(sub);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: faults_reader js-dump|redis-dump|mqtt-sub|nats-sub --name value ...\n");
    return 2;
  }
  std::string cmd = argv[1];
  Args args;
  if (!ParseArgs(argc, argv, 2, &args)) return 2;
  int rc = 2;
  if (cmd == "js-dump") {
    rc = JsDump(args);
  } else if (cmd == "redis-dump") {
    rc = RedisDump(args);
  } else if (cmd == "mqtt-sub") {
    rc = MqttSubscribe(args);
  } else if (cmd == "nats-sub") {
    rc = NatsSubscribe(args);
  } else {
    std::fprintf(stderr, "faults_reader: unknown command '%s'\n", cmd.c_str());
  }
  if (cmd == "js-dump" || cmd == "nats-sub") nats_Close();
  return rc;
}
