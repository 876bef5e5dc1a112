// walbus run end to end against a real PostgreSQL 15 with the stdout sink:
// what was written with SQL is compared with the envelopes printed (SPEC §3),
// and the slot's confirmed_flush_lsn is checked against §4.
#include <regex>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

class CoreE2E : public PgFixture {};

// One expected change: table, op, key, before, after as JSON text
// ("null" for JSON null, "" to skip the comparison).
struct Want {
  std::string table, op, key, before, after;
};

void ExpectChange(const Envelope& e, const Want& w, size_t index) {
  SCOPED_TRACE("envelope #" + std::to_string(index) + ": " + e.json);
  EXPECT_EQ(e.op, w.op);
  EXPECT_EQ(e.table, "public." + w.table);
  EXPECT_EQ(e.topic, "postgres.public." + w.table + "." + w.op);
  EXPECT_TRUE(e.Has("key") && JsonEq(e["key"], w.key)) << "key " << e.Field("key");
  EXPECT_TRUE(e.Has("before") && JsonEq(e["before"], w.before)) << "before " << e.Field("before");
  EXPECT_TRUE(e.Has("after") && JsonEq(e["after"], w.after)) << "after " << e.Field("after");
  EXPECT_FALSE(e.Has("unchanged")) << e.Field("unchanged");
}

// ids `<16 upper-case hex of commit_lsn>:<seq>`, seq 0.. within each
// transaction, transactions in increasing commit LSN, one xid per transaction.
// Returns the number of transactions.
size_t CheckIds(const std::vector<Envelope>& envs) {
  static const std::regex kId("^([0-9A-F]{16}):([0-9]+)$");
  size_t txns = 0;
  uint64_t commit = 0;
  int64_t next_seq = 0;
  std::string xid;
  uint64_t last_lsn = 0;
  std::set<std::string> ids;
  for (const Envelope& e : envs) {
    SCOPED_TRACE(e.json);
    std::smatch m;
    if (!std::regex_match(e.id, m, kId)) {
      ADD_FAILURE() << "id " << e.id << " is not <16 hex>:<seq>";
      continue;
    }
    EXPECT_TRUE(ids.insert(e.id).second) << "duplicate id " << e.id;
    EXPECT_EQ(m[1].str(), Hex16(e.commit_lsn)) << "id does not carry source.commit_lsn";
    EXPECT_EQ(m[2].str(), std::to_string(e.seq)) << "id does not carry source.seq";
    const rapidjson::Value& src = e.source();
    std::string this_xid = ToJson(Member(src, "xid"));
    if (e.commit_lsn != commit) {
      EXPECT_GT(e.commit_lsn, commit) << "transactions out of commit order";
      EXPECT_EQ(e.seq, 0) << "a transaction's first event has seq 0";
      commit = e.commit_lsn;
      next_seq = e.seq + 1;
      xid = this_xid;
      last_lsn = e.lsn;
      ++txns;
      continue;
    }
    EXPECT_EQ(e.seq, next_seq) << "seq not consecutive";
    next_seq = e.seq + 1;
    EXPECT_EQ(this_xid, xid) << "xid changes inside a transaction";
    EXPECT_GE(e.lsn, last_lsn) << "source.lsn goes backwards inside a transaction";
    EXPECT_LT(e.lsn, e.commit_lsn) << "a change after its commit";
    last_lsn = e.lsn;
    EXPECT_TRUE(Member(src, "ts").IsString()) << "no commit time";
  }
  return txns;
}

// (1) inserts/updates/deletes/truncates across three tables in multi-row
// transactions; an aborted transaction never shows.
TEST_F(CoreE2E, DmlAcrossTablesInTransactions) {
  ASSERT_TRUE(sql().Exec(
      "CREATE TABLE t_a (id int PRIMARY KEY, v text, n int);"
      "CREATE TABLE t_b (k1 text, k2 int, n numeric, PRIMARY KEY (k1, k2));"
      "CREATE TABLE t_c (id int PRIMARY KEY, v text);"
      "ALTER TABLE t_c REPLICA IDENTITY FULL;"));
  std::string cfg = WriteConfig("c", "dml_slot", "dml_pub");
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));

  ASSERT_TRUE(sql().Exec(
      "BEGIN;"
      "INSERT INTO t_a VALUES (1, 'one', 10), (2, 'two', 20), (3, 'three', 30);"
      "INSERT INTO t_b VALUES ('x', 1, 1.50), ('y', 2, 2.25);"
      "INSERT INTO t_c VALUES (1, 'c1'), (2, 'c2');"
      "COMMIT;"));
  ASSERT_TRUE(sql().Exec("BEGIN; INSERT INTO t_a VALUES (99, 'ghost', 0);"
                         "UPDATE t_c SET v = 'ghost'; ROLLBACK;"));
  ASSERT_TRUE(sql().Exec(
      "BEGIN;"
      "UPDATE t_a SET v = 'TWO', n = 22 WHERE id = 2;"
      "UPDATE t_b SET n = n + 1 WHERE k1 = 'x';"
      "UPDATE t_c SET v = 'c2x' WHERE id = 2;"
      "DELETE FROM t_a WHERE id = 3;"
      "DELETE FROM t_c WHERE id = 1;"
      "COMMIT;"));
  ASSERT_TRUE(sql().Exec(
      "BEGIN;"
      "INSERT INTO t_a VALUES (4, 'four', 40);"
      "UPDATE t_a SET n = 41 WHERE id = 4;"
      "DELETE FROM t_b WHERE k1 = 'y';"
      "INSERT INTO t_c SELECT g, 'g' || g FROM generate_series(10, 14) g;"
      "COMMIT;"));
  ASSERT_TRUE(sql().Exec("TRUNCATE t_a, t_b"));

  const std::vector<Want> want = {
      // T1
      {"t_a", "insert", R"({"id":1})", "null", R"({"id":1,"v":"one","n":10})"},
      {"t_a", "insert", R"({"id":2})", "null", R"({"id":2,"v":"two","n":20})"},
      {"t_a", "insert", R"({"id":3})", "null", R"({"id":3,"v":"three","n":30})"},
      {"t_b", "insert", R"({"k1":"x","k2":1})", "null", R"({"k1":"x","k2":1,"n":"1.50"})"},
      {"t_b", "insert", R"({"k1":"y","k2":2})", "null", R"({"k1":"y","k2":2,"n":"2.25"})"},
      {"t_c", "insert", R"({"id":1})", "null", R"({"id":1,"v":"c1"})"},
      {"t_c", "insert", R"({"id":2})", "null", R"({"id":2,"v":"c2"})"},
      // T2
      {"t_a", "update", R"({"id":2})", "null", R"({"id":2,"v":"TWO","n":22})"},
      {"t_b", "update", R"({"k1":"x","k2":1})", "null", R"({"k1":"x","k2":1,"n":"2.50"})"},
      {"t_c", "update", R"({"id":2})", R"({"id":2,"v":"c2"})", R"({"id":2,"v":"c2x"})"},
      {"t_a", "delete", R"({"id":3})", "null", "null"},
      {"t_c", "delete", R"({"id":1})", R"({"id":1,"v":"c1"})", "null"},
      // T3
      {"t_a", "insert", R"({"id":4})", "null", R"({"id":4,"v":"four","n":40})"},
      {"t_a", "update", R"({"id":4})", "null", R"({"id":4,"v":"four","n":41})"},
      {"t_b", "delete", R"({"k1":"y","k2":2})", "null", "null"},
      {"t_c", "insert", R"({"id":10})", "null", R"({"id":10,"v":"g10"})"},
      {"t_c", "insert", R"({"id":11})", "null", R"({"id":11,"v":"g11"})"},
      {"t_c", "insert", R"({"id":12})", "null", R"({"id":12,"v":"g12"})"},
      {"t_c", "insert", R"({"id":13})", "null", R"({"id":13,"v":"g13"})"},
      {"t_c", "insert", R"({"id":14})", "null", R"({"id":14,"v":"g14"})"},
      // T4: one event per truncated table, key/before/after null
      {"t_a", "truncate", "null", "null", "null"},
      {"t_b", "truncate", "null", "null", "null"},
  };
  std::vector<Envelope> got = WaitForEnvelopes(w.out_path(), want.size());
  // Anything late (e.g. the aborted transaction) would show up now.
  std::this_thread::sleep_for(500ms);
  got = ParseOutput(w.out_path());
  ASSERT_EQ(got.size(), want.size()) << w.out();
  for (size_t i = 0; i < want.size(); ++i) ExpectChange(got[i], want[i], i);
  EXPECT_EQ(CheckIds(got), 4u) << "four committed transactions";
  for (const Envelope& e : got) {
    EXPECT_TRUE(JsonEq(Member(e.source(), "db"), R"("postgres")")) << e.json;
    EXPECT_FALSE(Contains(e.json, "ghost")) << "aborted transaction leaked: " << e.json;
  }
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

// (2) A schema change mid-stream: every envelope follows the table's current
// columns; walbus keeps streaming.
TEST_F(CoreE2E, SchemaChangesMidStream) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE s (id int PRIMARY KEY, a text, b int)"));
  std::string cfg = WriteConfig("c", "ddl_slot", "ddl_pub");
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));

  const std::vector<std::pair<std::string, std::string>> steps = {
      {"INSERT INTO s VALUES (1, 'a1', 1)", R"({"id":1,"a":"a1","b":1})"},
      {"ALTER TABLE s ADD COLUMN c text DEFAULT 'dflt'; INSERT INTO s VALUES (2, 'a2', 2, 'c2')",
       R"({"id":2,"a":"a2","b":2,"c":"c2"})"},
      {"ALTER TABLE s DROP COLUMN a; INSERT INTO s VALUES (3, 3, 'c3')",
       R"({"id":3,"b":3,"c":"c3"})"},
      {"ALTER TABLE s RENAME COLUMN b TO bee; INSERT INTO s VALUES (4, 4, 'c4')",
       R"({"id":4,"bee":4,"c":"c4"})"},
      {"ALTER TABLE s ALTER COLUMN bee TYPE text USING bee::text; "
       "INSERT INTO s VALUES (5, '5', 'c5')",
       R"({"id":5,"bee":"5","c":"c5"})"},
      {"UPDATE s SET c = 'u' WHERE id = 1", R"({"id":1,"bee":"1","c":"u"})"},
      // DDL and DML in one transaction.
      {"BEGIN; ALTER TABLE s ADD COLUMN d int8; INSERT INTO s VALUES (7, '7', 'c7', 70); "
       "ALTER TABLE s ALTER COLUMN d TYPE numeric; INSERT INTO s VALUES (8, '8', 'c8', 8.5); "
       "COMMIT",
       ""},
  };
  // Each statement string runs separately (so DDL and insert are distinct
  // transactions) unless it is an explicit BEGIN ... COMMIT block.
  for (const auto& [sql_text, _] : steps) {
    if (sql_text.rfind("BEGIN", 0) == 0) {
      ASSERT_TRUE(sql().Exec(sql_text));
      continue;
    }
    size_t start = 0;
    while (start < sql_text.size()) {
      size_t semi = sql_text.find("; ", start);
      std::string one = sql_text.substr(start, semi == std::string::npos ? semi : semi - start);
      ASSERT_TRUE(sql().Exec(one));
      start = semi == std::string::npos ? sql_text.size() : semi + 2;
    }
  }
  std::vector<std::string> want_after;
  for (const auto& [_, after] : steps) {
    if (!after.empty()) want_after.push_back(after);
  }
  want_after.push_back(R"({"id":7,"bee":"7","c":"c7","d":70})");
  want_after.push_back(R"({"id":8,"bee":"8","c":"c8","d":"8.5"})");

  std::vector<Envelope> got = WaitForEnvelopes(w.out_path(), want_after.size());
  ASSERT_EQ(got.size(), want_after.size()) << w.out();
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(got[i].json);
    EXPECT_EQ(got[i].table, "public.s");
    EXPECT_TRUE(JsonEq(got[i]["after"], want_after[i])) << "want " << want_after[i];
  }
  EXPECT_TRUE(w.Running()) << "walbus stopped after a schema change: " << w.err();
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

// (3) Unchanged TOAST: an update that does not touch a 10 kB out-of-line
// column lists it in `unchanged` (DEFAULT identity) or fills it from `before`
// (FULL identity); it is never turned into null.
TEST_F(CoreE2E, UnchangedToast) {
  ASSERT_TRUE(sql().Exec(
      "CREATE TABLE td (id int PRIMARY KEY, v int, big text);"
      "ALTER TABLE td ALTER COLUMN big SET STORAGE EXTERNAL;"
      "CREATE TABLE tf (id int PRIMARY KEY, v int, big text);"
      "ALTER TABLE tf ALTER COLUMN big SET STORAGE EXTERNAL;"
      "ALTER TABLE tf REPLICA IDENTITY FULL;"));
  std::string cfg = WriteConfig("c", "toast_slot", "toast_pub");
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));

  const std::string big(10000, 'q');
  std::string big2 = std::string(5000, 'r') + std::string(5000, 's');
  ASSERT_TRUE(sql().Exec(
      "INSERT INTO td VALUES (1, 1, repeat('q', 10000));"
      "INSERT INTO tf VALUES (1, 1, repeat('q', 10000));"));
  // The value is stored out of line (EXTERNAL: uncompressed, > 2 kB).
  EXPECT_EQ(sql().Scalar("SELECT pg_column_size(big) FROM td"), std::optional<std::string>("10000"));
  ASSERT_TRUE(sql().Exec("UPDATE td SET v = 2 WHERE id = 1"));
  ASSERT_TRUE(sql().Exec("UPDATE tf SET v = 2 WHERE id = 1"));
  ASSERT_TRUE(sql().Exec("UPDATE td SET big = repeat('r', 5000) || repeat('s', 5000) WHERE id = 1"));
  ASSERT_TRUE(sql().Exec("DELETE FROM tf WHERE id = 1"));

  std::vector<Envelope> got = WaitForEnvelopes(w.out_path(), 6);
  ASSERT_EQ(got.size(), 6u) << w.out();
  // inserts carry the whole value
  EXPECT_TRUE(JsonEq(got[0]["after"], R"({"id":1,"v":1,"big":")" + big + "\"}"));
  EXPECT_TRUE(JsonEq(got[1]["after"], R"({"id":1,"v":1,"big":")" + big + "\"}"));
  {
    const Envelope& e = got[2];  // td, DEFAULT identity
    SCOPED_TRACE(e.json.substr(0, 400));
    EXPECT_EQ(e.table, "public.td");
    EXPECT_EQ(e.op, "update");
    EXPECT_TRUE(JsonEq(e["after"], R"({"id":1,"v":2})")) << "big must be absent from after";
    EXPECT_TRUE(JsonEq(e["unchanged"], R"(["big"])")) << e.Field("unchanged");
    EXPECT_TRUE(JsonEq(e["before"], "null"));
  }
  {
    const Envelope& e = got[3];  // tf, FULL identity
    SCOPED_TRACE(e.json.substr(0, 400));
    EXPECT_EQ(e.table, "public.tf");
    EXPECT_EQ(e.op, "update");
    EXPECT_TRUE(JsonEq(e["before"], R"({"id":1,"v":1,"big":")" + big + "\"}"));
    EXPECT_TRUE(JsonEq(e["after"], R"({"id":1,"v":2,"big":")" + big + "\"}"));
    EXPECT_FALSE(e.Has("unchanged") && e["unchanged"].IsArray() && e["unchanged"].Size() > 0)
        << "a column filled from before is not listed: " << e.Field("unchanged");
  }
  {
    const Envelope& e = got[4];  // td, the TOAST column itself changed
    SCOPED_TRACE(e.json.substr(0, 400));
    EXPECT_TRUE(JsonEq(e["after"], R"({"id":1,"v":2,"big":")" + big2 + "\"}"));
    EXPECT_FALSE(e.Has("unchanged")) << e.Field("unchanged");
  }
  {
    const Envelope& e = got[5];  // tf delete: FULL before has the value
    SCOPED_TRACE(e.json.substr(0, 400));
    EXPECT_EQ(e.op, "delete");
    EXPECT_TRUE(JsonEq(e["before"], R"({"id":1,"v":2,"big":")" + big + "\"}"));
    EXPECT_TRUE(JsonEq(e["after"], "null"));
  }
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

// (4) Writes to tables outside the publication print nothing, yet the slot's
// confirmed_flush_lsn moves past them, so an idle publication does not hold
// WAL back (SPEC §4, keepalive confirmation).
TEST_F(CoreE2E, ConfirmedLsnAdvancesOnUnpublishedWrites) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE one_table (id int PRIMARY KEY);"
                         "CREATE TABLE other_table (id int PRIMARY KEY, pad text);"));
  std::string cfg = WriteConfig("c", "idle_slot", "idle_pub", "tables = [\"public.one_table\"]\n");
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));
  EXPECT_EQ(sql().Scalar("SELECT string_agg(schemaname || '.' || tablename, ',') FROM "
                         "pg_publication_tables WHERE pubname = 'idle_pub'"),
            std::optional<std::string>("public.one_table"));
  ASSERT_TRUE(sql().Exec("INSERT INTO one_table VALUES (1)"));
  std::vector<Envelope> first = WaitForEnvelopes(w.out_path(), 1);
  ASSERT_EQ(first.size(), 1u);

  uint64_t before = sql().CurrentWalLsn();
  for (int batch = 0; batch < 10; ++batch) {
    ASSERT_TRUE(sql().Exec("INSERT INTO other_table SELECT g, repeat('p', 200) FROM "
                           "generate_series(" + std::to_string(batch * 5000 + 1) + ", " +
                           std::to_string(batch * 5000 + 5000) + ") g"));
  }
  uint64_t after = sql().CurrentWalLsn();
  ASSERT_GT(after - before, 1u << 20) << "the load should write megabytes of WAL";

  auto t0 = Clock::now();
  uint64_t confirmed = 0;
  bool passed = WaitUntil(
      [&] {
        confirmed = sql().SlotConfirmed("idle_slot").value_or(0);
        return confirmed >= after;
      },
      10s, 100ms);
  EXPECT_TRUE(passed) << "confirmed_flush_lsn " << FormatLsn(confirmed)
                      << " did not reach the WAL position after the unpublished writes "
                      << FormatLsn(after) << " (before them: " << FormatLsn(before) << ")";
  EXPECT_GT(confirmed, before);
  std::printf("[ info ] confirmed_flush_lsn passed %s (after writes %s) in %.2f s\n",
              FormatLsn(before).c_str(), FormatLsn(after).c_str(), SecondsSince(t0));
  EXPECT_EQ(CountLines(w.out_path()), 1u) << "unpublished writes were printed:\n" << w.out();
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

// (5) messages = true: pg_logical_emit_message(), transactional and not,
// text and binary content.
TEST_F(CoreE2E, LogicalMessages) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE m (id int PRIMARY KEY)"));
  std::string cfg = WriteConfig("c", "msg_slot", "msg_pub", "messages = true\n");
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));

  std::optional<std::string> nt_lsn_text =
      sql().Scalar("SELECT pg_logical_emit_message(false, 'audit', 'plain text')::text");
  ASSERT_TRUE(nt_lsn_text);
  uint64_t nt_lsn = ParseLsn(*nt_lsn_text).value_or(0);
  ASSERT_TRUE(sql().Exec(
      "BEGIN;"
      "INSERT INTO m VALUES (1);"
      "SELECT pg_logical_emit_message(true, 'audit', 'in txn');"
      "SELECT pg_logical_emit_message(true, 'bin', '\\xdeadbeef00ff'::bytea);"
      "COMMIT;"));
  // A non-transactional message is delivered even when its transaction
  // aborts; a transactional one is not.
  ASSERT_TRUE(sql().Exec(
      "BEGIN;"
      "SELECT pg_logical_emit_message(false, 'audit', 'nt in aborted');"
      "SELECT pg_logical_emit_message(true, 'audit', 'tx in aborted');"
      "ROLLBACK;"));

  std::vector<Envelope> got = WaitForEnvelopes(w.out_path(), 5);
  std::this_thread::sleep_for(500ms);
  got = ParseOutput(w.out_path());
  ASSERT_EQ(got.size(), 5u) << w.out();
  {
    const Envelope& e = got[0];
    SCOPED_TRACE(e.json);
    EXPECT_EQ(e.op, "message");
    EXPECT_EQ(e.topic, "postgres._message.audit");
    EXPECT_TRUE(JsonEq(e["prefix"], R"("audit")"));
    EXPECT_TRUE(JsonEq(e["content"], R"("plain text")"));
    EXPECT_FALSE(e.Has("encoding"));
    EXPECT_EQ(e.id, Hex16(nt_lsn) + ":0") << "non-transactional: the message's LSN and seq 0";
    EXPECT_EQ(e.commit_lsn, nt_lsn);
  }
  const Envelope& ins = got[1];
  EXPECT_EQ(ins.op, "insert");
  EXPECT_EQ(ins.seq, 0);
  {
    const Envelope& e = got[2];
    SCOPED_TRACE(e.json);
    EXPECT_EQ(e.op, "message");
    EXPECT_EQ(e.topic, "postgres._message.audit");
    EXPECT_TRUE(JsonEq(e["content"], R"("in txn")"));
    EXPECT_EQ(e.id, Hex16(ins.commit_lsn) + ":1") << "transactional: the commit's ids";
    EXPECT_EQ(e.commit_lsn, ins.commit_lsn);
  }
  {
    const Envelope& e = got[3];
    SCOPED_TRACE(e.json);
    EXPECT_EQ(e.topic, "postgres._message.bin");
    EXPECT_TRUE(JsonEq(e["prefix"], R"("bin")"));
    EXPECT_TRUE(JsonEq(e["content"], R"("3q2+7wD/")")) << "base64 of de ad be ef 00 ff";
    EXPECT_TRUE(JsonEq(e["encoding"], R"("base64")"));
    EXPECT_EQ(e.id, Hex16(ins.commit_lsn) + ":2");
  }
  {
    const Envelope& e = got[4];
    SCOPED_TRACE(e.json);
    EXPECT_TRUE(JsonEq(e["content"], R"("nt in aborted")"));
    EXPECT_EQ(e.seq, 0);
  }
  for (const Envelope& e : got) EXPECT_FALSE(Contains(e.json, "tx in aborted")) << e.json;
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

// (6) SIGTERM: exit 0, the slot confirmed at or past the last commit, and a
// restart re-delivers nothing. A 10 s status interval leaves the final status
// update of the shutdown as what moves the slot.
TEST_F(CoreE2E, SigtermConfirmsAndExitsZero) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE st (id int PRIMARY KEY, v text)"));
  std::string cfg = WriteConfig("c", "term_slot", "term_pub", "", "", "", 10000);
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run1"));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(sql().Exec("INSERT INTO st SELECT g, 'v' FROM generate_series(" +
                           std::to_string(i * 100 + 1) + ", " + std::to_string(i * 100 + 100) +
                           ") g"));
  }
  uint64_t last_commit_end = sql().CurrentWalLsn();
  std::vector<Envelope> got = WaitForEnvelopes(w.out_path(), 500);
  ASSERT_EQ(got.size(), 500u);
  uint64_t last_commit = got.back().commit_lsn;
  std::printf("[ info ] confirmed before SIGTERM %s, last commit %s\n",
              FormatLsn(sql().SlotConfirmed("term_slot").value_or(0)).c_str(),
              FormatLsn(last_commit).c_str());

  auto t0 = Clock::now();
  std::optional<int> code = Stop(&w);
  EXPECT_EQ(code, std::optional<int>(0)) << w.err();
  std::printf("[ info ] SIGTERM to exit: %.2f s\n", SecondsSince(t0));
  EXPECT_TRUE(LinesWith(w.err(), "ERROR").empty()) << w.err();
  EXPECT_TRUE(WaitUntil([&] { return sql().SlotActivePid("term_slot") == std::optional<int>(0); },
                        5s))
      << "the slot stays active after walbus exited";
  uint64_t confirmed = sql().SlotConfirmed("term_slot").value_or(0);
  EXPECT_GT(confirmed, last_commit) << "confirmed " << FormatLsn(confirmed)
                                    << " is not past the last commit " << FormatLsn(last_commit);
  EXPECT_GE(confirmed, last_commit_end)
      << "confirmed " << FormatLsn(confirmed) << " is before the WAL position after the last "
      << "commit " << FormatLsn(last_commit_end);

  // Restarting from the confirmed position re-delivers nothing.
  Child again;
  ASSERT_TRUE(StartRun(&again, cfg, "run2"));
  ASSERT_TRUE(sql().Exec("INSERT INTO st VALUES (1000, 'new')"));
  std::vector<Envelope> more = WaitForEnvelopes(again.out_path(), 1);
  std::this_thread::sleep_for(300ms);
  more = ParseOutput(again.out_path());
  ASSERT_EQ(more.size(), 1u) << "re-delivered after a clean stop:\n" << again.out().substr(0, 2000);
  EXPECT_TRUE(JsonEq(more[0]["key"], R"({"id":1000})"));
  EXPECT_EQ(Stop(&again), std::optional<int>(0)) << again.err();
}

// (7) The type mapping end to end (SPEC §3 table).
TEST_F(CoreE2E, TypeMapping) {
  ASSERT_TRUE(sql().Exec(
      "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
      "CREATE DOMAIN posint AS int CHECK (VALUE > 0);"
      "CREATE TABLE ty (id int PRIMARY KEY, num numeric, num_nan numeric, j jsonb, js json,"
      " arr int4[], arr2 int4[][], tarr text[], b bytea, f float8, f_inf float8, f_ninf float8,"
      " f4 real, m mood, marr mood[], d posint, flag bool, big int8, u uuid, ts timestamp,"
      " nul text, iv interval)"));
  std::string cfg = WriteConfig("c", "types_slot", "types_pub");
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));
  ASSERT_TRUE(sql().Exec(
      "INSERT INTO ty VALUES (1, 12345678901234567890.123456789, 'NaN',"
      " '{\"a\": [1, 2, {\"b\": null}], \"s\": \"x\\\"y\"}', '[1, \"two\", 3.5]',"
      " '{1,NULL,3}', '{{1,2},{3,4}}', '{\"a b\",\"c,d\",NULL,\"q\\\"q\",\"\"}',"
      " '\\x0001ff', 'NaN', 'Infinity', '-Infinity', 1.5, 'happy', '{sad,ok}', 7, true,"
      " 9007199254740993, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
      " '2024-01-02 03:04:05.123456', NULL, '1 day 02:03:04')"));
  ASSERT_TRUE(sql().Exec("UPDATE ty SET num = -0.5, f = 2.25, m = 'sad' WHERE id = 1"));

  std::vector<Envelope> got = WaitForEnvelopes(w.out_path(), 2);
  ASSERT_EQ(got.size(), 2u) << w.out();
  const std::string want = R"({
    "id": 1,
    "num": "12345678901234567890.123456789",
    "num_nan": "NaN",
    "j": {"a": [1, 2, {"b": null}], "s": "x\"y"},
    "js": [1, "two", 3.5],
    "arr": [1, null, 3],
    "arr2": [[1, 2], [3, 4]],
    "tarr": ["a b", "c,d", null, "q\"q", ""],
    "b": "AAH/",
    "f": "NaN",
    "f_inf": "Infinity",
    "f_ninf": "-Infinity",
    "f4": 1.5,
    "m": "happy",
    "marr": ["sad", "ok"],
    "d": 7,
    "flag": true,
    "big": 9007199254740993,
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "ts": "2024-01-02 03:04:05.123456",
    "nul": null,
    "iv": "1 day 02:03:04"})";
  const rapidjson::Value& after = got[0]["after"];
  EXPECT_TRUE(JsonEq(after, want)) << "got  " << got[0].Field("after") << "\nwant " << want;
  // Per column, so that a failure names the column.
  rapidjson::Document w_doc;
  w_doc.Parse(want.c_str());
  for (auto it = w_doc.MemberBegin(); it != w_doc.MemberEnd(); ++it) {
    const char* col = it->name.GetString();
    ASSERT_TRUE(after.IsObject());
    auto g = after.FindMember(col);
    if (g == after.MemberEnd()) {
      ADD_FAILURE() << "column " << col << " missing";
      continue;
    }
    EXPECT_TRUE(g->value == it->value)
        << "column " << col << ": got " << ToJson(g->value) << ", want " << ToJson(it->value);
  }
  // int8 beyond 2^53 is written as its exact digits.
  EXPECT_TRUE(Contains(got[0].json, "\"big\":9007199254740993")) << got[0].json;
  EXPECT_TRUE(JsonEq(Member(got[1]["after"], "num"), R"("-0.5")"));
  EXPECT_TRUE(JsonEq(Member(got[1]["after"], "f"), "2.25"));
  EXPECT_TRUE(JsonEq(Member(got[1]["after"], "m"), R"("sad")"));
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

// numeric = "number" and bytea = "hex" (the [envelope] options).
TEST_F(CoreE2E, TypeMappingOptions) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE tyo (id int PRIMARY KEY, num numeric, nn numeric, b bytea)"));
  std::string cfg = WriteConfig("c", "typeo_slot", "typeo_pub", "",
                                "\n[envelope]\nnumeric = \"number\"\nbytea = \"hex\"\n");
  Child w;
  ASSERT_TRUE(StartRun(&w, cfg, "run"));
  ASSERT_TRUE(sql().Exec("INSERT INTO tyo VALUES (1, 12.50, 'NaN', '\\x0001ff')"));
  std::vector<Envelope> got = WaitForEnvelopes(w.out_path(), 1);
  ASSERT_EQ(got.size(), 1u) << w.out();
  SCOPED_TRACE(got[0].json);
  EXPECT_TRUE(Contains(got[0].json, "\"num\":12.50")) << "numeric as an exact JSON number";
  EXPECT_TRUE(JsonEq(Member(got[0]["after"], "nn"), R"("NaN")")) << "NaN stays a string";
  EXPECT_TRUE(JsonEq(Member(got[0]["after"], "b"), R"("0001ff")")) << "bytea as hex";
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

}  // namespace
}  // namespace walbus::itest
