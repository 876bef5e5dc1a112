#include "bridge/core/lsn.h"

#include <gtest/gtest.h>

#include "bridge/core/status.h"

namespace walbus {
namespace {

TEST(Lsn, FormatsThePostgresWay) {
  EXPECT_EQ(FormatLsn(0), "0/0");
  EXPECT_EQ(FormatLsn(0x16B3748), "0/16B3748");
  EXPECT_EQ(FormatLsn((Lsn{0x16} << 32) | 0xB374D848), "16/B374D848");
}

TEST(Lsn, AppendsAfterWhatIsThere) {
  std::string s = "lsn=";
  AppendLsn(&s, ~Lsn{0});
  EXPECT_EQ(s, "lsn=FFFFFFFF/FFFFFFFF");
  AppendLsn(&s, Lsn{1} << 32);
  EXPECT_EQ(s, "lsn=FFFFFFFF/FFFFFFFF1/0");
  EXPECT_EQ(FormatLsn(0xA), "0/A");
  EXPECT_EQ(FormatLsn(0x1000000000), "10/0");
}

TEST(Lsn, Hex16ForEventIds) {
  std::string s;
  AppendLsnHex16(&s, 0x16B37A0);
  EXPECT_EQ(s, "00000000016B37A0");
}

TEST(Lsn, ParsesAndRejects) {
  Lsn v = 0;
  ASSERT_TRUE(ParseLsn("16/b374d848", &v));
  EXPECT_EQ(v, (Lsn{0x16} << 32) | 0xB374D848);
  EXPECT_FALSE(ParseLsn("16B374D848", &v));
  EXPECT_FALSE(ParseLsn("/1", &v));
  EXPECT_FALSE(ParseLsn("1/", &v));
  EXPECT_FALSE(ParseLsn("1/123456789", &v));
  EXPECT_FALSE(ParseLsn("1/12G", &v));
}

TEST(Status, CarriesCodeAndContext) {
  Status s = Status::Unavailable("connection refused").WithContext("sink events");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.ToString(), "unavailable: sink events: connection refused");
  Result<int> r(Status::Corruption("x"));
  EXPECT_FALSE(r.ok());
  Result<int> good(7);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 7);
}

}  // namespace
}  // namespace walbus
