// The /metrics text and the /healthz decision (bridge/metrics_server.h), from
// hand-made snapshots with fake clocks: no sockets, no pipeline.
#include "bridge/metrics_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace walbus::bridge {
namespace {

using ::testing::HasSubstr;

SinkMetrics Sink(std::string name) {
  SinkMetrics m;
  m.name = std::move(name);
  m.max_in_flight = 10000;
  return m;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// --- label escaping --------------------------------------------------------

TEST(MetricsFormat, EscapesLabelValues) {
  struct Case {
    const char* in;
    const char* want;
  };
  const Case cases[] = {
      {"plain", "plain"},
      {"", ""},
      {"a\\b", "a\\\\b"},
      {"say \"hi\"", "say \\\"hi\\\""},
      {"two\nlines", "two\\nlines"},
      {"\\\"\n", "\\\\\\\"\\n"},
      {"tab\tstays", "tab\tstays"},
      {"caf\xc3\xa9.\xe8\xa1\xa8", "caf\xc3\xa9.\xe8\xa1\xa8"},  // UTF-8 as is
  };
  for (const Case& c : cases) EXPECT_EQ(EscapeLabelValue(c.in), c.want) << c.in;
}

// --- lag --------------------------------------------------------------------

TEST(MetricsFormat, LagBytesAndSeconds) {
  struct Case {
    const char* name;
    uint64_t wal_end, confirmed;
    int64_t commit_us, now_us;
    uint64_t want_bytes;
    double want_seconds;
  };
  const Case cases[] = {
      {"caught_up", 5000, 5000, 1'000'000, 9'000'000, 0, 0},
      {"nothing_known_yet", 0, 0, 0, 9'000'000, 0, 0},
      {"wal_end_not_known_yet", 0, 7000, 1'000'000, 9'000'000, 0, 0},
      {"confirmed_past_a_stale_wal_end", 4000, 5000, 1'000'000, 9'000'000, 0, 0},
      {"behind", 6000, 5000, 1'000'000, 3'500'000, 1000, 2.5},
      {"behind_by_more_than_4GiB", 0x1'0000'1000ull, 0x1000, 1'000'000, 1'000'001,
       0x1'0000'0000ull, 1e-6},
      {"behind_commit_time_unknown", 6000, 5000, 0, 3'500'000, 1000, 0},
      {"behind_clock_skew_never_negative", 6000, 5000, 4'000'000, 3'500'000, 1000, 0},
  };
  for (const Case& c : cases) {
    MetricsSnapshot s;
    s.server_wal_end = c.wal_end;
    s.confirmed_lsn = c.confirmed;
    s.confirmed_commit_time_us = c.commit_us;
    s.now_us = c.now_us;
    EXPECT_EQ(LagBytes(s), c.want_bytes) << c.name;
    EXPECT_DOUBLE_EQ(LagSeconds(s), c.want_seconds) << c.name;
  }
}

// --- the exposition text -----------------------------------------------------

MetricsSnapshot Example() {
  MetricsSnapshot s;
  s.version = "0.1.0";
  s.transactions = 42;
  s.received_lsn = 0x1'6B37'4D48ull;  // 1/6B374D48
  s.confirmed_lsn = 0x1'6B37'4000ull;
  s.server_wal_end = 0x1'6B37'4D48ull;
  s.confirmed_commit_time_us = 10'000'000;
  s.now_us = 10'250'000;
  s.pg_reconnects = 2;
  s.retained_wal_bytes = 4096;
  s.state = PipelineStats::kStreaming;
  SinkMetrics out = Sink("out");
  out.events[static_cast<size_t>(Op::kInsert)] = 7;
  out.events[static_cast<size_t>(Op::kTruncate)] = 1;
  out.in_flight = 3;
  SinkMetrics redis = Sink("redis");
  redis.max_in_flight = 500;
  redis.errors = 4;
  redis.reconnects = 1;
  s.sinks = {out, redis};
  return s;
}

TEST(MetricsFormat, RendersTheWholeExample) {
  const std::string want =
      "# HELP walbus_up 1 while walbus runs and serves this endpoint.\n"
      "# TYPE walbus_up gauge\n"
      "walbus_up 1\n"
      "# HELP walbus_build_info The walbus version, as a label; always 1.\n"
      "# TYPE walbus_build_info gauge\n"
      "walbus_build_info{version=\"0.1.0\"} 1\n"
      "# HELP walbus_role 1 while this instance holds the slot and streams; 0 standing by, "
      "starting or reconnecting.\n"
      "# TYPE walbus_role gauge\n"
      "walbus_role 1\n"
      "# HELP walbus_events_total Events handed to each sink, by operation (insert, update, "
      "delete, truncate, read, message). Events re-sent after a reconnect count again.\n"
      "# TYPE walbus_events_total counter\n"
      "walbus_events_total{sink=\"out\",op=\"insert\"} 7\n"
      "walbus_events_total{sink=\"out\",op=\"update\"} 0\n"
      "walbus_events_total{sink=\"out\",op=\"delete\"} 0\n"
      "walbus_events_total{sink=\"out\",op=\"truncate\"} 1\n"
      "walbus_events_total{sink=\"redis\",op=\"insert\"} 0\n"
      "walbus_events_total{sink=\"redis\",op=\"update\"} 0\n"
      "walbus_events_total{sink=\"redis\",op=\"delete\"} 0\n"
      "# HELP walbus_transactions_total Committed transactions received from PostgreSQL.\n"
      "# TYPE walbus_transactions_total counter\n"
      "walbus_transactions_total 42\n"
      "# HELP walbus_received_lsn WAL position received from PostgreSQL, as a number of bytes "
      "(X/Y = X*2^32+Y).\n"
      "# TYPE walbus_received_lsn gauge\n"
      "walbus_received_lsn 6093753672\n"
      "# HELP walbus_confirmed_lsn WAL position confirmed to the slot (every earlier event "
      "acknowledged by every sink), as a number of bytes.\n"
      "# TYPE walbus_confirmed_lsn gauge\n"
      "walbus_confirmed_lsn 6093750272\n"
      "# HELP walbus_lag_bytes Server WAL end minus the confirmed LSN, in bytes.\n"
      "# TYPE walbus_lag_bytes gauge\n"
      "walbus_lag_bytes 3400\n"
      "# HELP walbus_lag_seconds Now minus the commit time of the newest confirmed transaction "
      "while behind; 0 when caught up.\n"
      "# TYPE walbus_lag_seconds gauge\n"
      "walbus_lag_seconds 0.25\n"
      "# HELP walbus_retained_wal_bytes WAL the replication slot holds on the server (current "
      "WAL LSN minus restart_lsn), read every 15 s; absent until first read.\n"
      "# TYPE walbus_retained_wal_bytes gauge\n"
      "walbus_retained_wal_bytes 4096\n"
      "# HELP walbus_in_flight Events handed to the sink and not yet acknowledged.\n"
      "# TYPE walbus_in_flight gauge\n"
      "walbus_in_flight{sink=\"out\"} 3\n"
      "walbus_in_flight{sink=\"redis\"} 0\n"
      "# HELP walbus_max_in_flight The sink's max_in_flight: reading pauses when "
      "walbus_in_flight reaches it.\n"
      "# TYPE walbus_max_in_flight gauge\n"
      "walbus_max_in_flight{sink=\"out\"} 10000\n"
      "walbus_max_in_flight{sink=\"redis\"} 500\n"
      "# HELP walbus_sink_errors_total Failed connects, publishes, flushes and broker-reported "
      "failures per sink.\n"
      "# TYPE walbus_sink_errors_total counter\n"
      "walbus_sink_errors_total{sink=\"out\"} 0\n"
      "walbus_sink_errors_total{sink=\"redis\"} 4\n"
      "# HELP walbus_reconnects_total Reconnects after a failure: target=\"postgres\" or "
      "target=\"sink:<name>\".\n"
      "# TYPE walbus_reconnects_total counter\n"
      "walbus_reconnects_total{target=\"postgres\"} 2\n"
      "walbus_reconnects_total{target=\"sink:out\"} 0\n"
      "walbus_reconnects_total{target=\"sink:redis\"} 1\n"
      "# HELP walbus_snapshot_rows_total Rows copied per table by the initial snapshot.\n"
      "# TYPE walbus_snapshot_rows_total counter\n";
  EXPECT_EQ(RenderMetrics(Example()), want);
}

// Every family the SPEC names, with its type, whatever the snapshot holds.
TEST(MetricsFormat, EveryFamilyHasHelpAndTheRightType) {
  const std::map<std::string, std::string> want = {
      {"walbus_up", "gauge"},
      {"walbus_build_info", "gauge"},
      {"walbus_role", "gauge"},
      {"walbus_events_total", "counter"},
      {"walbus_transactions_total", "counter"},
      {"walbus_received_lsn", "gauge"},
      {"walbus_confirmed_lsn", "gauge"},
      {"walbus_lag_bytes", "gauge"},
      {"walbus_lag_seconds", "gauge"},
      {"walbus_retained_wal_bytes", "gauge"},
      {"walbus_in_flight", "gauge"},
      {"walbus_max_in_flight", "gauge"},
      {"walbus_sink_errors_total", "counter"},
      {"walbus_reconnects_total", "counter"},
      {"walbus_snapshot_rows_total", "counter"},
  };
  MetricsSnapshot empty;
  MetricsSnapshot with_rows = Example();
  with_rows.snapshot_rows = {{"public.orders", 10}, {"we\"ird\\.t\nx", 1}};
  for (const MetricsSnapshot& s : {empty, Example(), with_rows}) {
    std::string text = RenderMetrics(s);
    ASSERT_FALSE(text.empty());
    ASSERT_EQ(text.back(), '\n');
    std::map<std::string, std::string> types;
    std::set<std::string> helps;
    std::string current;  // the family whose samples may follow
    // name{label="value",...} value: label values escaped, no raw newline.
    const std::regex sample(
        R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? )"
        R"((-?[0-9.e+-]+|NaN)$)");
    for (const std::string& line : Lines(text)) {
      std::smatch m;
      if (line.rfind("# HELP ", 0) == 0) {
        std::string name = line.substr(7, line.find(' ', 7) - 7);
        EXPECT_TRUE(helps.insert(name).second) << "HELP twice: " << name;
        current = name;
      } else if (line.rfind("# TYPE ", 0) == 0) {
        std::string rest = line.substr(7);
        std::string name = rest.substr(0, rest.find(' '));
        EXPECT_EQ(name, current) << "TYPE must follow its HELP: " << line;
        EXPECT_TRUE(types.emplace(name, rest.substr(rest.find(' ') + 1)).second)
            << "TYPE twice: " << name;
      } else if (std::regex_match(line, m, sample)) {
        EXPECT_EQ(m[1].str(), current) << "sample outside its family: " << line;
      } else {
        ADD_FAILURE() << "not a valid exposition line: " << line;
      }
    }
    EXPECT_EQ(types, want);
    EXPECT_EQ(helps.size(), want.size());
  }
  std::string text = RenderMetrics(with_rows);
  EXPECT_THAT(text, HasSubstr("walbus_snapshot_rows_total{table=\"public.orders\"} 10\n"));
  EXPECT_THAT(text, HasSubstr("walbus_snapshot_rows_total{table=\"we\\\"ird\\\\.t\\nx\"} 1\n"));
}

// insert/update/delete always have a series per sink; other operations only
// once they happened.
TEST(MetricsFormat, EventSeriesPerSinkAndOp) {
  struct Case {
    Op op;
    uint64_t count;
    bool listed;
  };
  const Case cases[] = {
      {Op::kInsert, 0, true},    {Op::kUpdate, 0, true},  {Op::kDelete, 0, true},
      {Op::kTruncate, 0, false}, {Op::kRead, 0, false},   {Op::kMessage, 0, false},
      {Op::kInsert, 5, true},    {Op::kTruncate, 2, true}, {Op::kRead, 9, true},
      {Op::kMessage, 1, true},
  };
  for (const Case& c : cases) {
    MetricsSnapshot s;
    SinkMetrics m = Sink("a");
    m.events[static_cast<size_t>(c.op)] = c.count;
    s.sinks = {m};
    std::string line = "walbus_events_total{sink=\"a\",op=\"" + std::string(OpName(c.op)) +
                       "\"} " + std::to_string(c.count) + "\n";
    EXPECT_EQ(RenderMetrics(s).find(line) != std::string::npos, c.listed) << line;
  }
}

TEST(MetricsFormat, RoleAndLsnValues) {
  struct Case {
    int state;
    uint64_t lsn;
    const char* role_line;
    const char* lsn_line;
  };
  const Case cases[] = {
      {PipelineStats::kStreaming, 0, "walbus_role 1\n", "walbus_confirmed_lsn 0\n"},
      {PipelineStats::kStarting, 0x16B3748, "walbus_role 0\n",
       "walbus_confirmed_lsn 23803720\n"},
      // Any other state is "not streaming".
      {PipelineStats::kStandby, 0xFFFFFFFF'FFFFFFFFull, "walbus_role 0\n",
       "walbus_confirmed_lsn 18446744073709551615\n"},
  };
  for (const Case& c : cases) {
    MetricsSnapshot s;
    s.state = c.state;
    s.confirmed_lsn = c.lsn;
    std::string text = RenderMetrics(s);
    EXPECT_THAT(text, HasSubstr(c.role_line));
    EXPECT_THAT(text, HasSubstr(c.lsn_line));
  }
}

// --- /healthz -----------------------------------------------------------------

TEST(MetricsHealth, Decisions) {
  constexpr int64_t kNow = 1'000'000;  // fake MonotonicMs()
  struct Case {
    const char* name;
    int state;
    int64_t pg_down_for_ms;    // -1: reachable
    int64_t sink_down_for_ms;  // sink "redis"; -1: up
    int64_t grace_ms;
    const char* last_error;
    int want_status;
    const char* want_body;
  };
  const Case cases[] = {
      {"streaming", PipelineStats::kStreaming, -1, -1, 30000, "", 200, "ok: streaming"},
      {"standby", PipelineStats::kStandby, -1, -1, 30000, "", 200,
       "ok: standing by (slot active for another process)"},
      {"starting", PipelineStats::kStarting, 500, -1, 30000, "", 200, "ok: starting"},
      {"starting_too_long", PipelineStats::kStarting, 31000, -1, 30000,
       "could not connect to server: Connection refused", 503,
       "postgres unreachable for 31 s: could not connect to server: Connection refused"},
      {"pg_down_within_grace", PipelineStats::kRetrying, 3000, -1, 30000, "x", 200,
       "ok: reconnecting (postgres unreachable for 3 s)"},
      {"pg_down_exactly_grace", PipelineStats::kRetrying, 30000, -1, 30000, "x", 200,
       "ok: reconnecting (postgres unreachable for 30 s)"},
      {"pg_down_past_grace", PipelineStats::kRetrying, 42000, -1, 30000,
       "server closed the connection unexpectedly", 503,
       "postgres unreachable for 42 s: server closed the connection unexpectedly"},
      {"pg_down_no_error_yet", PipelineStats::kStarting, 31000, -1, 30000, "", 503,
       "postgres unreachable for 31 s"},
      {"sink_down_within_grace", PipelineStats::kRetrying, -1, 1500, 2000, "sink redis: x", 200,
       "ok: reconnecting (sink redis unreachable for 1 s)"},
      {"sink_down_past_grace", PipelineStats::kRetrying, -1, 35000, 30000,
       "sink redis: connect to 127.0.0.1:55471: Connection refused", 503,
       "sink redis unreachable for 35 s: connect to 127.0.0.1:55471: Connection refused"},
      {"sink_error_of_another_sink_kept_whole", PipelineStats::kRetrying, -1, 35000, 30000,
       "sink other: boom", 503, "sink redis unreachable for 35 s: sink other: boom"},
      {"sink_down_at_start_named_not_postgres", PipelineStats::kStarting, 40000, 35000, 30000,
       "sink redis: refused", 503, "sink redis unreachable for 35 s: refused"},
      {"grace_zero_is_at_once", PipelineStats::kRetrying, -1, 0, 0, "sink redis: refused", 503,
       "sink redis unreachable for 0 s: refused"},
      {"error_made_one_line", PipelineStats::kRetrying, 60000, -1, 30000,
       "FATAL:  terminating\nconnection\r\tnow", 503,
       "postgres unreachable for 60 s: FATAL:  terminating connection  now"},
      {"stopping", PipelineStats::kStopped, -1, -1, 30000, "", 503, "stopping"},
  };
  for (const Case& c : cases) {
    MetricsSnapshot s;
    s.now_ms = kNow;
    s.state = c.state;
    s.pg_down_since_ms = c.pg_down_for_ms < 0 ? 0 : kNow - c.pg_down_for_ms;
    s.last_error = c.last_error;
    SinkMetrics ok = Sink("out");
    SinkMetrics redis = Sink("redis");
    redis.down_since_ms = c.sink_down_for_ms < 0 ? 0 : kNow - c.sink_down_for_ms;
    s.sinks = {ok, redis};
    Health h = CheckHealth(s, c.grace_ms);
    EXPECT_EQ(h.status, c.want_status) << c.name;
    EXPECT_EQ(h.body, c.want_body) << c.name;
  }
}

TEST(MetricsHealth, LongReasonIsCutOnACharacterBoundary) {
  MetricsSnapshot s;
  s.now_ms = 100000;
  s.pg_down_since_ms = 1;
  std::string err;
  while (err.size() < 1000) err += "\xc3\xa9";  // é, two bytes each
  s.last_error = "x" + err;                      // odd offset: a cut could split one
  Health h = CheckHealth(s, 1000);
  EXPECT_EQ(h.status, 503);
  const std::string prefix = "postgres unreachable for 99 s: x";
  ASSERT_EQ(h.body.rfind(prefix, 0), 0u) << h.body;
  EXPECT_LE(h.body.size(), prefix.size() + 303);
  ASSERT_GE(h.body.size(), 3u);
  EXPECT_EQ(h.body.substr(h.body.size() - 3), "...");
  std::string cut = h.body.substr(prefix.size(), h.body.size() - prefix.size() - 3);
  EXPECT_EQ(cut.size() % 2, 0u) << "a UTF-8 sequence was split";
  EXPECT_EQ(h.body.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace walbus::bridge
