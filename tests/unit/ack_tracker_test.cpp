#include "bridge/ack_tracker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

namespace walbus::bridge {
namespace {

TEST(AckWindow, LowWaterMarkNeverPassesAGap) {
  AckWindow w(16, nullptr);
  for (int i = 0; i < 5; ++i) w.Issue();
  w.Ack(2);
  w.Ack(3);
  EXPECT_EQ(w.acked(), 0u);
  w.Ack(1);
  EXPECT_EQ(w.acked(), 3u);
  w.Ack(5);
  EXPECT_EQ(w.acked(), 3u);
  w.AckThrough(4);
  EXPECT_EQ(w.acked(), 5u);  // 5 was acknowledged early and is picked up
  EXPECT_EQ(w.in_flight(), 0u);
}

TEST(AckWindow, IgnoresDuplicatesAndTicketsNeverIssued) {
  AckWindow w(16, nullptr);
  w.Issue();
  w.Ack(1);
  w.Ack(1);
  w.Ack(7);  // never issued
  EXPECT_EQ(w.acked(), 1u);
  w.AckThrough(9);  // never issued
  EXPECT_EQ(w.acked(), 1u);
}

TEST(AckWindow, RewindAbandonsOutstandingTickets) {
  AckWindow w(16, nullptr);
  for (int i = 0; i < 4; ++i) w.Issue();
  w.Ack(1);
  w.Fail(Status::Unavailable("broker gone"));
  EXPECT_TRUE(w.failed());
  w.Rewind();
  EXPECT_FALSE(w.failed());
  EXPECT_EQ(w.acked(), 4u);
  EXPECT_EQ(w.in_flight(), 0u);
  w.Ack(3);  // late ack from before the rewind: ignored
  uint64_t t = w.Issue();
  EXPECT_EQ(t, 5u);
  EXPECT_EQ(w.acked(), 4u);
  w.Ack(5);
  EXPECT_EQ(w.acked(), 5u);
}

TEST(AckTracker, ConfirmsOnlyWhenEverySinkAcknowledgedEveryEarlierTransaction) {
  AckWindow a(64, nullptr), b(64, nullptr);
  AckTracker tracker({&a, &b});
  tracker.Reset(100);

  // T1: 2 events to both sinks. T2: 1 event to a only. T3: 1 event to both.
  tracker.BeginTransaction();
  a.Issue(); b.Issue(); a.Issue(); b.Issue();
  tracker.CommitTransaction(200, 1);
  tracker.BeginTransaction();
  a.Issue();
  tracker.CommitTransaction(300, 2);
  tracker.BeginTransaction();
  a.Issue(); b.Issue();
  tracker.CommitTransaction(400, 3);
  EXPECT_EQ(tracker.pending(), 3u);

  // Tickets: a = T1{1,2} T2{3} T3{4}; b = T1{1,2} T3{3}.
  // Acknowledgements out of order across sinks: T3 acked on b first.
  b.Ack(3);
  a.Ack(3);
  EXPECT_EQ(tracker.Advance(), 100u) << "nothing of T1 acknowledged yet";
  a.Ack(1);
  a.Ack(2);
  EXPECT_EQ(tracker.Advance(), 100u) << "T1 still waits for sink b";
  b.AckThrough(2);
  EXPECT_EQ(tracker.Advance(), 300u) << "T1 and T2 (a only) done; T3 waits for a's 4th";
  EXPECT_EQ(tracker.confirmed_commit_time_us(), 2);
  a.Ack(4);
  EXPECT_EQ(tracker.Advance(), 400u);
  EXPECT_EQ(tracker.pending(), 0u);
  EXPECT_TRUE(tracker.Idle());
}

TEST(AckTracker, KeepaliveConfirmsWalEndOnlyWhenNothingIsInFlight) {
  AckWindow a(64, nullptr);
  AckTracker tracker({&a});
  tracker.Reset(10);
  tracker.OnKeepalive(50);
  EXPECT_EQ(tracker.confirmed(), 50u);

  tracker.BeginTransaction();
  a.Issue();
  tracker.OnKeepalive(80);  // open transaction
  EXPECT_EQ(tracker.confirmed(), 50u);
  tracker.CommitTransaction(90, 0);
  tracker.OnKeepalive(120);  // committed but not acknowledged
  EXPECT_EQ(tracker.confirmed(), 50u);
  a.Ack(1);
  tracker.OnKeepalive(120);
  EXPECT_EQ(tracker.confirmed(), 120u);
  tracker.OnKeepalive(110);  // never backwards
  EXPECT_EQ(tracker.confirmed(), 120u);
}

TEST(AckTracker, AKeepaliveSeenWhileBusyIsConfirmedOnceIdle) {
  // The server may send no further keepalive once we are idle: the one that
  // arrived while events were unacknowledged must be confirmed later.
  AckWindow a(64, nullptr);
  AckTracker tracker({&a});
  tracker.Reset(10);
  tracker.BeginTransaction();
  a.Issue();
  tracker.CommitTransaction(90, 0);
  tracker.OnKeepalive(150);
  EXPECT_EQ(tracker.Advance(), 10u);
  a.Ack(1);
  EXPECT_EQ(tracker.Advance(), 150u);
  // A new connection forgets the old connection's keepalive.
  tracker.BeginTransaction();
  a.Issue();
  tracker.CommitTransaction(200, 0);
  tracker.OnKeepalive(300);
  tracker.Reset(tracker.confirmed());
  a.Rewind();
  EXPECT_EQ(tracker.Advance(), 150u);
}

TEST(AckTracker, EmptyTransactionsMergeAndConfirmInOrder) {
  AckWindow a(64, nullptr);
  AckTracker tracker({&a});
  tracker.Reset(0);
  tracker.BeginTransaction();
  a.Issue();
  tracker.CommitTransaction(10, 0);
  for (Lsn l = 20; l <= 1000; l += 10) {
    tracker.BeginTransaction();
    tracker.CommitTransaction(l, 0);  // every row filtered out
  }
  EXPECT_EQ(tracker.pending(), 1u) << "empty transactions extend the previous record";
  EXPECT_EQ(tracker.Advance(), 0u) << "not even T1's end before its event is acknowledged";
  a.Ack(1);
  EXPECT_EQ(tracker.Advance(), 1000u);
}

TEST(AckTracker, RandomOutOfOrderAcksFromThreadsNeverConfirmEarly) {
  // Three sinks acknowledge from their own threads in shuffled order; at every
  // step the confirmed LSN must be the end of a transaction all of whose
  // events (and every earlier one's) were acknowledged.
  constexpr int kTx = 2000;
  AckWindow w0(100000, nullptr), w1(100000, nullptr), w2(100000, nullptr);
  AckWindow* ws[3] = {&w0, &w1, &w2};
  AckTracker tracker({&w0, &w1, &w2});
  tracker.Reset(0);
  std::mt19937 rng(42);
  std::vector<std::vector<uint64_t>> per_sink(3);
  std::vector<std::vector<uint64_t>> last_ticket(kTx, std::vector<uint64_t>(3));
  for (int tx = 0; tx < kTx; ++tx) {
    tracker.BeginTransaction();
    int events = 1 + static_cast<int>(rng() % 5);
    for (int e = 0; e < events; ++e) {
      for (int s = 0; s < 3; ++s) {
        if (rng() % 3 != 0) per_sink[s].push_back(ws[s]->Issue());
      }
    }
    for (int s = 0; s < 3; ++s) last_ticket[tx][s] = ws[s]->issued();
    tracker.CommitTransaction(static_cast<Lsn>(tx + 1) * 100, tx);
  }
  std::vector<std::thread> threads;
  for (int s = 0; s < 3; ++s) {
    std::shuffle(per_sink[s].begin(), per_sink[s].end(), rng);
    threads.emplace_back([&, s] {
      for (uint64_t t : per_sink[s]) ws[s]->Ack(t);
    });
  }
  Lsn prev = 0;
  bool done = false;
  while (!done) {
    done = true;
    for (int s = 0; s < 3; ++s) done = done && ws[s]->in_flight() == 0;
    Lsn c = tracker.Advance();
    ASSERT_GE(c, prev);
    prev = c;
    if (c == 0) continue;
    int tx = static_cast<int>(c / 100) - 1;
    for (int s = 0; s < 3; ++s) {
      // Watermarks only grow: what Advance saw is <= what we read now, so a
      // confirmation without the acknowledgements fails here.
      ASSERT_GE(ws[s]->acked(), last_ticket[tx][s]);
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(tracker.Advance(), static_cast<Lsn>(kTx) * 100);
}

}  // namespace
}  // namespace walbus::bridge
