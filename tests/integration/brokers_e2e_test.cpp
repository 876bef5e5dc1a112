// One walbus process fanning out to every broker at once (SPEC §2-§4):
// core NATS, JetStream (stream created by walbus), MQTT (QoS 1, and a second
// MQTT sink with a retained state topic), Redis Streams (id = "lsn") and a
// Redis sink filtered to public.orders, while ~5,000 changes commit across
// three tables in transactions of 1-50 rows.
//
// What each broker holds is read back with its own client library (cnats,
// paho, hiredis) and compared with the changes pgoutput itself sent, read
// through a second (reference) slot: expected ids are
// `<Begin final LSN as 16 hex>:<position in the transaction>`, independent of
// walbus. Servers: PostgreSQL 55490, nats 55491, redis 55493, mosquitto
// 55494, all under /tmp/walbus-be-*, serialised by the port lock.
#include <MQTTAsync.h>
#include <hiredis/hiredis.h>
#include <nats/nats.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <random>
#include <regex>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kNatsPort = 55491;
constexpr int kRedisPort = 55493;
constexpr int kMqttPort = 55494;
constexpr int kTargetChanges = 5000;
constexpr unsigned kSeed = 20261123;
const char* const kSlot = "be_slot";
const char* const kRefSlot = "be_ref";
const char* const kPub = "be_pub";
const char* const kStream = "WALBUS_BE";

using BrokersE2EBase = PgFixtureOnPort<55490>;
class BrokersE2E : public BrokersE2EBase {};

// ---------------------------------------------------------------- the load

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

std::string SqlString(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out.push_back('\'');
    out.push_back(c);
  }
  return out + "'";
}

struct Val {
  std::string sql, json;
};

struct TableModel {
  std::string name;                   // without schema
  std::vector<std::string> columns;   // the first is `id`
  std::map<int, std::vector<Val>> rows;  // id -> values of columns[1..]
  int next_id = 1;
  std::set<int> deleted;    // removed by DELETE
  std::set<int> truncated;  // removed by TRUNCATE
};

struct GenChange {
  std::string table;  // "public.x"
  std::string op;
  int id = 0;         // 0 for truncate
  std::string after;  // JSON text; "null" for delete/truncate
};

struct GenTxn {
  std::string sql;
  std::vector<GenChange> changes;
  uint32_t xid = 0;
};

std::string AfterJson(const TableModel& t, int id) {
  const std::vector<Val>& v = t.rows.at(id);
  std::string j = "{\"id\":" + std::to_string(id);
  for (size_t c = 1; c < t.columns.size(); ++c) j += ",\"" + t.columns[c] + "\":" + v[c - 1].json;
  return j + "}";
}

std::vector<Val> MakeValues(const std::string& table, std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto text = [](const std::string& s) { return Val{SqlString(s), JsonString(s)}; };
  if (table == "orders") {
    static const char* kStatus[] = {"new", "paid", "shipped", "cancelled"};
    std::string customer = pick(0, 9) == 0 ? "O'Brien " + std::to_string(pick(1, 99))
                                           : "cust-" + std::to_string(pick(1, 5000));
    char amount[32];
    std::snprintf(amount, sizeof amount, "%d.%02d", pick(0, 99999), pick(0, 99));
    return {text(customer), Val{amount, JsonString(amount)}, text(kStatus[pick(0, 3)])};
  }
  if (table == "items") {
    std::string n = std::to_string(pick(1, 100000));
    std::string qty = std::to_string(pick(1, 500));
    return {Val{n, n}, text("sku-" + std::to_string(pick(1, 9999))), Val{qty, qty}};
  }
  // notes
  Val body = pick(0, 5) == 0 ? Val{"NULL", "null"}
                             : text("note " + std::to_string(pick(1, 1000000)) +
                                    (pick(0, 2) == 0 ? " it's \"quoted\" caf\xc3\xa9" : ""));
  bool flag = pick(0, 1) == 1;
  return {body, Val{flag ? "true" : "false", flag ? "true" : "false"}};
}

// Transactions of 1-50 single-row changes over the three tables until at least
// kTargetChanges changes; one TRUNCATE items about half way.
std::vector<GenTxn> GenerateLoad(std::map<std::string, TableModel>& tables) {
  std::mt19937 rng(kSeed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<GenTxn> txns;
  int total = 0;
  bool truncated = false;
  while (total < kTargetChanges) {
    GenTxn txn;
    int n = pick(1, 50);
    for (int i = 0; i < n; ++i, ++total) {
      if (!truncated && total >= kTargetChanges / 2) {
        truncated = true;
        TableModel& t = tables.at("items");
        for (const auto& [id, _] : t.rows) t.truncated.insert(id);
        t.rows.clear();
        txn.sql += "TRUNCATE items;";
        txn.changes.push_back({"public.items", "truncate", 0, "null"});
        continue;
      }
      int r = pick(0, 99);
      TableModel& t = tables.at(r < 40 ? "orders" : r < 75 ? "items" : "notes");
      int o = t.rows.empty() ? 0 : pick(0, 99);
      GenChange c;
      c.table = "public." + t.name;
      if (o < 50) {
        c.op = "insert";
        c.id = t.next_id++;
        t.rows[c.id] = MakeValues(t.name, rng);
        std::string cols = "id", vals = std::to_string(c.id);
        for (size_t k = 1; k < t.columns.size(); ++k) {
          cols += ", " + t.columns[k];
          vals += ", " + t.rows[c.id][k - 1].sql;
        }
        txn.sql += "INSERT INTO " + t.name + " (" + cols + ") VALUES (" + vals + ");";
        c.after = AfterJson(t, c.id);
      } else {
        auto it = t.rows.begin();
        std::advance(it, pick(0, static_cast<int>(t.rows.size()) - 1));
        c.id = it->first;
        if (o < 85) {
          c.op = "update";
          it->second = MakeValues(t.name, rng);
          std::string set;
          for (size_t k = 1; k < t.columns.size(); ++k) {
            set += (k > 1 ? ", " : "") + t.columns[k] + " = " + it->second[k - 1].sql;
          }
          txn.sql += "UPDATE " + t.name + " SET " + set + " WHERE id = " + std::to_string(c.id) + ";";
          c.after = AfterJson(t, c.id);
        } else {
          c.op = "delete";
          t.rows.erase(it);
          t.deleted.insert(c.id);
          txn.sql += "DELETE FROM " + t.name + " WHERE id = " + std::to_string(c.id) + ";";
          c.after = "null";
        }
      }
      txn.changes.push_back(std::move(c));
    }
    txns.push_back(std::move(txn));
  }
  return txns;
}

// ---------------------------------------------------------------- expectations

struct Expected {
  std::string table, op, key, after;
  uint32_t xid = 0;
  uint64_t commit_lsn = 0;
  int64_t seq = 0;
};
using ExpectedMap = std::map<std::string, Expected>;  // by envelope id

// One message as a broker holds it.
struct Delivery {
  std::string topic;     // subject / MQTT topic / Redis stream key
  std::string payload;
  std::string meta_id;   // Nats-Msg-Id header, MQTT `event-id`, Redis field `id`
  bool has_meta = false;
  std::string entry_id;  // Redis entry id
  std::string op_field;  // Redis field `op`
  bool has_event_field = true;  // Redis: the `event` field was there
};

enum class Meta { kNone, kNatsMsgId, kMqttEventId, kRedis };

struct SinkSpec {
  std::string name;
  std::function<std::string(const std::string& table, const std::string& op)> topic;
  std::string only_table;  // "" = every table
  bool exact = false;      // exactly once (JetStream, Redis with id = "lsn")
  Meta meta = Meta::kNone;
};

// Reports the first few problems of each kind, counts the rest.
class Problems {
 public:
  explicit Problems(std::string sink) : sink_(std::move(sink)) {}
  void Add(const std::string& kind, const std::string& what) {
    if (++counts_[kind] <= 5) ADD_FAILURE() << "sink " << sink_ << ": " << kind << ": " << what;
  }
  ~Problems() {
    for (const auto& [kind, n] : counts_) {
      if (n > 5) ADD_FAILURE() << "sink " << sink_ << ": " << kind << ": " << n << " in all";
    }
  }

 private:
  std::string sink_;
  std::map<std::string, size_t> counts_;
};

void CheckSink(const SinkSpec& spec, const std::vector<Delivery>& got, const ExpectedMap& all) {
  SCOPED_TRACE("sink " + spec.name);
  Problems problems(spec.name);
  std::set<std::string> want;
  for (const auto& [id, x] : all) {
    if (spec.only_table.empty() || x.table == spec.only_table) want.insert(id);
  }
  std::map<std::string, std::pair<uint64_t, int64_t>> last;  // table -> (commit_lsn, seq)
  std::map<std::string, std::string> seen;                   // id -> payload
  size_t duplicates = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const Delivery& d = got[i];
    std::optional<Envelope> e = ParseEnvelopeLine(d.topic + "\t" + d.payload);
    if (!e) {
      problems.Add("not a JSON envelope", d.topic + " " + d.payload.substr(0, 200));
      continue;
    }
    auto x = all.find(e->id);
    if (x == all.end()) {
      problems.Add("unknown id", e->json.substr(0, 300));
      continue;
    }
    const Expected& w = x->second;
    if (!want.count(e->id)) problems.Add("table outside include", e->json.substr(0, 300));
    std::string topic = spec.topic(w.table, w.op);
    if (d.topic != topic) problems.Add("wrong topic", d.topic + ", expected " + topic);
    const rapidjson::Value& src = e->source();
    bool content = e->op == w.op && e->table == w.table && e->commit_lsn == w.commit_lsn &&
                   e->seq == w.seq && Member(src, "xid").IsUint() &&
                   Member(src, "xid").GetUint() == w.xid && Member(src, "db").IsString() &&
                   std::string(Member(src, "db").GetString()) == "postgres" &&
                   e->Has("key") && JsonEq((*e)["key"], w.key) && e->Has("after") &&
                   JsonEq((*e)["after"], w.after) && e->Has("before") && (*e)["before"].IsNull();
    if (!content) {
      problems.Add("content differs from what was written",
                   e->json.substr(0, 400) + "\n  expected " + w.table + " " + w.op + " key " +
                       w.key + " after " + w.after);
    }
    switch (spec.meta) {
      case Meta::kNone: break;
      case Meta::kNatsMsgId:
        if (!d.has_meta || d.meta_id != e->id) {
          problems.Add("Nats-Msg-Id", "'" + d.meta_id + "' for " + e->id);
        }
        break;
      case Meta::kMqttEventId:
        if (!d.has_meta || d.meta_id != e->id) {
          problems.Add("MQTT user property event-id", "'" + d.meta_id + "' for " + e->id);
        }
        break;
      case Meta::kRedis: {
        std::string entry = std::to_string(w.commit_lsn) + "-" + std::to_string(w.seq);
        if (d.entry_id != entry) problems.Add("entry id", d.entry_id + ", expected " + entry);
        if (!d.has_meta || d.meta_id != e->id) problems.Add("field id", d.meta_id + " for " + e->id);
        if (d.op_field != w.op) problems.Add("field op", d.op_field + " for " + w.op);
        if (!d.has_event_field) problems.Add("field event missing", e->id);
        break;
      }
    }
    // Commit order per table: (commit_lsn, seq) only ever increases.
    std::pair<uint64_t, int64_t> pos{e->commit_lsn, e->seq};
    auto [lt, fresh] = last.emplace(w.table, pos);
    if (!fresh) {
      if (pos <= lt->second) {
        problems.Add("out of commit order", w.table + ": " + e->id + " after " +
                                                Hex16(lt->second.first) + ":" +
                                                std::to_string(lt->second.second));
      }
      lt->second = std::max(lt->second, pos);
    }
    auto [st, first] = seen.emplace(e->id, d.payload);
    if (!first) {
      ++duplicates;
      if (st->second != d.payload) problems.Add("re-delivery differs", e->id);
    }
  }
  std::vector<std::string> missing;
  for (const std::string& id : want) {
    if (!seen.count(id)) missing.push_back(id);
  }
  std::printf("[ info ] sink %-12s %5zu messages, %5zu distinct ids, %zu duplicates, %zu of %zu "
              "expected missing\n",
              spec.name.c_str(), got.size(), seen.size(), duplicates, missing.size(), want.size());
  EXPECT_TRUE(missing.empty()) << "sink " << spec.name << ": " << missing.size()
                               << " changes never arrived, the first " << missing.front();
  if (spec.exact) {
    EXPECT_EQ(got.size(), want.size()) << "sink " << spec.name << " must hold each change once";
    EXPECT_EQ(duplicates, 0u) << "sink " << spec.name;
  } else {
    EXPECT_GE(got.size(), want.size()) << "sink " << spec.name;
  }
}

// ---------------------------------------------------------------- brokers

// Core NATS subscriber (cnats), subscribed before the load.
class NatsSub {
 public:
  NatsSub(const std::string& url, const std::string& subject) {
    if (natsConnection_ConnectTo(&nc_, url.c_str()) != NATS_OK) {
      ADD_FAILURE() << "cannot connect to " << url;
      return;
    }
    if (natsConnection_SubscribeSync(&sub_, nc_, subject.c_str()) != NATS_OK ||
        natsSubscription_SetPendingLimits(sub_, -1, -1) != NATS_OK ||
        natsConnection_Flush(nc_) != NATS_OK) {
      ADD_FAILURE() << "cannot subscribe to " << subject;
      return;
    }
    ok_ = true;
  }
  ~NatsSub() {
    natsSubscription_Destroy(sub_);
    natsConnection_Destroy(nc_);
  }
  bool ok() const { return ok_; }

  // Receives until at least `n` messages (or `timeout`), then whatever else
  // arrives within `settle`.
  std::vector<Delivery> Receive(size_t n, milliseconds timeout, milliseconds settle = 300ms) {
    std::vector<Delivery> out;
    auto until = Clock::now() + timeout;
    for (;;) {
      bool enough = out.size() >= n;
      if (!enough && Clock::now() >= until) break;
      natsMsg* msg = nullptr;
      natsStatus s = natsSubscription_NextMsg(&msg, sub_, enough ? settle.count() : 200);
      if (s == NATS_TIMEOUT) {
        if (enough) break;
        continue;
      }
      if (s != NATS_OK) {
        ADD_FAILURE() << "core NATS NextMsg: " << natsStatus_GetText(s);
        break;
      }
      Delivery d;
      d.topic = natsMsg_GetSubject(msg);
      d.payload.assign(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
      out.push_back(std::move(d));
      natsMsg_Destroy(msg);
    }
    return out;
  }

 private:
  natsConnection* nc_ = nullptr;
  natsSubscription* sub_ = nullptr;
  bool ok_ = false;
};

// Every message of a JetStream stream, by sequence, with its Nats-Msg-Id.
std::vector<Delivery> ReadStream(const std::string& url, const char* stream, uint64_t* msgs) {
  std::vector<Delivery> out;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  jsStreamInfo* si = nullptr;
  *msgs = 0;
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK ||
      natsConnection_JetStream(&js, nc, nullptr) != NATS_OK) {
    ADD_FAILURE() << "cannot open JetStream at " << url;
  } else if (js_GetStreamInfo(&si, js, stream, nullptr, nullptr) != NATS_OK) {
    ADD_FAILURE() << "no stream " << stream << " (walbus should have created it)";
  } else {
    *msgs = si->State.Msgs;
    std::printf("[ info ] stream %s: %" PRIu64 " messages, subjects %s, duplicate window %" PRId64
                " ns\n",
                stream, si->State.Msgs, si->Config->SubjectsLen > 0 ? si->Config->Subjects[0] : "-",
                si->Config->Duplicates);
    for (uint64_t seq = si->State.FirstSeq; seq <= si->State.LastSeq && seq > 0; ++seq) {
      natsMsg* msg = nullptr;
      if (js_GetMsg(&msg, js, stream, seq, nullptr, nullptr) != NATS_OK) {
        ADD_FAILURE() << "cannot get message " << seq << " of " << stream;
        continue;
      }
      Delivery d;
      d.topic = natsMsg_GetSubject(msg);
      d.payload.assign(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
      const char* id = nullptr;
      if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr) {
        d.meta_id = id;
        d.has_meta = true;
      }
      natsMsg_Destroy(msg);
      out.push_back(std::move(d));
    }
    jsStreamInfo_Destroy(si);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return out;
}

// A synchronous hiredis client.
class RedisClient {
 public:
  explicit RedisClient(int port) : ctx_(redisConnect("127.0.0.1", port)) {
    if (!ok()) ADD_FAILURE() << "cannot connect to redis on " << port;
  }
  ~RedisClient() {
    if (ctx_ != nullptr) redisFree(ctx_);
  }
  bool ok() const { return ctx_ != nullptr && ctx_->err == 0; }

  redisReply* Cmd(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
  }

  std::vector<std::string> Keys(const std::string& pattern) {
    std::vector<std::string> keys;
    redisReply* r = Cmd({"KEYS", pattern});
    if (r != nullptr && r->type == REDIS_REPLY_ARRAY) {
      for (size_t i = 0; i < r->elements; ++i) keys.emplace_back(r->element[i]->str, r->element[i]->len);
    }
    if (r != nullptr) freeReplyObject(r);
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  // XRANGE key - +: every entry with its id and fields op/id/event.
  std::vector<Delivery> Stream(const std::string& key) {
    std::vector<Delivery> out;
    redisReply* r = Cmd({"XRANGE", key, "-", "+"});
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY) {
      ADD_FAILURE() << "XRANGE " << key << " failed"
                    << (r != nullptr && r->type == REDIS_REPLY_ERROR ? ": " + std::string(r->str)
                                                                     : "");
    } else {
      for (size_t i = 0; i < r->elements; ++i) {
        redisReply* entry = r->element[i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
        Delivery d;
        d.topic = key;
        d.entry_id.assign(entry->element[0]->str, entry->element[0]->len);
        d.has_event_field = false;
        redisReply* f = entry->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
          std::string name(f->element[k]->str, f->element[k]->len);
          std::string value(f->element[k + 1]->str, f->element[k + 1]->len);
          if (name == "op") d.op_field = value;
          if (name == "id") {
            d.meta_id = value;
            d.has_meta = true;
          }
          if (name == "event") {
            d.payload = value;
            d.has_event_field = true;
          }
        }
        out.push_back(std::move(d));
      }
    }
    if (r != nullptr) freeReplyObject(r);
    return out;
  }

 private:
  redisContext* ctx_;
};

// An MQTT 5 subscriber (paho.mqtt.c async client); the callback only records.
class MqttSub {
 public:
  struct Msg {
    std::string topic, payload, event_id;
    bool has_event_id = false;
    bool retained = false;
  };

  MqttSub(const std::string& url, const std::string& client_id) {
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.MQTTVersion = MQTTVERSION_5;
    ok_ = MQTTAsync_createWithOptions(&client_, url.c_str(), client_id.c_str(),
                                      MQTTCLIENT_PERSISTENCE_NONE, nullptr, &co) ==
              MQTTASYNC_SUCCESS &&
          MQTTAsync_setCallbacks(client_, this, nullptr, &MqttSub::OnMessage, nullptr) ==
              MQTTASYNC_SUCCESS;
    if (!ok_) return;
    MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer5;
    opts.cleanstart = 1;
    opts.onSuccess5 = &MqttSub::OnDone;
    opts.onFailure5 = &MqttSub::OnFailed;
    opts.context = this;
    ok_ = MQTTAsync_connect(client_, &opts) == MQTTASYNC_SUCCESS && WaitDone();
    if (!ok_) ADD_FAILURE() << "MQTT subscriber " << client_id << " cannot connect to " << url;
  }
  ~MqttSub() {
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
    r.onSuccess5 = &MqttSub::OnDone;
    r.onFailure5 = &MqttSub::OnFailed;
    r.context = this;
    bool ok = MQTTAsync_subscribe(client_, filter.c_str(), qos, &r) == MQTTASYNC_SUCCESS && WaitDone();
    if (!ok) ADD_FAILURE() << "cannot subscribe to " << filter;
    return ok;
  }

  // Waits until pred(messages) holds or the timeout passes; returns a copy.
  std::vector<Msg> WaitFor(const std::function<bool(const std::vector<Msg>&)>& pred,
                           milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return pred(messages_); });
    return messages_;
  }

 private:
  static void OnDone(void* ctx, MQTTAsync_successData5*) {
    auto* self = static_cast<MqttSub*>(ctx);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->done_ = 1;
    self->cv_.notify_all();
  }
  static void OnFailed(void* ctx, MQTTAsync_failureData5*) {
    auto* self = static_cast<MqttSub*>(ctx);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->done_ = -1;
    self->cv_.notify_all();
  }
  static int OnMessage(void* ctx, char* topic, int topic_len, MQTTAsync_message* m) {
    auto* self = static_cast<MqttSub*>(ctx);
    Msg msg;
    msg.topic = topic_len > 0 ? std::string(topic, static_cast<size_t>(topic_len)) : topic;
    msg.payload.assign(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen));
    msg.retained = m->retained != 0;
    for (int i = 0; i < m->properties.count; ++i) {
      const MQTTProperty& p = m->properties.array[i];
      if (p.identifier == MQTTPROPERTY_CODE_USER_PROPERTY &&
          std::string(p.value.data.data, static_cast<size_t>(p.value.data.len)) == "event-id") {
        msg.event_id.assign(p.value.value.data, static_cast<size_t>(p.value.value.len));
        msg.has_event_id = true;
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
  std::vector<Msg> messages_;
};

bool IsStateTopic(const std::string& topic) { return Contains(topic, "/state/"); }

// MQTT messages on topics starting with `prefix` that are not state topics.
std::vector<Delivery> MqttEvents(const std::vector<MqttSub::Msg>& msgs, const std::string& prefix) {
  std::vector<Delivery> out;
  for (const MqttSub::Msg& m : msgs) {
    if (m.topic.rfind(prefix, 0) != 0 || IsStateTopic(m.topic)) continue;
    Delivery d;
    d.topic = m.topic;
    d.payload = m.payload;
    d.meta_id = m.event_id;
    d.has_meta = m.has_event_id;
    out.push_back(std::move(d));
  }
  return out;
}

size_t CountPrefix(const std::vector<MqttSub::Msg>& msgs, const std::string& prefix) {
  size_t n = 0;
  for (const MqttSub::Msg& m : msgs) n += m.topic.rfind(prefix, 0) == 0 && !IsStateTopic(m.topic);
  return n;
}

// `walbus check` lines for the sinks: name -> "ok" | "FAIL".
std::map<std::string, std::string> SinkCheckLines(const std::string& out) {
  static const std::regex kLine(R"(^(ok|FAIL)\s+sink (\S+) \((\w+)\):.*$)");
  std::map<std::string, std::string> r;
  for (const std::string& line : LinesWith(out, "sink ")) {
    std::smatch m;
    if (std::regex_match(line, m, kLine)) r[m[2].str()] = m[1].str();
  }
  return r;
}

// ---------------------------------------------------------------- the test

TEST_F(BrokersE2E, FiveThousandChangesToEveryBrokerAtOnce) {
  auto test_start = Clock::now();
  ComposeBroker nats(ComposeBroker::Kind::kNats, kNatsPort, "/tmp/walbus-be-nats-55491",
                     "WALBUS_NATS_HTTP_PORT=0");
  ComposeBroker redis(ComposeBroker::Kind::kRedis, kRedisPort, "/tmp/walbus-be-redis-55493");
  ComposeBroker mosquitto(ComposeBroker::Kind::kMosquitto, kMqttPort,
                          "/tmp/walbus-be-mosquitto-55494");
  ASSERT_TRUE(nats.Start());
  ASSERT_TRUE(redis.Start());
  ASSERT_TRUE(mosquitto.Start());

  std::map<std::string, TableModel> tables;
  tables["orders"] = {"orders", {"id", "customer", "amount", "status"}};
  tables["items"] = {"items", {"id", "order_id", "sku", "qty"}};
  tables["notes"] = {"notes", {"id", "body", "flag"}};
  ASSERT_TRUE(sql().Exec(
      "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, amount numeric(10,2) NOT "
      "NULL, status text NOT NULL);"
      "CREATE TABLE items (id int PRIMARY KEY, order_id int NOT NULL, sku text NOT NULL, qty int "
      "NOT NULL);"
      "CREATE TABLE notes (id int PRIMARY KEY, body text, flag boolean NOT NULL);"
      "CREATE PUBLICATION be_pub FOR TABLE orders, items, notes;"));
  ASSERT_TRUE(CreateReferenceSlot(sql(), kRefSlot));

  std::string cfg = dir() + "/brokers.toml";
  WriteFile(cfg, "[source]\n"
                 "dsn = \"" + dsn() + "\"\n"
                 "slot = \"" + kSlot + "\"\n"
                 "publication = \"" + kPub + "\"\n"
                 "status_interval_ms = 100\n"
                 "\n[metrics]\nlisten = \"\"\n"
                 "\n[[sink]]\nname = \"nats\"\ntype = \"nats\"\nurl = \"" + nats.Url() + "\"\n"
                 "topic = \"core.{db}.{schema}.{table}.{op}\"\n"
                 "\n[[sink]]\nname = \"jetstream\"\ntype = \"jetstream\"\nurl = \"" + nats.Url() + "\"\n"
                 "stream = \"" + kStream + "\"\n"
                 "topic = \"js.{db}.{schema}.{table}.{op}\"\n"
                 "\n[[sink]]\nname = \"mqtt\"\ntype = \"mqtt\"\nurl = \"" + mosquitto.Url() + "\"\n"
                 "client_id = \"walbus-be-events\"\nqos = 1\n"
                 "\n[[sink]]\nname = \"mqtt_state\"\ntype = \"mqtt\"\nurl = \"" + mosquitto.Url() + "\"\n"
                 "client_id = \"walbus-be-state\"\nqos = 1\n"
                 "topic = \"st/{db}/{schema}/{table}/{op}\"\n"
                 "state_topic = \"{db}/{schema}/{table}/state/{key}\"\n"
                 "\n[[sink]]\nname = \"redis\"\ntype = \"redis\"\nurl = \"" + redis.Url() + "\"\n"
                 "id = \"lsn\"\n"
                 "\n[[sink]]\nname = \"orders_only\"\ntype = \"redis\"\nurl = \"" + redis.Url() + "\"\n"
                 "key = \"only.{db}.{schema}.{table}\"\n"
                 "include = [\"public.orders\"]\n");
  const std::map<std::string, std::string> kSinkTypes = {
      {"nats", "nats"},   {"jetstream", "jetstream"}, {"mqtt", "mqtt"},
      {"mqtt_state", "mqtt"}, {"redis", "redis"},     {"orders_only", "redis"}};

  // `walbus check` with every broker up: one ok line per sink, exit 0.
  {
    RunResult r = RunWalbus({"check", "-c", cfg}, dir(), "check-all-up");
    EXPECT_EQ(r.code, std::optional<int>(0)) << r.out << r.err;
    std::map<std::string, std::string> lines = SinkCheckLines(r.out);
    EXPECT_EQ(lines.size(), kSinkTypes.size()) << r.out;
    for (const auto& [name, type] : kSinkTypes) {
      EXPECT_EQ(lines[name], "ok") << "sink " << name << ":\n" << r.out;
      EXPECT_EQ(LinesWith(r.out, "sink " + name + " (" + type + ")").size(), 1u) << r.out;
    }
    EXPECT_TRUE(LinesWith(r.out, "FAIL").empty()) << r.out;
  }

  // Subscribers first, then walbus, then the load.
  NatsSub core_sub(nats.Url(), "core.>");
  ASSERT_TRUE(core_sub.ok());
  MqttSub live(mosquitto.Url(), "be-live-subscriber");
  ASSERT_TRUE(live.ok());
  ASSERT_TRUE(live.Subscribe("postgres/#", 1));
  ASSERT_TRUE(live.Subscribe("st/#", 1));

  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));

  std::vector<GenTxn> load = GenerateLoad(tables);
  size_t total_changes = 0;
  for (const GenTxn& t : load) total_changes += t.changes.size();
  auto load_start = Clock::now();
  {
    Pg pg(dsn());
    ASSERT_TRUE(pg.ok());
    for (GenTxn& t : load) {
      std::unique_ptr<PGresult, decltype(&PQclear)> res(
          PQexec(pg.get(), ("BEGIN;" + t.sql + "SELECT pg_current_xact_id()::text").c_str()),
          &PQclear);
      ASSERT_TRUE(res && PQresultStatus(res.get()) == PGRES_TUPLES_OK)
          << (res ? PQresultErrorMessage(res.get()) : "no result") << "\n" << t.sql.substr(0, 500);
      t.xid = static_cast<uint32_t>(std::strtoull(PQgetvalue(res.get(), 0, 0), nullptr, 10) &
                                    0xFFFFFFFFull);
      ASSERT_TRUE(pg.Exec("COMMIT"));
    }
  }
  uint64_t wal_end = sql().CurrentWalLsn();
  double load_secs = SecondsSince(load_start);
  std::printf("[ info ] load: %zu changes in %zu transactions committed in %.2f s, WAL end %s\n",
              total_changes, load.size(), load_secs, FormatLsn(wal_end).c_str());

  // The slot reaches the WAL end after the load.
  uint64_t confirmed = 0;
  bool caught_up = WaitSlotConfirmed(sql(), kSlot, wal_end, 60s, &confirmed);
  double deliver_secs = SecondsSince(load_start);
  EXPECT_TRUE(caught_up) << "confirmed_flush_lsn " << FormatLsn(confirmed)
                         << " never reached the WAL end after the load " << FormatLsn(wal_end)
                         << "; walbus stderr:\n" << w.err();
  std::printf("[ info ] slot confirmed %s >= %s %.2f s after the load started\n",
              FormatLsn(confirmed).c_str(), FormatLsn(wal_end).c_str(), deliver_secs);
  ASSERT_TRUE(w.Running()) << "walbus exited: " << w.err();

  // The model matches the database (so it can serve as the expected final state).
  for (const auto& [name, t] : tables) {
    std::string ids;
    for (const auto& [id, _] : t.rows) ids += (ids.empty() ? "" : ",") + std::to_string(id);
    EXPECT_EQ(sql().Scalar("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM " + name),
              std::optional<std::string>(ids))
        << name;
  }

  // What pgoutput sent, through the reference slot: one transaction per load
  // transaction (matched by xid), the same changes in the same order.
  std::vector<RefTxn> ref = PeekReference(sql(), kRefSlot, kPub);
  std::map<uint32_t, const RefTxn*> ref_by_xid;
  for (const RefTxn& t : ref) {
    EXPECT_EQ(t.final_lsn, t.commit_lsn) << "reference decoder: Begin and Commit disagree";
    ref_by_xid[t.xid] = &t;
  }
  ASSERT_EQ(ref.size(), load.size()) << "reference slot transactions";
  ExpectedMap expected;
  std::map<std::string, size_t> per_table_op;
  for (const GenTxn& g : load) {
    auto it = ref_by_xid.find(g.xid);
    ASSERT_NE(it, ref_by_xid.end()) << "xid " << g.xid << " not in the reference";
    const RefTxn& r = *it->second;
    ASSERT_EQ(r.changes.size(), g.changes.size()) << "xid " << g.xid;
    for (size_t s = 0; s < g.changes.size(); ++s) {
      const GenChange& c = g.changes[s];
      ASSERT_EQ(r.changes[s].table, c.table) << "xid " << g.xid << " seq " << s;
      ASSERT_EQ(r.changes[s].op, c.op) << "xid " << g.xid << " seq " << s;
      if (c.op != "truncate") {
        ASSERT_EQ(r.changes[s].first_col, std::optional<std::string>(std::to_string(c.id)));
      }
      Expected x;
      x.table = c.table;
      x.op = c.op;
      x.key = c.op == "truncate" ? "null" : "{\"id\":" + std::to_string(c.id) + "}";
      x.after = c.after;
      x.xid = g.xid;
      x.commit_lsn = r.final_lsn;
      x.seq = static_cast<int64_t>(s);
      expected[r.Id(s)] = x;
      ++per_table_op[c.table + " " + c.op];
    }
  }
  ASSERT_EQ(expected.size(), total_changes);
  for (const auto& [k, n] : per_table_op) std::printf("[ info ]   %-22s %5zu\n", k.c_str(), n);
  size_t orders_changes = 0;
  for (const auto& [id, x] : expected) orders_changes += x.table == "public.orders";

  auto nats_topic = [](const std::string& prefix) {
    return [prefix](const std::string& table, const std::string& op) {
      return prefix + "postgres." + table + "." + op;
    };
  };
  auto mqtt_topic = [](const std::string& prefix) {
    return [prefix](const std::string& table, const std::string& op) {
      std::string t = table;
      std::replace(t.begin(), t.end(), '.', '/');
      return prefix + "postgres/" + t + "/" + op;
    };
  };
  auto redis_key = [](const std::string& prefix) {
    return [prefix](const std::string& table, const std::string&) {
      return prefix + "postgres." + table;
    };
  };

  // JetStream: exactly one message per change, Nats-Msg-Id = envelope id.
  {
    uint64_t msgs = 0;
    std::vector<Delivery> got = ReadStream(nats.Url(), kStream, &msgs);
    EXPECT_EQ(msgs, total_changes) << "stream state";
    CheckSink({"jetstream", nats_topic("js."), "", true, Meta::kNatsMsgId}, got, expected);
  }
  // Redis: one stream per table, entry id <commit LSN decimal>-<seq>.
  {
    RedisClient rc(kRedisPort);
    ASSERT_TRUE(rc.ok());
    std::vector<std::string> keys = rc.Keys("*");
    EXPECT_EQ(keys, (std::vector<std::string>{"only.postgres.public.orders",
                                              "postgres.public.items", "postgres.public.notes",
                                              "postgres.public.orders"}));
    std::vector<Delivery> got;
    for (const char* k : {"postgres.public.orders", "postgres.public.items", "postgres.public.notes"}) {
      std::vector<Delivery> part = rc.Stream(k);
      got.insert(got.end(), part.begin(), part.end());
    }
    CheckSink({"redis", redis_key(""), "", true, Meta::kRedis}, got, expected);
    // The include-filtered sink: only public.orders, all of it.
    std::vector<Delivery> only;
    for (const std::string& k : rc.Keys("only.*")) {
      std::vector<Delivery> part = rc.Stream(k);
      only.insert(only.end(), part.begin(), part.end());
    }
    EXPECT_EQ(only.size(), orders_changes);
    CheckSink({"orders_only", redis_key("only."), "public.orders", true, Meta::kRedis}, only,
              expected);
  }
  // Core NATS: everything arrived (at least once) on core.postgres.<schema>.<table>.<op>.
  {
    std::vector<Delivery> got = core_sub.Receive(total_changes, 30s);
    CheckSink({"nats", nats_topic("core."), "", false, Meta::kNone}, got, expected);
  }
  // MQTT: both sinks' event topics, with the event-id user property.
  {
    std::vector<MqttSub::Msg> msgs = live.WaitFor(
        [&](const std::vector<MqttSub::Msg>& m) {
          return CountPrefix(m, "postgres/") >= total_changes && CountPrefix(m, "st/") >= total_changes;
        },
        30s);
    std::this_thread::sleep_for(300ms);
    msgs = live.WaitFor([](const std::vector<MqttSub::Msg>&) { return true; }, 0ms);
    CheckSink({"mqtt", mqtt_topic(""), "", false, Meta::kMqttEventId}, MqttEvents(msgs, "postgres/"),
              expected);
    CheckSink({"mqtt_state", mqtt_topic("st/"), "", false, Meta::kMqttEventId},
              MqttEvents(msgs, "st/"), expected);
  }
  // The retained state topic: each remaining row's latest `after`, nothing
  // for deleted rows. (Rows removed by TRUNCATE are not checked: no per-row
  // event exists for them.)
  {
    std::map<std::string, std::string> want;  // topic -> after
    std::set<std::string> forbidden, ignored;
    for (const auto& [name, t] : tables) {
      std::string base = "postgres/public/" + name + "/state/";
      for (const auto& [id, _] : t.rows) want[base + std::to_string(id)] = AfterJson(t, id);
      for (int id : t.deleted) forbidden.insert(base + std::to_string(id));
      for (int id : t.truncated) {
        if (!t.deleted.count(id)) ignored.insert(base + std::to_string(id));
      }
    }
    MqttSub late(mosquitto.Url(), "be-late-subscriber");
    ASSERT_TRUE(late.ok());
    ASSERT_TRUE(late.Subscribe("postgres/+/+/state/#", 1));
    std::vector<MqttSub::Msg> msgs = late.WaitFor(
        [&](const std::vector<MqttSub::Msg>& m) { return m.size() >= want.size() + ignored.size(); },
        15s);
    std::this_thread::sleep_for(500ms);
    msgs = late.WaitFor([](const std::vector<MqttSub::Msg>&) { return true; }, 0ms);
    Problems problems("mqtt_state retained");
    std::map<std::string, std::string> state;
    for (const MqttSub::Msg& m : msgs) {
      if (!m.retained) problems.Add("not retained", m.topic);
      if (!state.emplace(m.topic, m.payload).second) problems.Add("twice", m.topic);
    }
    size_t matched = 0;
    for (const auto& [topic, after] : want) {
      auto it = state.find(topic);
      if (it == state.end()) {
        problems.Add("no retained state for a remaining row", topic + " (latest " + after + ")");
        continue;
      }
      rapidjson::Document d;
      d.Parse(it->second.c_str(), it->second.size());
      if (d.HasParseError() || !JsonEq(d, after)) {
        problems.Add("retained state is not the row's latest after",
                     topic + ": " + it->second + "\n  expected " + after);
      } else {
        ++matched;
      }
    }
    for (const auto& [topic, payload] : state) {
      if (forbidden.count(topic)) {
        problems.Add("retained message for a deleted row", topic + ": " + payload);
      } else if (!want.count(topic) && !ignored.count(topic)) {
        problems.Add("unexpected retained topic", topic + ": " + payload);
      }
    }
    std::printf("[ info ] retained state: %zu topics, %zu of %zu remaining rows match, %zu deleted "
                "rows, %zu truncated rows (not checked)\n",
                state.size(), matched, want.size(), forbidden.size(), ignored.size());
  }

  // A clean stop, nothing logged as an error.
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
  EXPECT_TRUE(LinesWith(w.err(), "ERROR").empty()) << w.err();
  confirmed = sql().SlotConfirmed(kSlot).value_or(0);
  EXPECT_GE(confirmed, wal_end) << "final confirmed_flush_lsn " << FormatLsn(confirmed);

  // `walbus check` with one broker down: FAIL for that broker's sinks, ok for
  // the others, exit 1.
  struct Down {
    ComposeBroker* broker;
    std::set<std::string> failing;
  };
  for (const Down& down : {Down{&redis, {"redis", "orders_only"}}, Down{&nats, {"nats", "jetstream"}},
                           Down{&mosquitto, {"mqtt", "mqtt_state"}}}) {
    down.broker->Stop();
    ASSERT_EQ(down.broker->Pid(), 0) << down.broker->dir();
    std::string tag = "check-down-" + std::to_string(down.broker->port());
    RunResult r = RunWalbus({"check", "-c", cfg}, dir(), tag);
    EXPECT_EQ(r.code, std::optional<int>(1)) << tag << ":\n" << r.out << r.err;
    std::map<std::string, std::string> lines = SinkCheckLines(r.out);
    for (const auto& [name, type] : kSinkTypes) {
      EXPECT_EQ(lines[name], down.failing.count(name) ? "FAIL" : "ok")
          << tag << ", sink " << name << ":\n" << r.out;
    }
    EXPECT_EQ(LinesWith(r.out, "FAIL").size(), down.failing.size()) << tag << ":\n" << r.out;
    for (const std::string& line : LinesWith(r.out, "FAIL")) {
      std::printf("[ info ] %s: %s\n", tag.c_str(), line.c_str());
    }
    ASSERT_TRUE(down.broker->Start(/*fresh=*/false));
  }
  std::printf("[ info ] whole test %.1f s\n", SecondsSince(test_start));
}

}  // namespace
}  // namespace walbus::itest
