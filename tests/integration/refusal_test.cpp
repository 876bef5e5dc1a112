// A publish the broker refuses for good (SPEC §4): walbus stops with exit 1
// and one stderr line naming the event id, the table and the broker's reason;
// the slot is not confirmed past the refused transaction (but is past the
// earlier, delivered ones), and a restart with the same configuration fails
// again on the same event: nothing is skipped.
//
// (a) core NATS with max_payload 2048 and a 5 kB value; (b) Redis with the
// stream key already holding a string (WRONGTYPE); (c) mosquitto with a small
// message_size_limit. Expected ids come from a pgoutput reference slot, not
// from walbus. Servers: PostgreSQL 55490, nats 55492, redis 55493, mosquitto
// 55494, under /tmp/walbus-be-*, serialised by the port lock.
#include <nats/nats.h>

#include <functional>
#include <regex>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

const char* const kSlot = "refusal_slot";
const char* const kRefSlot = "refusal_ref";
const char* const kPub = "refusal_pub";
constexpr milliseconds kExitWait = 20s;

// What one refusal scenario needs.
struct Scenario {
  std::string sink_toml;    // the [[sink]] table
  std::string victim;       // table of the refused event (without schema)
  std::string victim_value; // SQL expression for its `body` column
  std::string reason_re;    // the broker's reason, as a case-insensitive regex
  // How many stderr lines may name the refused event in one run: 1 when the
  // broker's refusal always reaches walbus; more when the broker may drop the
  // connection before its refusal arrives (walbus then retries, and stops when
  // the same event breaks the connection every time).
  size_t max_lines_naming_event = 1;
  std::function<void()> before_run;                        // broker preparation
  std::function<void(const std::string& refused_id,
                     const std::vector<std::string>& delivered_ids)> after_runs;  // broker contents
};

class Refusal : public PgFixtureOnPort<55490> {
 protected:
  // Commits `statements` in one transaction; its xid.
  uint32_t Commit(const std::string& statements) {
    if (!sql().Exec("BEGIN;" + statements)) return 0;
    uint32_t xid = CurrentXid(sql());
    sql().Exec("COMMIT");
    return xid;
  }

  // Lines of `err` naming `id`, and of those the ones that also name the table
  // and match the reason.
  static std::pair<std::vector<std::string>, std::vector<std::string>> Naming(
      const std::string& err, const std::string& id, const std::string& table,
      const std::string& reason_re) {
    std::regex reason(reason_re, std::regex::icase);
    std::vector<std::string> with_id = LinesWith(err, id), full;
    for (const std::string& line : with_id) {
      if (Contains(line, table) && std::regex_search(line, reason)) full.push_back(line);
    }
    return {with_id, full};
  }

  void Run(const Scenario& sc) {
    auto start = Clock::now();
    const std::string victim = "public." + sc.victim;
    ASSERT_TRUE(sql().Exec("CREATE TABLE small (id int PRIMARY KEY, body text);"
                           "CREATE TABLE " + sc.victim + " (id int PRIMARY KEY, body text);"
                           "CREATE PUBLICATION " + kPub + " FOR TABLE small, " + sc.victim + ";"));
    ASSERT_TRUE(CreateReferenceSlot(sql(), kRefSlot));
    if (sc.before_run) sc.before_run();
    if (HasFatalFailure()) return;

    std::string cfg = dir() + "/refusal.toml";
    WriteFile(cfg, "[source]\n"
                   "dsn = \"" + dsn() + "\"\n"
                   "slot = \"" + kSlot + "\"\n"
                   "publication = \"" + kPub + "\"\n"
                   "status_interval_ms = 100\n"
                   "\n[metrics]\nlisten = \"\"\n\n" +
                   sc.sink_toml);

    Child run1;
    ASSERT_TRUE(StartRun(&run1, cfg, "run1"));

    // Earlier small transactions: delivered, and the slot moves past them.
    std::vector<uint32_t> earlier;
    for (int t = 0; t < 3; ++t) {
      std::string a = std::to_string(2 * t + 1), b = std::to_string(2 * t + 2);
      earlier.push_back(Commit("INSERT INTO small VALUES (" + a + ", 'small " + a + "');"
                               "INSERT INTO small VALUES (" + b + ", 'small " + b + "');"));
    }
    std::vector<RefTxn> ref = PeekReference(sql(), kRefSlot, kPub);
    ASSERT_EQ(ref.size(), 3u);
    std::vector<std::string> delivered_ids;
    for (size_t t = 0; t < ref.size(); ++t) {
      EXPECT_EQ(ref[t].xid, earlier[t]);
      for (size_t s = 0; s < ref[t].changes.size(); ++s) delivered_ids.push_back(ref[t].Id(s));
    }
    uint64_t earlier_end = ref.back().end_lsn;
    uint64_t confirmed = 0;
    EXPECT_TRUE(WaitSlotConfirmed(sql(), kSlot, earlier_end, 15s, &confirmed))
        << "the earlier transactions were never confirmed: " << FormatLsn(confirmed) << " < "
        << FormatLsn(earlier_end) << "\n" << run1.err();

    // The transaction with the refused event at seq 1, between two small ones.
    uint32_t xid = Commit("INSERT INTO small VALUES (100, 'before');"
                          "INSERT INTO " + sc.victim + " VALUES (1, " + sc.victim_value + ");"
                          "INSERT INTO small VALUES (101, 'after');");
    ref = PeekReference(sql(), kRefSlot, kPub);
    ASSERT_EQ(ref.size(), 4u);
    const RefTxn& bad = ref.back();
    ASSERT_EQ(bad.xid, xid);
    ASSERT_EQ(bad.changes.size(), 3u);
    ASSERT_EQ(bad.changes[1].table, victim);
    const std::string id = bad.Id(1);
    std::printf("[ info ] refused event %s (%s), commit LSN %s; earlier transactions end at %s\n",
                id.c_str(), victim.c_str(), FormatLsn(bad.final_lsn).c_str(),
                FormatLsn(earlier_end).c_str());

    // Run 1 and then run 2 (same config) both stop on that event.
    for (int attempt = 1; attempt <= 2; ++attempt) {
      SCOPED_TRACE("run " + std::to_string(attempt));
      Child restarted;
      Child* run = &run1;
      if (attempt == 2) {
        run = &restarted;
        ASSERT_TRUE(restarted.Start({kWalbus, "run", "-c", cfg}, dir() + "/run2.out",
                                    dir() + "/run2.err"));
      }
      auto waited_from = Clock::now();
      std::optional<int> code = run->Wait(kExitWait);
      double secs = SecondsSince(waited_from);
      std::string err = run->err();
      run->Kill();
      EXPECT_EQ(code, std::optional<int>(1))
          << (code ? "exit code " + std::to_string(*code)
                   : "still running after " + std::to_string(kExitWait.count()) + " ms")
          << "; stderr:\n" << err;
      auto [with_id, full] = Naming(err, id, victim, sc.reason_re);
      std::string listing = with_id.empty() ? "  (none)\n" : "";
      for (const std::string& line : with_id) listing += "  " + line + "\n";
      EXPECT_EQ(full.size(), 1u) << "expected a stderr line naming " << id << ", " << victim
                                 << " and /" << sc.reason_re << "/; lines naming the id:\n"
                                 << listing << "whole stderr:\n" << err;
      // One line: not a refusal retried as if the broker had gone away.
      EXPECT_GE(with_id.size(), 1u);
      EXPECT_LE(with_id.size(), sc.max_lines_naming_event)
          << "expected at most " << sc.max_lines_naming_event << " stderr lines naming " << id
                                    << "; lines naming it:\n" << listing;
      std::printf("[ info ] run %d: exit %s after %.2f s; %zu stderr lines name the event, %zu "
                  "of them also the table and the reason\n",
                  attempt, code ? std::to_string(*code).c_str() : "none", secs, with_id.size(),
                  full.size());
      for (const std::string& line : full) std::printf("[ info ]   %s\n", line.c_str());
      confirmed = sql().SlotConfirmed(kSlot).value_or(0);
      EXPECT_LT(confirmed, bad.final_lsn)
          << "the slot moved past the refused transaction (commit " << FormatLsn(bad.final_lsn)
          << "): confirmed " << FormatLsn(confirmed);
      EXPECT_GE(confirmed, earlier_end) << "the slot is behind the delivered transactions";
      std::printf("[ info ] run %d: slot confirmed %s (earlier end %s <= it < refused commit %s)\n",
                  attempt, FormatLsn(confirmed).c_str(), FormatLsn(earlier_end).c_str(),
                  FormatLsn(bad.final_lsn).c_str());
      if (code != std::optional<int>(1)) break;  // no point restarting something that did not stop
    }
    if (sc.after_runs) sc.after_runs(id, delivered_ids);
    std::printf("[ info ] scenario %.1f s\n", SecondsSince(start));
  }
};

// A 5 kB value that compresses badly (so it also stays large in storage).
std::string BigValueSql() {
  return "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 160) g)";
}

// (a) core NATS, max_payload 2048.
TEST_F(Refusal, NatsPayloadOverMaxPayload) {
  ComposeBroker nats(ComposeBroker::Kind::kNats, 55492, "/tmp/walbus-be-nats-55492",
                     "WALBUS_NATS_MAX_PAYLOAD=2048 WALBUS_NATS_HTTP_PORT=0");
  ASSERT_TRUE(nats.Start());
  // A subscriber sees what the server accepted.
  natsConnection* nc = nullptr;
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, nats.Url().c_str()), NATS_OK);
  ASSERT_EQ(natsConnection_SubscribeSync(&sub, nc, "postgres.>"), NATS_OK);
  ASSERT_EQ(natsConnection_Flush(nc), NATS_OK);

  Scenario sc;
  sc.sink_toml = "[[sink]]\nname = \"events\"\ntype = \"nats\"\nurl = \"" + nats.Url() + "\"\n";
  sc.victim = "big";
  sc.victim_value = BigValueSql();
  sc.reason_re = "max[ _-]?payload|maximum payload";
  sc.after_runs = [&](const std::string& refused, const std::vector<std::string>& delivered) {
    std::set<std::string> got;
    for (;;) {
      natsMsg* msg = nullptr;
      if (natsSubscription_NextMsg(&msg, sub, 500) != NATS_OK) break;
      std::optional<Envelope> e = ParseEnvelopeLine(
          std::string(natsMsg_GetSubject(msg)) + "\t" +
          std::string(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg))));
      natsMsg_Destroy(msg);
      if (e) got.insert(e->id);
    }
    for (const std::string& id : delivered) EXPECT_TRUE(got.count(id)) << id << " not delivered";
    EXPECT_FALSE(got.count(refused)) << "the refused event reached subscribers";
  };
  Run(sc);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(nc);
}

// (b) Redis: the stream key already holds a string.
TEST_F(Refusal, RedisKeyOfWrongType) {
  ComposeBroker redis(ComposeBroker::Kind::kRedis, 55493, "/tmp/walbus-be-redis-55493");
  ASSERT_TRUE(redis.Start());
  auto cli = [&](const std::string& args) {
    return Shell("redis-cli -h 127.0.0.1 -p 55493 " + args + " 2>&1");
  };
  Scenario sc;
  sc.sink_toml = "[[sink]]\nname = \"streams\"\ntype = \"redis\"\nurl = \"" + redis.Url() +
                 "\"\nid = \"lsn\"\n";
  sc.victim = "t";
  sc.victim_value = "'a small row'";
  sc.reason_re = "WRONGTYPE";
  sc.before_run = [&] {
    ShellResult r = cli("SET postgres.public.t x");
    ASSERT_EQ(r.out, "OK\n");
  };
  sc.after_runs = [&](const std::string& refused, const std::vector<std::string>& delivered) {
    ShellResult ids = cli("--no-raw XRANGE postgres.public.small - +");
    for (const std::string& id : delivered) {
      EXPECT_TRUE(Contains(ids.out, "\"" + id + "\"")) << id << " not in the stream:\n" << ids.out;
    }
    EXPECT_FALSE(Contains(ids.out, "\"" + refused + "\"")) << "the refused event is in a stream";
    EXPECT_EQ(cli("GET postgres.public.t").out, "x\n") << "the string key was changed";
  };
  Run(sc);
}

// (c) mosquitto with message_size_limit 1000.
TEST_F(Refusal, MqttOverMessageSizeLimit) {
  ComposeBroker mosquitto(ComposeBroker::Kind::kMosquitto, 55494, "/tmp/walbus-be-mosquitto-55494",
                          "WALBUS_MQTT_EXTRA='message_size_limit 1000\nlog_type debug'");
  ASSERT_TRUE(mosquitto.Start());
  ASSERT_TRUE(Contains(ReadFile(mosquitto.dir() + "/mosquitto.conf"), "message_size_limit 1000"));
  Scenario sc;
  sc.sink_toml = "[[sink]]\nname = \"mqtt\"\ntype = \"mqtt\"\nurl = \"" + mosquitto.Url() +
                 "\"\nclient_id = \"walbus-be-refusal\"\nqos = 1\n";
  sc.victim = "big";
  sc.victim_value = BigValueSql();
  // mosquitto 2.0 answers the oversized QoS 1 PUBLISH with PUBACK reason code
  // 0x95 (149, "packet too large") and then closes the connection; with more
  // of walbus's data unread the close is a reset that can destroy the PUBACK
  // before walbus reads it. walbus then re-publishes after a back-off, and
  // when the same event is the oldest unacknowledged at 3 consecutive losses
  // it stops, naming the event and message_size_limit.
  sc.reason_re = "0x95|packet too large|\\b149\\b|message_size_limit";
  sc.max_lines_naming_event = 3;
  // The broker's own count of refusals (debug log): at least once per run, at
  // most 3 times per run (never an endless retry loop).
  sc.after_runs = [&](const std::string&, const std::vector<std::string>&) {
    std::vector<std::string> dropped =
        LinesWith(ReadFile(mosquitto.dir() + "/mosquitto.log"), "Dropped too large PUBLISH");
    std::printf("[ info ] mosquitto refused the oversized PUBLISH %zu times over the 2 runs\n",
                dropped.size());
    EXPECT_GE(dropped.size(), 2u);
    EXPECT_LE(dropped.size(), 6u) << "the refused event was retried more than 3 times in a run";
  };
  Run(sc);
}

}  // namespace
}  // namespace walbus::itest
