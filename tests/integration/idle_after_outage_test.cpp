// After sink outages and the rewinds that follow, an idle database must not
// look "behind": the slot reaches the server's WAL end although nothing new is
// written. (The race that once broke this — a keepalive arriving while re-sent
// events were unacknowledged, then never again — is timing-dependent; the
// deterministic guard is AckTracker.AKeepaliveSeenWhileBusyIsConfirmedOnceIdle.)
#include <gtest/gtest.h>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

class IdleAfterOutage : public PgFixtureOnPort<55445> {};

TEST_F(IdleAfterOutage, SlotReachesWalEndOnceTheSinkIsBack) {
  // NATS: its acknowledgement is a flush round trip on another thread, so the
  // keepalive tends to arrive before the re-sent events are acknowledged.
  ComposeBroker broker(ComposeBroker::Kind::kNats, 55446, "/tmp/walbus-idle-nats-55446");
  ASSERT_TRUE(broker.Start());
  std::string cfg = dir() + "/idle.toml";
  WriteFile(cfg, "[source]\ndsn = \"" + dsn() + "\"\nslot = \"idle_slot\"\n"
                 "publication = \"idle_pub\"\nstatus_interval_ms = 200\n"
                 "\n[[sink]]\nname = \"nats\"\ntype = \"nats\"\nurl = \"" + broker.Url() +
                 "\"\n\n[metrics]\nlisten = \"\"\n");
  ASSERT_TRUE(sql().Exec("CREATE TABLE public.t(id int primary key, v text)"));
  Child walbus;
  ASSERT_TRUE(StartRun(&walbus, cfg, "idle"));
  ASSERT_TRUE(sql().Exec("INSERT INTO public.t VALUES (1, 'before')"));

  for (int round = 0; round < 3; ++round) {
    broker.Stop();
    ASSERT_TRUE(sql().Exec("INSERT INTO public.t VALUES (" + std::to_string(10 + round) +
                           ", 'during the outage')"));
    std::this_thread::sleep_for(700ms);
    ASSERT_TRUE(broker.Start(/*fresh=*/false));
    // Nothing else is written from here on: the database is idle.
    std::optional<std::string> end = sql().Scalar("SELECT pg_current_wal_lsn()::text");
    ASSERT_TRUE(end.has_value());
    uint64_t want = ParseLsn(*end).value_or(~uint64_t{0});
    uint64_t seen = 0;
    EXPECT_TRUE(WaitSlotConfirmed(sql(), "idle_slot", want, 20s, &seen))
        << "round " << round << ": confirmed " << seen << " < WAL end " << want
        << "\n" << walbus.err();
  }
  EXPECT_EQ(Stop(&walbus), std::optional<int>(0)) << walbus.err();
}

}  // namespace
}  // namespace walbus::itest
