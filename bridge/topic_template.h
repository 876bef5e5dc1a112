// TopicTemplate: one engine for every topic, subject, stream key and state
// topic. Parsed once from the sink's configuration; rendered once per
// (table, op) and cached by the caller, so the per-event path never renders.
// A placeholder's value has the characters its broker forbids in a topic
// replaced by '_' (SPEC §3); literal text is kept as written.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bridge/core/status.h"

namespace walbus::bridge {

enum class TopicRules {
  kNats,   // '.', '*', '>' and whitespace are replaced inside values
  kMqtt,   // '+', '#' (and NUL) are replaced inside values
  kRedis,  // nothing is forbidden in a stream key
  kLine,   // stdout lines: tab, CR and LF are replaced
};

// The rules for a sink type ("stdout", "nats", "jetstream", "mqtt", "redis").
TopicRules RulesForSinkType(std::string_view type);

struct TopicValues {
  std::string_view db;
  std::string_view schema;
  std::string_view table;
  std::string_view op;
  std::string_view key;  // only state topics use {key}
};

class TopicTemplate {
 public:
  // Placeholders: {db} {schema} {table} {op}, and {key} when allow_key.
  static Result<TopicTemplate> Parse(std::string_view text, TopicRules rules,
                                     bool allow_key = false);

  void Render(const TopicValues& values, std::string* out) const;
  std::string Render(const TopicValues& values) const {
    std::string s;
    Render(values, &s);
    return s;
  }
  bool uses_key() const { return uses_key_; }
  const std::string& text() const { return text_; }

 private:
  enum class Part : unsigned char { kLiteral, kDb, kSchema, kTable, kOp, kKey };
  struct Piece {
    Part part;
    std::string literal;
  };
  std::string text_;
  TopicRules rules_ = TopicRules::kNats;
  std::vector<Piece> pieces_;
  bool uses_key_ = false;
};

// The NATS subject filter that covers every subject the template renders for
// database db: tokens with other placeholders become '*', and a run of them at
// the end becomes '>'. "{db}.{schema}.{table}.{op}" -> "shop.>",
// "js.{db}.{schema}.{table}.{op}" -> "js.shop.>", "{db}.{table}.events" ->
// "shop.*.events".
std::string NatsSubjectFilter(const TopicTemplate& t, std::string_view db);

// Appends value with the rules' forbidden characters replaced by '_'.
void AppendSanitized(std::string* out, std::string_view value, TopicRules rules);

}  // namespace walbus::bridge
