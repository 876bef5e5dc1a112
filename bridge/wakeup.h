// Wakeup: lets broker threads and signal handlers wake the source thread
// while it sleeps in poll(2), without a syscall per acknowledgement: the
// source thread Arm()s before sleeping and only then does Notify() write.
// A source thread that waits for new WAL rather than for acknowledgements
// arms without them: acknowledgements then never wake it (with JetStream one
// arrives for every event), failures and stop requests still do.
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
  // Source thread: the next Notify() writes to fd(), and with acks the next
  // NotifyAck() too. Re-check your condition after arming and before polling.
  void Arm(bool acks = true) {
    acks_.store(acks, std::memory_order_seq_cst);
    armed_.store(true, std::memory_order_seq_cst);
    // Pairs with the fence in NotifyAck: either the notifier sees this arm,
    // or the condition re-checked after it sees the notifier's progress.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  // Any thread (and async-signal-safe when force is true): a failure, a stop.
  void Notify(bool force = false);
  // Any thread, after recording an acknowledgement.
  void NotifyAck() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (acks_.load(std::memory_order_relaxed)) Notify();
  }
  // Source thread, after poll says fd() is readable.
  void Drain();

 private:
  int fd_;
  std::atomic<bool> armed_{false};
  std::atomic<bool> acks_{true};  // the current arm also waits for acknowledgements
};

}  // namespace walbus::bridge
