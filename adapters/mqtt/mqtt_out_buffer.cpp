#include "adapters/mqtt/mqtt_out_buffer.h"

namespace walbus::adapters::mqtt {

void OutBuffer::Consume(size_t n) {
  written_ += n;
  if (written_ < buf_.size()) return;
  buf_.clear();
  written_ = 0;
  cut_ = false;
  ShrinkIfLarge(&buf_);
}

void OutBuffer::Compact() {
  // Only once the written part is at least half: the memmove then costs no
  // more than the bytes written since the last one.
  if (written_ == 0 || written_ < buf_.size() - written_) return;
  buf_.erase(0, written_);
  written_ = 0;
  cut_ = true;  // empty() is false here, else Consume would have cleared it
}

std::string* OutBuffer::AppendTarget() {
  Compact();
  return &buf_;
}

void OutBuffer::TakeFrom(std::string* from) {
  if (buf_.empty()) {
    buf_.swap(*from);
  } else {
    Compact();
    buf_.append(*from);
  }
  from->clear();
  ShrinkIfLarge(from);
}

void OutBuffer::Reset() {
  buf_.clear();
  written_ = 0;
  cut_ = false;
  ShrinkIfLarge(&buf_);
}

void OutBuffer::ShrinkIfLarge(std::string* s) const {
  if (s->capacity() > keep_capacity_) std::string().swap(*s);
}

}  // namespace walbus::adapters::mqtt
