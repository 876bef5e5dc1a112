// OutBuffer: the bytes the MQTT sink's I/O thread still has to write to the
// socket, in order. Its memory stays proportional to what is unwritten,
// however the broker paces its reads: bytes already written are dropped from
// the front as soon as they are at least half of the buffer (so each byte is
// moved at most once, and the buffer never holds more than twice the bytes
// still to write after an append), and a capacity above `keep_capacity` is
// given back whenever the buffer drains. Without that, a broker that never
// let the buffer drain completely (every write found new bytes appended)
// made it grow by everything ever published.
//
// Threads: one at a time (the sink's I/O thread).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace walbus::adapters::mqtt {

class OutBuffer {
 public:
  explicit OutBuffer(size_t keep_capacity) : keep_capacity_(keep_capacity) {}

  // The bytes not yet written, oldest first.
  std::string_view unwritten() const {
    return std::string_view(buf_).substr(written_);
  }
  size_t unwritten_size() const { return buf_.size() - written_; }
  bool empty() const { return written_ == buf_.size(); }
  // Some bytes of the oldest unwritten packet may already have gone out:
  // the connection cannot carry another packet before the rest of it.
  bool mid_packet() const { return !empty() && (written_ > 0 || cut_); }
  // For tests and metrics: bytes held (written or not) and their allocation.
  size_t held() const { return buf_.size(); }
  size_t capacity() const { return buf_.capacity(); }

  // n bytes of unwritten() went out. Once all have, the buffer is cleared.
  void Consume(size_t n);
  // The string to append packets to (PUBREL, PINGREQ), after dropping the
  // written bytes when due.
  std::string* AppendTarget();
  // Moves every byte of *from to the end, leaving *from empty (swapping the
  // strings when this buffer is empty, so a hand-off copies nothing); *from
  // keeps at most keep_capacity of allocation.
  void TakeFrom(std::string* from);
  // Drops everything (a new connection).
  void Reset();

 private:
  void Compact();
  void ShrinkIfLarge(std::string* s) const;

  const size_t keep_capacity_;
  std::string buf_;
  size_t written_ = 0;  // buf_[0, written_) is on the wire
  bool cut_ = false;    // written bytes were dropped while a packet was partly out
};

}  // namespace walbus::adapters::mqtt
