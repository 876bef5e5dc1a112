// Type mapping against a real PostgreSQL 15 (compose/pg.sh, port 55498): the
// CatalogTypeFetcher resolves enums, domains and arrays of domains; the static
// table of built-ins agrees with pg_type; and values PostgreSQL prints come
// out of AppendValue as the JSON SPEC §3 asks for, valid for a JSON parser.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <rapidjson/document.h>

#include <map>
#include <string>
#include <vector>

#include "bridge/value_writer.h"
#include "harness.h"
#include "pgwire/type_map.h"

namespace walbus {
namespace {

using itest::Pg;
using itest::PgServer;
using pgwire::CatalogTypeFetcher;
using pgwire::PgTypeRow;
using pgwire::TypeInfo;
using pgwire::TypeResolver;
using K = pgwire::ValueKind;

class TypeCatalog : public ::testing::Test {
 public:
  static constexpr int kPort = 55498;

  static void SetUpTestSuite() {
    lock_ = std::make_unique<itest::FileLock>("/tmp/walbus-itest-pg-" + std::to_string(kPort) +
                                              ".lock");
    server_ = std::make_unique<PgServer>(kPort, "/tmp/walbus-pg-" + std::to_string(kPort));
    server_ok_ = server_->Start();
    if (!server_ok_) return;
    Pg pg(server_->Dsn());
    server_ok_ = pg.Exec(
        "DROP SCHEMA IF EXISTS typecat CASCADE; CREATE SCHEMA typecat;"
        "CREATE TYPE typecat.mood AS ENUM ('sad', 'ok', 'happy');"
        "CREATE DOMAIN typecat.posint AS int4 CHECK (VALUE > 0);"
        "CREATE DOMAIN typecat.smallposint AS typecat.posint CHECK (VALUE < 100);"
        "CREATE DOMAIN typecat.amount AS numeric(12,2);"
        "CREATE DOMAIN typecat.intlist AS int4[];"
        "CREATE DOMAIN typecat.doc AS jsonb;"
        "CREATE DOMAIN typecat.mybox AS box;"
        "CREATE TYPE typecat.addr AS (n int, street text);"
        "CREATE TYPE typecat.floatrange AS RANGE (subtype = float8);");
  }

  static void TearDownTestSuite() {
    if (server_) server_->Stop();
    server_.reset();
    lock_.reset();
  }

 protected:
  void SetUp() override { ASSERT_TRUE(server_ok_) << "PostgreSQL on port " << kPort; }

  static std::string Dsn() { return server_->Dsn(); }

  static uint32_t TypeOid(Pg& pg, const std::string& type) {
    std::optional<std::string> v = pg.Scalar("SELECT '" + type + "'::regtype::oid::text");
    EXPECT_TRUE(v.has_value()) << type;
    return v ? static_cast<uint32_t>(std::stoul(*v)) : 0;
  }

  static inline std::unique_ptr<itest::FileLock> lock_;
  static inline std::unique_ptr<PgServer> server_;
  static inline bool server_ok_ = false;
};

TEST_F(TypeCatalog, ResolvesEnumDomainsAndArraysOfDomains) {
  Pg pg(Dsn());
  CatalogTypeFetcher fetcher(Dsn());
  std::map<uint32_t, int> fetches;
  TypeResolver resolver([&](uint32_t oid) {
    ++fetches[oid];
    return fetcher(oid);
  });

  struct Row {
    const char* type;
    TypeInfo want;
  };
  const Row rows[] = {
      {"typecat.mood", {K::kText}},
      {"typecat.mood[]", {K::kArray, K::kText, ','}},
      {"typecat.posint", {K::kInteger}},
      {"typecat.smallposint", {K::kInteger}},
      {"typecat.smallposint[]", {K::kArray, K::kInteger, ','}},
      {"typecat.amount", {K::kNumeric}},
      {"typecat.amount[]", {K::kArray, K::kNumeric, ','}},
      {"typecat.intlist", {K::kArray, K::kInteger, ','}},
      {"typecat.intlist[]", {K::kArray, K::kText, ','}},
      {"typecat.doc", {K::kJson}},
      {"typecat.doc[]", {K::kArray, K::kJson, ','}},
      {"typecat.mybox", {K::kText}},
      {"typecat.mybox[]", {K::kArray, K::kText, ';'}},
      {"typecat.addr", {K::kText}},
      {"typecat.addr[]", {K::kArray, K::kText, ','}},
      {"typecat.floatrange", {K::kText}},
      {"typecat.floatrange[]", {K::kArray, K::kText, ','}},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.type);
    uint32_t oid = TypeOid(pg, r.type);
    Result<TypeInfo> got = resolver.Resolve(oid);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->kind, r.want.kind);
    EXPECT_EQ(got->element, r.want.element);
    EXPECT_EQ(got->delimiter, r.want.delimiter);
  }
  // Once per OID, whatever the number of paths that led to it.
  for (const auto& [oid, n] : fetches) EXPECT_EQ(n, 1) << "oid " << oid;
  for (const Row& r : rows) ASSERT_TRUE(resolver.Resolve(TypeOid(pg, r.type)).ok());
  for (const auto& [oid, n] : fetches) EXPECT_EQ(n, 1) << "oid " << oid;
}

// The static table says what pg_type says, and covers every base, range and
// multirange type of pg_catalog and their arrays.
TEST_F(TypeCatalog, BuiltinTableAgreesWithPgType) {
  CatalogTypeFetcher fetcher(Dsn());
  const std::map<std::string, K> kScalars = {
      {"bool", K::kBool},     {"int2", K::kInteger},   {"int4", K::kInteger},
      {"int8", K::kInteger},  {"oid", K::kInteger},    {"float4", K::kFloat},
      {"float8", K::kFloat},  {"numeric", K::kNumeric}, {"json", K::kJson},
      {"jsonb", K::kJson},    {"bytea", K::kBytea}};
  int checked = 0;
  for (uint32_t oid = 1; oid < 16384; ++oid) {
    std::optional<TypeInfo> builtin = pgwire::BuiltinType(oid);
    if (!builtin) continue;
    ++checked;
    Result<PgTypeRow> row = fetcher(oid);
    ASSERT_TRUE(row.ok()) << "oid " << oid << ": " << row.status().ToString();
    SCOPED_TRACE(row->typname);
    if (builtin->kind == K::kArray) {
      EXPECT_EQ(row->typcategory, 'A');
      EXPECT_EQ(row->typlen, -1);
      Result<PgTypeRow> elem = fetcher(row->typelem);
      ASSERT_TRUE(elem.ok());
      std::optional<TypeInfo> elem_builtin = pgwire::BuiltinType(row->typelem);
      ASSERT_TRUE(elem_builtin.has_value()) << elem->typname;
      EXPECT_EQ(builtin->element, elem_builtin->kind);
      EXPECT_EQ(builtin->delimiter, elem->typdelim);
    } else {
      auto it = kScalars.find(row->typname);
      EXPECT_EQ(builtin->kind, it == kScalars.end() ? K::kText : it->second);
      if (row->typcategory == 'A') {
        // Only the "vector" types, whose output is space-separated.
        EXPECT_TRUE(row->typname == "int2vector" || row->typname == "oidvector");
      }
    }
  }
  EXPECT_GT(checked, 150);

  Pg pg(Dsn());
  itest::Rows all = pg.Query(
      "SELECT t.oid::text, t.typname FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem "
      "WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.oid < 10000 "
      "AND t.typtype IN ('b', 'r', 'm') AND (t.typelem = 0 OR e.typtype IN ('b', 'r', 'm'))");
  ASSERT_GT(all.size(), 150u);
  for (const itest::Row& r : all) {
    EXPECT_TRUE(pgwire::BuiltinType(static_cast<uint32_t>(std::stoul(*r[0]))).has_value())
        << *r[1] << " (" << *r[0] << ") missing from the table";
  }
}

// What PostgreSQL prints, through the resolver and AppendValue.
TEST_F(TypeCatalog, PostgresTextBecomesSpecJson) {
  struct Case {
    const char* expr;
    const char* want;
  };
  const Case cases[] = {
      {"true", "true"},
      {"false", "false"},
      {"42::int2", "42"},
      {"-7::int4", "-7"},
      {"9223372036854775807::int8", "9223372036854775807"},
      {"4294967295::oid", "4294967295"},
      {"'NaN'::float8", R"("NaN")"},
      {"'Infinity'::float8", R"("Infinity")"},
      {"'-Infinity'::float4", R"("-Infinity")"},
      {"1e30::float8", "1e+30"},
      {"'-0'::float8", "-0"},
      {"0.1::float4", "0.1"},
      {"1.5e-7::float8", "1.5e-07"},
      {"12.50::numeric", R"("12.50")"},
      {"'NaN'::numeric", R"("NaN")"},
      {"'Infinity'::numeric", R"("Infinity")"},
      {R"('{"a": [1, 2, {"b": null}], "c": "d\"e"}'::jsonb)",
       R"({"a": [1, 2, {"b": null}], "c": "d\"e"})"},
      {"E'{\"x\":\\n 1}'::json", R"({"x":  1})"},
      {R"('\x00ff10'::bytea)", R"("AP8Q")"},
      {R"(''::bytea)", R"("")"},
      {"'happy'::typecat.mood", R"("happy")"},
      {"5::typecat.smallposint", "5"},
      {"12.5::typecat.amount", R"("12.50")"},
      {"ARRAY[1.5, NULL]::typecat.amount[]", R"(["1.50",null])"},
      {"ARRAY['a b', 'with \"q\"', E'back\\\\slash', NULL, 'NULL', '', 'x,y', '{}']::text[]",
       R"(["a b","with \"q\"","back\\slash",null,"NULL","","x,y","{}"])"},
      {"'{{1,2},{3,4}}'::int[]", "[[1,2],[3,4]]"},
      {"'{{{1,2},{3,4}},{{5,6},{7,8}}}'::int8[]", "[[[1,2],[3,4]],[[5,6],[7,8]]]"},
      {"'[0:1]={1,2}'::int[]", "[1,2]"},
      {"'{}'::int[]", "[]"},
      {R"(ARRAY['{"a": 1}'::jsonb, 'null', '"s"', NULL, '[1, "x\\y"]'])",
       R"([{"a": 1},null,"s",null,[1, "x\\y"]])"},
      {"ARRAY[box '((1,2),(3,4))', box '((0,0),(1,1))']", R"x(["(3,4),(1,2)","(1,1),(0,0)"])x"},
      {R"(ARRAY['\x0102'::bytea, ''::bytea, NULL])", R"(["AQI=","",null])"},
      {"'{t,f,NULL}'::bool[]", "[true,false,null]"},
      {"'{NaN,Infinity,-Infinity,1e30,-0}'::float8[]", R"(["NaN","Infinity","-Infinity",1e+30,-0])"},
      {"'{1.50,NaN}'::numeric[]", R"(["1.50","NaN"])"},
      {"'2026-11-23 18:42:00.123456+00'::timestamptz", R"("2026-11-23 18:42:00.123456+00")"},
      {"'2026-11-23 18:42:00'::timestamp", R"("2026-11-23 18:42:00")"},
      {"'2026-11-23'::date", R"("2026-11-23")"},
      {"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", R"("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")"},
      {"'1 day 02:00:00'::interval", R"("1 day 02:00:00")"},
      {"'192.168.0.1/24'::inet", R"("192.168.0.1/24")"},
      {"E'tab\\there\\nnew \"q\" \\\\'::text", R"("tab\there\nnew \"q\" \\")"},
      {"U&'\\00e9\\+01F600'::varchar", "\"\xC3\xA9\xF0\x9F\x98\x80\""},
      {"'(1,2)'::point", R"x("(1,2)")x"},
      {"ROW(1, 'a b')::typecat.addr", R"x("(1,\"a b\")")x"},
      {"ARRAY[ROW(1, 'a b')::typecat.addr]", R"x(["(1,\"a b\")"])x"},
      {"'[1,5)'::int4range", R"x("[1,5)")x"},
      {"ARRAY[int4range(1, 5), NULL]", R"x(["[1,5)",null])x"},
      {"ARRAY['happy'::typecat.mood, 'sad']", R"(["happy","sad"])"},
      {"'{1,2}'::typecat.intlist", "[1,2]"},
      {"ARRAY['{1,2}'::typecat.intlist]", R"(["{1,2}"])"},
      {"'{\"k\": [true]}'::typecat.doc", R"({"k": [true]})"},
      {"ARRAY['{\"k\": 1}'::typecat.doc]", R"([{"k": 1}])"},
      {"ARRAY['((0,0),(1,1))'::typecat.mybox, '((2,2),(3,3))']", R"x(["(1,1),(0,0)","(3,3),(2,2)"])x"},
      {"'1 2'::int2vector", R"("1 2")"},
  };

  Pg pg(Dsn());
  ASSERT_TRUE(pg.Exec("SET timezone = 'UTC'"));
  std::string select = "SELECT ";
  for (size_t i = 0; i < std::size(cases); ++i) {
    if (i != 0) select += ", ";
    select += cases[i].expr;
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(pg.get(), select.c_str()), &PQclear);
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(res.get());
  ASSERT_EQ(PQnfields(res.get()), static_cast<int>(std::size(cases)));

  TypeResolver resolver{CatalogTypeFetcher(Dsn())};
  std::string out;
  out.reserve(4096);
  for (int i = 0; i < PQnfields(res.get()); ++i) {
    SCOPED_TRACE(cases[i].expr);
    Result<TypeInfo> type = resolver.Resolve(PQftype(res.get(), i));
    ASSERT_TRUE(type.ok()) << type.status().ToString();
    std::string_view text(PQgetvalue(res.get(), 0, i),
                          static_cast<size_t>(PQgetlength(res.get(), 0, i)));
    out.clear();
    Status s = AppendValue(&out, *type, text, ValueOptions{});
    ASSERT_TRUE(s.ok()) << s.ToString() << " for text " << text;
    EXPECT_EQ(out, cases[i].want) << "PostgreSQL printed: " << text;
    rapidjson::Document doc;
    doc.Parse(out.data(), out.size());
    EXPECT_FALSE(doc.HasParseError()) << out;
  }
}

TEST_F(TypeCatalog, ByteaEscapeFormatAndOptions) {
  Pg pg(Dsn());
  ASSERT_TRUE(pg.Exec("SET bytea_output = escape"));
  std::unique_ptr<PGresult, decltype(&PQclear)> res(
      PQexec(pg.get(), R"(SELECT '\x00ff10615c7e'::bytea, ARRAY['\x5c01'::bytea], 12.50::numeric,
                               ARRAY[1.5, 'NaN']::numeric[])"),
      &PQclear);
  ASSERT_EQ(PQresultStatus(res.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(res.get());
  EXPECT_STREQ(PQgetvalue(res.get(), 0, 0), R"(\000\377\020a\\~)");

  TypeResolver resolver{CatalogTypeFetcher(Dsn())};
  auto render = [&](int col, const ValueOptions& opt) {
    Result<TypeInfo> type = resolver.Resolve(PQftype(res.get(), col));
    EXPECT_TRUE(type.ok());
    std::string out;
    Status s = AppendValue(&out, *type, PQgetvalue(res.get(), 0, col), opt);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  };
  EXPECT_EQ(render(0, {}), R"("AP8QYVx+")");
  EXPECT_EQ(render(0, {.bytea_hex = true}), R"("00ff10615c7e")");
  EXPECT_EQ(render(1, {}), R"(["XAE="])");
  EXPECT_EQ(render(1, {.bytea_hex = true}), R"(["5c01"])");
  EXPECT_EQ(render(2, {.numeric_as_number = true}), "12.50");
  EXPECT_EQ(render(3, {.numeric_as_number = true}), R"([1.5,"NaN"])");
}

TEST_F(TypeCatalog, UnknownOidIsCorruption) {
  CatalogTypeFetcher fetcher(Dsn());
  Result<PgTypeRow> row = fetcher(4000000000u);
  ASSERT_FALSE(row.ok());
  EXPECT_EQ(row.status().code(), Code::kCorruption);
  EXPECT_EQ(row.status().message(), "type oid 4000000000 not in pg_type");
}

TEST_F(TypeCatalog, UnreachableServerIsUnavailable) {
  // A loopback port nothing listens on (PostgreSQL's own is 55498).
  CatalogTypeFetcher fetcher("host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=3");
  Result<PgTypeRow> row = fetcher(16);
  ASSERT_FALSE(row.ok());
  EXPECT_EQ(row.status().code(), Code::kUnavailable) << row.status().ToString();
  EXPECT_EQ(row.status().message().find('\n'), std::string::npos);
}

TEST_F(TypeCatalog, ReplicationDsnGetsAnOrdinarySession) {
  CatalogTypeFetcher fetcher(Dsn() + " replication=database");
  Result<PgTypeRow> row = fetcher(23);
  ASSERT_TRUE(row.ok()) << row.status().ToString();
  EXPECT_EQ(row->typname, "int4");
  EXPECT_EQ(row->typtype, 'b');
  EXPECT_EQ(row->typlen, 4);
}

TEST_F(TypeCatalog, ReconnectsAfterTheSessionIsKilled) {
  CatalogTypeFetcher fetcher(Dsn() + " application_name=walbus-catalog-itest");
  ASSERT_TRUE(fetcher(16).ok());
  Pg pg(Dsn());
  ASSERT_TRUE(pg.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'walbus-catalog-itest'"));
  Result<PgTypeRow> broken = fetcher(17);
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().code(), Code::kUnavailable) << broken.status().ToString();
  Result<PgTypeRow> again = fetcher(17);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->typname, "bytea");
}

}  // namespace
}  // namespace walbus
