#include "bridge/wakeup.h"

#include <gtest/gtest.h>
#include <poll.h>

namespace walbus::bridge {
namespace {

bool Readable(const Wakeup& w) {
  struct pollfd p = {w.fd(), POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

TEST(Wakeup, OnlyAnArmedWaitIsWoken) {
  Wakeup w;
  w.Notify();
  w.NotifyAck();
  EXPECT_FALSE(Readable(w));  // not armed: no syscall, nothing to read
  w.Arm();
  w.NotifyAck();
  EXPECT_TRUE(Readable(w));
  w.Drain();
  EXPECT_FALSE(Readable(w));
  w.NotifyAck();  // the arm was used up
  EXPECT_FALSE(Readable(w));
}

// The source thread waiting for WAL arms without acknowledgements: with
// JetStream one arrives per event, and each used to wake it.
TEST(Wakeup, AnArmWithoutAcksIsWokenByFailuresOnly) {
  Wakeup w;
  w.Arm(/*acks=*/false);
  w.NotifyAck();
  w.NotifyAck();
  EXPECT_FALSE(Readable(w));
  w.Notify();  // a sink failure
  EXPECT_TRUE(Readable(w));
  w.Drain();
  // Re-armed for acknowledgements (paused at max_in_flight): they wake it again.
  w.Arm(/*acks=*/true);
  w.NotifyAck();
  EXPECT_TRUE(Readable(w));
  w.Drain();
  // A forced notification (the signal handler) needs no arm.
  w.Notify(/*force=*/true);
  EXPECT_TRUE(Readable(w));
}

}  // namespace
}  // namespace walbus::bridge
