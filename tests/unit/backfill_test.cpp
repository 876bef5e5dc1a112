// The backfill's watermark window on plain data: snapshots, key encoding,
// chunk rows, and the drop/redo rule, including a randomized model of a
// stream in commit order with a chunk snapshot whose visibility differs from
// commit order near the low watermark.
#include "bridge/backfill_window.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace walbus::bridge {
namespace {

std::string K(const std::string& v) { return EncodeKey({v}); }

XidSnapshot Snap(const std::string& text) {
  XidSnapshot s;
  EXPECT_TRUE(XidSnapshot::Parse(text, &s)) << text;
  return s;
}

TEST(XidSnapshot, ParsesPgSnapshotText) {
  XidSnapshot s = Snap("100:110:104,101");
  EXPECT_EQ(s.xmin, 100u);
  EXPECT_EQ(s.xmax, 110u);
  EXPECT_EQ(s.xip, (std::vector<uint64_t>{101, 104}));
  EXPECT_TRUE(Snap("7:7:").xip.empty());
  XidSnapshot bad;
  for (const char* text : {"", "1", "1:2", "x:2:", "5:4:", "1:5:7", "1:5:2,", "1:5:,2",
                           "1:5:2;3", "-1:5:", "1:99999999999999999999:"}) {
    EXPECT_FALSE(XidSnapshot::Parse(text, &bad)) << text;
  }
}

TEST(XidSnapshot, SeesCommittedBeforeItOnly) {
  XidSnapshot s = Snap("100:110:101,104");
  EXPECT_TRUE(s.Sees(50));    // below xmin
  EXPECT_TRUE(s.Sees(100));   // xmin itself is not running (not in xip)
  EXPECT_FALSE(s.Sees(101));  // running when the snapshot was taken
  EXPECT_TRUE(s.Sees(102));
  EXPECT_FALSE(s.Sees(104));
  EXPECT_TRUE(s.Sees(109));
  EXPECT_FALSE(s.Sees(110));  // started after it
  EXPECT_FALSE(s.Sees(5000));
}

TEST(XidSnapshot, WidensAcrossTheEpochBoundary) {
  // xmax is in epoch 1; 32-bit xids just below 2^32 are from epoch 0.
  uint64_t epoch1 = uint64_t{1} << 32;
  XidSnapshot s;
  ASSERT_TRUE(XidSnapshot::Parse(std::to_string(epoch1 - 20) + ":" + std::to_string(epoch1 + 5) +
                                     ":" + std::to_string(epoch1 - 10),
                                 &s));
  EXPECT_TRUE(s.Sees(0xFFFFFFF0u));   // epoch1 - 16: visible
  EXPECT_FALSE(s.Sees(0xFFFFFFF6u));  // epoch1 - 10: in xip
  EXPECT_TRUE(s.Sees(3));             // epoch1 + 3: below xmax, not running
  EXPECT_FALSE(s.Sees(5));            // epoch1 + 5 = xmax
  EXPECT_TRUE(s.Sees(0xFFFFFF00u));   // long before xmin
}

TEST(EncodeKey, KeepsPartsApart) {
  EXPECT_NE(EncodeKey({"a,b"}), EncodeKey({"a", "b"}));
  EXPECT_NE(EncodeKey({"ab", ""}), EncodeKey({"a", "b"}));
  EXPECT_EQ(EncodeKey({"1", "x"}), EncodeKey({"1", "x"}));
  std::string built;
  AppendKeyPart(&built, "1");
  AppendKeyPart(&built, "x");
  EXPECT_EQ(built, EncodeKey({"1", "x"}));
  EXPECT_EQ(EncodeKey({std::string("a\0b", 3)}).size(), 4u + 3u);
}

TEST(EncodeKey, FromARowMatchesTheValues) {
  const pgwire::Column cols[] = {{pgwire::ColumnKind::kText, "x"},
                                 {pgwire::ColumnKind::kText, "payload"},
                                 {pgwire::ColumnKind::kText, "1"}};
  const pgwire::Tuple row(cols, 3);
  EXPECT_EQ(EncodeKey(row, {2, 0}), EncodeKey({"1", "x"}));
  EXPECT_NE(EncodeKey(row, {0, 2}), EncodeKey({"1", "x"}));
  EXPECT_EQ(EncodeKey(row, {}), EncodeKey(std::vector<std::string>{}));
}

TEST(ChunkRows, KeepsRowsAfterTheSourceIsGone) {
  ChunkRows rows(3);
  {
    std::string a = "1", b = "hello";
    std::vector<pgwire::Column> r = {{pgwire::ColumnKind::kText, a},
                                     {pgwire::ColumnKind::kNull, {}},
                                     {pgwire::ColumnKind::kText, b}};
    rows.Add(pgwire::Tuple(r.data(), r.size()), K("1"));
    std::string big(100000, 'x');
    r[2].value = big;
    rows.Add(pgwire::Tuple(r.data(), r.size()), K("2"));
  }
  ASSERT_EQ(rows.size(), 2u);
  std::vector<pgwire::Column> scratch;
  pgwire::Tuple t = rows.Row(0, &scratch);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].value, "1");
  EXPECT_EQ(t[1].kind, pgwire::ColumnKind::kNull);
  EXPECT_EQ(t[2].value, "hello");
  t = rows.Row(1, &scratch);
  EXPECT_EQ(t[2].value.size(), 100000u);
  EXPECT_EQ(rows.keys()[1], K("2"));
  EXPECT_GE(rows.bytes(), 100000u);
}

const XidSnapshot kSees100 = [] {
  XidSnapshot s;
  s.xmin = 100;
  s.xmax = 110;
  s.xip = {105};
  return s;
}();

TEST(ChangeWindow, QuietWindowKeepsEveryRow) {
  ChangeWindow w;
  w.MarkLow();
  ChangeWindow::Verdict v = w.Close({K("1"), K("2")}, kSees100);
  EXPECT_FALSE(v.redo);
  EXPECT_EQ(v.drop, (std::vector<uint8_t>{0, 0}));
  EXPECT_EQ(v.dropped, 0u);
}

TEST(ChangeWindow, DropsRowsChangedAfterTheLowWatermark) {
  ChangeWindow w;
  w.Record(50, K("1"));  // before the window, seen by the snapshot
  w.MarkLow();
  w.Record(104, K("2"));  // inside the window: dropped whatever its visibility
  w.Record(200, K("9"));  // a key outside the chunk
  ChangeWindow::Verdict v = w.Close({K("1"), K("2"), K("3")}, kSees100);
  EXPECT_FALSE(v.redo);
  EXPECT_EQ(v.drop, (std::vector<uint8_t>{0, 1, 0}));
  EXPECT_EQ(v.dropped, 1u);
}

TEST(ChangeWindow, DropsRowsOfCommitsBeforeTheLowWatermarkTheSnapshotMissed) {
  // Transaction 105 wrote its commit record before the low watermark but was
  // still running (in xip) when the chunk's snapshot was taken; 111 started
  // after it. Their rows in the chunk are older than the stream already told.
  ChangeWindow w;
  w.Record(105, K("1"));
  w.Record(111, K("2"));
  w.Record(99, K("3"));
  w.MarkLow();
  ChangeWindow::Verdict v = w.Close({K("1"), K("2"), K("3")}, kSees100);
  EXPECT_FALSE(v.redo);
  EXPECT_EQ(v.drop, (std::vector<uint8_t>{1, 1, 0}));
}

TEST(ChangeWindow, UnknownKeysForceARead) {
  {
    ChangeWindow w;
    w.MarkLow();
    w.RecordUnknown(104);  // e.g. TRUNCATE inside the window
    ChangeWindow::Verdict v = w.Close({K("1")}, kSees100);
    EXPECT_TRUE(v.redo);
    EXPECT_NE(v.reason.find("inside the window"), std::string::npos) << v.reason;
  }
  {
    ChangeWindow w;
    w.RecordUnknown(50);  // before, and seen by the snapshot: harmless
    w.MarkLow();
    EXPECT_FALSE(w.Close({K("1")}, kSees100).redo);
  }
  {
    ChangeWindow w;
    w.RecordUnknown(105);  // before, but not seen by the snapshot
    w.MarkLow();
    EXPECT_TRUE(w.Close({K("1")}, kSees100).redo);
  }
}

TEST(ChangeWindow, NoLowWatermarkMeansReadAgain) {
  ChangeWindow w;
  w.Record(104, K("1"));
  ChangeWindow::Verdict v = w.Close({K("1")}, kSees100);
  EXPECT_TRUE(v.redo);
  EXPECT_NE(v.reason.find("low watermark"), std::string::npos);
  // Closing also closes the window: the next high without a low redoes too.
  EXPECT_TRUE(w.Close({K("1")}, kSees100).redo);
}

TEST(ChangeWindow, ForgettingAChangeInsideTheWindowMeansReadAgain) {
  ChangeWindow w(4);
  for (int i = 0; i < 10; ++i) w.Record(50, K("old" + std::to_string(i)));  // only 4 kept
  w.MarkLow();
  for (int i = 0; i < 4; ++i) w.Record(104, K(std::to_string(i)));
  EXPECT_FALSE(w.Close({K("0")}, kSees100).redo);  // exactly full: nothing lost
  w.MarkLow();
  for (int i = 0; i < 5; ++i) w.Record(104, K(std::to_string(i)));
  ChangeWindow::Verdict v = w.Close({K("0")}, kSees100);
  EXPECT_TRUE(v.redo);
  EXPECT_NE(v.reason.find("changes inside the window"), std::string::npos);
}

TEST(ChangeWindow, EarlierWindowsCountAsBeforeTheNextLow) {
  ChangeWindow w;
  w.MarkLow();
  w.Record(104, K("1"));
  EXPECT_EQ(w.Close({K("1")}, kSees100).dropped, 1u);
  // The next chunk's snapshot saw 104: its change is history now.
  XidSnapshot later;
  ASSERT_TRUE(XidSnapshot::Parse("200:201:", &later));
  w.MarkLow();
  EXPECT_EQ(w.Close({K("1")}, later).dropped, 0u);
  w.Reset();
  EXPECT_EQ(w.remembered(), 0u);
  EXPECT_FALSE(w.low_seen());
}

// A randomized model. Keys 0..N-1 of one table; transactions commit in order
// 0..T-1 (the stream order); each inserts, updates or deletes a few keys.
// The low watermark commits at position L, the high one at H. The chunk
// snapshot sees every transaction committed before L except a few "racers"
// (commit record before L, still running when the snapshot was taken), plus
// some committed between L and H; nothing after H. The consumer applies the
// stream in order with the chunk's kept rows as reads at H; its final state
// must equal the table's.
TEST(ChangeWindow, ModelConsumerStateMatchesTheTable) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 400; ++round) {
    const int keys = 30;
    const int txns = 40;
    const int low = 10 + static_cast<int>(rng() % 10);
    const int high = low + 1 + static_cast<int>(rng() % 10);
    struct Change {
      int key;
      std::optional<int> value;  // nullopt: delete
    };
    struct Txn {
      uint32_t xid;
      std::vector<Change> changes;
      bool visible = false;
    };
    // xids in start order differ from commit order.
    std::vector<uint32_t> xids(txns);
    for (int i = 0; i < txns; ++i) xids[i] = 1000 + static_cast<uint32_t>(i);
    std::shuffle(xids.begin(), xids.end(), rng);
    std::vector<Txn> t(txns);
    std::map<int, int> table;  // initial rows
    for (int k = 0; k < keys; ++k) {
      if (rng() % 3 != 0) table[k] = -k;
    }
    const std::map<int, int> initial = table;
    for (int i = 0; i < txns; ++i) {
      t[i].xid = xids[i];
      int n = 1 + static_cast<int>(rng() % 3);
      for (int c = 0; c < n; ++c) {
        int k = static_cast<int>(rng() % keys);
        bool del = rng() % 4 == 0;
        t[i].changes.push_back({k, del ? std::nullopt : std::optional<int>(i * 100 + c)});
      }
      if (i < low) t[i].visible = rng() % 8 != 0;  // a few racers
      else if (i < high) t[i].visible = rng() % 2 == 0;
    }
    // The snapshot that sees exactly the visible transactions.
    XidSnapshot snap;
    uint32_t max_visible = 999;
    for (const Txn& x : t) {
      if (x.visible) max_visible = std::max(max_visible, x.xid);
    }
    snap.xmax = max_visible + 1;
    for (const Txn& x : t) {
      if (!x.visible && x.xid < snap.xmax) snap.xip.push_back(x.xid);
    }
    std::sort(snap.xip.begin(), snap.xip.end());
    snap.xmin = snap.xip.empty() ? snap.xmax : snap.xip.front();
    for (const Txn& x : t) ASSERT_EQ(snap.Sees(x.xid), x.visible);

    // The chunk: the table as the snapshot sees it (visible ones in commit order).
    std::map<int, int> at_snapshot = initial;
    for (const Txn& x : t) {
      if (!x.visible) continue;
      for (const Change& c : x.changes) {
        if (c.value) at_snapshot[c.key] = *c.value;
        else at_snapshot.erase(c.key);
      }
    }
    std::vector<std::string> chunk_keys;
    std::vector<int> chunk_values, chunk_ids;
    for (auto& [k, v] : at_snapshot) {
      chunk_keys.push_back(K(std::to_string(k)));
      chunk_ids.push_back(k);
      chunk_values.push_back(v);
    }

    // The stream, through the window and into the consumer.
    ChangeWindow w;
    std::map<int, int> consumer = initial;
    std::map<int, int> truth = initial;
    for (int i = 0; i < txns; ++i) {
      if (i == low) w.MarkLow();
      if (i == high) {
        ChangeWindow::Verdict v = w.Close(chunk_keys, snap);
        ASSERT_FALSE(v.redo) << v.reason;
        for (size_t r = 0; r < chunk_keys.size(); ++r) {
          if (!v.drop[r]) consumer[chunk_ids[r]] = chunk_values[r];
        }
      }
      for (const Change& c : t[i].changes) {
        w.Record(t[i].xid, K(std::to_string(c.key)));
        if (c.value) {
          consumer[c.key] = *c.value;
          truth[c.key] = *c.value;
        } else {
          consumer.erase(c.key);
          truth.erase(c.key);
        }
      }
    }
    ASSERT_EQ(consumer, truth) << "round " << round << " low " << low << " high " << high;

    // A consumer that starts empty (what a backfill is for) gets every row of
    // the table too: rows nobody touched come from the chunk, the others from
    // their changes (each change carries the whole row in this model).
    std::map<int, int> fresh;
    ChangeWindow w2;
    for (int i = 0; i < txns; ++i) {
      if (i == low) w2.MarkLow();
      if (i == high) {
        ChangeWindow::Verdict v = w2.Close(chunk_keys, snap);
        for (size_t r = 0; r < chunk_keys.size(); ++r) {
          if (!v.drop[r]) fresh[chunk_ids[r]] = chunk_values[r];
        }
      }
      for (const Change& c : t[i].changes) {
        w2.Record(t[i].xid, K(std::to_string(c.key)));
        if (c.value) fresh[c.key] = *c.value;
        else fresh.erase(c.key);
      }
    }
    ASSERT_EQ(fresh, truth) << "round " << round;
  }
}

// Without the snapshot check for commits before the low watermark, the model
// finds a stale row: the rule is not vacuous.
TEST(ChangeWindow, ModelNeedsTheSnapshotCheck) {
  ChangeWindow w;
  // Racer 105 updated key 1 to "new", committed before the low watermark, and
  // the snapshot missed it: the chunk holds "old" for key 1.
  w.Record(105, K("1"));
  w.MarkLow();
  ChangeWindow::Verdict v = w.Close({K("1")}, kSees100);
  ASSERT_FALSE(v.redo);
  EXPECT_EQ(v.drop[0], 1) << "emitting the chunk's old row after the newer change would regress";
}

}  // namespace
}  // namespace walbus::bridge
