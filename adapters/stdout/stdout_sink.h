// StdoutSink writes one `TOPIC<TAB>ENVELOPE\n` line per event to a file
// descriptor (standard output by default). Lines are collected in one buffer
// and written with one write(2) per batch; an event is acknowledged once the
// write that carries it has completed (and, for a regular file, fsync is not
// implied: the guarantee is "handed to the kernel").
// Threads: every method is called on the source thread only.
#pragma once

#include <string>

#include "bridge/core/sink.h"

namespace walbus::adapters::stdout_sink {

class StdoutSink final : public Sink {
 public:
  explicit StdoutSink(std::string name, int fd = 1) : name_(std::move(name)), fd_(fd) {}

  std::string_view name() const override { return name_; }
  std::string_view type() const override { return "stdout"; }
  Status Open(AckSink* acks) override;
  Status Publish(const Event& event) override;
  Status Flush() override;
  void Close() override;
  Status Check() override;

 private:
  static constexpr size_t kFlushAt = 256 * 1024;

  std::string name_;
  int fd_;
  AckSink* acks_ = nullptr;
  std::string buffer_;
  uint64_t last_ticket_ = 0;  // the newest ticket in buffer_
};

}  // namespace walbus::adapters::stdout_sink
