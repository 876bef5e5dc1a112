#include "adapters/stdout/stdout_sink.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

namespace walbus::adapters::stdout_sink {

Status StdoutSink::Open(AckSink* acks) {
  acks_ = acks;
  buffer_.clear();
  buffer_.reserve(kFlushAt + 64 * 1024);
  return Check();
}

Status StdoutSink::Check() {
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    return Status::Unavailable("sink " + name_ + ": standard output is closed (" +
                               strerror(errno) + ")");
  }
  return Status::Ok();
}

Status StdoutSink::Publish(const Event& event) {
  buffer_.append(event.topic);
  buffer_.push_back('\t');
  buffer_.append(event.payload);
  buffer_.push_back('\n');
  last_ticket_ = event.ticket;
  if (buffer_.size() >= kFlushAt) return Flush();
  return Status::Ok();
}

Status StdoutSink::Flush() {
  size_t done = 0;
  while (done < buffer_.size()) {
    ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      buffer_.erase(0, done);
      // A closed pipe or a full disk: the events stay unacknowledged, so the
      // slot does not move past them.
      return Status::Unavailable("sink " + name_ + ": write to standard output failed: " +
                                 strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
  if (last_ticket_ != 0 && acks_ != nullptr) acks_->AckThrough(last_ticket_);
  return Status::Ok();
}

void StdoutSink::Close() {
  buffer_.clear();
  acks_ = nullptr;
}

}  // namespace walbus::adapters::stdout_sink
