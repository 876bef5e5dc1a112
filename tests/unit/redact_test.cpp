#include "conf/redact.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace walbus::conf {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Case {
  const char* in;
  const char* out;
};

TEST(RedactDsn, KeyValueConninfo) {
  const Case cases[] = {
      {"host=db dbname=shop user=walbus", "host=db dbname=shop user=walbus"},
      {"host=db password=s3cret dbname=shop", "host=db password=*** dbname=shop"},
      {"password=s3cret", "password=***"},
      {"host=db password = s3cret user=u", "host=db password = *** user=u"},
      {"host=db password='s3 cr et' user=u", "host=db password=*** user=u"},
      {R"(host=db password='it\'s \\ here' user=u)", "host=db password=*** user=u"},
      {R"(host=db password=a\ b user=u)", "host=db password=*** user=u"},
      {"host=db user='pass word' application_name='password=x'",
       "host=db user='pass word' application_name='password=x'"},
      {"  host=db\tpassword=x\n", "  host=db\tpassword=***\n"},
      {"host=db password=", "host=db password=***"},
      {"", ""},
  };
  for (const Case& c : cases) EXPECT_EQ(RedactDsn(c.in), c.out) << c.in;
}

TEST(RedactDsn, UnterminatedQuoteHidesTheRest) {
  std::string r = RedactDsn("host=db password='s3cret user=u");
  EXPECT_EQ(r, "host=db password=***");
}

TEST(RedactDsn, Uri) {
  const Case cases[] = {
      {"postgresql://walbus:s3cret@db:5432/shop", "postgresql://walbus:***@db:5432/shop"},
      {"postgres://walbus:s3cret@db/shop", "postgres://walbus:***@db/shop"},
      {"postgresql://walbus@db/shop", "postgresql://walbus@db/shop"},
      {"postgresql://db/shop?user=u&password=s3cret&sslmode=require",
       "postgresql://db/shop?user=u&password=***&sslmode=require"},
      {"postgresql://u:p@h1:5432,h2:5433/shop?password=x",
       "postgresql://u:***@h1:5432,h2:5433/shop?password=***"},
      {"postgresql:///shop?host=/var/run/postgresql", "postgresql:///shop?host=/var/run/postgresql"},
      // A password with an unencoded '@' or '/' is still hidden entirely.
      {"postgresql://u:p@ss/w@db/shop", "postgresql://u:***@db/shop"},
  };
  for (const Case& c : cases) EXPECT_EQ(RedactDsn(c.in), c.out) << c.in;
}

TEST(RedactUrl, SingleUrls) {
  const Case cases[] = {
      {"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
      {"nats://user:pass@127.0.0.1:4222", "nats://user:***@127.0.0.1:4222"},
      {"nats://s3cr3t-token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"},
      {"redis://app:pw@cache:6379/2", "redis://app:***@cache:6379/2"},
      {"redis://:pw@cache:6379", "redis://:***@cache:6379"},
      {"redis://cache:6379/0", "redis://cache:6379/0"},
      {"ssl://u:p@broker:8883", "ssl://u:***@broker:8883"},
      {"tcp://broker:1883?password=x&keep=1", "tcp://broker:1883?password=***&keep=1"},
      {"tcp://broker:1883?token=x#frag", "tcp://broker:1883?token=***#frag"},
      {"u:p@host:1", "u:***@host:1"},
      {"", ""},
  };
  for (const Case& c : cases) EXPECT_EQ(RedactUrl(c.in), c.out) << c.in;
}

TEST(RedactUrl, CommaSeparatedClusterList) {
  EXPECT_EQ(RedactUrl("nats://u:p1@a:4222,nats://u:p2@b:4222, tls://c:4222"),
            "nats://u:***@a:4222,nats://u:***@b:4222, tls://c:4222");
  EXPECT_EQ(RedactUrl("nats://a:4222,nats://b:4222"), "nats://a:4222,nats://b:4222");
}

TEST(RedactUrl, PasswordWithCommaOrAtIsHidden) {
  std::string r = RedactUrl("nats://u:p,a@ss@a:4222,nats://b:4222");
  EXPECT_THAT(r, Not(HasSubstr("p,a")));
  EXPECT_THAT(r, Not(HasSubstr("ss@a")));
  EXPECT_EQ(r, "nats://u:***@a:4222,nats://b:4222");
}

TEST(RedactUrl, NeverShowsTheSecret) {
  const char* secret = "Zq9-secret";
  const std::string inputs[] = {
      std::string("redis://user:") + secret + "@h:6379/0",
      std::string("redis://:") + secret + "@h",
      std::string("nats://") + secret + "@h",
      std::string("mqtts://u:") + secret + "@h:8883",
      std::string("u:") + secret + "@h",
      std::string("nats://h:1,nats://u:") + secret + "@h:2",
      std::string("nats://u:") + secret + "/x?y@h:2",
  };
  for (const std::string& in : inputs) {
    EXPECT_THAT(RedactUrl(in), Not(HasSubstr(secret))) << in;
  }
}

}  // namespace
}  // namespace walbus::conf
