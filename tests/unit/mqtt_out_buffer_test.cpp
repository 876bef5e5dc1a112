#include "adapters/mqtt/mqtt_out_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace walbus::adapters::mqtt {
namespace {

constexpr size_t kKeep = 64 * 1024;

// A chunk of n bytes whose content depends on its number, to check order.
std::string Chunk(size_t number, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (number * 7 + i) % 26);
  return s;
}

// The broker of the wide-row benchmark: it takes a little less than what is
// handed over each round, so the buffer never drains. Before OutBuffer, the
// written bytes stayed in front and the buffer grew by everything published
// (146 MB peak RSS for 100 MB of events).
TEST(MqttOutBuffer, StaysProportionalToWhatIsUnwrittenWhenItNeverDrains) {
  OutBuffer out(kKeep);
  std::string handoff;
  size_t max_unwritten = 0, max_held = 0, max_capacity = 0;
  const size_t chunk = 20 * 1024;
  for (size_t round = 0; round < 5000; ++round) {  // 100 MB in all
    handoff = Chunk(round, chunk);
    out.TakeFrom(&handoff);
    EXPECT_TRUE(handoff.empty());
    // Writes of uneven sizes that leave ~1-2 chunks behind every time.
    size_t take = std::min(out.unwritten_size() - std::min(out.unwritten_size(), chunk),
                           chunk + (round % 3) * 512);
    if (round % 10 == 9) take = out.unwritten_size() - 1;  // almost drained, never quite
    out.Consume(take);
    ASSERT_FALSE(out.empty());
    max_unwritten = std::max(max_unwritten, out.unwritten_size() + chunk);
    max_held = std::max(max_held, out.held());
    max_capacity = std::max(max_capacity, out.capacity());
  }
  EXPECT_LE(max_held, 2 * max_unwritten);
  EXPECT_LE(max_capacity, 4 * max_unwritten);
  EXPECT_LT(max_capacity, 1024 * 1024u);  // against 100 MB handed over
}

TEST(MqttOutBuffer, KeepsTheBytesInOrderAcrossCompactions) {
  OutBuffer out(kKeep);
  std::string all, written;
  for (size_t round = 0; round < 300; ++round) {
    if (round % 4 == 0) {
      // A packet the I/O thread appends itself (PUBREL, PINGREQ).
      out.AppendTarget()->append("PUB");
      all += "PUB";
    }
    std::string h = Chunk(round, 1000 + round);
    all += h;
    out.TakeFrom(&h);
    size_t take = out.unwritten_size() * 2 / 3;
    written.append(out.unwritten().substr(0, take));
    out.Consume(take);
  }
  written.append(out.unwritten());
  out.Consume(out.unwritten_size());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(written.size(), all.size());
  EXPECT_TRUE(written == all);  // (not EXPECT_EQ: a mismatch would print 300 kB)
}

TEST(MqttOutBuffer, TellsWhenAPacketIsPartlyOut) {
  OutBuffer out(kKeep);
  EXPECT_FALSE(out.mid_packet());
  std::string h = "0123456789";
  out.TakeFrom(&h);
  EXPECT_FALSE(out.mid_packet());  // nothing written yet
  out.Consume(6);
  EXPECT_TRUE(out.mid_packet());
  h = "ab";
  out.TakeFrom(&h);  // 6 written of 12: compacts
  EXPECT_EQ(out.unwritten(), "6789ab");
  EXPECT_EQ(out.held(), 6u);
  EXPECT_TRUE(out.mid_packet());  // still: "6789" is the tail of a packet
  out.Consume(6);
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(out.mid_packet());
}

TEST(MqttOutBuffer, GivesBackALargeAllocationOnceDrained) {
  OutBuffer out(kKeep);
  std::string big(4 * kKeep, 'x');
  out.TakeFrom(&big);  // swapped in: no copy
  EXPECT_EQ(out.unwritten_size(), 4 * kKeep);
  EXPECT_LE(big.capacity(), kKeep);
  out.Consume(4 * kKeep);
  EXPECT_TRUE(out.empty());
  EXPECT_LE(out.capacity(), kKeep);
  // The string handed back by a swap keeps no large allocation either.
  std::string small = "abc";
  out.TakeFrom(&small);
  std::string next(3 * kKeep, 'y');
  next.reserve(8 * kKeep);
  out.TakeFrom(&next);  // appended: `next` is cleared and released
  EXPECT_LE(next.capacity(), kKeep);
  EXPECT_EQ(out.unwritten_size(), 3 + 3 * kKeep);
}

}  // namespace
}  // namespace walbus::adapters::mqtt
