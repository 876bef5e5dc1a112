// walbus: the command line of SPEC §1.
//   walbus run -c FILE | check -c FILE | slot status -c FILE | slot drop -c FILE --yes | version
// Exit codes: 0 clean stop; 2 usage or configuration error (nothing started);
// 1 any other fatal error, printed as one line on stderr.
#include <libpq-fe.h>
#include <signal.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define WALBUS_LSAN_AT_EXIT 1
#endif

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/backfill_command.h"
#include "bridge/cli_sinks.h"
#include "bridge/core/log.h"
#include "bridge/core/lsn.h"
#include "bridge/exit_code.h"
#include "bridge/metrics_server.h"
#include "bridge/pipeline.h"
#include "bridge/snapshot_store.h"
#include "bridge/wakeup.h"
#include "bridge/walbus_schema.h"
#include "conf/file_permissions.h"
#include "conf/loader.h"
#include "conf/redact.h"
#include "pgwire/pg_conn.h"
#include "pgwire/replication_session.h"

namespace walbus::cli {
namespace {

using bridge::Fatal;
using bridge::kExitFatal;
using bridge::kExitOk;
using bridge::kExitUsage;

constexpr const char* kUsage =
    "usage: walbus <command> [options]\n"
    "\n"
    "commands:\n"
    "  run -c FILE            stream changes until SIGINT/SIGTERM\n"
    "  check -c FILE          validate the configuration, PostgreSQL prerequisites and sinks\n"
    "  slot status -c FILE    slot name, active pid, restart/confirmed LSN, lag, retained WAL\n"
    "  slot drop -c FILE --yes  drop the replication slot\n"
    "  backfill -c FILE SCHEMA.TABLE...  re-read tables into the stream, without pausing it\n"
    "  version                versions of walbus and its client libraries\n"
    "\n"
    "options:\n"
    "  -c, --config FILE      configuration file (TOML)\n"
    "  --log-format text|json log line format on stderr (default text)\n"
    "  --log-level LEVEL      trace|debug|info|warn|error (default info)\n"
    "  --yes                  confirm `slot drop`\n"
    "  --no-wait              `backfill`: register the request and return\n"
    "  --chunk-size N         `backfill`: rows per chunk (default 1024)\n";

std::atomic<bool> g_stop{false};
bridge::Wakeup* g_wakeup = nullptr;

void OnSignal(int) {
  g_stop.store(true);
  if (g_wakeup != nullptr) g_wakeup->Notify(/*force=*/true);
}

struct Args {
  std::vector<std::string> command;
  std::string config;
  bool yes = false;
  bridge::BackfillCommandOptions backfill;
  std::string backfill_only;  // the first backfill-only option given, e.g. "--no-wait"
};

// Matches `--name VALUE` (taking the next argument) and `--name=VALUE`.
// Returns false when argv[*i] is another option; sets *value to nullptr when
// `--name` is the last argument.
bool OptValue(int argc, char** argv, int* i, std::string_view name, const char** value) {
  std::string_view arg = argv[*i];
  if (arg == name) {
    *value = *i + 1 < argc ? argv[++*i] : nullptr;
    return true;
  }
  if (arg.size() > name.size() && arg.substr(0, name.size()) == name && arg[name.size()] == '=') {
    *value = argv[*i] + name.size() + 1;
    return true;
  }
  return false;
}

int Usage(const std::string& problem) {
  std::fprintf(stderr, "walbus: %s\n\n%s", problem.c_str(), kUsage);
  return kExitUsage;
}

Result<conf::Config> Load(const Args& a) {
  if (a.config.empty()) {
    return Status::InvalidArgument(
        "missing -c FILE: name the configuration file, e.g. -c /etc/walbus/walbus.toml");
  }
  return conf::LoadConfig(a.config);
}

// --- run ---------------------------------------------------------------

int Run(const conf::Config& config) {
  bridge::Wakeup wakeup;
  g_wakeup = &wakeup;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  log::Info("walbus starting", {{"version", WALBUS_VERSION},
                                {"config", config.path},
                                {"dsn", conf::RedactDsn(config.source.dsn)},
                                {"slot", config.source.slot},
                                {"sinks", std::to_string(config.sinks.size())}});
  bridge::Pipeline pipeline(config, [&config](const std::string& db) {
    return MakeSinks(config, db);
  });
  bridge::MetricsServer metrics;  // stopped before the pipeline it reads goes away
  if (!config.metrics.listen.empty()) {
    Status ms = metrics.Start(
        config.metrics.listen,
        [&pipeline] { return bridge::SnapshotOf(pipeline, WALBUS_VERSION); },
        config.metrics.health_grace_ms);
    if (!ms.ok()) {
      g_wakeup = nullptr;
      return Fatal(ms);
    }
    log::Info("metrics listening", {{"listen", config.metrics.listen}});
  }
  Status st = pipeline.Run(&g_stop, &wakeup);
  metrics.Stop();
  g_wakeup = nullptr;
  if (!st.ok()) return Fatal(st);
  return kExitOk;
}

// --- check -------------------------------------------------------------

struct Checker {
  int failures = 0;
  void Line(bool ok, const std::string& what, const std::string& detail) {
    std::printf("%-4s %s: %s\n", ok ? "ok" : "FAIL", what.c_str(), detail.c_str());
    std::fflush(stdout);
    if (!ok) ++failures;
  }
};

// snapshot = "initial": what the next run will do, and the privileges it needs
// (docs/snapshot.md): a schema for its progress, SELECT on every published table.
void CheckSnapshot(Checker& c, PGconn* pg, const conf::Config& config, bool slot_exists) {
  Result<std::optional<bridge::SnapshotRecord>> rec =
      bridge::SnapshotStore(config.source.slot).Load(pg);
  if (!rec.ok()) {
    c.Line(false, "initial snapshot", rec.status().message());
    return;
  }
  Result<pgwire::Rows> can = pgwire::Query(
      pg, "SELECT CASE WHEN n.oid IS NULL THEN has_database_privilege(current_database(), "
          "'CREATE') ELSE has_schema_privilege(n.oid, 'USAGE') AND (to_regclass('" +
              std::string(bridge::kWalbusSchema) + ".snapshots') IS NOT NULL OR "
              "has_schema_privilege(n.oid, 'CREATE')) END::text, (SELECT string_agg(format('%I.%I', "
              "t.schemaname, t.tablename), ', ') FROM pg_publication_tables t JOIN pg_namespace "
              "tn ON tn.nspname = t.schemaname JOIN pg_class tc ON tc.relnamespace = tn.oid AND "
              "tc.relname = t.tablename WHERE t.pubname = " +
              pgwire::QuoteLiteral(pg, config.source.publication) +
              " AND t.schemaname <> '" + std::string(bridge::kWalbusSchema) +
              "' AND NOT (has_schema_privilege(tn.oid, 'USAGE') AND "
              "has_table_privilege(tc.oid, 'SELECT'))) "
              "FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = '" +
              std::string(bridge::kWalbusSchema) + "'");
  if (!can.ok() || can->empty()) {
    c.Line(false, "initial snapshot", can.ok() ? "no answer" : can.status().message());
    return;
  }
  std::string user = pgwire::QuoteIdent(PQuser(pg));
  const pgwire::Row& r = can->front();
  if (r[0].value_or("false") != "true") {
    c.Line(false, "initial snapshot",
           "cannot keep progress in schema " + std::string(bridge::kWalbusSchema) + "; " +
               bridge::WalbusSchemaFix(pg));
    return;
  }
  if (r[1]) {
    c.Line(false, "initial snapshot", "cannot read " + *r[1] + "; GRANT SELECT ON " + *r[1] +
                                          " TO " + user + " (and USAGE on their schemas)");
    return;
  }
  if (!slot_exists) {
    c.Line(true, "initial snapshot", "taken when `walbus run` creates the slot");
  } else if (rec->has_value() && !(*rec)->done) {
    size_t done = 0;
    for (const bridge::SnapshotTableProgress& t : (*rec)->tables) done += t.done ? 1 : 0;
    c.Line(true, "initial snapshot",
           "unfinished (" + std::to_string(done) + "/" + std::to_string((*rec)->tables.size()) +
               " tables done): `walbus run` completes it");
  } else {
    c.Line(true, "initial snapshot",
           rec->has_value() ? "done" : "none: the slot exists, it is only streamed");
  }
}

int Check(const conf::Config& config) {
  Checker c;
  c.Line(true, "config", config.path + " (" + std::to_string(config.sinks.size()) + " sinks)");
  Result<pgwire::PgConnPtr> conn = pgwire::Connect(config.source.dsn, false);
  if (!conn.ok()) {
    c.Line(false, "postgres connection", conn.status().message());
  } else {
    PGconn* pg = conn->get();
    c.Line(true, "postgres connection",
           conf::RedactDsn(config.source.dsn) + " (user " + PQuser(pg) + ", database " +
               PQdb(pg) + ")");
    int v = PQserverVersion(pg);
    c.Line(v >= 120000, "server version",
           std::to_string(v / 10000) + "." + std::to_string(v % 10000) +
               (v >= 120000 ? "" : "; walbus needs PostgreSQL 12 or newer"));
    auto one = [&](const std::string& sql) -> Result<std::string> {
      Result<pgwire::Rows> r = pgwire::Query(pg, sql);
      if (!r.ok()) return r.status();
      if (r->empty() || r->front().empty()) return std::string();
      return r->front()[0].value_or("");
    };
    Result<std::string> wal = one("SHOW wal_level");
    bool wal_ok = wal.ok() && *wal == "logical";
    c.Line(wal_ok, "wal_level",
           !wal.ok() ? wal.status().message()
           : wal_ok  ? "logical"
                     : "'" + *wal + "'; set wal_level = logical (RDS: rds.logical_replication = 1) "
                                   "and restart PostgreSQL");
    Result<std::string> priv = one(
        "SELECT (rolreplication OR rolsuper OR EXISTS (SELECT 1 FROM pg_roles r WHERE "
        "r.rolname = 'rds_replication' AND pg_has_role(current_user, r.oid, 'member')))::text "
        "FROM pg_roles WHERE rolname = current_user");
    bool priv_ok = priv.ok() && *priv == "true";
    c.Line(priv_ok, "replication privilege",
           !priv.ok() ? priv.status().message()
           : priv_ok  ? std::string("granted to ") + PQuser(pg)
                      : std::string("role ") + PQuser(pg) + " lacks REPLICATION; ALTER ROLE " +
                            pgwire::QuoteIdent(PQuser(pg)) +
                            " REPLICATION (RDS: GRANT rds_replication TO " +
                            pgwire::QuoteIdent(PQuser(pg)) + ")");
    Result<std::unique_ptr<pgwire::ReplicationSession>> rs =
        pgwire::ReplicationSession::Open(config.source.dsn);
    if (rs.ok()) {
      Result<pgwire::SystemInfo> sys = (*rs)->IdentifySystem();
      c.Line(sys.ok(), "replication connection",
             sys.ok() ? "system " + sys->system_id + ", WAL at " + FormatLsn(sys->xlogpos)
                      : sys.status().message());
    } else {
      c.Line(false, "replication connection", rs.status().message());
    }
    const std::string& pub = config.source.publication;
    Result<std::string> tables = one(
        "SELECT (SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname)::text "
        "FROM pg_publication p WHERE p.pubname = " + pgwire::QuoteLiteral(pg, pub));
    if (!tables.ok()) {
      c.Line(false, "publication", tables.status().message());
    } else if (tables->empty()) {
      c.Line(config.source.create_publication, "publication",
             config.source.create_publication
                 ? "\"" + pub + "\" will be created by `walbus run`"
                 : "\"" + pub + "\" does not exist and create_publication = false; CREATE "
                                "PUBLICATION " + pgwire::QuoteIdent(pub) + " FOR ALL TABLES");
    } else {
      c.Line(true, "publication", "\"" + pub + "\" (" + *tables + " tables)");
    }
    const std::string& slot = config.source.slot;
    Result<pgwire::Rows> rows = pgwire::Query(
        pg, "SELECT plugin, database, active_pid::text, confirmed_flush_lsn::text, "
            "(SELECT current_setting('max_replication_slots')::int - count(*) FROM "
            "pg_replication_slots)::text FROM pg_replication_slots WHERE slot_name = " +
                pgwire::QuoteLiteral(pg, slot));
    if (!rows.ok()) {
      c.Line(false, "replication slot", rows.status().message());
    } else if (rows->empty()) {
      Result<std::string> free_slots = one(
          "SELECT (current_setting('max_replication_slots')::int - (SELECT count(*) FROM "
          "pg_replication_slots))::text");
      bool room = free_slots.ok() && std::atoi(free_slots->c_str()) > 0;
      if (!config.source.create_slot) {
        c.Line(false, "replication slot",
               "\"" + slot + "\" does not exist and create_slot = false; SELECT "
               "pg_create_logical_replication_slot('" + slot + "', 'pgoutput')");
      } else {
        c.Line(room, "replication slot",
               room ? "\"" + slot + "\" will be created by `walbus run`"
                    : "\"" + slot + "\" must be created but max_replication_slots is used up; "
                                    "raise it or drop an unused slot");
      }
    } else {
      const pgwire::Row& r = rows->front();
      std::string plugin = r[0].value_or(""), db = r[1].value_or("");
      if (plugin != "pgoutput") {
        c.Line(false, "replication slot", "\"" + slot + "\" uses plugin " + plugin +
                                              ", not pgoutput; use another slot name");
      } else if (db != PQdb(pg)) {
        c.Line(false, "replication slot", "\"" + slot + "\" belongs to database " + db);
      } else {
        c.Line(true, "replication slot",
               "\"" + slot + "\" confirmed at " + r[3].value_or("?") +
                   (r[2] ? ", active for PID " + *r[2] + " (this instance would stand by)"
                         : ", inactive"));
      }
    }
    if (config.source.snapshot == "initial") {
      CheckSnapshot(c, pg, config, rows.ok() && !rows->empty());
    }
  }
  std::string db = conn.ok() ? PQdb(conn->get()) : "";
  Result<std::vector<std::unique_ptr<Sink>>> sinks = MakeSinks(config, db);
  if (!sinks.ok()) {
    c.Line(false, "sinks", sinks.status().message());
  } else {
    for (auto& s : *sinks) {
      Status st = s->Check();
      c.Line(st.ok(), "sink " + std::string(s->name()) + " (" + std::string(s->type()) + ")",
             st.ok() ? "reachable" : st.message());
      s->Close();
    }
  }
  return c.failures == 0 ? kExitOk : kExitFatal;
}

// --- slot --------------------------------------------------------------

int SlotStatus(const conf::Config& config) {
  Result<pgwire::PgConnPtr> conn = pgwire::Connect(config.source.dsn, false);
  if (!conn.ok()) return Fatal(conn.status());
  PGconn* pg = conn->get();
  Result<pgwire::Rows> rows = pgwire::Query(
      pg, "SELECT slot_name, plugin, database, coalesce(active_pid::text, ''), "
          "coalesce(restart_lsn::text, ''), coalesce(confirmed_flush_lsn::text, ''), "
          "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text, ''), "
          "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text, ''), "
          "coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = " +
          pgwire::QuoteLiteral(pg, config.source.slot));
  if (!rows.ok()) return Fatal(rows.status());
  if (rows->empty()) {
    return Fatal(Status::FailedPrecondition("replication slot \"" + config.source.slot +
                                            "\" does not exist"));
  }
  const pgwire::Row& r = rows->front();
  auto v = [&](size_t i) { return r[i].value_or(""); };
  std::printf("slot:          %s\n", v(0).c_str());
  std::printf("plugin:        %s\n", v(1).c_str());
  std::printf("database:      %s\n", v(2).c_str());
  std::printf("active:        %s\n", v(3).empty() ? "no" : ("yes, pid " + v(3)).c_str());
  std::printf("restart_lsn:   %s\n", v(4).c_str());
  std::printf("confirmed_lsn: %s\n", v(5).c_str());
  std::printf("lag_bytes:     %s\n", v(6).c_str());
  std::printf("retained_wal:  %s bytes\n", v(7).c_str());
  std::printf("wal_status:    %s\n", v(8).c_str());
  return kExitOk;
}

int SlotDrop(const conf::Config& config, bool yes) {
  if (!yes) {
    return Usage("`slot drop` deletes the slot \"" + config.source.slot +
                 "\" and the position it holds; add --yes to confirm");
  }
  Result<pgwire::PgConnPtr> conn = pgwire::Connect(config.source.dsn, false);
  if (!conn.ok()) return Fatal(conn.status());
  PGconn* pg = conn->get();
  std::string state;
  Status st = pgwire::Exec(
      pg, "SELECT pg_drop_replication_slot(" + pgwire::QuoteLiteral(pg, config.source.slot) + ")",
      &state);
  if (!st.ok()) {
    if (state == "42704") {
      return Fatal(Status::FailedPrecondition("replication slot \"" + config.source.slot +
                                              "\" does not exist"));
    }
    if (state == "55006") {
      return Fatal(Status::FailedPrecondition(st.message() + "; stop that walbus first"));
    }
    return Fatal(st);
  }
  // Its initial-snapshot record (if any) describes nothing any more.
  Status forgot = bridge::SnapshotStore(config.source.slot).Forget(pg);
  if (!forgot.ok()) log::Warn("could not delete the slot's snapshot record", {{"reason", forgot.message()}});
  std::printf("dropped slot %s\n", config.source.slot.c_str());
  return kExitOk;
}

int Version() {
  int pq = PQlibVersion();
  std::printf("walbus %s\nlibpq %d.%d\n", WALBUS_VERSION, pq / 10000, pq % 10000);
  std::string more = AdapterVersions();
  if (!more.empty()) std::printf("%s", more.c_str());
  return kExitOk;
}

int Main(int argc, char** argv) {
  Args a;
  std::string log_format = "text", log_level = "info";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    const char* v = nullptr;
    if ((arg == "-c" && OptValue(argc, argv, &i, "-c", &v)) ||
        OptValue(argc, argv, &i, "--config", &v)) {
      if (v == nullptr) return Usage("-c needs a file name");
      a.config = v;
    } else if (OptValue(argc, argv, &i, "--log-format", &v)) {
      if (v == nullptr) return Usage("--log-format needs text or json");
      log_format = v;
    } else if (OptValue(argc, argv, &i, "--log-level", &v)) {
      if (v == nullptr) return Usage("--log-level needs a level");
      log_level = v;
    } else if (arg == "--yes" || arg == "-y") {
      a.yes = true;
    } else if (arg == "--no-wait") {
      a.backfill.no_wait = true;
      if (a.backfill_only.empty()) a.backfill_only = arg;
    } else if (OptValue(argc, argv, &i, "--chunk-size", &v)) {
      if (a.backfill_only.empty()) a.backfill_only = "--chunk-size";
      char* end = nullptr;
      unsigned long n = v == nullptr ? 0 : std::strtoul(v, &end, 10);
      if (v == nullptr || *v == '\0' || *end != '\0' || n == 0 || n > 1000000) {
        return Usage("--chunk-size needs a number of rows from 1 to 1000000");
      }
      a.backfill.chunk_size = static_cast<uint32_t>(n);
    } else if (arg == "-h" || arg == "--help" || arg == "help") {
      std::printf("%s", kUsage);
      return kExitOk;
    } else if (arg == "--version") {
      return Version();
    } else if (!arg.empty() && arg[0] == '-') {
      return Usage("unknown option " + arg);
    } else {
      a.command.push_back(arg);
    }
  }
  if (log_format != "text" && log_format != "json") {
    return Usage("--log-format must be text or json, not " + log_format);
  }
  log::SetJson(log_format == "json");
  log::Level level;
  if (!log::ParseLevel(log_level, &level)) return Usage("unknown --log-level " + log_level);
  log::SetLevel(level);

  if (a.command.empty()) return Usage("missing command");
  const std::string& cmd = a.command[0];
  if (cmd == "version") return Version();
  bool slot = cmd == "slot";
  bool backfill = cmd == "backfill";
  if (cmd != "run" && cmd != "check" && !slot && !backfill) return Usage("unknown command " + cmd);
  if (backfill && a.command.size() < 2) return Usage("backfill needs one or more SCHEMA.TABLE");
  if (backfill) a.backfill.tables.assign(a.command.begin() + 1, a.command.end());
  if (!backfill && !a.backfill_only.empty()) {
    return Usage(a.backfill_only + " is an option of `backfill`, not of `" + cmd + "`");
  }
  if (slot && (a.command.size() != 2 || (a.command[1] != "status" && a.command[1] != "drop"))) {
    return Usage("slot needs `status` or `drop`");
  }
  if (!slot && !backfill && a.command.size() != 1) {
    return Usage("unexpected argument " + a.command[1]);
  }
  Result<conf::Config> config = Load(a);
  if (config.ok()) {
    // A DSN libpq cannot parse is a configuration error: exit 2 before
    // anything is started (not "PostgreSQL unreachable, retrying").
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(config->source.dsn.c_str(), &err);
    if (opts == nullptr) {
      std::string why = err != nullptr ? err : "cannot be parsed";
      if (err != nullptr) PQfreemem(err);
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      config = Status::InvalidArgument(config->path + ": source.dsn: " + why +
                                       "; fix the libpq connection string");
    } else {
      PQconninfoFree(opts);
    }
  }
  if (!config.ok()) {
    // One line on stderr, in the chosen log format.
    log::Error(config.status().message(), {{"code", "invalid configuration"}});
    return kExitUsage;
  }
  // A secret in a file every local user can read: one warning per file.
  for (const std::string& w : conf::PermissionWarnings(*config)) log::Warn(w);
  if (cmd == "run") return Run(*config);
  if (cmd == "check") return Check(*config);
  if (backfill) return bridge::RunBackfillCommand(*config, a.backfill);
  if (a.command[1] == "status") return SlotStatus(*config);
  return SlotDrop(*config, a.yes);
}

}  // namespace
}  // namespace walbus::cli

int main(int argc, char** argv) {
  int code = walbus::cli::Main(argc, argv);
  // Leave without running exit handlers. cnats frees a closed TLS connection
  // on a thread of its own that may still run now, and OpenSSL's clean-up
  // (registered by a library constructor before main, so it cannot be opted
  // out of) freeing locks under it crashed `walbus check` against a TLS NATS
  // server (found by ThreadSanitizer). Every sink is closed and flushed by now;
  // the kernel frees the rest.
  std::fflush(nullptr);
#ifdef WALBUS_LSAN_AT_EXIT
  __lsan_do_leak_check();  // what exit handlers would have run under ASan
#endif
  std::_Exit(code);
}
