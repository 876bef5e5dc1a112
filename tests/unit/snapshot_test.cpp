// The pure parts of the initial snapshot: COPY text decoding
// (pgwire::DecodeCopyText), read/truncate envelopes (EnvelopeBuilder::BuildRead,
// BuildTruncateAt), which transactions a snapshot saw (SnapshotVisibility),
// and acknowledged progress through the ack tracker's marks (SnapshotLedger +
// AckTracker with acknowledgements arriving out of order on two sinks).
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <string>
#include <vector>

#include "bridge/ack_tracker.h"
#include "bridge/envelope_builder.h"
#include "bridge/snapshot_ledger.h"
#include "bridge/snapshot_visibility.h"
#include "pgwire/table_reader.h"
#include "pgwire/type_map.h"

namespace walbus {
namespace {

using pgwire::Column;
using pgwire::ColumnKind;
using pgwire::DecodeCopyText;

std::vector<std::string> Values(const std::vector<Column>& cols) {
  std::vector<std::string> out;
  for (const Column& c : cols) {
    out.push_back(c.kind == ColumnKind::kNull ? "<NULL>" : std::string(c.value));
  }
  return out;
}

// --- COPY text format ---------------------------------------------------

TEST(CopyText, SplitsFieldsAndReadsNulls) {
  std::string text;
  std::vector<Column> cols;
  ASSERT_TRUE(DecodeCopyText("1\tabc\t\\N\t", 4, &text, &cols).ok());
  EXPECT_EQ(Values(cols), (std::vector<std::string>{"1", "abc", "<NULL>", ""}));
  // An empty line is one empty value, not NULL.
  ASSERT_TRUE(DecodeCopyText("", 1, &text, &cols).ok());
  EXPECT_EQ(Values(cols), (std::vector<std::string>{""}));
}

TEST(CopyText, UndoesEveryEscapeCopyWrites) {
  std::string text;
  std::vector<Column> cols;
  // What COPY TO writes for: tab, newline, CR, backslash, backspace, form
  // feed, vertical tab, and the two characters '\' 'N' (not NULL).
  ASSERT_TRUE(DecodeCopyText("a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh\t\\\\N", 2, &text, &cols).ok());
  EXPECT_EQ(Values(cols), (std::vector<std::string>{"a\tb\nc\rd\\e\bf\fg\vh", "\\N"}));
}

TEST(CopyText, ReadsOctalHexAndOtherEscapesAsCopyFromDoes) {
  std::string text;
  std::vector<Column> cols;
  ASSERT_TRUE(DecodeCopyText("\\101\\x42\\x4a\\7z\\q\\x", 1, &text, &cols).ok());
  EXPECT_EQ(Values(cols), (std::vector<std::string>{std::string("ABJ\x07zqx")}));
}

TEST(CopyText, KeepsValuesWithoutEscapesInPlaceAndOthersStable) {
  std::string line = "plain\tes\\tcaped\tmore\\\\";
  std::string text;
  std::vector<Column> cols;
  ASSERT_TRUE(DecodeCopyText(line, 3, &text, &cols).ok());
  // Unescaped values point into the line; escaped ones into `text`, which
  // was reserved up front so earlier views survive later appends.
  EXPECT_EQ(cols[0].value.data(), line.data());
  EXPECT_EQ(Values(cols), (std::vector<std::string>{"plain", "es\tcaped", "more\\"}));
}

TEST(CopyText, RejectsWrongColumnCountsAndCutEscapes) {
  std::string text;
  std::vector<Column> cols;
  EXPECT_EQ(DecodeCopyText("1\t2", 3, &text, &cols).code(), Code::kCorruption);
  EXPECT_EQ(DecodeCopyText("1\t2\t3", 2, &text, &cols).code(), Code::kCorruption);
  EXPECT_EQ(DecodeCopyText("abc\\", 1, &text, &cols).code(), Code::kCorruption);
  // An escaped tab is data, not a separator.
  ASSERT_TRUE(DecodeCopyText("a\\\tb", 1, &text, &cols).ok());
  EXPECT_EQ(Values(cols), (std::vector<std::string>{"a\tb"}));
}

// --- read envelopes ------------------------------------------------------

struct BuilderFixture {
  BuilderFixture()
      : types([](uint32_t oid) -> Result<pgwire::PgTypeRow> {
          return Status::Corruption("no catalog in unit tests: " + std::to_string(oid));
        }),
        builder("shop", ValueOptions{}, &types, nullptr) {}

  std::unique_ptr<bridge::TableInfo> Describe(const std::string& schema, char identity) {
    // id int4 (key), amount numeric, tags text[], doc jsonb
    cols = {{true, "id", 23, -1}, {false, "amount", 1700, -1},
            {false, "tags", 1009, -1}, {false, "doc", 3802, -1}};
    pgwire::Relation rel;
    rel.oid = 16400;
    rel.nspname = schema;
    rel.relname = "orders";
    rel.replica_identity = identity;
    rel.columns = std::span<const pgwire::RelationColumn>(cols.data(), cols.size());
    Result<std::unique_ptr<bridge::TableInfo>> t = builder.Describe(rel);
    EXPECT_TRUE(t.ok()) << t.status().message();
    return t.ok() ? std::move(t).value() : nullptr;
  }

  pgwire::TypeResolver types;
  bridge::EnvelopeBuilder builder;
  std::vector<pgwire::RelationColumn> cols;
};

TEST(ReadEnvelope, HasTheStreamShapeWithTheConsistentPointAsIds) {
  BuilderFixture f;
  std::unique_ptr<bridge::TableInfo> t = f.Describe("public", 'd');
  ASSERT_TRUE(t);
  std::vector<Column> row = {{ColumnKind::kText, "42"},
                             {ColumnKind::kText, "12.50"},
                             {ColumnKind::kText, "{a,\"b c\"}"},
                             {ColumnKind::kNull, {}}};
  bridge::Built b;
  ASSERT_TRUE(f.builder.BuildRead(*t, pgwire::Tuple(row.data(), row.size()), 0x16B37A0, 7, &b).ok());
  EXPECT_EQ(b.payload,
            "{\"id\":\"00000000016B37A0:7\",\"op\":\"read\",\"source\":{\"db\":\"shop\","
            "\"schema\":\"public\",\"table\":\"orders\",\"lsn\":\"0/16B37A0\","
            "\"commit_lsn\":\"0/16B37A0\",\"xid\":null,\"ts\":null,\"seq\":7},"
            "\"key\":{\"id\":42},\"before\":null,"
            "\"after\":{\"id\":42,\"amount\":\"12.50\",\"tags\":[\"a\",\"b c\"],\"doc\":null}}");
  EXPECT_EQ(b.id, "00000000016B37A0:7");
  EXPECT_EQ(b.op, bridge::Op::kRead);
  EXPECT_EQ(b.commit_lsn, 0x16B37A0u);
  EXPECT_EQ(b.seq, 7u);
  EXPECT_EQ(b.table, t.get());
  EXPECT_EQ(b.after, "{\"id\":42,\"amount\":\"12.50\",\"tags\":[\"a\",\"b c\"],\"doc\":null}");
  rapidjson::Document d;
  d.Parse(b.payload.data(), b.payload.size());
  EXPECT_FALSE(d.HasParseError());

  // Reads do not disturb an open stream transaction's ids, nor need one.
  bridge::Built m;
  ASSERT_TRUE(f.builder.BuildTruncateAt(*t, 0x16B37A0, 8, &m).ok());
  EXPECT_EQ(m.payload,
            "{\"id\":\"00000000016B37A0:8\",\"op\":\"truncate\",\"source\":{\"db\":\"shop\","
            "\"schema\":\"public\",\"table\":\"orders\",\"lsn\":\"0/16B37A0\","
            "\"commit_lsn\":\"0/16B37A0\",\"xid\":null,\"ts\":null,\"seq\":8},"
            "\"key\":null,\"before\":null,\"after\":null}");
}

TEST(ReadEnvelope, RejectsRowsOfTheWrongWidth) {
  BuilderFixture f;
  std::unique_ptr<bridge::TableInfo> t = f.Describe("public", 'd');
  ASSERT_TRUE(t);
  std::vector<Column> row = {{ColumnKind::kText, "1"}};
  bridge::Built b;
  EXPECT_EQ(f.builder.BuildRead(*t, pgwire::Tuple(row.data(), row.size()), 1, 0, &b).code(),
            Code::kCorruption);
}

TEST(ReadEnvelope, TablesOfWalbusOwnSchemaAreInternal) {
  BuilderFixture f;
  EXPECT_TRUE(f.Describe("walbus", 'd')->internal);
  EXPECT_FALSE(f.Describe("public", 'd')->internal);
  EXPECT_FALSE(f.Describe("walbus_app", 'd')->internal);
}

// --- snapshot visibility -------------------------------------------------

TEST(SnapshotVisibility, ParsesPgSnapshotText) {
  EXPECT_TRUE(bridge::SnapshotVisibility::Parse("772:772:", 10).ok());
  EXPECT_TRUE(bridge::SnapshotVisibility::Parse("100:110:101,105", 10).ok());
  for (const char* bad : {"", "1:2", "5:4:", "a:b:", "1:2:3,", "1:2:x", "1:2:3,,4"}) {
    EXPECT_EQ(bridge::SnapshotVisibility::Parse(bad, 10).status().code(), Code::kInvalidArgument)
        << bad;
  }
}

TEST(SnapshotVisibility, SawCommittedTransactionsOnlyBeforeItsWalPosition) {
  Result<bridge::SnapshotVisibility> v = bridge::SnapshotVisibility::Parse("100:110:101,105", 5000);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->Saw(99, 4000));    // below xmin
  EXPECT_TRUE(v->Saw(100, 4000));   // xmin itself, not in progress
  EXPECT_FALSE(v->Saw(101, 4000));  // in progress at the snapshot
  EXPECT_TRUE(v->Saw(104, 4000));
  EXPECT_FALSE(v->Saw(105, 4000));
  EXPECT_FALSE(v->Saw(110, 4000));  // xmax: not yet completed
  EXPECT_FALSE(v->Saw(200, 4000));
  EXPECT_FALSE(v->Saw(99, 5000));   // committed at or after the WAL position read with it
}

TEST(SnapshotVisibility, WidensXidsAcrossAnEpoch) {
  // xmax just past an epoch boundary: 32-bit xid 0xFFFFFFF0 is the previous epoch's.
  uint64_t epoch1 = uint64_t{1} << 32;
  std::string text = std::to_string(epoch1 + 5) + ":" + std::to_string(epoch1 + 10) + ":" +
                     std::to_string(epoch1 + 7);
  Result<bridge::SnapshotVisibility> v = bridge::SnapshotVisibility::Parse(text, 5000);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->Saw(0xFFFFFFF0u, 1));  // epoch 0, far below xmin
  EXPECT_TRUE(v->Saw(6, 1));            // epoch 1, between xmin and xmax
  EXPECT_FALSE(v->Saw(7, 1));           // in progress
  EXPECT_FALSE(v->Saw(10, 1));          // xmax
}

// --- acknowledged progress ------------------------------------------------

TEST(SnapshotLedger, ReportsOnlyCheckpointsEverySinkAcknowledged) {
  bridge::AckWindow a(1024, nullptr), b(1024, nullptr);
  bridge::AckTracker tracker({&a, &b});
  tracker.Reset(0x5000);
  bridge::SnapshotLedger ledger;
  std::vector<size_t> applied_rows;
  auto apply = [&](const bridge::SnapshotLedger::Checkpoint& c) {
    applied_rows.push_back(c.rows_done);
  };
  // Three checkpoints of 2 rows each, both sinks get every row.
  for (int cp = 0; cp < 3; ++cp) {
    for (int r = 0; r < 2; ++r) {
      a.Issue();
      b.Issue();
    }
    bridge::SnapshotLedger::Checkpoint c;
    c.rows_done = static_cast<uint64_t>(2 * (cp + 1));
    c.last_key = pgwire::KeyValues{std::to_string(2 * (cp + 1))};
    uint64_t mark = ledger.Add(c);
    tracker.BeginTransaction();
    tracker.CommitTransaction(0x5000, 0, mark);
  }
  // Sink a acknowledges everything out of order; sink b only the first 3 rows.
  for (uint64_t t : {6, 2, 4, 1, 5, 3}) a.Ack(t);
  for (uint64_t t : {3, 1, 2}) b.Ack(t);
  EXPECT_EQ(tracker.Advance(), 0x5000u);  // never past the consistent point
  ledger.Confirm(tracker.confirmed_mark(), apply);
  EXPECT_EQ(applied_rows, (std::vector<size_t>{2}));  // rows 1-2 only: row 4 is missing on b
  b.AckThrough(6);
  tracker.Advance();
  ledger.Confirm(tracker.confirmed_mark(), apply);
  EXPECT_EQ(applied_rows, (std::vector<size_t>{2, 4, 6}));
  EXPECT_EQ(ledger.pending(), 0u);
  EXPECT_TRUE(tracker.Idle());
}

TEST(SnapshotLedger, AbandonedCheckpointsAreNeverApplied) {
  bridge::AckWindow a(1024, nullptr);
  bridge::AckTracker tracker({&a});
  bridge::SnapshotLedger ledger;
  a.Issue();
  uint64_t first = ledger.Add({});
  tracker.BeginTransaction();
  tracker.CommitTransaction(1, 0, first);
  // A rewind: the window and tracker forget the ticket, the ledger its checkpoint.
  a.Rewind();
  tracker.Reset(1);
  ledger.Abandon();
  a.Issue();
  bridge::SnapshotLedger::Checkpoint c;
  c.rows_done = 1;
  uint64_t second = ledger.Add(c);
  EXPECT_GT(second, first);
  tracker.BeginTransaction();
  tracker.CommitTransaction(1, 0, second);
  a.Ack(2);
  tracker.Advance();
  int applied = 0;
  ledger.Confirm(tracker.confirmed_mark(), [&](const bridge::SnapshotLedger::Checkpoint& cp) {
    ++applied;
    EXPECT_EQ(cp.rows_done, 1u);
  });
  EXPECT_EQ(applied, 1);
}

}  // namespace
}  // namespace walbus
