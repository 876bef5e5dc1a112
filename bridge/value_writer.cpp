#include "bridge/value_writer.h"

#include <cstdint>
#include <cstring>

#include "bridge/json_writer.h"
#include "pgwire/array_literal.h"

namespace walbus {
namespace {

using pgwire::ValueKind;

// Messages name the kind and the length, never the text: values may hold
// personal data and errors end up in logs.
Status Malformed(ValueKind kind, std::string_view text, const char* why) {
  std::string m(pgwire::ValueKindName(kind));
  m += " value: ";
  m += why;
  m += " (";
  m += std::to_string(text.size());
  m += " bytes)";
  return Status::Corruption(std::move(m));
}

// For text already checked to need no JSON escaping (numbers, NaN, hex).
// One size change of *out rather than three appends.
inline void AppendQuoted(std::string* out, std::string_view s) {
  size_t old = out->size();
  out->append(s.size() + 2, '"');
  if (!s.empty()) std::memcpy(&(*out)[old + 1], s.data(), s.size());
}

bool IsJsonInteger(std::string_view s) {
  const char* end = s.data() + s.size();
  return ScanJsonInt(s.data(), end) == end;
}

// JSON's number production: int frac? exp?
bool IsJsonNumber(std::string_view s) {
  const char* end = s.data() + s.size();
  return ScanJsonNumber(s.data(), end) == end;
}

// The special values float8out / numeric_out print as words.
inline bool IsSpecialNumber(std::string_view s) {
  return s == "NaN" || s == "Infinity" || s == "-Infinity";
}

constexpr auto kHexValue = [] {
  struct Table {
    int8_t v[256];
  } t{};
  for (int c = 0; c < 256; ++c) t.v[c] = -1;
  for (int c = '0'; c <= '9'; ++c) t.v[c] = static_cast<int8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t.v[c] = static_cast<int8_t>(c - 'a' + 10);
  for (int c = 'A'; c <= 'F'; ++c) t.v[c] = static_cast<int8_t>(c - 'A' + 10);
  return t;
}();

constexpr char kHexDigits[] = "0123456789abcdef";
constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Encodes a stream of bytes as base64 (padded) or lower-case hex.
class ByteEncoder {
 public:
  ByteEncoder(std::string* out, bool hex) : out_(out), hex_(hex) {}
  void Put(uint8_t b) {
    if (hex_) {
      char two[2] = {kHexDigits[b >> 4], kHexDigits[b & 0xF]};
      out_->append(two, 2);
      return;
    }
    acc_ = (acc_ << 8) | b;
    if (++n_ == 3) {
      char four[4] = {kBase64[(acc_ >> 18) & 63], kBase64[(acc_ >> 12) & 63],
                      kBase64[(acc_ >> 6) & 63], kBase64[acc_ & 63]};
      out_->append(four, 4);
      acc_ = 0;
      n_ = 0;
    }
  }
  void Finish() {
    if (n_ == 1) {
      char four[4] = {kBase64[(acc_ >> 2) & 63], kBase64[(acc_ << 4) & 63], '=', '='};
      out_->append(four, 4);
    } else if (n_ == 2) {
      char four[4] = {kBase64[(acc_ >> 10) & 63], kBase64[(acc_ >> 4) & 63],
                      kBase64[(acc_ << 2) & 63], '='};
      out_->append(four, 4);
    }
  }

 private:
  std::string* out_;
  bool hex_;
  uint32_t acc_ = 0;
  int n_ = 0;
};

}  // namespace

void AppendBase64(std::string* out, std::string_view bytes) {
  ByteEncoder enc(out, /*hex=*/false);
  for (char c : bytes) enc.Put(static_cast<uint8_t>(c));
  enc.Finish();
}

namespace {

// byteaout: "\x" + hex digits (bytea_output = hex, the default) or the escape
// format (printable bytes as they are, "\\" for a backslash, "\ooo" octal for
// the rest). "\x" cannot start escape output: a backslash byte prints as "\\".
Status AppendByteaUnchecked(std::string* out, size_t mark, std::string_view text, bool as_hex) {
  out->push_back('"');
  if (text.size() >= 2 && text[0] == '\\' && text[1] == 'x') {
    std::string_view digits = text.substr(2);
    if (digits.size() % 2 != 0) return Malformed(ValueKind::kBytea, text, "odd number of hex digits");
    if (as_hex) {
      // PostgreSQL prints lower case: validate, then copy in one go.
      for (char c : digits) {
        if (kHexValue.v[static_cast<unsigned char>(c)] < 0 || (c >= 'A' && c <= 'F')) {
          out->resize(mark + 1);
          for (char d : digits) {
            int8_t v = kHexValue.v[static_cast<unsigned char>(d)];
            if (v < 0) return Malformed(ValueKind::kBytea, text, "bad hex digit");
            out->push_back(kHexDigits[v]);
          }
          out->push_back('"');
          return Status::Ok();
        }
      }
      out->append(digits);
    } else {
      out->reserve(out->size() + digits.size() * 2 / 3 + 8);
      ByteEncoder enc(out, false);
      for (size_t i = 0; i < digits.size(); i += 2) {
        int8_t hi = kHexValue.v[static_cast<unsigned char>(digits[i])];
        int8_t lo = kHexValue.v[static_cast<unsigned char>(digits[i + 1])];
        if ((hi | lo) < 0) return Malformed(ValueKind::kBytea, text, "bad hex digit");
        enc.Put(static_cast<uint8_t>((hi << 4) | lo));
      }
      enc.Finish();
    }
  } else {
    ByteEncoder enc(out, as_hex);
    for (size_t i = 0; i < text.size();) {
      char c = text[i];
      if (c != '\\') {
        enc.Put(static_cast<uint8_t>(c));
        ++i;
      } else if (i + 1 < text.size() && text[i + 1] == '\\') {
        enc.Put('\\');
        i += 2;
      } else if (i + 3 < text.size() && text[i + 1] >= '0' &&
                 text[i + 1] <= '3' && text[i + 2] >= '0' && text[i + 2] <= '7' &&
                 text[i + 3] >= '0' && text[i + 3] <= '7') {
        enc.Put(static_cast<uint8_t>(((text[i + 1] - '0') << 6) | ((text[i + 2] - '0') << 3) |
                                     (text[i + 3] - '0')));
        i += 4;
      } else {
        return Malformed(ValueKind::kBytea, text, "bad escape");
      }
    }
    enc.Finish();
  }
  out->push_back('"');
  return Status::Ok();
}

// On error *out is left as it was.
Status AppendBytea(std::string* out, std::string_view text, bool as_hex) {
  const size_t mark = out->size();
  Status s = AppendByteaUnchecked(out, mark, text, as_hex);
  if (!s.ok()) out->resize(mark);
  return s;
}

// Leaves *out as it was on error.
Status AppendScalar(std::string* out, ValueKind kind, std::string_view text,
                    const ValueOptions& opt) {
  switch (kind) {
    case ValueKind::kText:
      AppendJsonString(out, text);
      return Status::Ok();
    case ValueKind::kBool:
      // boolout prints exactly "t" or "f".
      if (text.size() == 1 && text[0] == 't') {
        out->append("true", 4);
      } else if (text.size() == 1 && text[0] == 'f') {
        out->append("false", 5);
      } else {
        return Malformed(kind, text, "not t or f");
      }
      return Status::Ok();
    case ValueKind::kInteger:
      if (!IsJsonInteger(text)) return Malformed(kind, text, "not an integer");
      out->append(text);
      return Status::Ok();
    case ValueKind::kFloat:
      if (IsJsonNumber(text)) {
        out->append(text);
      } else if (IsSpecialNumber(text)) {
        AppendQuoted(out, text);
      } else {
        return Malformed(kind, text, "not a number");
      }
      return Status::Ok();
    case ValueKind::kNumeric:
      if (IsJsonNumber(text)) {
        if (opt.numeric_as_number) {
          out->append(text);
        } else {
          AppendQuoted(out, text);
        }
      } else if (IsSpecialNumber(text)) {
        AppendQuoted(out, text);
      } else {
        return Malformed(kind, text, "not a number");
      }
      return Status::Ok();
    case ValueKind::kJson: {
      // One pass: bridge/json_writer.h AppendJsonValue checks the grammar as it copies.
      if (size_t at = 0; !AppendJsonValue(out, text, &at)) {
        // Not a walbus or protocol fault: the stored data is bad, so the
        // message names the fix instead of asking for a bug report.
        return Status::FailedPrecondition(
            "json value: not valid JSON (at byte " + std::to_string(at) + " of " +
            std::to_string(text.size()) + "; PostgreSQL's json_in rejects it too, so it was stored "
            "past that check, e.g. by a cast from text WITHOUT FUNCTION); walbus stopped without "
            "confirming past it, so nothing is lost: remove what let it in (DROP CAST (text AS "
            "json)) and correct the row; this change itself cannot be published as JSON, to go "
            "on skip its transaction by hand with pg_replication_slot_advance (it will not be "
            "published)");
      }
      return Status::Ok();
    }
    case ValueKind::kBytea:
      return AppendBytea(out, text, opt.bytea_hex);
    case ValueKind::kArray:
      break;
  }
  return Status::Internal("array kind where a scalar was expected");
}

// Turns the parser's callbacks into a JSON array. Commas go before every item
// but the first of its array: an item follows an item exactly when the
// previous callback ended one (Element or EndArray).
class ArrayWriter final : public pgwire::ArrayVisitor {
 public:
  ArrayWriter(std::string* out, ValueKind element, const ValueOptions& opt)
      : out_(out), element_(element), opt_(opt) {}

  Status BeginArray() override {
    if (after_item_) out_->push_back(',');
    out_->push_back('[');
    after_item_ = false;
    return Status::Ok();
  }
  Status EndArray() override {
    out_->push_back(']');
    after_item_ = true;
    return Status::Ok();
  }
  Status Element(std::string_view raw, bool quoted, bool is_null) override {
    if (after_item_) out_->push_back(',');
    after_item_ = true;
    if (is_null) {
      out_->append("null", 4);
      return Status::Ok();
    }
    Status s;
    if (!quoted || std::memchr(raw.data(), '\\', raw.size()) == nullptr) {
      s = AppendScalar(out_, element_, raw, opt_);
    } else if (element_ == ValueKind::kText) {
      AppendJsonStringUnescapingPg(out_, raw);
    } else {
      // A typed element with escapes in it (json holding quotes, bytea's
      // backslash): unescape into a per-thread buffer that keeps its capacity.
      thread_local std::string scratch;
      scratch.clear();
      pgwire::AppendPgUnescaped(&scratch, raw);
      s = AppendScalar(out_, element_, scratch, opt_);
    }
    if (!s.ok()) return s.WithContext("array element");
    return s;
  }

 private:
  std::string* out_;
  ValueKind element_;
  const ValueOptions& opt_;
  bool after_item_ = false;
};

}  // namespace

Status AppendValue(std::string* out, const pgwire::TypeInfo& type, std::string_view text,
                   const ValueOptions& opt) {
  if (type.kind != ValueKind::kArray) return AppendScalar(out, type.kind, text, opt);
  if (type.element == ValueKind::kArray) return Status::Internal("array type with array elements");
  const size_t mark = out->size();
  ArrayWriter writer(out, type.element, opt);
  Status s = pgwire::ParseArrayLiteral(text, type.delimiter, writer);
  if (!s.ok()) out->resize(mark);
  return s;
}

}  // namespace walbus
