// The key helpers both walbus stores share: a last_key text[] read back as
// `last_key::text`, and integer columns.
#include "bridge/walbus_schema.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace walbus::bridge {
namespace {

using Key = std::optional<pgwire::KeyValues>;

Key Parsed(const std::optional<std::string>& text) {
  Result<Key> r = ParseKeyArray(text, "test");
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : Key();
}

TEST(ParseKeyArray, ReadsArrayOutText) {
  EXPECT_EQ(Parsed(std::nullopt), Key());
  EXPECT_EQ(Parsed("{}"), Key(pgwire::KeyValues{}));
  EXPECT_EQ(Parsed("{42}"), Key(pgwire::KeyValues{"42"}));
  // array_out quotes empty strings, spaces, commas, braces, quotes,
  // backslashes and the word NULL.
  EXPECT_EQ(Parsed(R"({"a b","x,y","q\"q","b\\s","NULL",""})"),
            Key(pgwire::KeyValues{"a b", "x,y", "q\"q", "b\\s", "NULL", ""}));
  EXPECT_EQ(Parsed("{1,2024-01-02}"), Key(pgwire::KeyValues{"1", "2024-01-02"}));
}

TEST(ParseKeyArray, RejectsWhatIsNoKey) {
  for (const char* bad : {"{1,NULL}", "{{1,2},{3,4}}", "not an array", "{1,2"}) {
    Result<Key> r = ParseKeyArray(std::string(bad), "backfill request 7");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << bad;
    EXPECT_NE(r.status().message().find("backfill request 7"), std::string::npos)
        << r.status().message();
  }
}

TEST(CountValue, ReadsWholeNumbersOnly) {
  EXPECT_EQ(CountValue(std::nullopt), 0u);
  EXPECT_EQ(CountValue(std::string("0")), 0u);
  EXPECT_EQ(CountValue(std::string("18446744073709551615")), 18446744073709551615ull);
  EXPECT_EQ(CountValue(std::string("12x")), 0u);
  EXPECT_EQ(CountValue(std::string("-1")), 0u);
}

}  // namespace
}  // namespace walbus::bridge
