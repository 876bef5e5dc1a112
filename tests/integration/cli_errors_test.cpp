// The command line's exit codes and messages (SPEC §1, §2, §5): usage and
// configuration errors exit 2 before anything starts; unmet server
// prerequisites make `check` print FAIL and `run` exit 1 with one line naming
// the cause and the fix; a held slot makes `run` stand by and take over; an
// unreachable server makes `run` retry. The DSN password never shows.
#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr const char* kSecret = "s3cretpw";
constexpr int kSecondPort = 55496;

class CliErrors : public PgFixture {
 protected:
  // The fixture's DSN with a password that trust authentication ignores.
  std::string SecretDsn(const std::string& user = "postgres") const {
    return server_dsn(user) + " password=" + kSecret;
  }
  std::string server_dsn(const std::string& user) const {
    return "host=127.0.0.1 port=" + std::to_string(kPort) + " user=" + user + " dbname=postgres";
  }

  // Runs walbus to completion; the password must appear in neither stream.
  RunResult Cli(const std::vector<std::string>& args, const std::string& tag,
                milliseconds timeout = 30s, const EnvChanges& env = {}) {
    RunResult r = RunWalbus(args, dir(), tag, timeout, env);
    EXPECT_FALSE(Contains(r.out, kSecret)) << tag << " stdout shows the password:\n" << r.out;
    EXPECT_FALSE(Contains(r.err, kSecret)) << tag << " stderr shows the password:\n" << r.err;
    return r;
  }

  void ExpectNoSecret(const Child& c) {
    EXPECT_FALSE(Contains(c.out(), kSecret)) << c.out();
    EXPECT_FALSE(Contains(c.err(), kSecret)) << c.err();
  }

  std::string Config(const std::string& name, const std::string& slot, const std::string& pub,
                     const std::string& source_extra = "", const std::string& dsn = "") {
    return WriteConfig(name, slot, pub, source_extra, "", dsn.empty() ? SecretDsn() : dsn);
  }

  // The one ERROR line of a fatal exit (and a failure if there is not exactly one).
  static std::string OneErrorLine(const std::string& err) {
    std::vector<std::string> lines = LinesWith(err, " ERROR ");
    EXPECT_EQ(lines.size(), 1u) << "a fatal error is one line on stderr:\n" << err;
    return lines.empty() ? std::string() : lines[0];
  }

  // `check` output lines that start with FAIL and mention `what`.
  static bool HasFail(const std::string& out, const std::string& what) {
    for (const std::string& l : LinesWith(out, what)) {
      if (l.rfind("FAIL", 0) == 0) return true;
    }
    return false;
  }
};

// Usage and configuration errors: exit 2 and nothing is started.
TEST_F(CliErrors, UsageAndConfigErrorsExitTwo) {
  {
    RunResult r = Cli({"run"}, "no_c");
    EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
    EXPECT_TRUE(Contains(r.err, "-c")) << r.err;
  }
  {
    RunResult r = Cli({"frobnicate", "-c", "x.toml"}, "unknown_cmd");
    EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
    EXPECT_TRUE(Contains(r.err, "unknown command") && Contains(r.err, "frobnicate")) << r.err;
  }
  {
    // Options of `backfill` only: another command rejects them.
    RunResult r = Cli({"run", "-c", "x.toml", "--no-wait"}, "run_no_wait");
    EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
    EXPECT_TRUE(Contains(r.err, "walbus: --no-wait is an option of `backfill`")) << r.err;
    EXPECT_TRUE(Contains(r.err, "usage: walbus")) << r.err;
    RunResult c = Cli({"check", "-c", "x.toml", "--chunk-size=10"}, "check_chunk_size");
    EXPECT_EQ(c.code, std::optional<int>(2)) << c.err;
    EXPECT_TRUE(Contains(c.err, "walbus: --chunk-size is an option of `backfill`")) << c.err;
  }
  {
    RunResult r = Cli({}, "no_cmd");
    EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
  }
  {
    std::string missing = dir() + "/does-not-exist.toml";
    RunResult r = Cli({"run", "-c", missing}, "missing_file");
    EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
    EXPECT_TRUE(Contains(r.err, missing)) << r.err;
    RunResult c = Cli({"check", "-c", missing}, "missing_file_check");
    EXPECT_EQ(c.code, std::optional<int>(2)) << c.err;
  }
  {
    std::string path = dir() + "/unknown_key.toml";
    WriteFile(path, "[source]\n"                                 // 1
                    "dsn = \"" + SecretDsn() + "\"\n"            // 2
                    "slot = \"s\"\n"                             // 3
                    "publication = \"p\"\n"                      // 4
                    "\n"                                         // 5
                    "[[sink]]\n"                                 // 6
                    "name = \"out\"\n"                           // 7
                    "type = \"stdout\"\n"                        // 8
                    "  colour = \"blue\"\n");                    // 9, column 3
    for (const char* cmd : {"run", "check"}) {
      RunResult r = Cli({cmd, "-c", path}, std::string("unknown_key_") + cmd);
      EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
      EXPECT_TRUE(Contains(r.err, path + ":9:3:")) << "want FILE:LINE:COL; got " << r.err;
      EXPECT_TRUE(Contains(r.err, "colour")) << r.err;
    }
  }
  {
    std::string path = dir() + "/unset_var.toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + SecretDsn() + "\"\n"
                    "slot = \"${WALBUS_ITEST_UNSET_VAR}\"\n"
                    "publication = \"p\"\n"
                    "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n");
    RunResult r = Cli({"run", "-c", path}, "unset_var", 30s, {{"WALBUS_ITEST_UNSET_VAR", {}}});
    EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
    EXPECT_TRUE(Contains(r.err, path + ":3:")) << r.err;
    EXPECT_TRUE(Contains(r.err, "WALBUS_ITEST_UNSET_VAR")) << r.err;
    // The same file works once the variable is set.
    RunResult ok = Cli({"check", "-c", path}, "set_var", 30s, {{"WALBUS_ITEST_UNSET_VAR", "envslot"}});
    EXPECT_EQ(ok.code, std::optional<int>(0)) << ok.out << ok.err;
    EXPECT_TRUE(Contains(ok.out, "\"envslot\"")) << ok.out;
  }
  {
    RunResult r = Cli({"version"}, "version");
    EXPECT_EQ(r.code, std::optional<int>(0)) << r.err;
    EXPECT_TRUE(Contains(r.out, "walbus") && Contains(r.out, "libpq")) << r.out;
  }
  // Nothing was started by any of these.
  EXPECT_EQ(sql().Scalar("SELECT count(*) FROM pg_replication_slots"), std::optional<std::string>("0"));
  EXPECT_EQ(sql().Scalar("SELECT count(*) FROM pg_publication"), std::optional<std::string>("0"));
}

// `check` against a good server: one ok line per prerequisite, exit 0.
TEST_F(CliErrors, CheckAllOk) {
  std::string cfg = Config("good", "good_slot", "good_pub");
  RunResult r = Cli({"check", "-c", cfg}, "check");
  EXPECT_EQ(r.code, std::optional<int>(0)) << r.out << r.err;
  EXPECT_FALSE(Contains(r.out, "FAIL")) << r.out;
  for (const char* what : {"wal_level", "replication privilege", "publication", "replication slot",
                           "postgres connection", "sink out"}) {
    bool ok_line = false;
    for (const std::string& l : LinesWith(r.out, what)) ok_line = ok_line || l.rfind("ok", 0) == 0;
    EXPECT_TRUE(ok_line) << "no ok line for " << what << ":\n" << r.out;
  }
  // check changes nothing on the server.
  EXPECT_EQ(sql().Scalar("SELECT count(*) FROM pg_replication_slots"), std::optional<std::string>("0"));
  EXPECT_EQ(sql().Scalar("SELECT count(*) FROM pg_publication"), std::optional<std::string>("0"));
}

// wal_level = replica: check FAILs wal_level; run exits 1 naming it and the fix.
TEST_F(CliErrors, WalLevelReplica) {
  PgServer replica(kSecondPort, "/tmp/walbus-itest-pg-" + std::to_string(kSecondPort),
                   "-c wal_level=replica");
  struct StopOnExit {
    PgServer& s;
    ~StopOnExit() { s.Stop(); }
  } stop_on_exit{replica};
  ASSERT_TRUE(replica.Start());
  {
    Pg pg(replica.Dsn());
    ASSERT_TRUE(pg.ok());
    ASSERT_EQ(pg.Scalar("SHOW wal_level"), std::optional<std::string>("replica"));
    pg.Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots");
  }
  std::string cfg = Config("replica", "r_slot", "r_pub", "",
                           replica.Dsn() + " password=" + kSecret);
  RunResult c = Cli({"check", "-c", cfg}, "check");
  EXPECT_EQ(c.code, std::optional<int>(1)) << c.out << c.err;
  EXPECT_TRUE(HasFail(c.out, "wal_level")) << c.out;
  EXPECT_TRUE(Contains(c.out, "logical")) << "the FAIL line names the fix:\n" << c.out;

  RunResult r = Cli({"run", "-c", cfg}, "run", 30s);
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  std::string line = OneErrorLine(r.err);
  EXPECT_TRUE(Contains(line, "wal_level")) << line;
  EXPECT_TRUE(Contains(line, "wal_level = logical")) << "names the fix: " << line;
}

// A role without REPLICATION: check FAILs; run exits 1 naming REPLICATION.
TEST_F(CliErrors, RoleWithoutReplication) {
  ASSERT_TRUE(sql().Exec("DROP ROLE IF EXISTS walbus_norepl; CREATE ROLE walbus_norepl LOGIN;"
                         "CREATE PUBLICATION nr_pub FOR ALL TABLES"));
  std::string cfg = Config("norepl", "nr_slot", "nr_pub", "", SecretDsn("walbus_norepl"));
  RunResult c = Cli({"check", "-c", cfg}, "check");
  EXPECT_EQ(c.code, std::optional<int>(1)) << c.out << c.err;
  EXPECT_TRUE(HasFail(c.out, "REPLICATION")) << c.out;

  RunResult r = Cli({"run", "-c", cfg}, "run");
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  std::string line = OneErrorLine(r.err);
  EXPECT_TRUE(Contains(line, "REPLICATION")) << line;
  EXPECT_FALSE(sql().SlotExists("nr_slot"));
  sql().Exec("DROP ROLE IF EXISTS walbus_norepl");
}

// create_publication = false and no publication: exit 1 naming it.
TEST_F(CliErrors, MissingPublicationNotCreated) {
  std::string cfg = Config("nopub", "np_slot", "absent_pub", "create_publication = false\n");
  RunResult c = Cli({"check", "-c", cfg}, "check");
  EXPECT_EQ(c.code, std::optional<int>(1)) << c.out << c.err;
  EXPECT_TRUE(HasFail(c.out, "absent_pub")) << c.out;

  RunResult r = Cli({"run", "-c", cfg}, "run");
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  std::string line = OneErrorLine(r.err);
  EXPECT_TRUE(Contains(line, "publication") && Contains(line, "absent_pub")) << line;
  EXPECT_EQ(sql().Scalar("SELECT count(*) FROM pg_publication"), std::optional<std::string>("0"));
}

// create_slot = false and no slot: exit 1 naming it.
TEST_F(CliErrors, MissingSlotNotCreated) {
  std::string cfg = Config("noslot", "absent_slot", "ns_pub", "create_slot = false\n");
  RunResult c = Cli({"check", "-c", cfg}, "check");
  EXPECT_EQ(c.code, std::optional<int>(1)) << c.out << c.err;
  EXPECT_TRUE(HasFail(c.out, "absent_slot")) << c.out;

  RunResult r = Cli({"run", "-c", cfg}, "run");
  EXPECT_EQ(r.code, std::optional<int>(1)) << r.err;
  std::string line = OneErrorLine(r.err);
  EXPECT_TRUE(Contains(line, "slot") && Contains(line, "absent_slot")) << line;
  EXPECT_FALSE(sql().SlotExists("absent_slot"));
}

// Two instances, one slot: the second stands by and takes over when the first
// is killed (SPEC §5).
TEST_F(CliErrors, StandbyTakesOverAfterKill) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE ha (id int PRIMARY KEY)"));
  std::string cfg = Config("ha", "ha_slot", "ha_pub");
  Child first;
  ASSERT_TRUE(StartRun(&first, cfg, "first"));
  Child second;
  ASSERT_TRUE(second.Start({kWalbus, "run", "-c", cfg}, dir() + "/second.out",
                           dir() + "/second.err"));
  bool standing_by = WaitUntil([&] { return Contains(second.err(), "standing by"); }, 10s);
  EXPECT_TRUE(standing_by) << "the second instance does not log that it stands by:\n"
                           << second.err();
  ASSERT_TRUE(second.Running()) << "the second instance exited: " << second.err();

  ASSERT_TRUE(sql().Exec("INSERT INTO ha VALUES (1)"));
  WaitForEnvelopes(first.out_path(), 1);
  std::this_thread::sleep_for(1s);  // a few standby retries
  EXPECT_EQ(CountLines(second.out_path()), 0u) << "the standby streamed: " << second.out();
  EXPECT_TRUE(second.Running()) << second.err();

  ASSERT_TRUE(first.Signal(SIGKILL));
  EXPECT_EQ(first.Wait(10s), std::optional<int>(128 + SIGKILL));
  auto killed = Clock::now();
  ASSERT_TRUE(sql().Exec("INSERT INTO ha VALUES (2)"));
  bool took_over = WaitUntil(
      [&] {
        for (const Envelope& e : ParseOutput(second.out_path())) {
          if (JsonEq(e["key"], R"({"id":2})")) return true;
        }
        return false;
      },
      10s, 100ms);
  EXPECT_TRUE(took_over) << "the standby did not stream within 10 s of the kill:\n" << second.err();
  std::printf("[ info ] standby took over in %.2f s\n", SecondsSince(killed));
  EXPECT_TRUE(Contains(second.err(), "INFO streaming")) << second.err();

  // A standby stops cleanly on SIGTERM too.
  Child third;
  ASSERT_TRUE(third.Start({kWalbus, "run", "-c", cfg}, dir() + "/third.out",
                          dir() + "/third.err"));
  EXPECT_TRUE(WaitUntil([&] { return Contains(third.err(), "standing by"); }, 10s))
      << third.err();
  EXPECT_EQ(Stop(&third), std::optional<int>(0)) << third.err();
  EXPECT_EQ(CountLines(third.out_path()), 0u);

  EXPECT_EQ(Stop(&second), std::optional<int>(0)) << second.err();
  ExpectNoSecret(first);
  ExpectNoSecret(second);
  ExpectNoSecret(third);
}

// `slot status` prints the slot; `slot drop` needs --yes.
TEST_F(CliErrors, SlotStatusAndDrop) {
  ASSERT_TRUE(sql().Exec("CREATE TABLE ss (id int PRIMARY KEY)"));
  std::string cfg = Config("slot", "st_slot", "st_pub");
  {
    Child w;
    ASSERT_TRUE(StartRun(&w, cfg, "run"));
    ASSERT_TRUE(sql().Exec("INSERT INTO ss VALUES (1)"));
    WaitForEnvelopes(w.out_path(), 1);
    RunResult busy = Cli({"slot", "status", "-c", cfg}, "status_active");
    EXPECT_EQ(busy.code, std::optional<int>(0)) << busy.err;
    EXPECT_TRUE(Contains(busy.out, "yes, pid")) << busy.out;
    // Dropping an active slot fails and says so.
    RunResult drop_busy = Cli({"slot", "drop", "-c", cfg, "--yes"}, "drop_active");
    EXPECT_EQ(drop_busy.code, std::optional<int>(1)) << drop_busy.out << drop_busy.err;
    EXPECT_TRUE(sql().SlotExists("st_slot"));
    EXPECT_EQ(Stop(&w), std::optional<int>(0)) << w.err();
    ExpectNoSecret(w);
  }
  ASSERT_TRUE(WaitUntil([&] { return sql().SlotActivePid("st_slot") == std::optional<int>(0); }, 5s));
  std::string confirmed = FormatLsn(sql().SlotConfirmed("st_slot").value_or(0));

  RunResult s = Cli({"slot", "status", "-c", cfg}, "status");
  EXPECT_EQ(s.code, std::optional<int>(0)) << s.err;
  for (const char* field : {"slot:", "plugin:", "active:", "restart_lsn:", "confirmed_lsn:",
                            "lag_bytes:"}) {
    EXPECT_TRUE(Contains(s.out, field)) << "no " << field << " in:\n" << s.out;
  }
  EXPECT_TRUE(Contains(s.out, "st_slot")) << s.out;
  EXPECT_TRUE(Contains(s.out, "pgoutput")) << s.out;
  EXPECT_EQ(LinesWith(s.out, "confirmed_lsn:").size(), 1u) << s.out;
  if (!LinesWith(s.out, "confirmed_lsn:").empty()) {
    EXPECT_TRUE(Contains(LinesWith(s.out, "confirmed_lsn:")[0], confirmed))
        << "want " << confirmed << " in:\n" << s.out;
  }
  EXPECT_TRUE(Contains(LinesWith(s.out, "active:").empty() ? "" : LinesWith(s.out, "active:")[0], "no"))
      << s.out;

  RunResult no = Cli({"slot", "drop", "-c", cfg}, "drop_no_yes");
  EXPECT_EQ(no.code, std::optional<int>(2)) << no.err;
  EXPECT_TRUE(Contains(no.err, "--yes")) << no.err;
  EXPECT_TRUE(sql().SlotExists("st_slot")) << "dropped without --yes";

  RunResult yes = Cli({"slot", "drop", "-c", cfg, "--yes"}, "drop_yes");
  EXPECT_EQ(yes.code, std::optional<int>(0)) << yes.out << yes.err;
  EXPECT_FALSE(sql().SlotExists("st_slot"));

  RunResult gone = Cli({"slot", "status", "-c", cfg}, "status_gone");
  EXPECT_EQ(gone.code, std::optional<int>(1)) << gone.out << gone.err;
  EXPECT_TRUE(Contains(gone.err, "st_slot")) << gone.err;
  RunResult gone_drop = Cli({"slot", "drop", "-c", cfg, "--yes"}, "drop_gone");
  EXPECT_EQ(gone_drop.code, std::optional<int>(1)) << gone_drop.err;
}

// A DSN pointing at a closed port: check FAILs; run retries until SIGTERM.
TEST_F(CliErrors, ClosedPortCheckFailsRunRetries) {
  ASSERT_TRUE(PortClosed(kSecondPort)) << "something listens on " << kSecondPort;
  std::string dsn = "host=127.0.0.1 port=" + std::to_string(kSecondPort) +
                    " user=postgres dbname=postgres password=" + kSecret;
  std::string cfg = Config("closed", "c_slot", "c_pub", "", dsn);
  RunResult c = Cli({"check", "-c", cfg}, "check");
  EXPECT_EQ(c.code, std::optional<int>(1)) << c.out << c.err;
  EXPECT_TRUE(HasFail(c.out, "postgres connection")) << c.out;

  Child w;
  ASSERT_TRUE(w.Start({kWalbus, "run", "-c", cfg}, dir() + "/run.out", dir() + "/run.err"));
  bool retried = WaitUntil([&] { return Contains(w.err(), "retry"); }, 10s);
  EXPECT_TRUE(retried) << "no retry logged:\n" << w.err();
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(w.Running()) << "run gave up on an unreachable server:\n" << w.err();
  auto t0 = Clock::now();
  EXPECT_EQ(Stop(&w, 15s), std::optional<int>(0)) << w.err();
  std::printf("[ info ] SIGTERM while retrying to exit: %.2f s\n", SecondsSince(t0));
  EXPECT_EQ(CountLines(w.out_path()), 0u);
  ExpectNoSecret(w);
}

}  // namespace
}  // namespace walbus::itest
