// libFuzzer target for pgwire/array_literal.h and bridge/value_writer.h.
// Input: byte 0 holds flags (bit 0: delimiter ';' instead of ','; bit 1:
// numeric_as_number; bit 2: bytea_hex), the rest is the text.
//  1. ParseArrayLiteral with a counting visitor: callbacks balanced, depth
//     within kMaxArrayDims, every raw view inside the text, is_null only for
//     an unquoted NULL; a failure is Corruption.
//  2. AppendValue with an array TypeInfo of every element kind, and with every
//     scalar kind: on success the appended bytes are one valid JSON value
//     (json_check.h: strict, UTF-8 validated) on one line; on failure *out is untouched
//     and the code is Corruption (FailedPrecondition only for text a json
//     column should not hold).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bridge/value_writer.h"
#include "pgwire/array_literal.h"
#include "pgwire/type_map.h"
#include "tests/fuzz/json_check.h"

namespace {

using walbus::Status;
using walbus::pgwire::ValueKind;

[[noreturn]] void Fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz_array_literal: invariant broken: %s\n", what);
  if (!detail.empty()) {
    std::fprintf(stderr, "  output (%zu bytes): %.*s\n", detail.size(),
                 static_cast<int>(detail.size() > 4096 ? 4096 : detail.size()), detail.data());
  }
  std::abort();
}

bool EqualsNullIgnoringCase(std::string_view s) {
  if (s.size() != 4) return false;
  const char* k = "NULL";
  for (size_t i = 0; i < 4; ++i) {
    char c = s[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != k[i]) return false;
  }
  return true;
}

class CountingVisitor final : public walbus::pgwire::ArrayVisitor {
 public:
  explicit CountingVisitor(std::string_view text) : text_(text) {}

  Status BeginArray() override {
    ++begins_;
    if (++depth_ > walbus::pgwire::kMaxArrayDims) Fail("depth above kMaxArrayDims");
    return Status::Ok();
  }
  Status EndArray() override {
    ++ends_;
    if (--depth_ < 0) Fail("EndArray without BeginArray");
    return Status::Ok();
  }
  Status Element(std::string_view raw, bool quoted, bool is_null) override {
    ++elements_;
    if (depth_ <= 0) Fail("Element outside any array");
    if (!raw.empty()) {
      const char* b = text_.data();
      const char* e = b + text_.size();
      if (raw.data() < b || raw.data() > e || raw.size() > static_cast<size_t>(e - raw.data())) {
        Fail("Element raw view outside the text");
      }
    }
    if (is_null && (quoted || !EqualsNullIgnoringCase(raw))) Fail("is_null for a non-NULL");
    if (!is_null && !quoted && EqualsNullIgnoringCase(raw)) Fail("unquoted NULL not is_null");
    return Status::Ok();
  }

  void CheckDone(bool ok) const {
    if (!ok) return;
    if (depth_ != 0 || begins_ != ends_) Fail("unbalanced BeginArray/EndArray on success");
    if (begins_ == 0) Fail("success without any array");
  }

 private:
  std::string_view text_;
  int depth_ = 0;
  long begins_ = 0, ends_ = 0, elements_ = 0;
};

// json values (and arrays of json) are held to the same strict check as
// everything else: AppendValue checks JSON's grammar before copying a json
// value (bridge/json_writer.cpp AppendJsonValue; tests/fuzz/README.md, "json
// values"). WALBUS_FUZZ_STRICT_JSON=0 relaxes that to "valid UTF-8, no control
// character, array in brackets", the check of builds before the grammar was,
// for bisecting; any other value, or none, is strict.
bool StrictJsonKinds() {
  static const bool strict = [] {
    const char* v = std::getenv("WALBUS_FUZZ_STRICT_JSON");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return strict;
}

void CheckJson(std::string_view json) {
  if (json.find('\n') != std::string_view::npos) Fail("newline in a JSON value", json);
  // Nesting is bounded by kMaxArrayDims (plus what a json element holds).
  if (!walbus::fuzz::JsonCheck::Valid(json)) Fail("AppendValue produced invalid JSON", json);
}

void CheckAppend(const walbus::pgwire::TypeInfo& type, std::string_view text,
                 const walbus::ValueOptions& opt) {
  static const std::string kPrefix = "{\"v\":";
  std::string out = kPrefix;
  Status s = walbus::AppendValue(&out, type, text, opt);
  if (out.compare(0, kPrefix.size(), kPrefix) != 0) Fail("AppendValue changed existing bytes");
  if (!s.ok()) {
    if (out != kPrefix) Fail("AppendValue failed but left bytes in *out", out);
    const bool json_kind = type.kind == ValueKind::kJson ||
                           (type.kind == ValueKind::kArray && type.element == ValueKind::kJson);
    // Invalid JSON in a json column is bad stored data (FailedPrecondition);
    // any other refusal is Corruption.
    if (s.code() == walbus::Code::kFailedPrecondition) {
      if (!json_kind) Fail("FailedPrecondition from AppendValue on a non-json type");
    } else if (s.code() != walbus::Code::kCorruption && s.code() != walbus::Code::kInternal) {
      Fail("AppendValue failure with an unexpected code");
    }
    if (s.code() == walbus::Code::kInternal && type.kind == ValueKind::kArray &&
        type.element != ValueKind::kArray) {
      Fail("Internal error from AppendValue on an array");
    }
    return;
  }
  const std::string_view json = std::string_view(out).substr(kPrefix.size());
  const bool holds_json = type.kind == ValueKind::kJson ||
                          (type.kind == ValueKind::kArray && type.element == ValueKind::kJson);
  if (holds_json && !StrictJsonKinds()) {
    if (json.empty()) Fail("AppendValue(json) returned ok and appended nothing");
    if (!walbus::fuzz::JsonCheck::LexicallyClean(json)) {
      Fail("AppendValue(json) produced a control character or invalid UTF-8", json);
    }
    if (type.kind == ValueKind::kArray && (json.front() != '[' || json.back() != ']')) {
      Fail("AppendValue(json[]) produced something other than an array", json);
    }
    return;
  }
  if (!walbus::fuzz::JsonCheck::Valid(json) || json.find('\n') != std::string_view::npos) {
    std::fprintf(stderr, "AppendValue(kind=%s element=%s delimiter='%c' numeric_as_number=%d "
                 "bytea_hex=%d) returned ok\n",
                 std::string(walbus::pgwire::ValueKindName(type.kind)).c_str(),
                 std::string(walbus::pgwire::ValueKindName(type.element)).c_str(),
                 type.delimiter, opt.numeric_as_number, opt.bytea_hex);
  }
  CheckJson(json);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  const char delimiter = (flags & 1) ? ';' : ',';
  walbus::ValueOptions opt;
  opt.numeric_as_number = (flags & 2) != 0;
  opt.bytea_hex = (flags & 4) != 0;
  // Copy into an exactly-sized heap buffer so ASan catches any over-read.
  const std::string owned(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string_view text(owned);

  CountingVisitor counter(text);
  Status s = walbus::pgwire::ParseArrayLiteral(text, delimiter, counter);
  if (!s.ok() && s.code() != walbus::Code::kCorruption) Fail("parse failure that is not Corruption");
  counter.CheckDone(s.ok());

  static constexpr ValueKind kKinds[] = {ValueKind::kText,    ValueKind::kBool,
                                         ValueKind::kInteger, ValueKind::kFloat,
                                         ValueKind::kNumeric, ValueKind::kJson,
                                         ValueKind::kBytea};
  for (ValueKind element : kKinds) {
    walbus::pgwire::TypeInfo array{ValueKind::kArray, element, delimiter};
    CheckAppend(array, text, opt);
  }
  // The same text as each scalar kind exercises the element writers directly.
  for (ValueKind kind : kKinds) {
    walbus::pgwire::TypeInfo scalar{kind, ValueKind::kText, ','};
    CheckAppend(scalar, text, opt);
  }
  return 0;
}
