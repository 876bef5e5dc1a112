#include "adapters/redis/redis_url.h"

#include <gtest/gtest.h>

namespace walbus::adapters::redis {
namespace {

TEST(RedisUrl, HostPortDb) {
  Result<RedisUrl> u = ParseRedisUrl("redis://cache.example:6380/3");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->host, "cache.example");
  EXPECT_EQ(u->port, 6380);
  EXPECT_EQ(u->db, 3);
  EXPECT_TRUE(u->user.empty());
  EXPECT_TRUE(u->password.empty());
}

TEST(RedisUrl, Defaults) {
  Result<RedisUrl> u = ParseRedisUrl("redis://127.0.0.1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 6379);
  EXPECT_EQ(u->db, 0);
  u = ParseRedisUrl("redis://127.0.0.1:7000/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 7000);
  EXPECT_EQ(u->db, 0);
}

TEST(RedisUrl, PasswordOnlyIsLegacyAuth) {
  Result<RedisUrl> u = ParseRedisUrl("redis://:s3cret@h:1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->user, "");
  EXPECT_EQ(u->password, "s3cret");
}

TEST(RedisUrl, UserAndPassword) {
  Result<RedisUrl> u = ParseRedisUrl("redis://walbus:p%40ss%2Fw:rd@h:2/1");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->user, "walbus");
  EXPECT_EQ(u->password, "p@ss/w:rd");
  EXPECT_EQ(u->host, "h");
  EXPECT_EQ(u->port, 2);
  EXPECT_EQ(u->db, 1);
}

TEST(RedisUrl, UnencodedAtInPasswordUsesLastAt) {
  Result<RedisUrl> u = ParseRedisUrl("redis://u:a@b@h:3");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->password, "a@b");
  EXPECT_EQ(u->host, "h");
}

TEST(RedisUrl, Ipv6) {
  Result<RedisUrl> u = ParseRedisUrl("redis://[::1]:6390/2");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 6390);
  EXPECT_EQ(u->Address(), "[::1]:6390");
}

TEST(RedisUrl, RedactedHidesPassword) {
  Result<RedisUrl> u = ParseRedisUrl("redis://walbus:topsecret@h:2/1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->Redacted(), "redis://walbus:***@h:2/1");
  u = ParseRedisUrl("redis://:topsecret@h:2");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->Redacted(), "redis://:***@h:2");
}

TEST(RedisUrl, Rejects) {
  for (const char* bad : {"", "http://h:1", "redis://", "redis://:1", "redis://h:", "redis://h:0",
                          "redis://h:70000", "redis://h:x", "redis://h:1/x", "redis://h:1/1?a=b",
                          "redis://@h", "redis://user@h", "redis://u:%zz@h", "redis://u:%4@h",
                          "redis://[::1", "rediss://h:1", "unix:///tmp/r.sock"}) {
    Result<RedisUrl> u = ParseRedisUrl(bad);
    EXPECT_FALSE(u.ok()) << bad;
    if (!u.ok()) {
      EXPECT_EQ(u.status().code(), Code::kInvalidArgument) << bad;
    }
  }
}

TEST(RedisUrl, ErrorsNeverEchoThePassword) {
  for (const char* bad :
       {"redis://u:hunter2@h:x", "redis://hunter2@h", "redis://u:hunter2@h:1/z"}) {
    Result<RedisUrl> u = ParseRedisUrl(bad);
    ASSERT_FALSE(u.ok()) << bad;
    EXPECT_EQ(u.status().message().find("hunter2"), std::string::npos) << u.status().message();
  }
}

}  // namespace
}  // namespace walbus::adapters::redis
