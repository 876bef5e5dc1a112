#include "bridge/topic_template.h"

#include <gtest/gtest.h>

namespace walbus::bridge {
namespace {

TEST(TopicTemplate, RendersTheDefaultNatsSubject) {
  auto t = TopicTemplate::Parse("{db}.{schema}.{table}.{op}", TopicRules::kNats);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->Render({"shop", "public", "orders", "insert"}), "shop.public.orders.insert");
}

TEST(TopicTemplate, SanitisesOnlyInsidePlaceholders) {
  auto t = TopicTemplate::Parse("cdc.{schema}.{table}>x", TopicRules::kNats);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->Render({"db", "my schema", "a.b*c>d", "insert"}), "cdc.my_schema.a_b_c_d>x");

  auto m = TopicTemplate::Parse("{db}/{schema}/{table}/{op}", TopicRules::kMqtt);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->Render({"shop", "pub+lic", "or#ders", "delete"}), "shop/pub_lic/or_ders/delete");

  auto r = TopicTemplate::Parse("{db}.{schema}.{table}", TopicRules::kRedis);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->Render({"shop", "a b", "x*y", "update"}), "shop.a b.x*y");

  auto l = TopicTemplate::Parse("{table}", TopicRules::kLine);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->Render({"d", "s", "tab\there", "op"}), "tab_here");
}

TEST(TopicTemplate, KeyOnlyWhereAllowed) {
  EXPECT_FALSE(TopicTemplate::Parse("{db}/{key}", TopicRules::kMqtt).ok());
  auto t = TopicTemplate::Parse("{db}/{schema}/{table}/state/{key}", TopicRules::kMqtt, true);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->uses_key());
  TopicValues v{"shop", "public", "orders", "update", "42,eu"};
  EXPECT_EQ(t->Render(v), "shop/public/orders/state/42,eu");
}

TEST(TopicTemplate, RejectsBadTemplates) {
  for (const char* bad : {"{db}.{tabel}", "{db", "db}", "", "{}", "{op}.{DB}"}) {
    auto t = TopicTemplate::Parse(bad, TopicRules::kNats);
    EXPECT_FALSE(t.ok()) << bad;
    if (!t.ok()) {
      EXPECT_EQ(t.status().code(), Code::kInvalidArgument);
    }
  }
  auto t = TopicTemplate::Parse("{db}.{tabel}", TopicRules::kNats);
  EXPECT_NE(t.status().message().find("unknown placeholder {tabel}"), std::string::npos);
}

TEST(TopicTemplate, DerivesNatsSubjectFilters) {
  auto f = [](const char* text) {
    return NatsSubjectFilter(TopicTemplate::Parse(text, TopicRules::kNats).value(), "shop");
  };
  EXPECT_EQ(f("{db}.{schema}.{table}.{op}"), "shop.>");
  EXPECT_EQ(f("js.{db}.{schema}.{table}.{op}"), "js.shop.>");
  EXPECT_EQ(f("{db}.{table}.events"), "shop.*.events");
  EXPECT_EQ(f("cdc.{table}"), "cdc.>");
  EXPECT_EQ(f("{schema}.{table}"), ">");
  EXPECT_EQ(f("fixed.subject"), "fixed.subject");
  EXPECT_EQ(NatsSubjectFilter(TopicTemplate::Parse("{db}.x", TopicRules::kNats).value(), "a.b"),
            "a_b.x");
}

}  // namespace
}  // namespace walbus::bridge
