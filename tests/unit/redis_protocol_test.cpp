#include "adapters/redis/redis_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace walbus::adapters::redis {
namespace {

std::string Id(Lsn lsn, uint32_t seq) {
  char buf[kStreamIdCapacity];
  size_t n = FormatStreamId(lsn, seq, buf);
  EXPECT_EQ(buf[n], '\0');
  return std::string(buf, n);
}

TEST(RedisProtocol, StreamIdIsDecimalLsnDashSeq) {
  EXPECT_EQ(Id(0x16B37A0, 3), "23803808-3");
  EXPECT_EQ(Id(1, 0), "1-0");
  EXPECT_EQ(Id(UINT64_MAX, UINT32_MAX), "18446744073709551615-4294967295");
}

TEST(RedisProtocol, InfoField) {
  std::string info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
  std::string_view v;
  ASSERT_TRUE(InfoField(info, "redis_mode", &v));
  EXPECT_EQ(v, "standalone");
  EXPECT_FALSE(InfoField(info, "redis", &v));
  EXPECT_FALSE(InfoField(info, "aof_enabled", &v));
}

TEST(RedisProtocol, Version) {
  RedisVersion v;
  ASSERT_TRUE(ParseRedisVersion("# Server\r\nredis_version:7.0.15\r\n", &v));
  EXPECT_EQ(v.major, 7);
  EXPECT_EQ(v.minor, 0);
  EXPECT_EQ(v.patch, 15);
  EXPECT_TRUE(v.AtLeast(5, 0));
  EXPECT_TRUE(v.AtLeast(7, 0));
  EXPECT_FALSE(v.AtLeast(7, 2));
  ASSERT_TRUE(ParseRedisVersion("redis_version:7.2.4-rc1\n", &v));
  EXPECT_TRUE(v.AtLeast(7, 2));
  EXPECT_FALSE(ParseRedisVersion("redis_version:x\r\n", &v));
  EXPECT_FALSE(ParseRedisVersion("# Server\r\n", &v));
}

TEST(RedisProtocol, ErrorClasses) {
  EXPECT_TRUE(IsDuplicateIdError(
      "ERR The ID specified in XADD is equal or smaller than the target stream top item"));
  EXPECT_FALSE(IsDuplicateIdError("ERR The ID specified in XADD must be greater than 0-0"));
  EXPECT_FALSE(
      IsDuplicateIdError("WRONGTYPE Operation against a key holding the wrong kind of value"));
  EXPECT_TRUE(IsTransientError("LOADING Redis is loading the dataset in memory"));
  EXPECT_TRUE(IsTransientError("READONLY You can't write against a read only replica."));
  EXPECT_FALSE(IsTransientError("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_FALSE(IsTransientError("NOPERM this user has no permissions to run the 'xadd' command"));
}

}  // namespace
}  // namespace walbus::adapters::redis
