// Status and Result<T>: the only way errors travel between walbus folders.
// A Status is cheap to return when ok (no allocation). The code tells the
// caller what to do (see STYLE.md §3); the message is one readable line that
// names the cause and, where there is one, the fix.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace walbus {

enum class Code : unsigned char {
  kOk = 0,
  kCorruption,          // malformed or unexpected wire bytes: stop the session
  kUnavailable,         // network, server or broker down: retry with back-off
  kFailedPrecondition,  // wal_level, privilege, publication, slot: exit with the fix
  kResourceExhausted,   // in-flight window full: wait
  kInvalidArgument,     // bad configuration: exit 2
  kPermanent,           // a broker refused an event for good: exit 1, never skip
  kInternal,            // a walbus bug
};

std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status Unavailable(std::string m) { return Status(Code::kUnavailable, std::move(m)); }
  static Status FailedPrecondition(std::string m) {
    return Status(Code::kFailedPrecondition, std::move(m));
  }
  static Status ResourceExhausted(std::string m) {
    return Status(Code::kResourceExhausted, std::move(m));
  }
  static Status InvalidArgument(std::string m) {
    return Status(Code::kInvalidArgument, std::move(m));
  }
  static Status Permanent(std::string m) { return Status(Code::kPermanent, std::move(m)); }
  static Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "unavailable: connection refused ..." ; "ok" when ok.
  std::string ToString() const;

  // Returns a copy with "context: " put in front of the message.
  Status WithContext(std::string_view context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// Either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}     // NOLINT: must not be ok

  bool ok() const { return v_.index() == 0; }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace walbus

#define WALBUS_RETURN_IF_ERROR(expr)        \
  do {                                      \
    ::walbus::Status walbus_status_ = (expr); \
    if (!walbus_status_.ok()) return walbus_status_; \
  } while (0)
