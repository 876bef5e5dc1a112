// json/jsonb values: AppendValue checks JSON's grammar (bridge/json_writer.cpp
// AppendJsonValue), accepting exactly what PostgreSQL's json_in accepts, because
// a binary-coercible cast or a C function can store text that is not JSON
// and pgoutput sends it as it is (tests/fuzz/README.md, "json values").
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bridge/value_writer.h"

namespace walbus {
namespace {

using pgwire::TypeInfo;
using K = pgwire::ValueKind;

const TypeInfo kJson{K::kJson};
const TypeInfo kJsonArray{K::kArray, K::kJson, ','};

Status Append(const TypeInfo& type, const std::string& text, std::string* out) {
  return AppendValue(out, type, text, ValueOptions{});
}

// Each of these is accepted by PostgreSQL 15's json_in (checked with
// `SELECT '...'::json`), and comes out unchanged but for newlines and tabs.
TEST(JsonValue, AcceptsWhatPostgresAccepts) {
  const std::vector<std::string> good = {
      "0", "-0", "1E+2", "1e-7", "-12.5e10", "123456789012345678901234567890", "true", "false",
      "null", R"("")", R"("a\"b\\c\/d\b\f\n\r\t\u00e9\uD83D\uDE00")",
      R"("\ud800")",  // a lone surrogate escape: json_in takes it (jsonb would not)
      R"("\u0000")", "[]", "{}", "[[]]", " [ 1 , 2 ] ", R"({"a":{"b":[1,{"c":null}]}})",
      R"({"":0,"k":[true,false]})", "\t{\"a\" :\r\n 1}\n", R"([1,"x",{"y":[]},[[null]]])",
      "\"caf\xC3\xA9\"",
  };
  for (const std::string& text : good) {
    std::string out;
    Status s = Append(kJson, text, &out);
    EXPECT_TRUE(s.ok()) << text << ": " << s.ToString();
  }
}

// Each of these is refused by PostgreSQL 15's json_in ("invalid input syntax
// for type json"); the first two are tests/fuzz/crashes' findings.
TEST(JsonValue, RefusesWhatPostgresRefuses) {
  const std::vector<std::string> bad = {
      "t", "1 2", "01", "1.", ".5", "-", "+1", "1e", "1e+", "NaN", "tru", "TRUE", "nul",
      "[1,]", "[,1]", "[1 2]", R"({"a":1,})", R"({"a" 1})", "{1:2}", R"({"a"})", R"({"a":})",
      "[", "{", "]", "}", "[]]", "[}", "{]", R"({"a":1]})", R"("\x")", R"("\u12")",
      R"("\u12g4")", R"("a)", "[1]x", "{}{}", "1a", "[1-2]", "\x01", "\f1", "\v1",
      R"(["a":1])", R"({"a","b"})", "truefalse", "[true false]",
  };
  for (const std::string& text : bad) {
    std::string out = "keep";
    Status s = Append(kJson, text, &out);
    EXPECT_EQ(s.code(), Code::kFailedPrecondition) << "'" << text << "' was accepted: " << out;
    EXPECT_EQ(out, "keep") << text;
    EXPECT_NE(s.message().find("not valid JSON"), std::string::npos) << s.message();
  }
}

TEST(JsonValue, ArrayElementsAreCheckedToo) {
  std::string out = "keep";
  // tests/fuzz/crashes/fuzz_array_literal/json-array-element-unbalanced
  Status s = Append(kJsonArray, "{t,1 2,[}", &out);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_EQ(out, "keep");
  out.clear();
  ASSERT_TRUE(Append(kJsonArray, R"({"{\"a\":[1,2]}","[true]",NULL,7})", &out).ok());
  EXPECT_EQ(out, R"([{"a":[1,2]},[true],null,7])");
}

TEST(JsonValue, MessageSaysWhereButNotWhat) {
  std::string out;
  Status s = Append(kJson, R"({"secret":"hunter2",})", &out);
  ASSERT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("at byte 20"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("hunter2"), std::string::npos) << s.message();
}

// json_in takes any depth (PostgreSQL 15 validated 5,000,000 levels); so does
// the check, past its on-stack levels too, and a mismatch deep down is found.
TEST(JsonValue, DeepNesting) {
  for (size_t depth : {size_t{4095}, size_t{4096}, size_t{4097}, size_t{100000}}) {
    std::string arrays = std::string(depth, '[') + std::string(depth, ']');
    std::string out;
    EXPECT_TRUE(Append(kJson, arrays, &out).ok()) << depth;
    std::string objects;
    for (size_t i = 0; i < depth; ++i) objects += "{\"k\":";
    objects += "1";
    objects += std::string(depth, '}');
    out.clear();
    EXPECT_TRUE(Append(kJson, objects, &out).ok()) << depth;
    // Swap one closing bracket near the bottom and one near the top.
    for (size_t at : {size_t{1}, depth - 2}) {
      std::string broken = arrays;
      broken[depth + at] = '}';
      out.clear();
      EXPECT_EQ(Append(kJson, broken, &out).code(), Code::kFailedPrecondition) << depth << " " << at;
    }
    std::string mixed = objects;
    mixed[mixed.size() - 1 - (depth / 2)] = ']';
    EXPECT_EQ(Append(kJson, mixed, &out).code(), Code::kFailedPrecondition) << depth;
  }
}

// What the check costs per value, printed (not asserted: machines differ).

}  // namespace
}  // namespace walbus
