#include "bridge/topic_template.h"

namespace walbus::bridge {

TopicRules RulesForSinkType(std::string_view type) {
  if (type == "mqtt") return TopicRules::kMqtt;
  if (type == "redis") return TopicRules::kRedis;
  if (type == "stdout") return TopicRules::kLine;
  return TopicRules::kNats;
}

void AppendSanitized(std::string* out, std::string_view value, TopicRules rules) {
  for (char c : value) {
    bool bad = false;
    switch (rules) {
      case TopicRules::kNats:
        bad = c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t' || c == '\n' ||
              c == '\r' || c == '\f' || c == '\v';
        break;
      case TopicRules::kMqtt:
        bad = c == '+' || c == '#' || c == '\0';
        break;
      case TopicRules::kRedis:
        break;
      case TopicRules::kLine:
        bad = c == '\t' || c == '\n' || c == '\r';
        break;
    }
    out->push_back(bad ? '_' : c);
  }
}

Result<TopicTemplate> TopicTemplate::Parse(std::string_view text, TopicRules rules,
                                           bool allow_key) {
  TopicTemplate t;
  t.text_ = std::string(text);
  t.rules_ = rules;
  std::string literal;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '}') {
      return Status::InvalidArgument("template \"" + t.text_ + "\": '}' without '{' at column " +
                                     std::to_string(i + 1));
    }
    if (c != '{') {
      literal.push_back(c);
      ++i;
      continue;
    }
    size_t close = text.find('}', i);
    if (close == std::string_view::npos) {
      return Status::InvalidArgument("template \"" + t.text_ + "\": '{' without '}' at column " +
                                     std::to_string(i + 1));
    }
    std::string_view name = text.substr(i + 1, close - i - 1);
    Part part;
    if (name == "db") part = Part::kDb;
    else if (name == "schema") part = Part::kSchema;
    else if (name == "table") part = Part::kTable;
    else if (name == "op") part = Part::kOp;
    else if (name == "key" && allow_key) part = Part::kKey;
    else {
      return Status::InvalidArgument(
          "template \"" + t.text_ + "\": unknown placeholder {" + std::string(name) +
          "}; use {db}, {schema}, {table}, {op}" + (allow_key ? ", {key}" : ""));
    }
    if (!literal.empty()) {
      t.pieces_.push_back({Part::kLiteral, std::move(literal)});
      literal.clear();
    }
    t.pieces_.push_back({part, {}});
    if (part == Part::kKey) t.uses_key_ = true;
    i = close + 1;
  }
  if (!literal.empty()) t.pieces_.push_back({Part::kLiteral, std::move(literal)});
  if (t.pieces_.empty()) return Status::InvalidArgument("template is empty");
  return t;
}

void TopicTemplate::Render(const TopicValues& v, std::string* out) const {
  for (const Piece& p : pieces_) {
    switch (p.part) {
      case Part::kLiteral: out->append(p.literal); break;
      case Part::kDb: AppendSanitized(out, v.db, rules_); break;
      case Part::kSchema: AppendSanitized(out, v.schema, rules_); break;
      case Part::kTable: AppendSanitized(out, v.table, rules_); break;
      case Part::kOp: AppendSanitized(out, v.op, rules_); break;
      case Part::kKey: AppendSanitized(out, v.key, rules_); break;
    }
  }
}

}  // namespace walbus::bridge

namespace walbus::bridge {

std::string NatsSubjectFilter(const TopicTemplate& t, std::string_view db) {
  std::vector<std::string> tokens;
  const std::string& text = t.text();
  size_t start = 0;
  while (true) {
    size_t dot = text.find('.', start);
    std::string token = text.substr(start, dot == std::string::npos ? std::string::npos
                                                                      : dot - start);
    if (token.find('{') == std::string::npos) {
      tokens.push_back(token);
    } else {
      // Render with only {db} known: a token that still has a placeholder is a wildcard.
      std::string rendered;
      bool wild = false;
      size_t i = 0;
      while (i < token.size()) {
        if (token[i] == '{') {
          size_t close = token.find('}', i);
          std::string_view name(token.data() + i + 1, close - i - 1);
          if (name == "db") AppendSanitized(&rendered, db, TopicRules::kNats);
          else wild = true;
          i = close + 1;
        } else {
          rendered.push_back(token[i++]);
        }
      }
      tokens.push_back(wild ? "*" : rendered);
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  size_t keep = tokens.size();
  while (keep > 0 && tokens[keep - 1] == "*") --keep;
  std::string out;
  for (size_t i = 0; i < keep; ++i) {
    if (i > 0) out += '.';
    out += tokens[i];
  }
  if (keep < tokens.size()) out += keep > 0 ? ".>" : ">";
  return out;
}

}  // namespace walbus::bridge
