#include "pgwire/array_literal.h"

#include <gtest/gtest.h>

#include <string>

namespace walbus::pgwire {
namespace {

// Records the callbacks as a compact trace: { and } for arrays, elements as
// u:raw (unquoted), q:raw (quoted, escapes kept) or N (NULL), space-separated.
class Recorder : public ArrayVisitor {
 public:
  Status BeginArray() override {
    Sep();
    trace += "{";
    return Status::Ok();
  }
  Status EndArray() override {
    Sep();
    trace += "}";
    return Status::Ok();
  }
  Status Element(std::string_view raw, bool quoted, bool is_null) override {
    Sep();
    if (is_null) {
      EXPECT_FALSE(quoted);
      trace += "N";
    } else {
      trace += quoted ? "q:" : "u:";
      trace += raw;
    }
    return Status::Ok();
  }
  std::string trace;

 private:
  void Sep() {
    if (!trace.empty()) trace += ' ';
  }
};

std::string Trace(std::string_view text, char delimiter = ',') {
  Recorder r;
  Status s = ParseArrayLiteral(text, delimiter, r);
  if (!s.ok()) return "ERROR " + s.ToString();
  return r.trace;
}

TEST(ArrayLiteral, ParsesWhatArrayOutWrites) {
  struct Row {
    const char* text;
    char delimiter;
    const char* want;
  };
  const Row rows[] = {
      {"{}", ',', "{ }"},
      {"{1}", ',', "{ u:1 }"},
      {"{1,2,NULL}", ',', "{ u:1 u:2 N }"},
      {"{NULL}", ',', "{ N }"},
      {"{null,Null,nULL}", ',', "{ N N N }"},
      {R"({"NULL","null"})", ',', "{ q:NULL q:null }"},
      {"{NULLS,NUL}", ',', "{ u:NULLS u:NUL }"},
      {R"({"a b","with \"quote\"","back\\slash",NULL,"NULL"})", ',',
       R"({ q:a b q:with \"quote\" q:back\\slash N q:NULL })"},
      {R"({"",x})", ',', "{ q: u:x }"},
      {R"({"x,y","{}","a}b"})", ',', "{ q:x,y q:{} q:a}b }"},
      {"{{1,2},{3,4}}", ',', "{ { u:1 u:2 } { u:3 u:4 } }"},
      {"{{{1,2},{3,4}},{{5,6},{7,8}}}", ',',
       "{ { { u:1 u:2 } { u:3 u:4 } } { { u:5 u:6 } { u:7 u:8 } } }"},
      {"[0:1]={1,2}", ',', "{ u:1 u:2 }"},
      {"[-2:-1]={a,b}", ',', "{ u:a u:b }"},
      {"[1:1][-2:-1]={{1,2}}", ',', "{ { u:1 u:2 } }"},
      {"[3]={x}", ',', "{ u:x }"},
      {"{(3,4),(1,2);(1,1),(0,0)}", ';', "{ u:(3,4),(1,2) u:(1,1),(0,0) }"},
      {"{t,f,NULL}", ',', "{ u:t u:f N }"},
      {"{NaN,Infinity,-Infinity,1e+30,-0,1.5e-07}", ',',
       "{ u:NaN u:Infinity u:-Infinity u:1e+30 u:-0 u:1.5e-07 }"},
      {R"({"{\"a\": [1, 2]}","null","\"s\"",NULL})", ',',
       R"({ q:{\"a\": [1, 2]} q:null q:\"s\" N })"},
      {R"({"\\x0102","\\x"})", ',', R"({ q:\\x0102 q:\\x })"},
      {"{\xC3\xA9,\xF0\x9F\x98\x80}", ',', "{ u:\xC3\xA9 u:\xF0\x9F\x98\x80 }"},
      // array_in's tolerance for whitespace around items.
      {" { 1 , 2 } ", ',', "{ u:1 u:2 }"},
      {R"({ "a" , b c })", ',', "{ q:a u:b c }"},
      {"[0:1] = {1,2}", ',', "{ u:1 u:2 }"},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.text);
    EXPECT_EQ(Trace(r.text, r.delimiter), r.want);
  }
}

TEST(ArrayLiteral, SixDimensionsAndNoMore) {
  EXPECT_EQ(Trace("{{{{{{1}}}}}}"), "{ { { { { { u:1 } } } } } }");
  std::string seven = Trace("{{{{{{{1}}}}}}}");
  EXPECT_NE(seven.find("more than 6 dimensions"), std::string::npos) << seven;
  std::string dims = Trace("[1:1][1:1][1:1][1:1][1:1][1:1][1:1]={{{{{{{1}}}}}}}");
  EXPECT_NE(dims.find("more than 6 dimensions"), std::string::npos) << dims;
}

TEST(ArrayLiteral, MalformedIsCorruptionWithOffset) {
  struct Row {
    const char* text;
    const char* offset;  // "at offset N"
  };
  const Row rows[] = {
      {"", "at offset 0"},
      {"1,2", "at offset 0"},
      {"{", "at offset 1"},
      {"{1", "at offset 2"},
      {"{1,", "at offset 3"},
      {"{1,}", "at offset 3"},
      {"{,1}", "at offset 1"},
      {"{1,,2}", "at offset 3"},
      {"{1}x", "at offset 3"},
      {"{1}}", "at offset 3"},
      {"{1 2}", "at offset 1"},  // "1 2" is one element... then fine? see below
      {R"({"abc)", "at offset 1"},
      {R"({"abc\)", "at offset 1"},
      {R"({"a"b})", "at offset 4"},
      {R"({a"b})", "at offset 2"},
      {R"({a\b})", "at offset 2"},
      {"{{}}", "at offset 2"},
      {"{{},{}}", "at offset 2"},
      {"{{1},2}", "at offset 5"},
      {"{1,{2}}", "at offset 3"},
      {"{{1},{{2}}}", "at offset 6"},
      {"[1:2]{1,2}", "at offset 5"},
      {"[1:]={1}", "at offset 3"},
      {"[x]={1}", "at offset 1"},
      {"[1:2={1}", "at offset 4"},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.text);
    Recorder rec;
    Status s = ParseArrayLiteral(r.text, ',', rec);
    if (std::string_view(r.text) == "{1 2}") {
      // Whitespace inside an unquoted element is kept, as array_in keeps it.
      ASSERT_TRUE(s.ok());
      EXPECT_EQ(rec.trace, "{ u:1 2 }");
      continue;
    }
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Code::kCorruption);
    EXPECT_NE(s.message().find(r.offset), std::string::npos) << s.message();
  }
}

TEST(ArrayLiteral, EveryTruncatedPrefixFailsCleanly) {
  const std::string text =
      R"([0:1][1:2]={{"a \"b\"",NULL},{"c\\d",e}})";
  ASSERT_EQ(Trace(text), R"({ { q:a \"b\" N } { q:c\\d u:e } })");
  for (size_t n = 0; n < text.size(); ++n) {
    Recorder rec;
    Status s = ParseArrayLiteral(std::string_view(text).substr(0, n), ',', rec);
    EXPECT_EQ(s.code(), Code::kCorruption) << n;
  }
}

TEST(ArrayLiteral, VisitorErrorsStopTheParse) {
  class FailOnSecond : public ArrayVisitor {
   public:
    Status BeginArray() override { return Status::Ok(); }
    Status EndArray() override { return Status::Ok(); }
    Status Element(std::string_view, bool, bool) override {
      return ++seen == 2 ? Status::Corruption("visitor says no") : Status::Ok();
    }
    int seen = 0;
  } v;
  Status s = ParseArrayLiteral("{1,2,3}", ',', v);
  EXPECT_EQ(s.message(), "visitor says no");
  EXPECT_EQ(v.seen, 2);
}

TEST(ArrayLiteral, Unescape) {
  auto un = [](std::string_view raw) {
    std::string out = ">";
    AppendPgUnescaped(&out, raw);
    return out;
  };
  EXPECT_EQ(un(""), ">");
  EXPECT_EQ(un("plain"), ">plain");
  EXPECT_EQ(un(R"(with \"quote\")"), R"(>with "quote")");
  EXPECT_EQ(un(R"(back\\slash)"), R"(>back\slash)");
  EXPECT_EQ(un(R"(\\x0102)"), R"(>\x0102)");
  EXPECT_EQ(un(R"(\{\}\,)"), ">{},");
}

}  // namespace
}  // namespace walbus::pgwire
