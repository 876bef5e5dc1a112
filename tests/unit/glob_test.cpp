#include "bridge/glob.h"

#include <gtest/gtest.h>

namespace walbus::bridge {
namespace {

TEST(Glob, MatchesSchemaTablePatterns) {
  EXPECT_TRUE(GlobMatch("public.*", "public.orders"));
  EXPECT_FALSE(GlobMatch("public.*", "sales.orders"));
  EXPECT_TRUE(GlobMatch("*.orders", "sales.orders"));
  EXPECT_TRUE(GlobMatch("*", "a.b"));
  EXPECT_TRUE(GlobMatch("public.order?", "public.orders"));
  EXPECT_FALSE(GlobMatch("public.order?", "public.order"));
  EXPECT_TRUE(GlobMatch("p*c.*s", "public.orders"));
  EXPECT_FALSE(GlobMatch("public.orders", "public.orders2"));
  EXPECT_TRUE(GlobMatch("**.x", "a.b.x"));
}

}  // namespace
}  // namespace walbus::bridge
