#include "bridge/value_writer.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/encodings.h>
#include <rapidjson/error/en.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace walbus {
namespace {

using pgwire::TypeInfo;
using K = pgwire::ValueKind;

const TypeInfo kText{K::kText};
const TypeInfo kBool{K::kBool};
const TypeInfo kInt{K::kInteger};
const TypeInfo kFloat{K::kFloat};
const TypeInfo kNumeric{K::kNumeric};
const TypeInfo kJson{K::kJson};
const TypeInfo kBytea{K::kBytea};
TypeInfo ArrayOf(K element, char delimiter = ',') { return TypeInfo{K::kArray, element, delimiter}; }

const ValueOptions kDefault{};
const ValueOptions kNumbers{.numeric_as_number = true};
const ValueOptions kHex{.bytea_hex = true};

struct Row {
  const char* what;
  TypeInfo type;
  std::string text;
  ValueOptions opt;
  std::string want;
};

void CheckRows(const std::vector<Row>& rows) {
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    std::string out = "prefix:";
    Status s = AppendValue(&out, r.type, r.text, r.opt);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(out, "prefix:" + r.want);
  }
}

// One row per line of SPEC §3's table, with the text pgoutput sends.
TEST(ValueWriter, SpecTable) {
  CheckRows({
      {"bool true", kBool, "t", kDefault, "true"},
      {"bool false", kBool, "f", kDefault, "false"},
      {"int2", kInt, "-32768", kDefault, "-32768"},
      {"int4", kInt, "42", kDefault, "42"},
      {"int8", kInt, "9223372036854775807", kDefault, "9223372036854775807"},
      {"int8 min", kInt, "-9223372036854775808", kDefault, "-9223372036854775808"},
      {"oid", kInt, "4294967295", kDefault, "4294967295"},
      {"zero", kInt, "0", kDefault, "0"},
      {"float8", kFloat, "3.14159", kDefault, "3.14159"},
      {"float4", kFloat, "0.1", kDefault, "0.1"},
      {"float NaN", kFloat, "NaN", kDefault, R"("NaN")"},
      {"float Infinity", kFloat, "Infinity", kDefault, R"("Infinity")"},
      {"float -Infinity", kFloat, "-Infinity", kDefault, R"("-Infinity")"},
      {"numeric as string", kNumeric, "12.50", kDefault, R"("12.50")"},
      {"numeric as number", kNumeric, "12.50", kNumbers, "12.50"},
      {"numeric NaN as string", kNumeric, "NaN", kDefault, R"("NaN")"},
      {"numeric NaN with numbers", kNumeric, "NaN", kNumbers, R"("NaN")"},
      {"json", kJson, R"({"a": 1})", kDefault, R"({"a": 1})"},
      {"jsonb", kJson, R"({"a": [1, 2, {"b": null}], "c": "d"})", kDefault,
       R"({"a": [1, 2, {"b": null}], "c": "d"})"},
      {"int4[]", ArrayOf(K::kInteger), "{1,2,NULL}", kDefault, "[1,2,null]"},
      {"bytea", kBytea, "\\x0a1bff", kDefault, R"("Chv/")"},
      {"bytea hex", kBytea, "\\x0a1bff", kHex, R"("0a1bff")"},
      {"enum (text)", kText, "happy", kDefault, R"("happy")"},
      {"text", kText, "hello \"world\"", kDefault, R"("hello \"world\"")"},
      {"varchar", kText, "x", kDefault, R"("x")"},
      {"uuid", kText, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", kDefault,
       R"("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")"},
      {"date", kText, "2026-11-23", kDefault, R"("2026-11-23")"},
      {"time", kText, "18:42:00.123456", kDefault, R"("18:42:00.123456")"},
      {"timestamp", kText, "2026-11-23 18:42:00.123456", kDefault,
       R"("2026-11-23 18:42:00.123456")"},
      {"timestamptz", kText, "2026-11-23 18:42:00.123456+00", kDefault,
       R"("2026-11-23 18:42:00.123456+00")"},
      {"interval", kText, "1 year 2 mons 3 days 04:05:06", kDefault,
       R"("1 year 2 mons 3 days 04:05:06")"},
      {"inet", kText, "192.168.0.1/24", kDefault, R"("192.168.0.1/24")"},
      {"money", kText, "$1,000.00", kDefault, R"("$1,000.00")"},
      {"xml", kText, "<a x=\"1\">\n</a>", kDefault, R"("<a x=\"1\">\n</a>")"},
  });
}

TEST(ValueWriter, FloatEdgeCases) {
  CheckRows({
      {"-0", kFloat, "-0", kDefault, "-0"},
      {"1e+30", kFloat, "1e+30", kDefault, "1e+30"},
      {"1.5e-07", kFloat, "1.5e-07", kDefault, "1.5e-07"},
      {"-1.7976931348623157e+308", kFloat, "-1.7976931348623157e+308", kDefault,
       "-1.7976931348623157e+308"},
      {"5e-324", kFloat, "5e-324", kDefault, "5e-324"},
      {"1E5 upper case", kFloat, "1E5", kDefault, "1E5"},
      {"float[] specials", ArrayOf(K::kFloat), "{NaN,Infinity,-Infinity,1e+30,-0,1.5e-07,NULL}",
       kDefault, R"(["NaN","Infinity","-Infinity",1e+30,-0,1.5e-07,null])"},
  });
}

TEST(ValueWriter, NumericEdgeCases) {
  CheckRows({
      {"big exact", kNumeric, "123456789012345678901234567890.000000000000000000001", kDefault,
       R"("123456789012345678901234567890.000000000000000000001")"},
      {"big as number", kNumeric, "123456789012345678901234567890.5", kNumbers,
       "123456789012345678901234567890.5"},
      {"negative", kNumeric, "-0.001", kNumbers, "-0.001"},
      {"Infinity", kNumeric, "Infinity", kNumbers, R"("Infinity")"},
      {"-Infinity", kNumeric, "-Infinity", kDefault, R"("-Infinity")"},
      {"numeric[] strings", ArrayOf(K::kNumeric), "{1.50,NaN,NULL,-2}", kDefault,
       R"(["1.50","NaN",null,"-2"])"},
      {"numeric[] numbers", ArrayOf(K::kNumeric), "{1.50,NaN,NULL,-2}", kNumbers,
       R"([1.50,"NaN",null,-2])"},
  });
}

TEST(ValueWriter, JsonIsEmbedded) {
  CheckRows({
      {"scalar string", kJson, R"("just a string")", kDefault, R"("just a string")"},
      {"scalar number", kJson, "42", kDefault, "42"},
      {"null", kJson, "null", kDefault, "null"},
      {"nested jsonb", kJson, R"({"a": {"b": {"c": [1, "x\"y", {"d": true}]}}})", kDefault,
       R"({"a": {"b": {"c": [1, "x\"y", {"d": true}]}}})"},
      {"json keeps its whitespace but not its newlines", kJson, "{\n  \"a\": 1\n}", kDefault,
       "{   \"a\": 1 }"},
      {"unicode", kJson, "{\"k\": \"\xC3\xA9\xF0\x9F\x98\x80\", \"u\": \"\\u00e9\"}", kDefault,
       "{\"k\": \"\xC3\xA9\xF0\x9F\x98\x80\", \"u\": \"\\u00e9\"}"},
      {"jsonb[] elements embedded", ArrayOf(K::kJson),
       R"({"{\"a\": [1, 2]}","null","\"s\"",NULL,1,true,"[]"})", kDefault,
       R"([{"a": [1, 2]},null,"s",null,1,true,[]])"},
      {"json[] with backslash in a string", ArrayOf(K::kJson), R"({"{\"p\": \"C:\\\\x\"}"})",
       kDefault, R"([{"p": "C:\\x"}])"},
  });
}

TEST(ValueWriter, Bytea) {
  CheckRows({
      {"empty hex", kBytea, "\\x", kDefault, R"("")"},
      {"empty hex as hex", kBytea, "\\x", kHex, R"("")"},
      {"empty escape", kBytea, "", kDefault, R"("")"},
      {"1 byte", kBytea, "\\x66", kDefault, R"("Zg==")"},
      {"2 bytes", kBytea, "\\x666f", kDefault, R"("Zm8=")"},
      {"3 bytes", kBytea, "\\x666f6f", kDefault, R"("Zm9v")"},
      {"foobar", kBytea, "\\x666f6f626172", kDefault, R"("Zm9vYmFy")"},
      {"all bits", kBytea, "\\x00fbff", kDefault, R"("APv/")"},
      {"upper-case hex input", kBytea, "\\xDEADbeef", kHex, R"("deadbeef")"},
      {"upper-case hex to base64", kBytea, "\\xDEADBEEF", kDefault, R"("3q2+7w==")"},
      {"escape format", kBytea, R"(\000\001ab\\\377 ~)", kDefault, R"("AAFhYlz/IH4=")"},
      {"escape format as hex", kBytea, R"(\000\001ab\\\377 ~)", kHex, R"("000161625cff207e")"},
      {"escape printable", kBytea, "foobar", kDefault, R"("Zm9vYmFy")"},
      {"bytea[] hex", ArrayOf(K::kBytea), R"({"\\x0102","\\x",NULL})", kDefault,
       R"(["AQI=","",null])"},
      {"bytea[] escape", ArrayOf(K::kBytea), R"({"a\\\\b","\\001"})", kHex, R"(["615c62","01"])"},
  });
}

TEST(ValueWriter, Arrays) {
  CheckRows({
      {"empty", ArrayOf(K::kInteger), "{}", kDefault, "[]"},
      {"empty text", ArrayOf(K::kText), "{}", kDefault, "[]"},
      {"text with NULL, quotes, escapes, commas, braces", ArrayOf(K::kText),
       R"({"a b","with \"quote\"","back\\slash",NULL,"NULL","","x,y","{}",plain})", kDefault,
       R"(["a b","with \"quote\"","back\\slash",null,"NULL","","x,y","{}","plain"])"},
      {"2-D", ArrayOf(K::kInteger), "{{1,2},{3,4}}", kDefault, "[[1,2],[3,4]]"},
      {"3-D", ArrayOf(K::kInteger), "{{{1,2},{3,4}},{{5,6},{7,NULL}}}", kDefault,
       "[[[1,2],[3,4]],[[5,6],[7,null]]]"},
      {"decorated bounds", ArrayOf(K::kInteger), "[0:1]={1,2}", kDefault, "[1,2]"},
      {"decorated 2-D bounds", ArrayOf(K::kText), "[1:1][-2:-1]={{a,b}}", kDefault,
       R"([["a","b"]])"},
      {"bool[]", ArrayOf(K::kBool), "{t,f,NULL}", kDefault, "[true,false,null]"},
      {"bool[][]", ArrayOf(K::kBool), "{{t},{f}}", kDefault, "[[true],[false]]"},
      {"box[] with ';'", ArrayOf(K::kText, ';'), "{(3,4),(1,2);(1,1),(0,0)}", kDefault,
       R"x(["(3,4),(1,2)","(1,1),(0,0)"])x"},
      {"timestamptz[]", ArrayOf(K::kText), R"({"2026-11-23 18:42:00+00",NULL})", kDefault,
       R"(["2026-11-23 18:42:00+00",null])"},
      {"composite[] element stays a string", ArrayOf(K::kText), R"x({"(1,\"a b\")"})x", kDefault,
       R"x(["(1,\"a b\")"])x"},
      {"control characters and unicode", ArrayOf(K::kText), "{\"tab\there\",\xC3\xA9}", kDefault,
       "[\"tab\\there\",\"\xC3\xA9\"]"},
      {"int8[]", ArrayOf(K::kInteger), "{-9223372036854775808,0}", kDefault,
       "[-9223372036854775808,0]"},
  });
}

TEST(ValueWriter, TextEscapingAndUtf8) {
  std::string all_controls;
  std::string want = "\"";
  for (int c = 0; c < 0x20; ++c) {
    all_controls.push_back(static_cast<char>(c));
    static const char* const kShort[] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                         nullptr, nullptr, "\\b", "\\t", "\\n", nullptr, "\\f",
                                         "\\r"};
    if (c < 14 && kShort[c] != nullptr) {
      want += kShort[c];
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      want += buf;
    }
  }
  want += "\"";
  CheckRows({
      {"every control character", kText, all_controls, kDefault, want},
      {"emoji", kText, "\xF0\x9F\x98\x80\xF0\x9F\x8E\x89", kDefault,
       "\"\xF0\x9F\x98\x80\xF0\x9F\x8E\x89\""},
      {"invalid UTF-8 replaced", kText, "ok\xFF\xC0\xAFok", kDefault,
       "\"ok\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDok\""},
      {"DEL passes", kText, "\x7f", kDefault, "\"\x7f\""},
  });
}

TEST(ValueWriter, MalformedTextIsRefusedAndLeavesOutputAlone) {
  struct Bad {
    const char* what;
    TypeInfo type;
    std::string text;
    ValueOptions opt;
  };
  const Bad rows[] = {
      {"bool word", kBool, "true", kDefault},
      {"bool empty", kBool, "", kDefault},
      {"bool T", kBool, "T", kDefault},
      {"int empty", kInt, "", kDefault},
      {"int letters", kInt, "12a", kDefault},
      {"int plus", kInt, "+1", kDefault},
      {"int leading zero", kInt, "01", kDefault},
      {"int minus alone", kInt, "-", kDefault},
      {"int decimal", kInt, "1.0", kDefault},
      {"int space", kInt, " 1", kDefault},
      {"float empty", kFloat, "", kDefault},
      {"float nan lower", kFloat, "nan", kDefault},
      {"float inf", kFloat, "inf", kDefault},
      {"float dot first", kFloat, ".5", kDefault},
      {"float dot last", kFloat, "5.", kDefault},
      {"float exp empty", kFloat, "1e", kDefault},
      {"float exp sign only", kFloat, "1e+", kDefault},
      {"float hex", kFloat, "0x10", kDefault},
      {"numeric garbage", kNumeric, "12,50", kDefault},
      {"numeric garbage as number", kNumeric, "1..2", kNumbers},
      {"numeric +Infinity", kNumeric, "+Infinity", kNumbers},
      {"json empty", kJson, "", kDefault},
      {"json open string", kJson, R"({"a": "b)", kDefault},
      {"json control outside string", kJson, "{\x01}", kDefault},
      {"bytea odd hex", kBytea, "\\x123", kDefault},
      {"bytea bad hex", kBytea, "\\x1g", kDefault},
      {"bytea bad hex as hex", kBytea, "\\xzz", kHex},
      {"bytea bad escape", kBytea, "a\\9bc", kDefault},
      {"bytea short octal", kBytea, "\\12", kDefault},
      {"bytea octal above 377", kBytea, "\\400", kDefault},
      {"bytea lone backslash", kBytea, "abc\\", kDefault},
      {"array unterminated", ArrayOf(K::kInteger), "{1,2", kDefault},
      {"array not an array", ArrayOf(K::kText), "abc", kDefault},
      {"array bad int element", ArrayOf(K::kInteger), "{1,x,3}", kDefault},
      {"array bad bool element", ArrayOf(K::kBool), "{t,true}", kDefault},
      {"array bad float element", ArrayOf(K::kFloat), R"({"1.0 "})", kDefault},
      {"array bad json element", ArrayOf(K::kJson), R"({"\"open"})", kDefault},
      {"array bad bytea element", ArrayOf(K::kBytea), R"({"\\x1"})", kDefault},
  };
  for (const Bad& r : rows) {
    SCOPED_TRACE(r.what);
    std::string out = "keep";
    Status s = AppendValue(&out, r.type, r.text, r.opt);
    ASSERT_FALSE(s.ok());
    // Text no json column can hold is bad stored data (it got past json_in),
    // anything else bytes PostgreSQL cannot have sent.
    bool json = std::string_view(r.what).find("json") != std::string_view::npos;
    EXPECT_EQ(s.code(), json ? Code::kFailedPrecondition : Code::kCorruption) << s.ToString();
    EXPECT_EQ(out, "keep");
    // The message names the kind, never the value.
    if (r.text.size() >= 3) {
      EXPECT_EQ(s.message().find(r.text), std::string::npos) << s.message();
    }
  }
}

TEST(ValueWriter, ReusedBufferDoesNotGrow) {
  std::string out;
  out.reserve(4096);
  const char* before = out.data();
  for (int i = 0; i < 1000; ++i) {
    out.clear();
    ASSERT_TRUE(AppendValue(&out, kInt, "123456", kDefault).ok());
    ASSERT_TRUE(AppendValue(&out, kText, "some text with \"quotes\"\n", kDefault).ok());
    ASSERT_TRUE(AppendValue(&out, ArrayOf(K::kJson), R"({"{\"a\": 1}",NULL})", kDefault).ok());
    ASSERT_TRUE(AppendValue(&out, kBytea, "\\x0102030405", kDefault).ok());
  }
  EXPECT_EQ(out.data(), before);
  EXPECT_EQ(out, R"(123456"some text with \"quotes\"\n"[{"a": 1},null]"AQIDBAU=")");
}

// Random text, biased towards the characters that matter to the parsers:
// whatever comes in, the result is an error (Corruption, or FailedPrecondition
// for text a json column should not hold) or valid (UTF-8) JSON, never a
// crash (run under WALBUS_SANITIZE too).
TEST(ValueWriter, RandomTextIsEitherRefusedOrValidJson) {
  static constexpr std::string_view kAlphabet[] = {
      "{", "}", ",", "\"", "\\", "NULL", "null", "t", "f", "1", "0", "-", ".", "e", "+", "x",
      " ", "\n", "\x01", "\xC3\xA9", "\xFF", "\xE2\x82", "[0:1]=", "NaN", "[", "]", ":", ";"};
  const TypeInfo types[] = {kText,  kBool,  kInt,  kFloat, kNumeric, kJson, kBytea,
                            ArrayOf(K::kText), ArrayOf(K::kInteger), ArrayOf(K::kJson),
                            ArrayOf(K::kBytea), ArrayOf(K::kBool), ArrayOf(K::kFloat, ';')};
  std::mt19937 rng(7);
  int ok = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string text;
    int pieces = static_cast<int>(rng() % 12);
    for (int i = 0; i < pieces; ++i) text += kAlphabet[rng() % std::size(kAlphabet)];
    const TypeInfo& type = types[rng() % std::size(types)];
    std::string out = "[";
    Status s = AppendValue(&out, type, text, (rng() & 1) ? kNumbers : kHex);
    if (!s.ok()) {
      if (s.code() == Code::kFailedPrecondition) {
        ASSERT_NE(s.message().find("not valid JSON"), std::string::npos) << s.ToString();
      } else {
        ASSERT_EQ(s.code(), Code::kCorruption) << s.ToString();
      }
      ASSERT_EQ(out, "[");
      continue;
    }
    ++ok;
    out += "]";
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseValidateEncodingFlag>(out.data(), out.size());
    ASSERT_FALSE(doc.HasParseError())
        << rapidjson::GetParseError_En(doc.GetParseError()) << " in " << out;
  }
  EXPECT_GT(ok, 2000);  // enough successes to mean something
}

}  // namespace
}  // namespace walbus
