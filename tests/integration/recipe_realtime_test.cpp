// compose/recipes/realtime: walbus publishes public.orders changes on NATS
// core; nats-server's WebSocket listener (the recipe's nats-websocket.conf)
// carries them to realtime.html, which headless Chromium runs (driven by the
// recipe's browser.py over the DevTools protocol). The page's table must show
// exactly the rows of the table after inserts, updates, deletes and a
// truncate; the run leaves a screenshot (realtime.png in the test directory,
// the source of docs/img/realtime.png).
#include <algorithm>

#include "recipe_support.h"

namespace walbus::itest::recipes {
namespace {

constexpr int kNatsPort = 56230;
constexpr int kWsPort = 56231;

using Table = std::vector<std::vector<std::string>>;

// The page's rows as written by browser.py: [[cell, ...], ...], sorted, with
// the last column (updated_at, printed in the walsender's time zone) left out.
Table DomRows(const std::string& path) {
  Table out;
  std::string text = ReadFile(path);
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  if (d.HasParseError() || !d.IsArray()) return out;
  for (const auto& tr : d.GetArray()) {
    if (!tr.IsArray()) continue;
    std::vector<std::string> cells;
    for (const auto& td : tr.GetArray()) cells.push_back(td.IsString() ? td.GetString() : "?");
    if (!cells.empty()) cells.pop_back();
    out.push_back(std::move(cells));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Table SqlRows(Pg& shop) {
  Table out;
  for (const Row& r : shop.Query("SELECT id::text, customer, amount::text, status FROM orders")) {
    std::vector<std::string> cells;
    for (const auto& c : r) cells.push_back(c.value_or(""));
    out.push_back(std::move(cells));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Show(const Table& t) {
  std::string s;
  for (const auto& r : t) {
    s += "  [";
    for (const auto& c : r) s += c + "|";
    s += "]\n";
  }
  return s.empty() ? "  (no rows)\n" : s;
}

class RecipeRealtime : public PgFixtureOnPort<kPgPort> {};

TEST_F(RecipeRealtime, PageShowsRowsChangingLive) {
  if (!WalbusHas("cnats")) GTEST_SKIP() << "walbus was built without the NATS adapter";
  if (Shell("command -v chromium >/dev/null 2>&1").code != 0) {
    GTEST_SKIP() << "Chromium is not installed, so the realtime page cannot be tested here: "
                    "apt-get install chromium (compose/install-deps.sh installs it)";
  }
  std::string python = Python();
  ASSERT_FALSE(python.empty()) << "python3 is needed by the realtime recipe (apt-get install python3)";
  ComposeBroker nats(ComposeBroker::Kind::kNats, kNatsPort, "/tmp/walbus-recipe-test-nats-56230",
                     "WALBUS_NATS_HTTP_PORT=0 REALTIME_WS_PORT=" + std::to_string(kWsPort) +
                         " WALBUS_NATS_CONF=" + Quote(RecipeFile("realtime", "nats-websocket.conf")));
  ASSERT_TRUE(nats.Start());
  ASSERT_TRUE(FreshShop(sql(), kPort, "realtime"));
  Pg shop(ShopDsnFor(kPort));
  ASSERT_TRUE(shop.ok());

  Child w;
  ASSERT_TRUE(StartRecipeWalbus(&w, RecipeFile("realtime", "walbus.toml"),
                                {{"SHOP_DSN", ShopDsnFor(kPort)},
                                 {"NATS_URL", nats.Url()},
                                 {"METRICS_LISTEN", ""}},
                                dir(), "walbus"));

  // The page, opened from disk as the README says, subscribed before any change.
  const std::string dom = dir() + "/rows.json", stop = dir() + "/stop",
                    png = dir() + "/realtime.png";
  Child browser;
  ASSERT_TRUE(browser.Start(
      {python, RecipeFile("realtime", "browser.py"), "--url",
       "file://" + RecipeFile("realtime", "realtime.html") + "?ws=ws://127.0.0.1:" +
           std::to_string(kWsPort),
       "--ready", "window.walbus && window.walbus.subscribed", "--dom-out", dom, "--stop-file",
       stop, "--screenshot", png, "--timeout", "100"},
      dir() + "/browser.out", dir() + "/browser.err"));
  bool ready = WaitUntil(
      [&] { return !browser.Running() || Contains(browser.out(), "ready"); }, 60s, 100ms);
  ASSERT_TRUE(ready && browser.Running())
      << "the page did not subscribe; browser.py stderr:\n" << browser.err();

  auto page_matches = [&](const char* step) {
    Table want = SqlRows(shop), got;
    bool same = WaitUntil([&] { return (got = DomRows(dom)) == want; }, 20s, 100ms);
    EXPECT_TRUE(same) << step << ": the page shows\n" << Show(got) << "the table holds\n"
                      << Show(want) << "browser.py stderr:\n" << browser.err();
    return same;
  };

  // A first batch, then a truncate that must empty the page.
  ASSERT_TRUE(shop.Exec("INSERT INTO orders (customer, amount) VALUES ('test', 1), ('test', 2)"));
  ASSERT_TRUE(page_matches("after two inserts"));
  EXPECT_EQ(DomRows(dom).size(), 2u);
  ASSERT_TRUE(shop.Exec("TRUNCATE orders"));
  ASSERT_TRUE(page_matches("after the truncate"));
  EXPECT_TRUE(DomRows(dom).empty());

  // Orders arriving, one paid, one cancelled and deleted, one shipped.
  ASSERT_TRUE(shop.Exec(
      "INSERT INTO orders (customer, amount) VALUES ('Ada Lovelace', 12.50), "
      "('Bob Stone', 99.99), ('Chen Wei', 7.20), ('Dana Ruiz', 42.00), ('Eli Park', 130.00), "
      "('Fatima Noor', 18.75)"));
  ASSERT_TRUE(shop.Exec("UPDATE orders SET status = 'paid' WHERE customer IN ('Ada Lovelace', 'Eli Park')"));
  ASSERT_TRUE(shop.Exec("UPDATE orders SET status = 'cancelled' WHERE customer = 'Bob Stone'"));
  ASSERT_TRUE(shop.Exec("DELETE FROM orders WHERE customer = 'Bob Stone'"));
  ASSERT_TRUE(shop.Exec("UPDATE orders SET status = 'shipped', amount = 44.00 WHERE customer = 'Dana Ruiz'"));
  ASSERT_TRUE(page_matches("after the orders"));
  Table rows = DomRows(dom);
  EXPECT_EQ(rows.size(), 5u);
  // The most recently changed row is on top.
  rapidjson::Document d;
  std::string text = ReadFile(dom);
  ASSERT_TRUE(ParseJson(text, &d, "rows.json"));
  ASSERT_TRUE(d.IsArray() && !d.Empty() && d[0].IsArray() && d[0].Size() > 1);
  EXPECT_STREQ(d[0][1].GetString(), "Dana Ruiz") << text;

  // Stop: browser.py takes the screenshot and exits 0.
  WriteFile(stop, "");
  EXPECT_EQ(browser.Wait(30s), std::optional<int>(0)) << browser.err();
  std::string image = ReadFile(png);
  EXPECT_GT(image.size(), 10000u) << "screenshot " << png;
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << png;
  std::printf("[ info ] screenshot of the live page: %s\n", png.c_str());
  EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
}

}  // namespace
}  // namespace walbus::itest::recipes
