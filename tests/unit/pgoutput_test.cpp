#include "pgwire/pgoutput.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "bridge/core/status.h"
#include "tests/unit/fixtures.h"

namespace walbus::pgwire {
namespace {

using walbus::testing::FixtureMessage;
using walbus::testing::LoadPgoutputFixture;

const std::vector<std::string> kFixtures = {"dml",      "replica_full", "toast",
                                            "truncate", "messages",     "origin",
                                            "schema_change", "types"};

// Decodes one fixture message and returns it as a T (its views stay valid
// until the next Decode on `d`). Throws, which fails the test, on anything else.
template <typename T>
T Get(Decoder* d, const FixtureMessage& fm, Message* m) {
  Status s = d->Decode(fm.data, m);
  if (!s.ok()) throw std::runtime_error("decode failed: " + s.ToString());
  if (!std::holds_alternative<T>(*m)) {
    throw std::runtime_error("unexpected message " + std::string(MessageName(*m)));
  }
  return std::get<T>(*m);
}

// The message names of a whole fixture, decoded in order.
std::vector<std::string> Names(const std::vector<FixtureMessage>& messages) {
  Decoder d;
  Message m;
  std::vector<std::string> names;
  for (const FixtureMessage& fm : messages) {
    Status s = d.Decode(fm.data, &m);
    EXPECT_TRUE(s.ok()) << s.ToString();
    names.emplace_back(s.ok() ? MessageName(m) : "error");
  }
  return names;
}

// "ttnu": the kind of every column.
std::string Kinds(Tuple t) {
  std::string s;
  for (const Column& c : t) s += static_cast<char>(c.kind);
  return s;
}

// The text values; "" for NULL and unchanged columns (see Kinds).
std::vector<std::string> Texts(Tuple t) {
  std::vector<std::string> v;
  for (const Column& c : t) v.emplace_back(c.value);
  return v;
}

std::vector<std::string> ColumnNames(const Relation& r) {
  std::vector<std::string> v;
  for (const RelationColumn& c : r.columns) v.emplace_back(c.name);
  return v;
}

std::vector<uint32_t> ColumnTypes(const Relation& r) {
  std::vector<uint32_t> v;
  for (const RelationColumn& c : r.columns) v.push_back(c.type_oid);
  return v;
}

std::string KeyFlags(const Relation& r) {
  std::string s;
  for (const RelationColumn& c : r.columns) s += c.key ? 'k' : '-';
  return s;
}

// Big-endian message builder for hand-made inputs.
class Bytes {
 public:
  Bytes& U8(uint8_t v) { s_.push_back(static_cast<char>(v)); return *this; }
  Bytes& U16(uint16_t v) { return BE(v, 2); }
  Bytes& U32(uint32_t v) { return BE(v, 4); }
  Bytes& I32(int32_t v) { return BE(static_cast<uint32_t>(v), 4); }
  Bytes& U64(uint64_t v) { return BE(v, 8); }
  Bytes& Str(std::string_view v) { s_.append(v); s_.push_back('\0'); return *this; }
  Bytes& Raw(std::string_view v) { s_.append(v); return *this; }
  Bytes& Text(std::string_view v) {
    U8('t');
    I32(static_cast<int32_t>(v.size()));
    return Raw(v);
  }
  const std::string& str() const { return s_; }

 private:
  Bytes& BE(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) s_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    return *this;
  }
  std::string s_;
};

Status DecodeBytes(const std::string& bytes) {
  Decoder d;
  Message m;
  return d.Decode(bytes, &m);
}

// Expects Corruption whose message contains every one of `parts`.
void ExpectCorruption(const std::string& bytes, std::initializer_list<std::string> parts) {
  Status s = DecodeBytes(bytes);
  ASSERT_EQ(s.code(), Code::kCorruption) << s.ToString();
  EXPECT_EQ(s.message().rfind("pgoutput ", 0), 0u) << s.message();
  for (const std::string& p : parts) {
    EXPECT_NE(s.message().find(p), std::string::npos) << "'" << p << "' not in: " << s.message();
  }
}

bool Within(std::string_view v, std::string_view buffer) {
  if (v.empty()) return true;
  auto lo = reinterpret_cast<uintptr_t>(buffer.data());
  auto p = reinterpret_cast<uintptr_t>(v.data());
  return p >= lo && p + v.size() <= lo + buffer.size();
}

// Every view of a decoded message points into the input bytes.
bool ViewsWithin(const Message& m, std::string_view bytes) {
  auto tuple_ok = [&](Tuple t) {
    for (const Column& c : t) {
      if (!Within(c.value, bytes)) return false;
      if (c.kind != ColumnKind::kText && !c.value.empty()) return false;
    }
    return true;
  };
  return std::visit(
      [&](const auto& v) -> bool {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Origin>) {
          return Within(v.name, bytes);
        } else if constexpr (std::is_same_v<T, Relation>) {
          bool ok = Within(v.nspname, bytes) && Within(v.relname, bytes);
          for (const RelationColumn& c : v.columns) ok = ok && Within(c.name, bytes);
          return ok;
        } else if constexpr (std::is_same_v<T, Type>) {
          return Within(v.nspname, bytes) && Within(v.typname, bytes);
        } else if constexpr (std::is_same_v<T, Insert>) {
          return tuple_ok(v.new_tuple);
        } else if constexpr (std::is_same_v<T, Update>) {
          return tuple_ok(v.old_tuple) && tuple_ok(v.new_tuple) &&
                 (v.old_kind != 0 || v.old_tuple.empty());
        } else if constexpr (std::is_same_v<T, Delete>) {
          return tuple_ok(v.old_tuple);
        } else if constexpr (std::is_same_v<T, LogicalMessage>) {
          return Within(v.prefix, bytes) && Within(v.content, bytes);
        } else {
          return true;
        }
      },
      m);
}

// ---------------------------------------------------------------------------
// Captured fixtures decode to the expected structure.

TEST(PgoutputDml, ReplicaIdentityDefault) {
  auto fx = LoadPgoutputFixture("dml");
  EXPECT_EQ(Names(fx), (std::vector<std::string>{
                           "Begin", "Relation", "Insert", "Insert", "Insert", "Commit",
                           "Begin", "Update", "Commit",
                           "Begin", "Update", "Commit",
                           "Begin", "Delete", "Commit"}));
  Decoder d;
  Message m;
  Relation rel = Get<Relation>(&d, fx[1], &m);
  EXPECT_EQ(rel.nspname, "public");
  EXPECT_EQ(rel.relname, "dml_items");
  EXPECT_EQ(rel.replica_identity, 'd');
  EXPECT_EQ(ColumnNames(rel), (std::vector<std::string>{"id", "name", "qty", "note"}));
  EXPECT_EQ(ColumnTypes(rel), (std::vector<uint32_t>{23, 25, 23, 25}));
  EXPECT_EQ(KeyFlags(rel), "k---");
  for (const RelationColumn& c : rel.columns) EXPECT_EQ(c.type_mod, -1);
  const uint32_t oid = rel.oid;

  Insert ins = Get<Insert>(&d, fx[2], &m);
  EXPECT_EQ(ins.relation, oid);
  EXPECT_EQ(Kinds(ins.new_tuple), "tttn");
  EXPECT_EQ(Texts(ins.new_tuple), (std::vector<std::string>{"1", "apple", "10", ""}));
  ins = Get<Insert>(&d, fx[3], &m);
  EXPECT_EQ(Texts(ins.new_tuple), (std::vector<std::string>{"2", "pear", "20", "green"}));
  ins = Get<Insert>(&d, fx[4], &m);
  EXPECT_EQ(Kinds(ins.new_tuple), "ttnt");
  EXPECT_EQ(Texts(ins.new_tuple), (std::vector<std::string>{"3", "plum", "", "it's \"ripe\""}));

  // Key unchanged: no old tuple.
  Update up = Get<Update>(&d, fx[7], &m);
  EXPECT_EQ(up.relation, oid);
  EXPECT_EQ(up.old_kind, 0);
  EXPECT_TRUE(up.old_tuple.empty());
  EXPECT_EQ(Texts(up.new_tuple), (std::vector<std::string>{"1", "apple", "11", "updated"}));

  // Key changed: the old key, other columns NULL.
  up = Get<Update>(&d, fx[10], &m);
  EXPECT_EQ(up.old_kind, 'K');
  EXPECT_EQ(Kinds(up.old_tuple), "tnnn");
  EXPECT_EQ(up.old_tuple[0].value, "2");
  EXPECT_EQ(Texts(up.new_tuple), (std::vector<std::string>{"20", "pear", "20", "green"}));

  Delete del = Get<Delete>(&d, fx[13], &m);
  EXPECT_EQ(del.relation, oid);
  EXPECT_EQ(del.old_kind, 'K');
  EXPECT_EQ(Kinds(del.old_tuple), "tnnn");
  EXPECT_EQ(del.old_tuple[0].value, "3");
}

TEST(PgoutputReplicaFull, OldTuplesAreWholeRows) {
  auto fx = LoadPgoutputFixture("replica_full");
  EXPECT_EQ(Names(fx), (std::vector<std::string>{
                           "Begin", "Relation", "Insert", "Insert", "Insert", "Commit",
                           "Begin", "Update", "Commit",
                           "Begin", "Update", "Commit",
                           "Begin", "Delete", "Commit"}));
  Decoder d;
  Message m;
  Relation rel = Get<Relation>(&d, fx[1], &m);
  EXPECT_EQ(rel.relname, "full_items");
  EXPECT_EQ(rel.replica_identity, 'f');
  EXPECT_EQ(KeyFlags(rel), "kkkk");  // FULL: every column is part of the identity
  const uint32_t oid = rel.oid;

  Update up = Get<Update>(&d, fx[7], &m);
  EXPECT_EQ(up.relation, oid);
  EXPECT_EQ(up.old_kind, 'O');
  EXPECT_EQ(Kinds(up.old_tuple), "tttn");
  EXPECT_EQ(Texts(up.old_tuple), (std::vector<std::string>{"1", "apple", "10", ""}));
  EXPECT_EQ(Texts(up.new_tuple), (std::vector<std::string>{"1", "apple", "11", "updated"}));

  up = Get<Update>(&d, fx[10], &m);
  EXPECT_EQ(up.old_kind, 'O');
  EXPECT_EQ(Texts(up.old_tuple), (std::vector<std::string>{"2", "pear", "20", "green"}));
  EXPECT_EQ(Texts(up.new_tuple), (std::vector<std::string>{"20", "pear", "20", "green"}));

  Delete del = Get<Delete>(&d, fx[13], &m);
  EXPECT_EQ(del.old_kind, 'O');
  EXPECT_EQ(Kinds(del.old_tuple), "ttnt");
  EXPECT_EQ(Texts(del.old_tuple), (std::vector<std::string>{"3", "plum", "", "it's \"ripe\""}));
}

TEST(PgoutputToast, UnchangedToastIsNotNull) {
  auto fx = LoadPgoutputFixture("toast");
  EXPECT_EQ(Names(fx), (std::vector<std::string>{
                           "Begin", "Relation", "Insert", "Commit",
                           "Begin", "Update", "Commit",
                           "Begin", "Relation", "Insert", "Commit",
                           "Begin", "Update", "Commit"}));
  Decoder d;
  Message m;
  Relation rel = Get<Relation>(&d, fx[1], &m);
  EXPECT_EQ(rel.relname, "toast_default");
  EXPECT_EQ(ColumnNames(rel), (std::vector<std::string>{"id", "big", "counter"}));

  Insert ins = Get<Insert>(&d, fx[2], &m);
  ASSERT_EQ(Kinds(ins.new_tuple), "ttt");
  const std::string big(ins.new_tuple[1].value);
  EXPECT_EQ(big.size(), 10240u);
  EXPECT_EQ(big.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(big.substr(0, 32), "c4ca4238a0b923820dcc509a6f75849b");  // md5('1')

  // DEFAULT identity: no old tuple, the big column is 'u', not NULL.
  Update up = Get<Update>(&d, fx[5], &m);
  EXPECT_EQ(up.old_kind, 0);
  EXPECT_EQ(Kinds(up.new_tuple), "tut");
  EXPECT_EQ(up.new_tuple[1].kind, ColumnKind::kUnchanged);
  EXPECT_NE(up.new_tuple[1].kind, ColumnKind::kNull);
  EXPECT_TRUE(up.new_tuple[1].value.empty());
  EXPECT_EQ(up.new_tuple[2].value, "1");

  rel = Get<Relation>(&d, fx[8], &m);
  EXPECT_EQ(rel.relname, "toast_full");
  EXPECT_EQ(rel.replica_identity, 'f');

  // FULL identity: the old tuple carries the value, the new one says 'u'.
  up = Get<Update>(&d, fx[12], &m);
  EXPECT_EQ(up.old_kind, 'O');
  EXPECT_EQ(Kinds(up.old_tuple), "ttt");
  EXPECT_EQ(up.old_tuple[1].value, big);
  EXPECT_EQ(up.old_tuple[2].value, "0");
  EXPECT_EQ(Kinds(up.new_tuple), "tut");
  EXPECT_EQ(up.new_tuple[2].value, "1");
}

TEST(PgoutputTruncate, RelationsAndOptions) {
  auto fx = LoadPgoutputFixture("truncate");
  EXPECT_EQ(Names(fx), (std::vector<std::string>{
                           "Begin", "Relation", "Relation", "Relation", "Truncate", "Commit",
                           "Begin", "Relation", "Relation", "Truncate", "Commit"}));
  Decoder d;
  Message m;
  std::map<std::string, uint32_t> oids;
  for (size_t i : {1, 2, 3, 7, 8}) {
    Relation rel = Get<Relation>(&d, fx[i], &m);
    oids[std::string(rel.relname)] = rel.oid;
  }
  ASSERT_EQ(oids.size(), 5u);

  Truncate t = Get<Truncate>(&d, fx[4], &m);
  EXPECT_EQ(t.options, 0);
  EXPECT_EQ(std::vector<uint32_t>(t.relations.begin(), t.relations.end()),
            (std::vector<uint32_t>{oids["trunc_a"], oids["trunc_b"], oids["trunc_c"]}));

  t = Get<Truncate>(&d, fx[9], &m);
  EXPECT_EQ(t.options, kTruncateCascade | kTruncateRestartIdentity);
  EXPECT_EQ(std::vector<uint32_t>(t.relations.begin(), t.relations.end()),
            (std::vector<uint32_t>{oids["trunc_parent"], oids["trunc_child"]}));
}

TEST(PgoutputMessages, TransactionalAndNot) {
  auto fx = LoadPgoutputFixture("messages");
  EXPECT_EQ(Names(fx), (std::vector<std::string>{"Begin", "Relation", "Insert", "Message",
                                                 "Commit", "Message"}));
  Decoder d;
  Message m;
  LogicalMessage lm = Get<LogicalMessage>(&d, fx[3], &m);
  EXPECT_TRUE(lm.transactional);
  EXPECT_EQ(lm.lsn, fx[3].lsn);
  EXPECT_EQ(lm.prefix, "walbus-test");
  EXPECT_EQ(lm.content, "hello");

  lm = Get<LogicalMessage>(&d, fx[5], &m);
  EXPECT_FALSE(lm.transactional);
  EXPECT_EQ(fx[5].xid, 0u);
  EXPECT_EQ(lm.lsn, fx[5].lsn);
  EXPECT_EQ(lm.prefix, "walbus-test");
  EXPECT_EQ(lm.content, std::string("\xde\xad\xbe\xef"));
}

TEST(PgoutputOrigin, OriginFollowsBegin) {
  auto fx = LoadPgoutputFixture("origin");
  EXPECT_EQ(Names(fx),
            (std::vector<std::string>{"Begin", "Origin", "Relation", "Insert", "Commit"}));
  // 2024-01-02 03:04:05.123456+00 in microseconds since 2000-01-01.
  constexpr int64_t kOriginTime = 757479845123456;
  Decoder d;
  Message m;
  Begin b = Get<Begin>(&d, fx[0], &m);
  EXPECT_EQ(b.commit_time_us, kOriginTime);
  Origin o = Get<Origin>(&d, fx[1], &m);
  EXPECT_EQ(o.commit_lsn, Lsn{0xABCDEF0});
  EXPECT_EQ(o.name, "walbus_origin");
  Insert ins = Get<Insert>(&d, fx[3], &m);
  EXPECT_EQ(Texts(ins.new_tuple), (std::vector<std::string>{"1", "from elsewhere"}));
  Commit c = Get<Commit>(&d, fx[4], &m);
  EXPECT_EQ(c.commit_time_us, kOriginTime);
}

TEST(PgoutputSchemaChange, NewRelationAfterEachAlter) {
  auto fx = LoadPgoutputFixture("schema_change");
  std::vector<std::string> expected;
  for (int i = 0; i < 5; ++i) {
    for (const char* n : {"Begin", "Relation", "Insert", "Commit"}) expected.push_back(n);
  }
  EXPECT_EQ(Names(fx), expected);

  struct Step {
    std::vector<std::string> names;
    std::vector<uint32_t> types;
    std::vector<std::string> row;
  };
  const std::vector<Step> steps = {
      {{"id", "a"}, {23, 25}, {"1", "one"}},
      {{"id", "a", "b"}, {23, 25, 23}, {"2", "two", "2"}},
      {{"id", "b"}, {23, 23}, {"3", "3"}},            // dropped columns are not sent
      {{"id", "c"}, {23, 23}, {"4", "4"}},            // renamed
      {{"id", "c"}, {23, 20}, {"5", "5000000000"}},  // int4 -> int8
  };
  Decoder d;
  Message m;
  uint32_t oid = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    Relation rel = Get<Relation>(&d, fx[4 * i + 1], &m);
    if (i == 0) oid = rel.oid;
    EXPECT_EQ(rel.oid, oid);
    EXPECT_EQ(rel.relname, "evolving");
    EXPECT_EQ(ColumnNames(rel), steps[i].names);
    EXPECT_EQ(ColumnTypes(rel), steps[i].types);
    EXPECT_EQ(rel.columns[0].key, true);
    Insert ins = Get<Insert>(&d, fx[4 * i + 2], &m);
    EXPECT_EQ(ins.relation, oid);
    EXPECT_EQ(Texts(ins.new_tuple), steps[i].row);
  }
}

TEST(PgoutputTypes, EveryMappedType) {
  auto fx = LoadPgoutputFixture("types");
  EXPECT_EQ(Names(fx), (std::vector<std::string>{"Begin", "Type", "Type", "Type", "Type",
                                                 "Relation", "Insert", "Insert", "Insert",
                                                 "Insert", "Commit"}));
  std::map<std::string, walbus::testing::CatalogType> catalog;
  for (const auto& t : walbus::testing::LoadTypesCatalog()) catalog[t.typname] = t;
  ASSERT_EQ(catalog.size(), 4u);
  EXPECT_EQ(catalog["mood"].typtype, 'e');
  EXPECT_EQ(catalog["_mood"].typelem, catalog["mood"].oid);
  EXPECT_EQ(catalog["posint"].typtype, 'd');
  EXPECT_EQ(catalog["posint"].typbasetype, 23u);
  EXPECT_EQ(catalog["amount"].typbasetype, 1700u);

  Decoder d;
  Message m;
  // Type messages: the type's OID, and for a domain the base type's name.
  struct ExpectedType {
    std::string catalog_name, nspname, typname;
  };
  const std::vector<ExpectedType> types = {{"mood", "public", "mood"},
                                           {"posint", "", "int4"},
                                           {"amount", "", "numeric"},
                                           {"_mood", "public", "_mood"}};
  for (size_t i = 0; i < types.size(); ++i) {
    Type t = Get<Type>(&d, fx[1 + i], &m);
    EXPECT_EQ(t.oid, catalog[types[i].catalog_name].oid);
    EXPECT_EQ(t.nspname, types[i].nspname);
    EXPECT_EQ(t.typname, types[i].typname);
  }

  Relation rel = Get<Relation>(&d, fx[5], &m);
  EXPECT_EQ(rel.relname, "all_types");
  EXPECT_EQ(ColumnNames(rel),
            (std::vector<std::string>{
                "id", "c_bool", "c_int2", "c_int4", "c_int8", "c_oid", "c_float4", "c_float8",
                "c_numeric", "c_json", "c_jsonb", "c_int4_arr", "c_text_arr", "c_int4_2d",
                "c_numeric_arr", "c_bool_arr", "c_jsonb_arr", "c_float8_arr", "c_bytea",
                "c_mood", "c_posint", "c_amount", "c_mood_arr", "c_text", "c_varchar",
                "c_uuid", "c_date", "c_time", "c_timestamp", "c_timestamptz", "c_interval",
                "c_inet"}));
  EXPECT_EQ(ColumnTypes(rel),
            (std::vector<uint32_t>{
                23, 16, 21, 23, 20, 26, 700, 701, 1700, 114, 3802, 1007, 1009, 1007, 1231, 1000,
                3807, 1022, 17, catalog["mood"].oid, catalog["posint"].oid,
                catalog["amount"].oid, catalog["_mood"].oid, 25, 1043, 2950, 1082, 1083, 1114,
                1184, 1186, 869}));
  EXPECT_EQ(rel.columns[24].type_mod, 24);  // varchar(20): 20 + VARHDRSZ
  EXPECT_EQ(rel.columns[1].type_mod, -1);

  Insert ins = Get<Insert>(&d, fx[6], &m);
  EXPECT_EQ(ins.relation, rel.oid);
  EXPECT_EQ(Kinds(ins.new_tuple), std::string(32, 't'));
  EXPECT_EQ(Texts(ins.new_tuple),
            (std::vector<std::string>{
                "1", "t", "1", "2", "3", "4", "1.5", "2.25", "123.456",
                R"({"a": 1, "b": [1, 2]})", R"({"a": 1, "b": 2})", "{1,2,3}", "{a,b,c}",
                "{{1,2},{3,4}}", "{1.5,2.25}", "{t,f}", R"({"{\"x\": 1}","[1, 2]"})",
                "{1.5,2.5}", R"(\x0102ff)", "happy", "42", "12.34", "{sad,happy}", "hello",
                "varchar", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "2024-02-29",
                "12:34:56.789", "2024-02-29 12:34:56.789", "2024-02-29 10:34:56.789+00",
                "1 year 2 mons 3 days 04:05:06", "192.168.1.0/24"}));

  ins = Get<Insert>(&d, fx[7], &m);
  EXPECT_EQ(Kinds(ins.new_tuple), std::string(32, 't'));
  EXPECT_EQ(Texts(ins.new_tuple),
            (std::vector<std::string>{
                "2", "f", "-32768", "-2147483648", "9223372036854775807", "4294967295", "NaN",
                "Infinity", "NaN", R"("just a string")",
                "{\"k\": \"\xC3\xA9 \xF0\x9F\x98\x80\", \"n\": null, \"q\": \"a\\\"b\\\\c\"}",
                "{NULL,1,NULL}", R"({"a,b","{braces}","quo\"te","back\\slash",NULL,"NULL",""})",
                "{{1,NULL},{NULL,4}}", "{NaN,-1.5,NULL}", "{t,NULL}", "{}",
                "{Infinity,-Infinity,NaN,-0}", R"(\x)", "sad", "1", "-0.01", "{}",
                "it's \"q\" \\ back\ttab\nnewline\x01" "ctl \xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC "
                "\xF0\x9F\x98\x80",
                "", "00000000-0000-0000-0000-000000000000", "infinity", "00:00:00", "-infinity",
                "infinity", "-1 days -00:00:01", "::1"}));

  ins = Get<Insert>(&d, fx[8], &m);
  EXPECT_EQ(Texts(ins.new_tuple),
            (std::vector<std::string>{
                "3", "t", "32767", "2147483647", "-9223372036854775808", "0", "-Infinity", "-0",
                "-0.000000000000000000001", R"([1, "two", null])", "[]", "{}", R"({""})", "{}",
                "{}", "{}", R"({"{\"a\": [1, {\"b\": null}]}"})", "{1e+308,-1e-308}", R"(\x00)",
                "ok", "2147483647", "9999999999.99", "{ok,NULL}", "", "twenty characters...",
                "ffffffff-ffff-ffff-ffff-ffffffffffff", "0001-01-01 BC", "24:00:00",
                "2000-01-01 00:00:00", "1999-12-31 23:59:59.999999+00", "00:00:00",
                "2001:db8::/32"}));

  // A row of NULLs: 'n', never empty text.
  ins = Get<Insert>(&d, fx[9], &m);
  EXPECT_EQ(Kinds(ins.new_tuple), "t" + std::string(31, 'n'));
  EXPECT_EQ(ins.new_tuple[0].value, "4");
}

// Begin/Commit pairs agree with each other and with the slot's lsn/xid
// columns; every row change names a relation described earlier in the stream.
TEST(PgoutputAllFixtures, TransactionsAreConsistent) {
  for (const std::string& name : kFixtures) {
    SCOPED_TRACE(name);
    auto fx = LoadPgoutputFixture(name);
    Decoder d;
    Message m;
    std::optional<Begin> open;
    std::set<uint32_t> relations;
    int transactions = 0;
    for (const FixtureMessage& fm : fx) {
      ASSERT_TRUE(d.Decode(fm.data, &m).ok());
      if (auto* b = std::get_if<Begin>(&m)) {
        ASSERT_FALSE(open.has_value()) << "nested Begin";
        EXPECT_EQ(b->xid, fm.xid);
        EXPECT_NE(b->final_lsn, kInvalidLsn);
        open = *b;
      } else if (auto* c = std::get_if<Commit>(&m)) {
        ASSERT_TRUE(open.has_value()) << "Commit without Begin";
        EXPECT_EQ(open->final_lsn, c->commit_lsn);
        EXPECT_EQ(open->commit_time_us, c->commit_time_us);
        EXPECT_EQ(c->flags, 0);
        EXPECT_EQ(c->end_lsn, fm.lsn);
        EXPECT_GT(c->end_lsn, c->commit_lsn);
        EXPECT_EQ(fm.xid, open->xid);
        open.reset();
        ++transactions;
      } else if (auto* r = std::get_if<Relation>(&m)) {
        relations.insert(r->oid);
      } else if (auto* i = std::get_if<Insert>(&m)) {
        EXPECT_TRUE(open.has_value());
        EXPECT_TRUE(relations.count(i->relation));
      } else if (auto* u = std::get_if<Update>(&m)) {
        EXPECT_TRUE(open.has_value());
        EXPECT_TRUE(relations.count(u->relation));
      } else if (auto* del = std::get_if<Delete>(&m)) {
        EXPECT_TRUE(open.has_value());
        EXPECT_TRUE(relations.count(del->relation));
      } else if (auto* t = std::get_if<Truncate>(&m)) {
        EXPECT_TRUE(open.has_value());
        for (uint32_t oid : t->relations) EXPECT_TRUE(relations.count(oid));
      } else if (auto* lm = std::get_if<LogicalMessage>(&m)) {
        EXPECT_EQ(lm->transactional, open.has_value());
      } else if (std::holds_alternative<Origin>(m)) {
        EXPECT_TRUE(open.has_value());
      }
      if (open.has_value()) {
        EXPECT_EQ(fm.xid, open->xid);
      }
    }
    EXPECT_FALSE(open.has_value()) << "transaction not committed";
    EXPECT_GT(transactions, 0);
  }
}

TEST(PgoutputAllFixtures, CoverEveryMessageType) {
  std::set<std::string> seen;
  for (const std::string& name : kFixtures) {
    for (const std::string& n : Names(LoadPgoutputFixture(name))) seen.insert(n);
  }
  EXPECT_EQ(seen, (std::set<std::string>{"Begin", "Commit", "Origin", "Relation", "Type",
                                         "Insert", "Update", "Delete", "Truncate",
                                         "Message"}));
}

TEST(PgoutputAllFixtures, ViewsPointIntoTheInput) {
  for (const std::string& name : kFixtures) {
    SCOPED_TRACE(name);
    Decoder d;
    Message m;
    for (const FixtureMessage& fm : LoadPgoutputFixture(name)) {
      ASSERT_TRUE(d.Decode(fm.data, &m).ok());
      EXPECT_TRUE(ViewsWithin(m, fm.data)) << MessageName(m);
    }
  }
}

// ---------------------------------------------------------------------------
// Truncation and trailing bytes, for every message of every fixture.

TEST(PgoutputTruncation, EveryPrefixIsCorruption) {
  size_t checked = 0;
  for (const std::string& name : kFixtures) {
    SCOPED_TRACE(name);
    Decoder d;
    Message m;
    auto fx = LoadPgoutputFixture(name);
    for (size_t i = 0; i < fx.size(); ++i) {
      const std::string& full = fx[i].data;
      for (size_t len = 0; len < full.size(); ++len) {
        // A copy of exactly len bytes, so that reading past it is a real overrun
        // (and visible to ASan).
        const std::string prefix = full.substr(0, len);
        Status s = d.Decode(prefix, &m);
        ASSERT_EQ(s.code(), Code::kCorruption)
            << "message " << i << " prefix " << len << "/" << full.size() << ": "
            << s.ToString();
        ++checked;
      }
      ASSERT_TRUE(d.Decode(full, &m).ok()) << "message " << i;
    }
  }
  EXPECT_GT(checked, 30000u);
}

TEST(PgoutputTruncation, TrailingByteIsCorruption) {
  for (const std::string& name : kFixtures) {
    SCOPED_TRACE(name);
    Decoder d;
    Message m;
    auto fx = LoadPgoutputFixture(name);
    for (size_t i = 0; i < fx.size(); ++i) {
      for (char extra : {'\0', 'x', '\xff'}) {
        Status s = d.Decode(fx[i].data + extra, &m);
        ASSERT_EQ(s.code(), Code::kCorruption) << "message " << i << ": " << s.ToString();
        EXPECT_NE(s.message().find("1 unexpected bytes after the end"), std::string::npos)
            << s.message();
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Hand-made inputs.

Bytes InsertHeader(uint32_t relation = 16385) {
  Bytes b;
  b.U8('I').U32(relation).U8('N');
  return b;
}

TEST(PgoutputCorrupt, ErrorNamesMessageAndOffset) {
  // 0 'U', 1-4 relation, 5 'N', 6-7 count, 8 't', 9-12 len, 13 '1', 14 'n',
  // 15 't', 16-19 length 4096, then 12 bytes.
  Bytes b;
  b.U8('U').U32(1).U8('N').U16(3).Text("1").U8('n').U8('t').I32(4096).Raw("twelve bytes");
  Status s = DecodeBytes(b.str());
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(),
            "pgoutput Update at offset 16: new tuple column 3 length 4096 exceeds the 12 "
            "bytes left");

  s = DecodeBytes(Bytes().U8('B').U64(0x16B3748).U64(0).str());
  EXPECT_EQ(s.message(), "pgoutput Begin at offset 17: xid needs 4 bytes, only 0 left");
  s = DecodeBytes(Bytes().U8('B').U64(0x16B3748).U32(0).str());
  EXPECT_EQ(s.message(), "pgoutput Begin at offset 9: commit time needs 8 bytes, only 4 left");
}

TEST(PgoutputCorrupt, EmptyAndUnknownTypes) {
  ExpectCorruption("", {"message at offset 0", "message type needs 1 bytes"});
  ExpectCorruption("Z", {"unknown message type 'Z' (0x5A)"});
  ExpectCorruption(std::string(1, '\0'), {"unknown message type (0x00)"});
  ExpectCorruption("\xff", {"unknown message type (0xFF)"});
  // Streaming and two-phase messages are not protocol version 1.
  for (const char* t : {"S", "E", "c", "A", "b", "P", "K", "r", "p"}) {
    ExpectCorruption(Bytes().Raw(t).U32(1).U8(1).str(), {"not sent with protocol version 1"});
  }
}

TEST(PgoutputCorrupt, BeginAndCommit) {
  ExpectCorruption(Bytes().U8('B').U64(0).U64(1).U32(700).str(),
                   {"pgoutput Begin at offset 1", "final_lsn is not set"});
  for (uint8_t flags : {1, 2, 0x80, 0xff}) {
    ExpectCorruption(Bytes().U8('C').U8(flags).U64(1).U64(2).U64(3).str(),
                     {"pgoutput Commit at offset 1", "unrecognized flags"});
  }
  Decoder d;
  Message m;
  ASSERT_TRUE(d.Decode(Bytes().U8('C').U8(0).U64(1).U64(2).U64(3).str(), &m).ok());
  EXPECT_EQ(std::get<Commit>(m).end_lsn, 2u);
}

TEST(PgoutputCorrupt, TupleMarkers) {
  ExpectCorruption(Bytes().U8('I').U32(1).U8('K').U16(0).str(),
                   {"Insert at offset 5", "expected new tuple 'N', got 'K'"});
  ExpectCorruption(Bytes().U8('U').U32(1).U8('X').U16(0).str(),
                   {"Update at offset 5", "expected 'K', 'O' or 'N', got 'X'"});
  // An old tuple must be followed by 'N'.
  ExpectCorruption(Bytes().U8('U').U32(1).U8('K').U16(1).U8('n').U8('K').U16(0).str(),
                   {"Update at offset 9", "expected new tuple 'N' after the old tuple"});
  ExpectCorruption(Bytes().U8('U').U32(1).U8('O').U16(0).str(),
                   {"new tuple marker needs 1 bytes"});
  ExpectCorruption(Bytes().U8('D').U32(1).U8('N').U16(0).str(),
                   {"Delete at offset 5", "expected old tuple 'K' or 'O', got 'N'"});
}

TEST(PgoutputCorrupt, ColumnKinds) {
  ExpectCorruption(InsertHeader().U16(2).Text("1").U8('b').I32(1).Raw("x").str(),
                   {"Insert at offset 14", "new tuple column 2 is in binary format"});
  ExpectCorruption(InsertHeader().U16(1).U8('x').str(),
                   {"new tuple column 1 has unknown kind 'x'"});
  ExpectCorruption(InsertHeader().U16(1).U8(0).str(), {"unknown kind (0x00)"});
  ExpectCorruption(Bytes().U8('D').U32(1).U8('K').U16(1).U8('T').str(),
                   {"old tuple column 1 has unknown kind 'T'"});
}

TEST(PgoutputCorrupt, Lengths) {
  ExpectCorruption(InsertHeader().U16(1).U8('t').I32(-1).str(),
                   {"Insert at offset 9", "new tuple column 1 has negative length -1"});
  ExpectCorruption(InsertHeader().U16(1).U8('t').I32(INT32_MIN).Raw("abc").str(),
                   {"negative length"});
  ExpectCorruption(InsertHeader().U16(1).U8('t').I32(INT32_MAX).Raw("abc").str(),
                   {"length 2147483647 exceeds the 3 bytes left"});
  ExpectCorruption(InsertHeader().U16(1).U8('t').I32(4).Raw("abc").str(),
                   {"length 4 exceeds the 3 bytes left"});
  ExpectCorruption(InsertHeader().U16(1).U8('t').U16(0).str(),
                   {"new tuple column 1 length needs 4 bytes, only 2 left"});
  // Logical message content.
  ExpectCorruption(Bytes().U8('M').U8(1).U64(1).Str("p").I32(-5).str(),
                   {"Message at offset 12", "content has negative length -5"});
  ExpectCorruption(Bytes().U8('M').U8(0).U64(1).Str("p").I32(1 << 30).Raw("ab").str(),
                   {"content length 1073741824 exceeds the 2 bytes left"});
  // Strings without their NUL.
  ExpectCorruption(Bytes().U8('O').U64(1).Raw("no-nul").str(),
                   {"Origin at offset 9", "origin name has no terminating NUL"});
  ExpectCorruption(Bytes().U8('Y').U32(1).Str("public").Raw("mood").str(),
                   {"type name has no terminating NUL in the 4 bytes left"});
}

TEST(PgoutputCorrupt, HugeCounts) {
  // Tuple column counts: above PostgreSQL's limit, and above the bytes left.
  ExpectCorruption(InsertHeader().U16(0xFFFF).str(),
                   {"new tuple column count 65535 exceeds PostgreSQL's maximum of 1664"});
  ExpectCorruption(InsertHeader().U16(1000).Raw(std::string(999, 'n')).str(),
                   {"Insert at offset 6", "new tuple column count 1000 exceeds the 999 bytes left"});
  ExpectCorruption(Bytes().U8('U').U32(1).U8('K').U16(1600).Raw("nn").str(),
                   {"old tuple column count 1600 exceeds the 2 bytes left"});
  // Relation column counts.
  Bytes rel;
  rel.U8('R').U32(1).Str("public").Str("t").U8('d');
  ExpectCorruption(Bytes(rel).U16(0xFFFF).str(), {"column count 65535 exceeds"});
  ExpectCorruption(Bytes(rel).U16(100).Raw(std::string(500, 'x')).str(),
                   {"Relation at offset", "column count 100 needs at least 1000 bytes, only 500 left"});
  // Truncate relation counts, including "negative" ones.
  for (uint32_t n : {0xFFFFFFFFu, 0x80000000u, 3u}) {
    ExpectCorruption(Bytes().U8('T').U32(n).U8(0).U32(1).U32(2).str(),
                     {"Truncate at offset 1", "relation count " + std::to_string(n) + " needs"});
  }
}

TEST(PgoutputCorrupt, RelationAndFlagInvariants) {
  Bytes rel;
  rel.U8('R').U32(1).Str("public").Str("t");
  ExpectCorruption(Bytes(rel).U8('x').U16(0).str(), {"unknown replica identity 'x'"});
  ExpectCorruption(Bytes(rel).U8('d').U16(1).U8(2).Str("id").U32(23).I32(-1).str(),
                   {"column 1 has unknown flags 2"});
  ExpectCorruption(Bytes(rel).U8('d').U16(1).U8(1).Str("identifier").U32(23).str(),
                   {"column 1 type modifier needs 4 bytes, only 0 left"});
  ExpectCorruption(Bytes(rel).U8('d').U16(1).U8(1).Str("id").U32(23).str(),
                   {"column count 1 needs at least 10 bytes, only 8 left"});
  ExpectCorruption(Bytes().U8('T').U32(1).U8(4).U32(16385).str(), {"unknown options 4"});
  ExpectCorruption(Bytes().U8('M').U8(2).U64(1).Str("p").I32(0).str(), {"unknown flags 2"});
}

// ---------------------------------------------------------------------------
// Valid hand-made edge cases.

TEST(PgoutputDecoder, EmptyTuplesAndRelations) {
  Decoder d;
  Message m;
  ASSERT_TRUE(d.Decode(Bytes().U8('R').U32(7).Str("").Str("t").U8('n').U16(0).str(), &m).ok());
  const Relation& r = std::get<Relation>(m);
  EXPECT_EQ(r.oid, 7u);
  EXPECT_EQ(r.nspname, "");  // pg_catalog
  EXPECT_EQ(r.replica_identity, 'n');
  EXPECT_TRUE(r.columns.empty());

  ASSERT_TRUE(d.Decode(InsertHeader(7).U16(0).str(), &m).ok());
  EXPECT_TRUE(std::get<Insert>(m).new_tuple.empty());

  ASSERT_TRUE(d.Decode(Bytes().U8('T').U32(0).U8(1).str(), &m).ok());
  EXPECT_TRUE(std::get<Truncate>(m).relations.empty());
  EXPECT_EQ(std::get<Truncate>(m).options, kTruncateCascade);

  // Empty text is text, not NULL; 'u' is neither.
  ASSERT_TRUE(d.Decode(InsertHeader(7).U16(3).Text("").U8('n').U8('u').str(), &m).ok());
  EXPECT_EQ(Kinds(std::get<Insert>(m).new_tuple), "tnu");

  ASSERT_TRUE(d.Decode(Bytes().U8('M').U8(1).U64(9).Str("").I32(0).str(), &m).ok());
  EXPECT_TRUE(std::get<LogicalMessage>(m).transactional);
  EXPECT_TRUE(std::get<LogicalMessage>(m).content.empty());
}

TEST(PgoutputDecoder, MessageNames) {
  EXPECT_EQ(MessageName(Message{Begin{}}), "Begin");
  EXPECT_EQ(MessageName(Message{Commit{}}), "Commit");
  EXPECT_EQ(MessageName(Message{Origin{}}), "Origin");
  EXPECT_EQ(MessageName(Message{Relation{}}), "Relation");
  EXPECT_EQ(MessageName(Message{Type{}}), "Type");
  EXPECT_EQ(MessageName(Message{Insert{}}), "Insert");
  EXPECT_EQ(MessageName(Message{Update{}}), "Update");
  EXPECT_EQ(MessageName(Message{Delete{}}), "Delete");
  EXPECT_EQ(MessageName(Message{Truncate{}}), "Truncate");
  EXPECT_EQ(MessageName(Message{LogicalMessage{}}), "Message");
}

// The scratch vectors keep their capacity: decoding a message of the same
// shape again does not move the columns (no allocation in steady state).
TEST(PgoutputDecoder, ScratchIsReused) {
  auto fx = LoadPgoutputFixture("dml");
  Decoder d;
  Message m;
  ASSERT_TRUE(d.Decode(fx[2].data, &m).ok());
  const Column* first = std::get<Insert>(m).new_tuple.data();
  ASSERT_TRUE(d.Decode(fx[3].data, &m).ok());
  EXPECT_EQ(std::get<Insert>(m).new_tuple.data(), first);
  ASSERT_TRUE(d.Decode(fx[1].data, &m).ok());
  const RelationColumn* columns = std::get<Relation>(m).columns.data();
  ASSERT_TRUE(d.Decode(fx[1].data, &m).ok());
  EXPECT_EQ(std::get<Relation>(m).columns.data(), columns);
  // A failed decode in between leaves the decoder usable.
  EXPECT_FALSE(d.Decode(fx[3].data.substr(0, 10), &m).ok());
  ASSERT_TRUE(d.Decode(fx[4].data, &m).ok());
  EXPECT_EQ(Texts(std::get<Insert>(m).new_tuple)[1], "plum");
}

// ---------------------------------------------------------------------------
// Mutations of real messages never crash: the result is ok or Corruption,
// and an ok result's views stay inside the input.

TEST(PgoutputFuzz, ByteFlipsNeverCrash) {
  std::vector<std::string> corpus;
  for (const std::string& name : kFixtures) {
    for (FixtureMessage& fm : LoadPgoutputFixture(name)) {
      if (fm.data.size() < 4096) corpus.push_back(std::move(fm.data));  // keep it fast
    }
  }
  ASSERT_GT(corpus.size(), 50u);
  std::mt19937 rng(20240229);
  Decoder d;
  Message m;
  int ok = 0, corrupt = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes = corpus[rng() % corpus.size()];
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      size_t pos = rng() % bytes.size();
      switch (rng() % 5) {
        case 0: bytes[pos] = static_cast<char>(bytes[pos] ^ (1u << (rng() % 8))); break;
        case 1: bytes[pos] = static_cast<char>(rng() % 256); break;
        case 2: bytes[pos] = static_cast<char>((rng() % 2) ? 0xFF : 0x00); break;
        case 3: bytes.insert(pos, 1, static_cast<char>(rng() % 256)); break;
        case 4: if (bytes.size() > 1) bytes.erase(pos, 1); break;
      }
    }
    Status s = d.Decode(bytes, &m);
    if (s.ok()) {
      ++ok;
      ASSERT_TRUE(ViewsWithin(m, bytes)) << MessageName(m);
    } else {
      ++corrupt;
      ASSERT_EQ(s.code(), Code::kCorruption) << s.ToString();
    }
  }
  // Both outcomes occur: the mutations reach past the type byte.
  EXPECT_GT(ok, 100);
  EXPECT_GT(corrupt, 1000);
}

}  // namespace
}  // namespace walbus::pgwire
