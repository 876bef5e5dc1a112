#include "pgwire/type_map.h"

#include <gtest/gtest.h>

#include <map>
#include <ostream>

namespace walbus::pgwire {

// For readable gtest failures (found by ADL, so outside the anonymous namespace).
void PrintTo(const TypeInfo& t, std::ostream* os) {
  *os << ValueKindName(t.kind);
  if (t.kind == ValueKind::kArray) *os << " of " << ValueKindName(t.element) << " '" << t.delimiter << "'";
}

namespace {

using K = ValueKind;

TEST(TypeMap, BuiltinTypesFollowSpecTable) {
  struct Row {
    uint32_t oid;
    const char* name;
    TypeInfo want;
  };
  const Row rows[] = {
      {16, "bool", {K::kBool}},
      {21, "int2", {K::kInteger}},
      {23, "int4", {K::kInteger}},
      {20, "int8", {K::kInteger}},
      {26, "oid", {K::kInteger}},
      {700, "float4", {K::kFloat}},
      {701, "float8", {K::kFloat}},
      {1700, "numeric", {K::kNumeric}},
      {114, "json", {K::kJson}},
      {3802, "jsonb", {K::kJson}},
      {17, "bytea", {K::kBytea}},
      {1000, "_bool", {K::kArray, K::kBool, ','}},
      {1005, "_int2", {K::kArray, K::kInteger, ','}},
      {1007, "_int4", {K::kArray, K::kInteger, ','}},
      {1016, "_int8", {K::kArray, K::kInteger, ','}},
      {1028, "_oid", {K::kArray, K::kInteger, ','}},
      {1021, "_float4", {K::kArray, K::kFloat, ','}},
      {1022, "_float8", {K::kArray, K::kFloat, ','}},
      {1231, "_numeric", {K::kArray, K::kNumeric, ','}},
      {199, "_json", {K::kArray, K::kJson, ','}},
      {3807, "_jsonb", {K::kArray, K::kJson, ','}},
      {1001, "_bytea", {K::kArray, K::kBytea, ','}},
      {25, "text", {K::kText}},
      {1043, "varchar", {K::kText}},
      {1042, "bpchar", {K::kText}},
      {19, "name", {K::kText}},
      {18, "char", {K::kText}},
      {2950, "uuid", {K::kText}},
      {1082, "date", {K::kText}},
      {1083, "time", {K::kText}},
      {1266, "timetz", {K::kText}},
      {1114, "timestamp", {K::kText}},
      {1184, "timestamptz", {K::kText}},
      {1186, "interval", {K::kText}},
      {869, "inet", {K::kText}},
      {650, "cidr", {K::kText}},
      {829, "macaddr", {K::kText}},
      {142, "xml", {K::kText}},
      {790, "money", {K::kText}},
      {1560, "bit", {K::kText}},
      {1562, "varbit", {K::kText}},
      {3614, "tsvector", {K::kText}},
      {600, "point", {K::kText}},
      {603, "box", {K::kText}},
      {3904, "int4range", {K::kText}},
      {3220, "pg_lsn", {K::kText}},
      {22, "int2vector (prints as '1 2', not an array)", {K::kText}},
      {30, "oidvector", {K::kText}},
      {1009, "_text", {K::kArray, K::kText, ','}},
      {1015, "_varchar", {K::kArray, K::kText, ','}},
      {2951, "_uuid", {K::kArray, K::kText, ','}},
      {1185, "_timestamptz", {K::kArray, K::kText, ','}},
      {1017, "_point", {K::kArray, K::kText, ','}},
      {1020, "_box", {K::kArray, K::kText, ';'}},
      {143, "_xml", {K::kArray, K::kText, ','}},
      {1006, "_int2vector", {K::kArray, K::kText, ','}},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.name);
    std::optional<TypeInfo> got = BuiltinType(r.oid);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, r.want);
  }
}

TEST(TypeMap, UnknownOidsAreNotBuiltin) {
  for (uint32_t oid : {0u, 1u, 15u, 99u, 16384u, 16385u, 999999u, 4294967295u}) {
    EXPECT_FALSE(BuiltinType(oid).has_value()) << oid;
  }
}

// A fake pg_type: rows by OID, counting the lookups.
class FakeCatalog {
 public:
  void Add(PgTypeRow row) { rows_[row.oid] = std::move(row); }
  TypeResolver::Fetch AsFetch() {
    return [this](uint32_t oid) -> Result<PgTypeRow> {
      ++calls_[oid];
      if (fail_.count(oid) != 0) return fail_[oid];
      auto it = rows_.find(oid);
      if (it == rows_.end()) {
        return Status::Corruption("type oid " + std::to_string(oid) + " not in pg_type");
      }
      return it->second;
    };
  }
  std::map<uint32_t, PgTypeRow> rows_;
  std::map<uint32_t, int> calls_;
  std::map<uint32_t, Status> fail_;
};

PgTypeRow Domain(uint32_t oid, uint32_t base, const char* name) {
  return PgTypeRow{oid, 'd', base, 0, 'N', ',', name, 4};
}
PgTypeRow ArrayOf(uint32_t oid, uint32_t elem, const char* name) {
  return PgTypeRow{oid, 'b', 0, elem, 'A', ',', name, -1};
}

TEST(TypeMap, ResolverBuiltinsNeedNoCatalog) {
  FakeCatalog cat;
  TypeResolver r(cat.AsFetch());
  Result<TypeInfo> t = r.Resolve(23);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->kind, K::kInteger);
  Result<TypeInfo> a = r.Resolve(1020);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, (TypeInfo{K::kArray, K::kText, ';'}));
  EXPECT_TRUE(cat.calls_.empty());
}

TEST(TypeMap, ResolverDomainOverDomainOverInt4) {
  FakeCatalog cat;
  cat.Add(Domain(16400, 23, "positive_int"));
  cat.Add(Domain(16401, 16400, "small_positive_int"));
  TypeResolver r(cat.AsFetch());
  Result<TypeInfo> t = r.Resolve(16401);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(*t, TypeInfo{K::kInteger});
  EXPECT_EQ(cat.calls_[16401], 1);
  EXPECT_EQ(cat.calls_[16400], 1);
  // The inner domain was cached on the way.
  ASSERT_TRUE(r.Resolve(16400).ok());
  EXPECT_EQ(cat.calls_[16400], 1);
}

TEST(TypeMap, ResolverEnumIsText) {
  FakeCatalog cat;
  cat.Add(PgTypeRow{16500, 'e', 0, 0, 'E', ',', "mood", 4});
  cat.Add(ArrayOf(16499, 16500, "_mood"));
  TypeResolver r(cat.AsFetch());
  Result<TypeInfo> t = r.Resolve(16500);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, TypeInfo{K::kText});
  Result<TypeInfo> a = r.Resolve(16499);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, (TypeInfo{K::kArray, K::kText, ','}));
}

TEST(TypeMap, ResolverArrayOfDomainOverNumeric) {
  FakeCatalog cat;
  cat.Add(Domain(16600, 1700, "money_amount"));
  cat.Add(ArrayOf(16599, 16600, "_money_amount"));
  TypeResolver r(cat.AsFetch());
  Result<TypeInfo> t = r.Resolve(16599);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(*t, (TypeInfo{K::kArray, K::kNumeric, ','}));
}

TEST(TypeMap, ResolverDomainOverArrayIsArray) {
  FakeCatalog cat;
  cat.Add(Domain(16700, 1007, "int_list"));
  cat.Add(Domain(16701, 1020, "boxes"));
  TypeResolver r(cat.AsFetch());
  EXPECT_EQ(*r.Resolve(16700), (TypeInfo{K::kArray, K::kInteger, ','}));
  EXPECT_EQ(*r.Resolve(16701), (TypeInfo{K::kArray, K::kText, ';'}));
}

TEST(TypeMap, ResolverArrayUsesElementDelimiter) {
  FakeCatalog cat;
  cat.Add(PgTypeRow{16800, 'b', 0, 0, 'U', ';', "semi_type", -1});
  cat.Add(ArrayOf(16801, 16800, "_semi_type"));
  // A domain copies its base type's typdelim, so an array of a domain over
  // box is ';'-delimited too.
  cat.Add(PgTypeRow{16802, 'd', 603, 0, 'G', ';', "my_box", 32});
  cat.Add(ArrayOf(16803, 16802, "_my_box"));
  TypeResolver r(cat.AsFetch());
  EXPECT_EQ(*r.Resolve(16801), (TypeInfo{K::kArray, K::kText, ';'}));
  EXPECT_EQ(*r.Resolve(16803), (TypeInfo{K::kArray, K::kText, ';'}));
  EXPECT_EQ(*r.Resolve(16802), TypeInfo{K::kText});
}

TEST(TypeMap, ResolverOtherTypesAreText) {
  FakeCatalog cat;
  cat.Add(PgTypeRow{16900, 'c', 0, 0, 'C', ',', "address", -1});          // composite
  cat.Add(PgTypeRow{16901, 'r', 0, 0, 'R', ',', "floatrange", -1});       // range
  cat.Add(PgTypeRow{16902, 'm', 0, 0, 'R', ',', "floatmultirange", -1});  // multirange
  cat.Add(PgTypeRow{16903, 'b', 0, 0, 'S', ',', "citext", -1});           // extension base type
  cat.Add(PgTypeRow{16904, 'b', 0, 701, 'G', ',', "fixed_pair", 16});     // typelem, fixed length
  cat.Add(ArrayOf(16905, 16900, "_address"));
  TypeResolver r(cat.AsFetch());
  for (uint32_t oid : {16900u, 16901u, 16902u, 16903u, 16904u}) {
    Result<TypeInfo> t = r.Resolve(oid);
    ASSERT_TRUE(t.ok()) << oid;
    EXPECT_EQ(*t, TypeInfo{K::kText}) << oid;
  }
  EXPECT_EQ(*r.Resolve(16905), (TypeInfo{K::kArray, K::kText, ','}));
}

TEST(TypeMap, ResolverArrayOfDomainOverArrayHasTextElements) {
  FakeCatalog cat;
  cat.Add(Domain(17000, 1007, "int_list"));
  cat.Add(ArrayOf(17001, 17000, "_int_list"));
  TypeResolver r(cat.AsFetch());
  EXPECT_EQ(*r.Resolve(17001), (TypeInfo{K::kArray, K::kText, ','}));
}

TEST(TypeMap, ResolverCachesEveryAnswer) {
  FakeCatalog cat;
  cat.Add(Domain(17100, 20, "id"));
  cat.Add(PgTypeRow{17101, 'e', 0, 0, 'E', ',', "color", 4});
  TypeResolver r(cat.AsFetch());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(r.Resolve(17100).ok());
    ASSERT_TRUE(r.Resolve(17101).ok());
  }
  EXPECT_EQ(cat.calls_[17100], 1);
  EXPECT_EQ(cat.calls_[17101], 1);
  EXPECT_EQ(cat.calls_.size(), 2u);
}

TEST(TypeMap, ResolverPropagatesFetchErrorsAndRetries) {
  FakeCatalog cat;
  cat.Add(Domain(17200, 23, "d"));
  cat.fail_[17200] = Status::Unavailable("catalog connection: connection refused");
  TypeResolver r(cat.AsFetch());
  Result<TypeInfo> t = r.Resolve(17200);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kUnavailable);
  EXPECT_EQ(t.status().message(), "catalog connection: connection refused");
  // Errors are not cached: the server is back, the next call asks again.
  cat.fail_.clear();
  Result<TypeInfo> again = r.Resolve(17200);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->kind, K::kInteger);
  EXPECT_EQ(cat.calls_[17200], 2);
}

TEST(TypeMap, ResolverPropagatesErrorsFromDeeperLinks) {
  FakeCatalog cat;
  cat.Add(Domain(17300, 17399, "dangling"));  // base type missing
  cat.Add(ArrayOf(17301, 17300, "_dangling"));
  TypeResolver r(cat.AsFetch());
  Result<TypeInfo> t = r.Resolve(17301);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kCorruption);
  EXPECT_EQ(t.status().message(), "type oid 17399 not in pg_type");
}

TEST(TypeMap, ResolverRejectsBadCatalogAnswers) {
  FakeCatalog cat;
  cat.Add(Domain(17400, 17401, "a"));
  cat.Add(Domain(17401, 17400, "b"));               // a cycle
  cat.Add(Domain(17402, 0, "no_base"));
  cat.rows_[17403] = PgTypeRow{17404, 'b', 0, 0, 'S', ',', "wrong_oid", -1};
  TypeResolver r(cat.AsFetch());
  for (uint32_t oid : {17400u, 17402u, 17403u}) {
    Result<TypeInfo> t = r.Resolve(oid);
    ASSERT_FALSE(t.ok()) << oid;
    EXPECT_EQ(t.status().code(), Code::kCorruption) << oid;
  }
}

}  // namespace
}  // namespace walbus::pgwire
