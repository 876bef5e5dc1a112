#include "adapters/nats/nats_subject.h"

#include <gtest/gtest.h>

namespace walbus::adapters::nats {
namespace {

TEST(NatsSubject, LiteralSubjectsMatchAsTheServerDoes) {
  EXPECT_TRUE(FilterCovers("shop.>", "shop.public.orders.insert"));
  EXPECT_TRUE(FilterCovers("shop.*.orders.*", "shop.public.orders.insert"));
  EXPECT_TRUE(FilterCovers("shop.public.orders.insert", "shop.public.orders.insert"));
  EXPECT_TRUE(FilterCovers(">", "a"));
  EXPECT_FALSE(FilterCovers("shop.>", "shop"));  // '>' needs at least one token
  EXPECT_FALSE(FilterCovers("shop.*", "shop.public.orders"));
  EXPECT_FALSE(FilterCovers("shop.public", "shop.public.orders"));
  EXPECT_FALSE(FilterCovers("shop.public.orders", "shop.public"));
  EXPECT_FALSE(FilterCovers("other.>", "shop.public"));
  EXPECT_FALSE(FilterCovers("", "shop"));
  EXPECT_FALSE(FilterCovers("shop", ""));
  EXPECT_FALSE(FilterCovers("shop..x", "shop..x"));
}

TEST(NatsSubject, WildcardFiltersAreCoveredOnlyByWiderPatterns) {
  EXPECT_TRUE(FilterCovers("shop.>", "shop.>"));
  EXPECT_TRUE(FilterCovers("shop.>", "shop.*.orders.>"));
  EXPECT_TRUE(FilterCovers(">", "shop.>"));
  EXPECT_TRUE(FilterCovers("shop.*", "shop.*"));
  EXPECT_TRUE(FilterCovers("*.*", "shop.*"));
  EXPECT_FALSE(FilterCovers("shop.*", "shop.>"));
  EXPECT_FALSE(FilterCovers("shop.public", "shop.*"));
  EXPECT_FALSE(FilterCovers("shop.*.orders", "shop.*.*"));
  EXPECT_TRUE(AnyCovers({"a.>", "shop.>"}, "shop.x"));
  EXPECT_FALSE(AnyCovers({}, "shop.x"));
}

TEST(NatsSubject, SplitsServerLists) {
  EXPECT_EQ(SplitList("nats://a:1, nats://b:2 ,,nats://c:3"),
            (std::vector<std::string>{"nats://a:1", "nats://b:2", "nats://c:3"}));
  EXPECT_TRUE(SplitList(" , ").empty());
}

TEST(NatsSubject, RedactsPasswordsAndTokensInUrlLists) {
  EXPECT_EQ(RedactUrls("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
  EXPECT_EQ(RedactUrls("nats://walbus:s3cret@a:4222,nats://TOKEN@b:4222"),
            "nats://walbus:***@a:4222,nats://***@b:4222");
  EXPECT_EQ(RedactUrls("nats://u:p@ss@host:1"), "nats://u:***@host:1");
  EXPECT_EQ(RedactUrls("tls://u:pw@h:1/path@x"), "tls://u:***@h:1/path@x");
  EXPECT_EQ(RedactUrls("host:4222"), "host:4222");
}

}  // namespace
}  // namespace walbus::adapters::nats
