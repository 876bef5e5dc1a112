#include "bridge/wakeup.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace walbus::bridge {

Wakeup::Wakeup() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

Wakeup::~Wakeup() {
  if (fd_ >= 0) close(fd_);
}

void Wakeup::Notify(bool force) {
  if (force || armed_.exchange(false, std::memory_order_seq_cst)) {
    uint64_t one = 1;
    ssize_t ignored = write(fd_, &one, sizeof one);
    (void)ignored;
  }
}

void Wakeup::Drain() {
  uint64_t v;
  ssize_t ignored = read(fd_, &v, sizeof v);
  (void)ignored;
  armed_.store(false, std::memory_order_relaxed);
}

}  // namespace walbus::bridge
