// Wakeup: lets broker threads and signal handlers wake the source thread
// while it sleeps in poll(2), without a syscall per acknowledgement: the
// source thread Arm()s before sleeping and only then does Notify() write.
#pragma once

#include <atomic>

namespace walbus::bridge {

class Wakeup {
 public:
  Wakeup();
  ~Wakeup();
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;

  int fd() const { return fd_; }
  // Source thread: the next Notify() writes to fd(). Re-check your condition
  // after arming and before polling.
  void Arm() { armed_.store(true, std::memory_order_seq_cst); }
  // Any thread (and async-signal-safe when force is true).
  void Notify(bool force = false);
  // Source thread, after poll says fd() is readable.
  void Drain();

 private:
  int fd_;
  std::atomic<bool> armed_{false};
};

}  // namespace walbus::bridge
