#include "bridge/json_writer.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace walbus {
namespace {

std::string Json(std::string_view s) {
  std::string out;
  AppendJsonString(&out, s);
  return out;
}

std::string JsonPg(std::string_view s) {
  std::string out;
  AppendJsonStringUnescapingPg(&out, s);
  return out;
}

const std::string kFffd(kUtf8Replacement);

// A strict UTF-8 check written independently of the code under test.
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    size_t n;
    if (c < 0x80) { cp = c; n = 0; }
    else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; n = 1; }
    else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; n = 2; }
    else if ((c & 0xF8) == 0xF0) { cp = c & 0x07; n = 3; }
    else return false;
    if (i + n >= s.size()) return false;  // truncated
    for (size_t k = 1; k <= n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// A JSON string body must hold no raw control characters, and every
// backslash must start a valid escape.
bool IsJsonStringToken(std::string_view s) {
  if (s.size() < 2 || s.front() != '"' || s.back() != '"') return false;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20) return false;
    if (c == '"') return false;
    if (c == '\\') {
      char e = s[++i];
      if (e == 'u') {
        i += 4;
      } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
        return false;
      }
    }
  }
  return true;
}

TEST(JsonWriter, PlainAndQuoting) {
  EXPECT_EQ(Json(""), R"("")");
  EXPECT_EQ(Json("abc"), R"("abc")");
  EXPECT_EQ(Json("say \"hi\""), R"("say \"hi\"")");
  EXPECT_EQ(Json("C:\\dir"), R"("C:\\dir")");
  EXPECT_EQ(Json("/slash/"), R"("/slash/")");
  EXPECT_EQ(Json("\x7f"), "\"\x7f\"");
}

TEST(JsonWriter, AppendsWithoutClobbering) {
  std::string out = "{\"k\":";
  AppendJsonString(&out, "v");
  EXPECT_EQ(out, R"({"k":"v")");
}

TEST(JsonWriter, EveryControlCharacterIsEscaped) {
  static const char* const kExpected[32] = {
      "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
      "\\b",     "\\t",     "\\n",     "\\u000b", "\\f",     "\\r",     "\\u000e", "\\u000f",
      "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
      "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f"};
  for (int c = 0; c < 0x20; ++c) {
    SCOPED_TRACE(c);
    const std::string in(1, static_cast<char>(c));
    std::string want = "\"";
    want.append(kExpected[c]).append("\"");
    EXPECT_EQ(Json(in), want);
    // And in the middle of a run long enough for the 8-byte fast path.
    std::string long_in = "abcdefghijk";
    long_in.append(in).append("lmnopqrstuvwxyz");
    std::string long_want = "\"abcdefghijk";
    long_want.append(kExpected[c]).append("lmnopqrstuvwxyz\"");
    EXPECT_EQ(Json(long_in), long_want);
  }
}

TEST(JsonWriter, SpecialByteAtEveryPositionOfLongRuns) {
  // Compare with an obvious per-byte escaper for ASCII input.
  auto reference = [](std::string_view s) {
    std::string r = "\"";
    for (char c : s) {
      if (c == '"') r += "\\\"";
      else if (c == '\\') r += "\\\\";
      else if (c == '\n') r += "\\n";
      else if (c == 0x01) r += "\\u0001";
      else r += c;
    }
    return r + "\"";
  };
  for (char special : {'"', '\\', '\n', '\x01'}) {
    for (size_t len = 1; len <= 40; ++len) {
      for (size_t pos = 0; pos < len; ++pos) {
        std::string in(len, 'x');
        in[pos] = special;
        ASSERT_EQ(Json(in), reference(in)) << "len " << len << " pos " << pos;
      }
    }
  }
}

TEST(JsonWriter, ValidUtf8PassesThrough) {
  EXPECT_EQ(Json("caf\xC3\xA9"), "\"caf\xC3\xA9\"");                          // é
  EXPECT_EQ(Json("\xE2\x82\xAC"), "\"\xE2\x82\xAC\"");                        // €
  EXPECT_EQ(Json("\xE6\x97\xA5\xE6\x9C\xAC"), "\"\xE6\x97\xA5\xE6\x9C\xAC\"");  // 日本
  EXPECT_EQ(Json("\xF0\x9F\x98\x80 ok"), "\"\xF0\x9F\x98\x80 ok\"");          // 😀
  EXPECT_EQ(Json("\xEF\xBF\xBF"), "\"\xEF\xBF\xBF\"");                        // U+FFFF
  EXPECT_EQ(Json("\xF4\x8F\xBF\xBF"), "\"\xF4\x8F\xBF\xBF\"");                // U+10FFFF
  EXPECT_EQ(Json("\xED\x9F\xBF"), "\"\xED\x9F\xBF\"");                        // U+D7FF
  EXPECT_EQ(Json("\xEE\x80\x80"), "\"\xEE\x80\x80\"");                        // U+E000
  // 👨‍👩‍👧 (ZWJ sequence) among a long ASCII run.
  std::string family = "0123456789\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D"
                       "\xF0\x9F\x91\xA7" "0123456789";
  EXPECT_EQ(Json(family), "\"" + family + "\"");
}

TEST(JsonWriter, InvalidUtf8IsReplacedPerMaximalSubpart) {
  struct Row {
    const char* name;
    std::string in;
    std::string want;  // without the quotes
  };
  const std::string F = kFffd;
  const Row rows[] = {
      {"lone continuation", "a\x80z", "a" + F + "z"},
      {"two continuations", "\x80\xBF", F + F},
      {"overlong C0", "\xC0\xAF", F + F},
      {"overlong C1", "\xC1\xBF", F + F},
      {"overlong E0", "\xE0\x80\xAF", F + F + F},
      {"overlong F0", "\xF0\x80\x80\xAF", F + F + F + F},
      {"surrogate high", "\xED\xA0\x80", F + F + F},
      {"surrogate low", "\xED\xBF\xBF", F + F + F},
      {"above U+10FFFF", "\xF4\x90\x80\x80", F + F + F + F},
      {"F5 lead", "\xF5\x80\x80\x80", F + F + F + F},
      {"FF", "\xFF", F},
      {"FE", "x\xFEy", "x" + F + "y"},
      {"truncated 2 at end", "a\xC3", "a" + F},
      {"truncated 3 at end", "a\xE2\x82", "a" + F},
      {"truncated 4 at end", "a\xF0\x9F\x98", "a" + F},
      {"truncated 3 then ascii", "\xE2\x82" "A", F + "A"},
      {"truncated 4 then ascii", "\xF0\x9F" "A", F + "A"},
      {"truncated then valid", "\xE2\x82\xC3\xA9", F + "\xC3\xA9"},
      {"lead then quote", "\xC3\"", F + "\\\""},
      {"lead then control", "\xC3\n", F + "\\n"},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.name);
    std::string got = Json(r.in);
    EXPECT_EQ(got, "\"" + r.want + "\"");
    EXPECT_TRUE(IsValidUtf8(got));
  }
}

TEST(JsonWriter, CheckUtf8SequenceReportsLengths) {
  size_t bad = 99;
  std::string_view ok4 = "\xF0\x9F\x98\x80";
  EXPECT_EQ(CheckUtf8Sequence(ok4.data(), ok4.data() + ok4.size(), &bad), 4u);
  std::string_view trunc = "\xF0\x9F\x98";
  EXPECT_EQ(CheckUtf8Sequence(trunc.data(), trunc.data() + trunc.size(), &bad), 0u);
  EXPECT_EQ(bad, 3u);
  std::string_view cont = "\x80";
  EXPECT_EQ(CheckUtf8Sequence(cont.data(), cont.data() + 1, &bad), 0u);
  EXPECT_EQ(bad, 1u);
}

TEST(JsonWriter, RandomBytesAlwaysGiveValidJsonStrings) {
  std::mt19937 rng(20261125);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string in(rng() % 64, '\0');
    for (char& c : in) {
      // Bias towards interesting bytes.
      uint32_t r = rng();
      c = static_cast<char>((r & 0x100) ? (0x80 | (r & 0x7F)) : (r & 0xFF));
    }
    std::string got = Json(in);
    ASSERT_TRUE(IsValidUtf8(got)) << iter;
    ASSERT_TRUE(IsJsonStringToken(got)) << iter;
    std::string got_pg = JsonPg(in);
    ASSERT_TRUE(IsValidUtf8(got_pg)) << iter;
    ASSERT_TRUE(IsJsonStringToken(got_pg)) << iter;
  }
}

TEST(JsonWriter, UnescapingPgArrayElements) {
  EXPECT_EQ(JsonPg("plain"), R"("plain")");
  EXPECT_EQ(JsonPg(R"(with \"quote\")"), R"("with \"quote\"")");
  EXPECT_EQ(JsonPg(R"(back\\slash)"), R"("back\\slash")");
  EXPECT_EQ(JsonPg(R"(\a\b)"), R"("ab")");  // any escaped byte is literal
  EXPECT_EQ(JsonPg("tab\there"), R"("tab\there")");
  EXPECT_EQ(JsonPg("\\\xC3\xA9"), "\"\xC3\xA9\"");
  EXPECT_EQ(JsonPg(R"(trailing\)"), R"("trailing\\")");
  EXPECT_EQ(JsonPg(R"(0123456789\"0123456789\\0123456789)"),
            R"("0123456789\"0123456789\\0123456789")");
}

TEST(JsonWriter, JsonTextIsEmbeddedOnOneLine) {
  struct Row {
    std::string in;
    std::string want;
  };
  const Row rows[] = {
      {R"({"a": 1, "b": [true, null]})", R"({"a": 1, "b": [true, null]})"},
      {"{\n\t\"a\":\r\n 1}", "{  \"a\":   1}"},
      {R"("str with \" and \\ and \n")", R"("str with \" and \\ and \n")"},
      {"\"raw\ttab\"", "\"raw\\ttab\""},
      {"\"caf\xC3\xA9 \xF0\x9F\x98\x80\"", "\"caf\xC3\xA9 \xF0\x9F\x98\x80\""},
      {"\"bad \xFF byte\"", "\"bad " + kFffd + " byte\""},
      {R"(["\u00e9", "x\/y"])", R"(["\u00e9", "x\/y"])"},
      {"42", "42"},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.in);
    std::string out;
    size_t at = 0;
    ASSERT_TRUE(AppendJsonValue(&out, r.in, &at)) << at;
    EXPECT_EQ(out, r.want);
  }
}

TEST(JsonWriter, JsonTextRejectsWhatPostgresWouldNotPrint) {
  for (std::string_view bad : {std::string_view(R"("open)"), std::string_view(R"({"a": "x\)"),
                               std::string_view(R"(\"x")"), std::string_view("{\x01}"),
                               std::string_view(R"("bad \x escape")"),
                               std::string_view("\"\\\xC3\xA9\"")}) {
    SCOPED_TRACE(bad);
    std::string out = "keep";
    size_t at = 0;
    EXPECT_FALSE(AppendJsonValue(&out, bad, &at));
    EXPECT_EQ(out, "keep");
  }
}

}  // namespace
}  // namespace walbus
