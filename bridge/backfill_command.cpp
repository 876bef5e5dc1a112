#include "bridge/backfill_command.h"

#include <time.h>

#include <cstdio>
#include <optional>
#include <thread>

#include "bridge/backfill.h"
#include "bridge/backfill_store.h"
#include "bridge/core/clock.h"
#include "bridge/core/log.h"
#include "bridge/exit_code.h"
#include "pgwire/pg_conn.h"

namespace walbus::bridge {
namespace {

struct Tracked {
  int64_t id = 0;
  std::string name;
  double estimated = -1;
  std::string last_seen;  // state and counts last printed
  int64_t last_print_ms = 0;
  bool finished = false;
};

std::string Describe(const BackfillRequest& q, double estimated) {
  std::string line = q.Qualified() + ": " + q.state + ", " + std::to_string(q.rows) + " rows";
  if (estimated > 0 && q.state == "running") {
    double done = static_cast<double>(q.rows + q.skipped);
    int pct = static_cast<int>(std::min(99.0, 100.0 * done / estimated));
    line += " (~" + std::to_string(pct) + "% of ~" +
            std::to_string(static_cast<int64_t>(estimated)) + ")";
  }
  if (q.skipped > 0) line += " (" + std::to_string(q.skipped) + " more changed meanwhile: streamed)";
  line += ", " + std::to_string(q.chunks) + " chunks";
  if (q.state == "done" || q.state == "running") {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.1f", q.seconds);
    line += std::string(q.state == "done" ? " in " : ", ") + secs + " s";
  }
  if (q.state == "failed") line += ": " + q.error;
  return line;
}

}  // namespace

int RunBackfillCommand(const conf::Config& config, const BackfillCommandOptions& options) {
  Result<pgwire::PgConnPtr> conn = pgwire::Connect(config.source.dsn, false);
  if (!conn.ok()) return Fatal(conn.status());
  PGconn* pg = conn->get();
  int version = PQserverVersion(pg);
  if (!Backfill::Supported(version)) {
    return Fatal(Status::FailedPrecondition(
        "walbus backfill needs PostgreSQL 14 or newer (its watermarks are logical decoding "
        "messages); this server is " + std::to_string(version / 10000)));
  }

  // Every table is checked before any is registered.
  struct Wanted {
    std::string schema, table;
    double estimated = -1;
  };
  std::vector<Wanted> wanted;
  int bad = 0;
  for (const std::string& arg : options.tables) {
    Wanted w;
    Status st = ParseTableName(pg, arg, &w.schema, &w.table);
    if (st.ok()) {
      Result<pgwire::TableShape> shape =
          CheckBackfillable(pg, config.source.publication, w.schema, w.table);
      if (shape.ok()) {
        w.estimated = shape->estimated_rows;
      } else {
        st = shape.status();
      }
    }
    if (!st.ok()) {
      // A table that cannot be backfilled: say so and check the others.
      int rc = Fatal(st);
      if (rc != kExitUsage) return rc;
      ++bad;
      continue;
    }
    wanted.push_back(std::move(w));
  }
  if (bad > 0) return kExitUsage;

  Status st = EnsureBackfillTable(pg);
  if (!st.ok()) return Fatal(st);
  std::vector<Tracked> tracked;
  st = pgwire::Exec(pg, "BEGIN");
  for (size_t i = 0; st.ok() && i < wanted.size(); ++i) {
    bool existed = false;
    Result<int64_t> id = RegisterBackfill(pg, config.source.slot, wanted[i].schema,
                                          wanted[i].table, options.chunk_size, &existed);
    if (!id.ok()) {
      st = id.status();
      break;
    }
    Tracked t;
    t.id = *id;
    t.name = wanted[i].schema + "." + wanted[i].table;
    t.estimated = wanted[i].estimated;
    std::printf("%s %s (request %lld)\n", existed ? "already requested:" : "requested:",
                t.name.c_str(), static_cast<long long>(t.id));
    tracked.push_back(std::move(t));
  }
  // The wake-up travels in the same transaction: when the streamer sees it,
  // the requests are committed.
  std::string state;
  if (st.ok()) {
    st = pgwire::Exec(pg,
                      "SELECT pg_logical_emit_message(true, " +
                          pgwire::QuoteLiteral(pg, kWalbusMessagePrefix) + ", 'backfill')",
                      &state);
    if (!st.ok() && state == "42501") {
      st = Status::FailedPrecondition(st.message() + "; GRANT EXECUTE ON FUNCTION "
                                      "pg_logical_emit_message(boolean, text, text) TO " +
                                      pgwire::QuoteIdent(PQuser(pg)));
    }
  }
  if (st.ok()) st = pgwire::Exec(pg, "COMMIT");
  if (!st.ok()) {
    (void)pgwire::Exec(pg, "ROLLBACK");
    return Fatal(st.WithContext("registering the backfill"));
  }
  std::fflush(stdout);

  Result<pgwire::Rows> active = pgwire::Query(
      pg, "SELECT 1 FROM pg_replication_slots WHERE active_pid IS NOT NULL AND slot_name = " +
              pgwire::QuoteLiteral(pg, config.source.slot));
  if (active.ok() && active->empty()) {
    log::Warn("no walbus is streaming from slot \"" + config.source.slot +
              "\" now; the backfill starts when one does (`walbus run -c " + config.path + "`)");
  }
  if (options.no_wait) return kExitOk;

  // Follow the requests until each is done or failed.
  bool failed = false;
  bool lost = false;
  for (;;) {
    if (!*conn || PQstatus(conn->get()) != CONNECTION_OK) {
      Result<pgwire::PgConnPtr> again = pgwire::Connect(config.source.dsn, false);
      if (!again.ok()) {
        if (!lost) log::Warn("lost PostgreSQL, retrying: " + again.status().message());
        lost = true;
        std::this_thread::sleep_for(std::chrono::seconds(2));
        continue;
      }
      conn = std::move(again);
      lost = false;
    }
    int64_t now = MonotonicMs();
    bool all = true;
    for (Tracked& t : tracked) {
      if (t.finished) continue;
      Result<BackfillRequest> q = LoadBackfill(conn->get(), t.id);
      if (!q.ok()) {
        if (q.status().code() != Code::kUnavailable) return Fatal(q.status());
        conn->reset();
        all = false;
        break;
      }
      std::string line = Describe(*q, t.estimated);
      if (q->state == "done" || q->state == "failed") {
        t.finished = true;
        failed = failed || q->state == "failed";
        std::printf("%s\n", line.c_str());
        continue;
      }
      all = false;
      // A line when something moved, at most every 5 s, and one every 30 s.
      std::string seen = q->state + " " + std::to_string(q->rows + q->skipped);
      int64_t since = now - t.last_print_ms;
      if ((seen != t.last_seen && since >= 5000) || since >= 30000) {
        std::printf("%s\n", line.c_str());
        t.last_seen = std::move(seen);
        t.last_print_ms = now;
      }
    }
    std::fflush(stdout);
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return failed ? kExitFatal : kExitOk;
}

}  // namespace walbus::bridge
