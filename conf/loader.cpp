#include "conf/loader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "conf/redact.h"

namespace walbus::conf {
namespace {

// ---------------------------------------------------------------------------
// Known keys.

constexpr std::string_view kTopKeys[] = {"source", "envelope", "sink", "metrics"};
constexpr std::string_view kSourceKeys[] = {
    "dsn",      "slot",     "publication",        "tables",   "create_slot", "create_publication",
    "snapshot", "messages", "status_interval_ms", "standby_retry_ms"};
constexpr std::string_view kEnvelopeKeys[] = {"numeric", "bytea"};
constexpr std::string_view kMetricsKeys[] = {"listen", "health_grace_ms",
                                               "retained_wal_warn_bytes"};

enum SinkTypeBit : unsigned {
  kStdout = 1u << 0,
  kNats = 1u << 1,
  kJetStream = 1u << 2,
  kMqtt = 1u << 3,
  kRedis = 1u << 4,
};
constexpr unsigned kAnySink = kStdout | kNats | kJetStream | kMqtt | kRedis;
constexpr unsigned kNatsLike = kNats | kJetStream;
constexpr unsigned kBrokers = kNats | kJetStream | kMqtt | kRedis;

constexpr std::string_view kSinkTypes[] = {"stdout", "nats", "jetstream", "mqtt", "redis"};

struct SinkKey {
  std::string_view name;
  unsigned types;
};
constexpr SinkKey kSinkKeys[] = {
    {"name", kAnySink},
    {"type", kAnySink},
    {"topic", kAnySink & ~kRedis},
    {"include", kAnySink},
    {"max_in_flight", kAnySink},
    {"url", kBrokers},
    {"user", kNatsLike | kMqtt},
    {"password", kNatsLike | kMqtt},
    {"token", kNatsLike},
    {"creds", kNatsLike},
    {"nkey_seed", kNatsLike},
    {"tls_ca", kNatsLike | kMqtt},
    {"tls_cert", kNatsLike | kMqtt},
    {"tls_key", kNatsLike | kMqtt},
    {"stream", kJetStream},
    {"create_stream", kJetStream},
    {"replicas", kJetStream},
    {"duplicate_window", kJetStream},
    {"client_id", kMqtt},
    {"qos", kMqtt},
    {"state_topic", kMqtt},
    {"key", kRedis},
    {"maxlen", kRedis},
    {"id", kRedis},
    {"wait_replicas", kRedis},
    {"wait_timeout_ms", kRedis},
    {"wait_aof", kRedis},
};

unsigned TypeBit(std::string_view type) {
  for (size_t i = 0; i < std::size(kSinkTypes); ++i) {
    if (kSinkTypes[i] == type) return 1u << i;
  }
  return 0;
}

const SinkKey* FindSinkKey(std::string_view name) {
  for (const SinkKey& k : kSinkKeys) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

// "a jetstream sink", "a nats or jetstream sink", "a nats, jetstream or mqtt sink".
std::string TypesPhrase(unsigned mask) {
  std::vector<std::string_view> names;
  for (size_t i = 0; i < std::size(kSinkTypes); ++i) {
    if (mask & (1u << i)) names.push_back(kSinkTypes[i]);
  }
  std::string out = names.front() == "mqtt" ? "an " : "a ";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += (i + 1 == names.size()) ? " or " : ", ";
    out += names[i];
  }
  return out + " sink";
}

// ---------------------------------------------------------------------------
// Text helpers.

// Optimal-string-alignment distance: insertions, deletions, substitutions and
// swaps of two neighbours each cost 1 ("tabel" is 1 away from "table").
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev2(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);  // a transposition counts once
      }
    }
    prev2 = prev;
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest candidate within edit distance 2, if any; short words need a
// closer match ("row" does not suggest "op").
std::optional<std::string_view> Closest(std::string_view got,
                                        std::span<const std::string_view> candidates) {
  std::optional<std::string_view> best;
  size_t best_distance = 3;
  for (std::string_view c : candidates) {
    size_t d = EditDistance(got, c);
    if (d * 2 > std::max(got.size(), c.size())) continue;
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

// Quotes text taken from the file for a one-line message.
std::string Quoted(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? '?' : c);
  }
  out += "'";
  return out;
}

std::string_view TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::none: break;
  }
  return "nothing";
}

bool IsDigits(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses decimal digits into [0, max]; false on anything else or overflow.
bool ParseUint(std::string_view s, uint64_t max, uint64_t* out) {
  if (!IsDigits(s) || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) v = v * 10 + static_cast<uint64_t>(c - '0');
  if (v > max) return false;
  *out = v;
  return true;
}

bool IsIdentStart(char c, bool lower_only) {
  unsigned char u = static_cast<unsigned char>(c);
  return (c >= 'a' && c <= 'z') || c == '_' || u >= 0x80 || (!lower_only && c >= 'A' && c <= 'Z');
}
bool IsIdentChar(char c, bool lower_only) {
  return IsIdentStart(c, lower_only) || (c >= '0' && c <= '9') || c == '$';
}

// A PostgreSQL identifier that needs no quoting (NAMEDATALEN - 1 = 63 bytes).
bool IsIdentifier(std::string_view s, bool lower_only) {
  if (s.empty() || s.size() > 63 || !IsIdentStart(s[0], lower_only)) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return IsIdentChar(c, lower_only); });
}

// PostgreSQL's ReplicationSlotValidateName: [a-z0-9_]{1,63}.
bool IsSlotName(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool IsSinkName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// "500ms", "90s", "2m", "1h", "1m30s": sum of <digits><ms|s|m|h> groups.
bool ParseDurationMs(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  uint64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    uint64_t n = 0;
    if (!ParseUint(s.substr(start, i - start), 1'000'000'000, &n)) return false;
    uint64_t unit = 0;
    if (s.substr(i, 2) == "ms") {
      unit = 1;
      i += 2;
    } else if (i < s.size() && s[i] == 's') {
      unit = 1000;
      ++i;
    } else if (i < s.size() && s[i] == 'm') {
      unit = 60'000;
      ++i;
    } else if (i < s.size() && s[i] == 'h') {
      unit = 3'600'000;
      ++i;
    } else {
      return false;
    }
    total += n * unit;
  }
  if (total == 0) return false;
  *out = total;
  return true;
}

// "host", "host:port", "[v6]", "[v6]:port". Returns "" when fine, else what
// is wrong (never the text itself: it may be next to a password).
std::string CheckHostPort(std::string_view hp, bool port_required) {
  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (!hp.empty() && hp[0] == '[') {
    size_t close = hp.find(']');
    if (close == std::string_view::npos) return "an IPv6 address needs a closing ']'";
    host = hp.substr(1, close - 1);
    std::string_view after = hp.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return "expected ':port' after ']'";
      port = after.substr(1);
      has_port = true;
    }
  } else {
    size_t colon = hp.rfind(':');
    if (colon != std::string_view::npos) {
      host = hp.substr(0, colon);
      port = hp.substr(colon + 1);
      has_port = true;
      if (host.find(':') != std::string_view::npos) {
        return "an IPv6 address must be written in brackets, e.g. [::1]:4222";
      }
    } else {
      host = hp;
    }
  }
  if (host.empty()) return "the host is missing";
  if (std::any_of(host.begin(), host.end(),
                  [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; })) {
    return "the host contains whitespace";
  }
  if (has_port) {
    uint64_t p = 0;
    if (!ParseUint(port, 65535, &p) || p == 0) return "the port must be a number from 1 to 65535";
  } else if (port_required) {
    return "the port is missing";
  }
  return "";
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Checks one broker URL "scheme://[userinfo@]host[:port][/path]" against the
// allowed schemes. Returns "" or the problem; echoes at most the scheme.
std::string CheckUrl(std::string_view url, std::span<const std::string_view> schemes,
                     bool allow_path, std::string_view example) {
  std::string allowed;
  for (size_t i = 0; i < schemes.size(); ++i) {
    if (i > 0) allowed += (i + 1 == schemes.size()) ? " or " : ", ";
    allowed += std::string(schemes[i]) + "://";
  }
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) {
    return "it must start with " + allowed + ", e.g. \"" + std::string(example) + "\"";
  }
  std::string_view scheme = url.substr(0, sep);
  if (std::find(schemes.begin(), schemes.end(), scheme) == schemes.end()) {
    bool plain = std::all_of(scheme.begin(), scheme.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
    });
    return (plain && !scheme.empty() ? "scheme " + Quoted(scheme) + " is not supported; "
                                     : std::string()) +
           "it must start with " + allowed;
  }
  // The user-info ends at the last '@' (as in RedactUrl), so a password
  // with an unencoded '/' does not look like a path.
  std::string_view rest = url.substr(sep + 3);
  size_t at = rest.rfind('@');
  std::string_view after_userinfo = at == std::string_view::npos ? rest : rest.substr(at + 1);
  size_t path = after_userinfo.find_first_of("/?#");
  std::string_view hostport = after_userinfo.substr(0, path);
  std::string_view tail =
      path == std::string_view::npos ? std::string_view() : after_userinfo.substr(path);
  std::string problem = CheckHostPort(hostport, false);
  if (!problem.empty()) return problem;
  if (!allow_path && !tail.empty() && tail != "/") return "it must not have a path or query";
  return "";
}

// A NATS server URL or a comma-separated list of them (a cluster).
std::string CheckNatsUrls(std::string_view urls) {
  static constexpr std::string_view kSchemes[] = {"nats", "tls"};
  const bool list = urls.find(',') != std::string_view::npos;
  size_t index = 0;
  while (true) {
    size_t comma = urls.find(',');
    std::string_view one = Trim(urls.substr(0, comma));
    ++index;
    if (one.empty()) return "the comma-separated list has an empty entry";
    std::string problem = CheckUrl(one, kSchemes, false, "nats://127.0.0.1:4222");
    if (!problem.empty()) {
      return list ? "entry #" + std::to_string(index) + " of the list: " + problem : problem;
    }
    if (comma == std::string_view::npos) return "";
    urls.remove_prefix(comma + 1);
  }
}

// What CheckUrl leaves to Redis: after "redis://", the user-info is
// "user:password" or ":password" (AUTH needs a password; %XX escapes must be
// whole) and the path is empty or a database number.
std::string CheckRedisUrlParts(std::string_view rest) {
  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos || colon + 1 == userinfo.size()) {
      return "the part before '@' must be user:password or :password "
             "(Redis AUTH needs a password)";
    }
    for (size_t i = 0; i < userinfo.size(); ++i) {
      if (userinfo[i] != '%') continue;
      if (i + 2 >= userinfo.size() || !std::isxdigit(static_cast<unsigned char>(userinfo[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(userinfo[i + 2]))) {
        return "the user or password has a '%' that is not followed by two hex digits "
               "(write %25 for a literal '%')";
      }
    }
  }
  std::string_view after = at == std::string_view::npos ? rest : rest.substr(at + 1);
  size_t slash = after.find_first_of("/?#");
  if (slash != std::string_view::npos) {
    std::string_view db = after.substr(slash + 1);
    uint64_t n = 0;
    if (after[slash] != '/' ||
        (!db.empty() && !ParseUint(db, std::numeric_limits<int32_t>::max(), &n))) {
      return "the database after '/' must be a number, e.g. redis://host:6379/0";
    }
  }
  return "";
}

// True when `raw` (a value as written in the file) is nothing but ${NAME}
// references, blanks and quotes: its secret comes from the environment.
bool OnlyEnvReferences(std::string_view raw) {
  for (size_t i = 0; i < raw.size();) {
    if (raw.substr(i, 2) == "${") {
      size_t close = raw.find('}', i + 2);
      if (close == std::string_view::npos) return false;
      i = close + 1;
      continue;
    }
    char c = raw[i];
    if (c != '\'' && c != '"' && !std::isspace(static_cast<unsigned char>(c))) return false;
    ++i;
  }
  return true;
}

bool AnyLiteral(const std::vector<std::string>& secrets) {
  return std::any_of(secrets.begin(), secrets.end(),
                     [](const std::string& s) { return !OnlyEnvReferences(s); });
}

// Which broker's topic rules the literal text of a template must follow.
enum class TopicSyntax { kFree, kNats, kMqtt };

// ---------------------------------------------------------------------------

// Turns one parsed toml::table into a Config. Single use, one thread. Every
// Get*/Load* returns the first problem as InvalidArgument "FILE:LINE:COL: ..."
// at the key or value it is about; keys are visited in document order so the
// first error reported is the first one in the file (per table).
class Loader {
 public:
  Loader(std::string path, const GetEnv& getenv) : path_(std::move(path)), getenv_(getenv) {}

  Result<Config> Load(const toml::table& root);

  Status Fail(const toml::source_position& pos, std::string_view message) const {
    std::string out = path_;
    out += ':';
    out += std::to_string(pos.line == 0 ? 1 : pos.line);
    out += ':';
    out += std::to_string(pos.column == 0 ? 1 : pos.column);
    out += ": ";
    for (char c : message) out.push_back(c == '\n' || c == '\r' ? ' ' : c);
    return Status::InvalidArgument(std::move(out));
  }

 private:
  struct Entry {
    const toml::key* key;
    const toml::node* node;
  };

  Status FailAt(const toml::node& n, std::string_view m) const { return Fail(n.source().begin, m); }
  Status FailAt(const toml::key& k, std::string_view m) const { return Fail(k.source().begin, m); }

  static std::vector<Entry> InDocumentOrder(const toml::table& t);

  Status Unknown(const toml::key& key, std::string_view where,
                 std::span<const std::string_view> known) const;

  // Typed readers. `what` names the key in messages, e.g. "source.slot".
  Status Expand(const toml::node& n, std::string_view raw, const std::string& what,
                std::string* out) const;
  Status GetString(const toml::node& n, const std::string& what, std::string* out) const;
  Status GetNonEmptyString(const toml::node& n, const std::string& what, std::string* out) const;
  Status GetBool(const toml::node& n, const std::string& what, bool* out) const;
  Status GetInt(const toml::node& n, const std::string& what, int64_t lo, int64_t hi,
                int64_t* out) const;
  template <typename T>
  Status GetUint(const toml::node& n, const std::string& what, int64_t lo, int64_t hi,
                 T* out) const {
    int64_t v = 0;
    WALBUS_RETURN_IF_ERROR(GetInt(n, what, lo, hi, &v));
    *out = static_cast<T>(v);
    return Status::Ok();
  }
  Status GetEnum(const toml::node& n, const std::string& what,
                 std::span<const std::string_view> allowed, std::string* out) const;
  // A non-empty array of strings; `nodes` gets each element's node.
  Status GetStringList(const toml::node& n, const std::string& what, std::string_view example,
                       std::vector<std::string>* out,
                       std::vector<const toml::node*>* nodes) const;
  Status CheckTemplate(const toml::node& n, const std::string& what, std::string_view tmpl,
                       bool allow_key, TopicSyntax syntax) const;

  Status LoadSource(const toml::key& key, const toml::node& n);
  Status LoadEnvelope(const toml::key& key, const toml::node& n);
  Status LoadSinks(const toml::key& key, const toml::node& n);
  Status LoadSink(const toml::table& t, size_t number, SinkConfig* s);
  Status LoadMetrics(const toml::key& key, const toml::node& n);

  std::string path_;
  const GetEnv& getenv_;
  Config config_;
};

std::vector<Loader::Entry> Loader::InDocumentOrder(const toml::table& t) {
  std::vector<Entry> entries;
  for (auto&& [key, node] : t) entries.push_back(Entry{&key, &node});
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    const auto& pa = a.key->source().begin;
    const auto& pb = b.key->source().begin;
    return std::pair(pa.line, pa.column) < std::pair(pb.line, pb.column);
  });
  return entries;
}

Status Loader::Unknown(const toml::key& key, std::string_view where,
                       std::span<const std::string_view> known) const {
  std::string_view name = key.str();
  // `where` is a table label ("[source]", "sink 'x' (type nats)"); "" = top level.
  std::string m = "unknown key " + Quoted(name) +
                  (where.empty() ? std::string(" at the top level") : " in " + std::string(where));
  if (auto close = Closest(name, known)) {
    return FailAt(key, m + "; did you mean '" + std::string(*close) + "'?");
  }
  // A key that is fine, just in another table.
  struct Home {
    std::span<const std::string_view> keys;
    std::string_view table;
  };
  const Home homes[] = {{kSourceKeys, "[source]"},
                        {kEnvelopeKeys, "[envelope]"},
                        {kMetricsKeys, "[metrics]"}};
  for (const Home& h : homes) {
    if (h.table != where && std::find(h.keys.begin(), h.keys.end(), name) != h.keys.end()) {
      return FailAt(key, m + "; it belongs in " + std::string(h.table));
    }
  }
  if (!where.empty() &&
      std::find(std::begin(kTopKeys), std::end(kTopKeys), name) != std::end(kTopKeys)) {
    return FailAt(key, m + "; '" + std::string(name) +
                           "' is a top-level key: write " +
                           (name == "sink" ? std::string("[[sink]]") : "[" + std::string(name) + "]") +
                           " as its own table, or put it above the first [table]");
  }
  if (where.substr(0, 4) != "sink" && FindSinkKey(name) != nullptr) {
    return FailAt(key, m + "; it belongs in a [[sink]]");
  }
  std::string list;
  for (std::string_view k : known) list += (list.empty() ? "" : ", ") + std::string(k);
  return FailAt(key, m + "; known keys: " + list);
}

Status Loader::Expand(const toml::node& n, std::string_view raw, const std::string& what,
                      std::string* out) const {
  out->clear();
  for (size_t i = 0; i < raw.size();) {
    if (raw[i] != '$') {
      out->push_back(raw[i++]);
      continue;
    }
    if (i + 1 < raw.size() && raw[i + 1] == '$') {
      out->push_back('$');
      i += 2;
      continue;
    }
    if (i + 1 >= raw.size() || raw[i + 1] != '{') {
      out->push_back(raw[i++]);  // a lone '$' is itself
      continue;
    }
    size_t close = raw.find('}', i + 2);
    if (close == std::string_view::npos) {
      return FailAt(n, "'${' without a closing '}' in " + what +
                           "; write ${NAME} for an environment variable or $$ for a literal $");
    }
    std::string name(raw.substr(i + 2, close - i - 2));
    bool valid = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0])) &&
                 std::all_of(name.begin(), name.end(), [](char c) {
                   return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
                 });
    if (!valid) {
      return FailAt(n, "invalid environment variable name " + Quoted(name) + " in " + what +
                           "; use letters, digits and _ (write $$ for a literal $)");
    }
    const char* value = getenv_ ? getenv_(name.c_str()) : nullptr;
    if (value == nullptr) {
      return FailAt(n, "environment variable " + name + " is not set (used in " + what +
                           "); set it, or write $$ for a literal $");
    }
    out->append(value);
    i = close + 1;
  }
  return Status::Ok();
}

Status Loader::GetString(const toml::node& n, const std::string& what, std::string* out) const {
  const toml::value<std::string>* v = n.as_string();
  if (v == nullptr) {
    std::string hint;
    if (n.is_integer() || n.is_floating_point() || n.is_boolean()) hint = "; put it in quotes";
    return FailAt(n, what + " must be a string, got " + std::string(TypeName(n)) + hint);
  }
  return Expand(n, v->get(), what, out);
}

Status Loader::GetNonEmptyString(const toml::node& n, const std::string& what,
                                 std::string* out) const {
  WALBUS_RETURN_IF_ERROR(GetString(n, what, out));
  if (out->empty()) return FailAt(n, what + " is empty; give it a value or remove the key");
  return Status::Ok();
}

Status Loader::GetBool(const toml::node& n, const std::string& what, bool* out) const {
  if (const toml::value<bool>* v = n.as_boolean()) {
    *out = v->get();
    return Status::Ok();
  }
  std::string hint;
  if (n.is_string()) hint = "; write true or false without quotes";
  return FailAt(n, what + " must be true or false, got " + std::string(TypeName(n)) + hint);
}

Status Loader::GetInt(const toml::node& n, const std::string& what, int64_t lo, int64_t hi,
                      int64_t* out) const {
  const toml::value<int64_t>* v = n.as_integer();
  if (v == nullptr) {
    std::string hint;
    if (const toml::value<std::string>* s = n.as_string(); s != nullptr && IsDigits(s->get())) {
      hint = "; write " + s->get() + " without quotes";
    }
    return FailAt(n, what + " must be an integer, got " + std::string(TypeName(n)) + hint);
  }
  int64_t value = v->get();
  if (value < lo || value > hi) {
    std::string range = hi == std::numeric_limits<int64_t>::max()
                            ? "at least " + std::to_string(lo)
                            : "from " + std::to_string(lo) + " to " + std::to_string(hi);
    return FailAt(n, what + " must be " + range + ", got " + std::to_string(value));
  }
  *out = value;
  return Status::Ok();
}

Status Loader::GetEnum(const toml::node& n, const std::string& what,
                       std::span<const std::string_view> allowed, std::string* out) const {
  std::string value;
  WALBUS_RETURN_IF_ERROR(GetString(n, what, &value));
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) {
    *out = std::move(value);
    return Status::Ok();
  }
  std::string list;
  for (size_t i = 0; i < allowed.size(); ++i) {
    if (i > 0) list += (i + 1 == allowed.size()) ? " or " : ", ";
    list += '"';
    list += allowed[i];
    list += '"';
  }
  std::string m = what + " must be " + list + ", got " + Quoted(value);
  if (auto close = Closest(value, allowed)) m += "; did you mean \"" + std::string(*close) + "\"?";
  return FailAt(n, m);
}

Status Loader::GetStringList(const toml::node& n, const std::string& what,
                             std::string_view example, std::vector<std::string>* out,
                             std::vector<const toml::node*>* nodes) const {
  const toml::array* a = n.as_array();
  if (a == nullptr) {
    std::string hint;
    if (n.is_string()) hint = "; write a list, e.g. [\"" + std::string(example) + "\"]";
    return FailAt(n, what + " must be an array of strings, got " + std::string(TypeName(n)) +
                         hint);
  }
  if (a->empty()) {
    return FailAt(n, what + " is an empty list; remove the key to mean every table");
  }
  out->clear();
  nodes->clear();
  for (size_t i = 0; i < a->size(); ++i) {
    const toml::node& e = *a->get(i);
    std::string element_what = what + "[" + std::to_string(i) + "]";
    std::string value;
    WALBUS_RETURN_IF_ERROR(GetString(e, element_what, &value));
    out->push_back(std::move(value));
    nodes->push_back(&e);
  }
  return Status::Ok();
}

Status Loader::CheckTemplate(const toml::node& n, const std::string& what, std::string_view tmpl,
                             bool allow_key, TopicSyntax syntax) const {
  static constexpr std::string_view kPlaceholders[] = {"db", "schema", "table", "op", "key"};
  std::span<const std::string_view> allowed(kPlaceholders, allow_key ? 5 : 4);
  std::string known = allow_key ? "{db} {schema} {table} {op} {key}" : "{db} {schema} {table} {op}";
  if (tmpl.empty()) return FailAt(n, what + " is empty; the default is used when it is omitted");

  // The template with every placeholder replaced by "x": what the literal
  // parts look like to the broker.
  std::string sample;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if (c == '}') {
      return FailAt(n, what + ": '}' at character " + std::to_string(i + 1) +
                           " closes no placeholder; placeholders are " + known);
    }
    if (c != '{') {
      sample.push_back(c);
      continue;
    }
    size_t close = tmpl.find_first_of("{}", i + 1);
    if (close == std::string_view::npos || tmpl[close] == '{') {
      return FailAt(n, what + ": '{' at character " + std::to_string(i + 1) +
                           " is not closed; placeholders are " + known);
    }
    std::string_view name = tmpl.substr(i + 1, close - i - 1);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string m = what + ": unknown placeholder " + Quoted("{" + std::string(name) + "}");
      if (auto near = Closest(name, allowed)) m += "; did you mean '{" + std::string(*near) + "}'?";
      m += " (placeholders: " + known + ")";
      return FailAt(n, m);
    }
    sample += "x";
    i = close;
  }

  if (syntax == TopicSyntax::kNats) {
    for (char c : sample) {
      if (std::isspace(static_cast<unsigned char>(c)) || c == '*' || c == '>') {
        return FailAt(n, what + ": a NATS subject cannot contain " +
                             (c == '*' || c == '>' ? Quoted(std::string(1, c)) : "whitespace") +
                             " outside a placeholder");
      }
    }
    if (sample.front() == '.' || sample.back() == '.' || sample.find("..") != std::string::npos) {
      return FailAt(n, what + ": a NATS subject cannot have an empty token "
                              "(a leading or trailing '.', or '..')");
    }
  } else if (syntax == TopicSyntax::kMqtt) {
    for (char c : sample) {
      if (c == '+' || c == '#') {
        return FailAt(n, what + ": an MQTT topic to publish to cannot contain the wildcard " +
                             Quoted(std::string(1, c)));
      }
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------

Status Loader::LoadSource(const toml::key& key, const toml::node& n) {
  const toml::table* t = n.as_table();
  if (t == nullptr) {
    return FailAt(key, "source must be a table ([source]), got " + std::string(TypeName(n)));
  }
  SourceConfig& s = config_.source;
  for (const Entry& e : InDocumentOrder(*t)) {
    std::string_view k = e.key->str();
    const toml::node& v = *e.node;
    std::string what = "source." + std::string(k);
    if (k == "dsn") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s.dsn));
      if (const auto* raw = v.as_string(); raw != nullptr && AnyLiteral(DsnSecrets(raw->get()))) {
        config_.secrets_in_file.push_back("source.dsn");
      }
      if (Trim(s.dsn).empty()) {
        return FailAt(v, "source.dsn is empty; set a libpq conninfo such as "
                         "\"host=127.0.0.1 dbname=shop user=walbus\"");
      }
    } else if (k == "slot") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s.slot));
      if (!IsSlotName(s.slot)) {
        return FailAt(v, "source.slot " + Quoted(s.slot) +
                             " is not a valid replication slot name; use 1 to 63 of a-z, 0-9 "
                             "and _ (PostgreSQL's rule)");
      }
    } else if (k == "publication") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s.publication));
      if (!IsIdentifier(s.publication, /*lower_only=*/true)) {
        return FailAt(v, "source.publication " + Quoted(s.publication) +
                             " is not a plain identifier; use 1 to 63 of a-z, 0-9, _ and $, "
                             "not starting with a digit or $");
      }
    } else if (k == "tables") {
      std::vector<const toml::node*> nodes;
      WALBUS_RETURN_IF_ERROR(GetStringList(v, what, "public.*", &s.tables, &nodes));
      for (size_t i = 0; i < s.tables.size(); ++i) {
        const std::string& entry = s.tables[i];
        size_t dot = entry.find('.');
        bool ok = dot != std::string::npos && IsIdentifier(entry.substr(0, dot), false) &&
                  (entry.substr(dot + 1) == "*" || IsIdentifier(entry.substr(dot + 1), false));
        if (!ok) {
          return FailAt(*nodes[i], "source.tables entry " + Quoted(entry) +
                                       " must be \"schema.table\" or \"schema.*\" "
                                       "(plain identifiers), e.g. \"public.orders\"");
        }
      }
    } else if (k == "create_slot") {
      WALBUS_RETURN_IF_ERROR(GetBool(v, what, &s.create_slot));
    } else if (k == "create_publication") {
      WALBUS_RETURN_IF_ERROR(GetBool(v, what, &s.create_publication));
    } else if (k == "snapshot") {
      static constexpr std::string_view kModes[] = {"never", "initial"};
      WALBUS_RETURN_IF_ERROR(GetEnum(v, what, kModes, &s.snapshot));
    } else if (k == "status_interval_ms") {
      WALBUS_RETURN_IF_ERROR(GetUint(v, what, 10, 3'600'000, &s.status_interval_ms));
    } else if (k == "messages") {
      WALBUS_RETURN_IF_ERROR(GetBool(v, what, &s.messages));
    } else if (k == "standby_retry_ms") {
      WALBUS_RETURN_IF_ERROR(GetUint(v, what, 100, 3'600'000, &s.standby_retry_ms));
    } else {
      return Unknown(*e.key, "[source]", kSourceKeys);
    }
  }
  if (t->get("dsn") == nullptr) {
    return FailAt(n, "[source] has no dsn; add dsn = \"host=... dbname=... user=...\" "
                     "(a libpq connection string)");
  }
  return Status::Ok();
}

Status Loader::LoadEnvelope(const toml::key& key, const toml::node& n) {
  const toml::table* t = n.as_table();
  if (t == nullptr) {
    return FailAt(key, "envelope must be a table ([envelope]), got " + std::string(TypeName(n)));
  }
  for (const Entry& e : InDocumentOrder(*t)) {
    std::string_view k = e.key->str();
    std::string what = "envelope." + std::string(k);
    std::string value;
    if (k == "numeric") {
      static constexpr std::string_view kModes[] = {"string", "number"};
      WALBUS_RETURN_IF_ERROR(GetEnum(*e.node, what, kModes, &value));
      config_.envelope.numeric_as_number = value == "number";
    } else if (k == "bytea") {
      static constexpr std::string_view kModes[] = {"base64", "hex"};
      WALBUS_RETURN_IF_ERROR(GetEnum(*e.node, what, kModes, &value));
      config_.envelope.bytea_hex = value == "hex";
    } else {
      return Unknown(*e.key, "[envelope]", kEnvelopeKeys);
    }
  }
  return Status::Ok();
}

Status Loader::LoadMetrics(const toml::key& key, const toml::node& n) {
  const toml::table* t = n.as_table();
  if (t == nullptr) {
    return FailAt(key, "metrics must be a table ([metrics]), got " + std::string(TypeName(n)));
  }
  for (const Entry& e : InDocumentOrder(*t)) {
    std::string_view k = e.key->str();
    if (k == "health_grace_ms") {
      WALBUS_RETURN_IF_ERROR(GetUint(*e.node, "metrics.health_grace_ms", 0, 3'600'000,
                                     &config_.metrics.health_grace_ms));
      continue;
    }
    if (k == "retained_wal_warn_bytes") {
      WALBUS_RETURN_IF_ERROR(GetUint(*e.node, "metrics.retained_wal_warn_bytes", 0,
                                     std::numeric_limits<int64_t>::max(),
                                     &config_.metrics.retained_wal_warn_bytes));
      continue;
    }
    if (k != "listen") return Unknown(*e.key, "[metrics]", kMetricsKeys);
    std::string& listen = config_.metrics.listen;
    WALBUS_RETURN_IF_ERROR(GetString(*e.node, "metrics.listen", &listen));
    if (listen.empty()) continue;  // metrics off
    std::string problem = CheckHostPort(listen, /*port_required=*/true);
    if (!problem.empty()) {
      return FailAt(*e.node, "metrics.listen " + Quoted(listen) + ": " + problem +
                                 "; write \"host:port\" (e.g. \"0.0.0.0:9187\") or \"\" to "
                                 "turn metrics off");
    }
  }
  return Status::Ok();
}

Status Loader::LoadSinks(const toml::key& key, const toml::node& n) {
  const toml::array* a = n.as_array();
  if (a == nullptr) {
    std::string hint = n.is_table() ? "; write [[sink]] (double brackets), not [sink]" : "";
    return FailAt(key, "sink must be an array of tables ([[sink]]), got " +
                           std::string(TypeName(n)) + hint);
  }
  for (size_t i = 0; i < a->size(); ++i) {
    const toml::node& e = *a->get(i);
    const toml::table* t = e.as_table();
    if (t == nullptr) {
      return FailAt(e, "sink[" + std::to_string(i) + "] must be a table ([[sink]]), got " +
                           std::string(TypeName(e)));
    }
    SinkConfig s;
    WALBUS_RETURN_IF_ERROR(LoadSink(*t, i + 1, &s));
    for (const SinkConfig& other : config_.sinks) {
      if (other.name == s.name) {
        return FailAt(*t->get("name"), "duplicate sink name " + Quoted(s.name) +
                                           " (also the [[sink]] at line " +
                                           std::to_string(other.line) +
                                           "); sink names must be unique");
      }
    }
    config_.sinks.push_back(std::move(s));
  }
  return Status::Ok();
}

Status Loader::LoadSink(const toml::table& t, size_t number, SinkConfig* s) {
  s->line = static_cast<int>(t.source().begin.line);
  std::string label = "[[sink]] #" + std::to_string(number);

  const toml::node* name_node = t.get("name");
  if (name_node == nullptr) {
    return FailAt(t, label + " has no name; add name = \"...\" (unique; used in metrics and logs)");
  }
  WALBUS_RETURN_IF_ERROR(GetString(*name_node, label + " name", &s->name));
  if (!IsSinkName(s->name)) {
    return FailAt(*name_node, label + " name " + Quoted(s->name) +
                                  " must be 1 to 64 of letters, digits, '_', '-' and '.'");
  }
  label = "sink '" + s->name + "'";

  const toml::node* type_node = t.get("type");
  if (type_node == nullptr) {
    return FailAt(t, label + " has no type; add type = \"stdout\", \"nats\", \"jetstream\", "
                             "\"mqtt\" or \"redis\"");
  }
  WALBUS_RETURN_IF_ERROR(GetEnum(*type_node, label + " type", kSinkTypes, &s->type));
  const unsigned type = TypeBit(s->type);
  const TopicSyntax syntax = (type & kNatsLike)           ? TopicSyntax::kNats
                             : (type == kMqtt)            ? TopicSyntax::kMqtt
                                                          : TopicSyntax::kFree;

  std::vector<std::string_view> keys_of_type;
  for (const SinkKey& k : kSinkKeys) {
    if (k.types & type) keys_of_type.push_back(k.name);
  }

  // String keys with no further rule than "not empty".
  struct Plain {
    std::string_view key;
    std::string SinkConfig::*field;
  };
  static const Plain kPlain[] = {
      {"user", &SinkConfig::user},         {"token", &SinkConfig::token},
      {"creds", &SinkConfig::creds},       {"nkey_seed", &SinkConfig::nkey_seed},
      {"tls_ca", &SinkConfig::tls_ca},
      {"tls_cert", &SinkConfig::tls_cert}, {"tls_key", &SinkConfig::tls_key},
      {"client_id", &SinkConfig::client_id},
  };

  bool topic_set = false;
  for (const Entry& e : InDocumentOrder(t)) {
    std::string_view k = e.key->str();
    if (k == "name" || k == "type") continue;
    const toml::node& v = *e.node;
    std::string what = label + " " + std::string(k);

    const SinkKey* known = FindSinkKey(k);
    if (known == nullptr) {
      return Unknown(*e.key, label + " (type " + s->type + ")", keys_of_type);
    }
    if ((known->types & type) == 0) {
      if (k == "topic" && type == kRedis) {
        return FailAt(*e.key, "a redis sink has no 'topic'; use key = \"...\" (the stream key "
                              "template, default \"{db}.{schema}.{table}\") in " + label);
      }
      std::string m = "key " + Quoted(k) + " is only valid for " + TypesPhrase(known->types) +
                      "; " + label + " is " + (type == kMqtt ? "an " : "a ") + s->type + " sink";
      if (type == kRedis && (k == "user" || k == "password")) {
        m += " (put them in the url: redis://user:password@host:6379)";
      }
      return FailAt(*e.key, m);
    }

    bool handled = false;
    for (const Plain& p : kPlain) {
      if (p.key == k) {
        WALBUS_RETURN_IF_ERROR(GetNonEmptyString(v, what, &(s->*p.field)));
        handled = true;
      }
    }
    if (handled) {
      if (k == "token" && !OnlyEnvReferences(v.as_string()->get())) {
        config_.secrets_in_file.push_back(what);
      }
      continue;
    }

    if (k == "topic") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s->topic));
      WALBUS_RETURN_IF_ERROR(CheckTemplate(v, what, s->topic, false, syntax));
      topic_set = true;
    } else if (k == "include") {
      std::vector<const toml::node*> nodes;
      WALBUS_RETURN_IF_ERROR(GetStringList(v, what, "public.*", &s->include, &nodes));
      for (size_t i = 0; i < s->include.size(); ++i) {
        const std::string& g = s->include[i];
        bool blank = std::any_of(g.begin(), g.end(),
                                 [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
        if (g.empty() || blank || (g.find('.') == std::string::npos && g.find('*') == std::string::npos)) {
          return FailAt(*nodes[i], what + " entry " + Quoted(g) +
                                       " never matches; entries are globs on \"schema.table\" "
                                       "('*' and '?'), e.g. \"public.orders\" or \"public.*\"");
        }
      }
    } else if (k == "max_in_flight") {
      WALBUS_RETURN_IF_ERROR(GetUint(v, what, 1, 1'000'000, &s->max_in_flight));
    } else if (k == "url") {
      WALBUS_RETURN_IF_ERROR(GetNonEmptyString(v, what, &s->url));
      std::string problem;
      if (type & kNatsLike) {
        problem = CheckNatsUrls(s->url);
      } else if (type == kMqtt) {
        static constexpr std::string_view kSchemes[] = {"tcp", "ssl", "mqtt", "mqtts"};
        problem = CheckUrl(s->url, kSchemes, false, "tcp://127.0.0.1:1883");
        // MQTT URLs carry no credentials (the CONNECT packet does).
        size_t sep = s->url.find("://");
        if (problem.empty() && sep != std::string::npos &&
            s->url.find('@', sep + 3) != std::string::npos) {
          problem = "it must not contain credentials; put them in user and password";
        }
      } else if (type == kRedis && s->url.rfind("rediss://", 0) == 0) {
        problem = "rediss:// (TLS) is not supported: the hiredis walbus is built with (0.14, "
                  "Debian 12) has no TLS, so the url must start with redis://; use it on a "
                  "private network, or through a local TLS tunnel (stunnel, spiped) to the "
                  "server as redis://127.0.0.1:PORT";
      } else if (type == kRedis) {
        static constexpr std::string_view kSchemes[] = {"redis"};
        problem = CheckUrl(s->url, kSchemes, true, "redis://127.0.0.1:6379/0");
        if (problem.empty()) problem = CheckRedisUrlParts(std::string_view(s->url).substr(8));
      }
      if (!problem.empty()) return FailAt(v, what + ": " + problem);
      if (AnyLiteral(UrlSecrets(v.as_string()->get()))) config_.secrets_in_file.push_back(what);
    } else if (k == "password") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s->password));
      if (!OnlyEnvReferences(v.as_string()->get())) config_.secrets_in_file.push_back(what);
    } else if (k == "stream") {
      WALBUS_RETURN_IF_ERROR(GetNonEmptyString(v, what, &s->stream));
      bool bad = std::any_of(s->stream.begin(), s->stream.end(), [](char c) {
        return std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)) ||
               c == '.' || c == '*' || c == '>' || c == '/' || c == '\\';
      });
      if (bad || s->stream.size() > 255) {
        return FailAt(v, what + " " + Quoted(s->stream) +
                             " is not a valid JetStream stream name; it cannot contain "
                             "whitespace, '.', '*', '>', '/' or '\\'");
      }
    } else if (k == "create_stream") {
      WALBUS_RETURN_IF_ERROR(GetBool(v, what, &s->create_stream));
    } else if (k == "replicas") {
      WALBUS_RETURN_IF_ERROR(GetUint(v, what, 1, 5, &s->replicas));
    } else if (k == "duplicate_window") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s->duplicate_window));
      if (!ParseDurationMs(s->duplicate_window, &s->duplicate_window_ms)) {
        return FailAt(v, what + " " + Quoted(s->duplicate_window) +
                             " is not a duration; write e.g. \"500ms\", \"90s\", \"2m\" or \"1h\"");
      }
    } else if (k == "qos") {
      WALBUS_RETURN_IF_ERROR(GetUint(v, what, 0, 2, &s->qos));
    } else if (k == "state_topic") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s->state_topic));
      WALBUS_RETURN_IF_ERROR(CheckTemplate(v, what, s->state_topic, true, TopicSyntax::kMqtt));
    } else if (k == "key") {
      WALBUS_RETURN_IF_ERROR(GetString(v, what, &s->key));
      WALBUS_RETURN_IF_ERROR(CheckTemplate(v, what, s->key, false, TopicSyntax::kFree));
    } else if (k == "maxlen") {
      uint64_t maxlen = 0;
      WALBUS_RETURN_IF_ERROR(
          GetUint(v, what, 1, std::numeric_limits<int64_t>::max(), &maxlen));
      s->maxlen = maxlen;
    } else if (k == "id") {
      static constexpr std::string_view kIds[] = {"lsn", "auto"};
      WALBUS_RETURN_IF_ERROR(GetEnum(v, what, kIds, &s->id));
    } else if (k == "wait_replicas") {
      WALBUS_RETURN_IF_ERROR(GetUint(v, what, 0, 1000, &s->wait_replicas));
    } else if (k == "wait_timeout_ms") {
      WALBUS_RETURN_IF_ERROR(GetUint(v, what, 1, 3'600'000, &s->wait_timeout_ms));
    } else if (k == "wait_aof") {
      WALBUS_RETURN_IF_ERROR(GetBool(v, what, &s->wait_aof));
    } else {
      return FailAt(*e.key, "internal: key " + Quoted(k) + " has no reader");
    }
  }

  // Required keys.
  if ((type & kBrokers) && s->url.empty()) {
    std::string_view example = type == kMqtt    ? "tcp://127.0.0.1:1883"
                               : type == kRedis ? "redis://127.0.0.1:6379/0"
                                                : "nats://127.0.0.1:4222";
    return FailAt(t, label + " (type " + s->type + ") has no url; add url = \"" +
                         std::string(example) + "\"");
  }
  if (type == kJetStream && s->stream.empty()) {
    return FailAt(t, label + " (type jetstream) has no stream; add stream = \"...\" (the "
                             "JetStream stream name)");
  }

  // Keys that only make sense together.
  if ((type & (kNatsLike | kMqtt)) && t.get("password") != nullptr && s->user.empty()) {
    return FailAt(*t.get("password"), label + " password is set without user; add user = \"...\"");
  }
  if ((type & kNatsLike) && !s->token.empty() && !s->user.empty()) {
    return FailAt(*t.get("token"), label + " token and user/password are two ways to "
                                           "authenticate; keep one of them");
  }
  if ((type & kNatsLike) && !s->creds.empty() && (!s->token.empty() || !s->user.empty())) {
    return FailAt(*t.get("creds"), label + " creds cannot be combined with token or "
                                           "user/password; keep one way to authenticate");
  }
  if ((type & kNatsLike) && !s->nkey_seed.empty() &&
      (!s->creds.empty() || !s->token.empty() || !s->user.empty())) {
    return FailAt(*t.get("nkey_seed"), label + " nkey_seed cannot be combined with creds, token "
                                               "or user/password; keep one way to authenticate");
  }
  if (s->tls_cert.empty() != s->tls_key.empty()) {
    const char* present = s->tls_cert.empty() ? "tls_key" : "tls_cert";
    const char* missing = s->tls_cert.empty() ? "tls_cert" : "tls_key";
    return FailAt(*t.get(present), label + " " + present + " is set without " + missing +
                                       "; a client certificate needs both");
  }
  if (type == kMqtt) {
    bool tls_url = s->url.rfind("ssl://", 0) == 0 || s->url.rfind("mqtts://", 0) == 0;
    for (const char* k : {"tls_ca", "tls_cert", "tls_key"}) {
      if (!tls_url && t.get(k) != nullptr) {
        return FailAt(*t.get(k), label + " " + k + " is set but the url is not TLS; use an "
                                                   "ssl:// or mqtts:// url");
      }
    }
  }

  // Defaults.
  if (!topic_set) {
    if (type == kMqtt) {
      s->topic = "{db}/{schema}/{table}/{op}";
    } else if (type == kRedis) {
      if (s->key.empty()) s->key = "{db}.{schema}.{table}";
      s->topic = s->key;
    } else {
      s->topic = "{db}.{schema}.{table}.{op}";
    }
  }
  if (type == kMqtt && s->client_id.empty()) s->client_id = "walbus-" + config_.source.slot;
  return Status::Ok();
}

Result<Config> Loader::Load(const toml::table& root) {
  config_.path = path_;
  std::vector<Entry> entries = InDocumentOrder(root);
  for (const Entry& e : entries) {
    std::string_view k = e.key->str();
    if (std::find(std::begin(kTopKeys), std::end(kTopKeys), k) == std::end(kTopKeys)) {
      return Unknown(*e.key, "", kTopKeys);
    }
  }
  const toml::source_position file_start{1, 1};
  const Entry* source = nullptr;
  for (const Entry& e : entries) {
    if (e.key->str() == "source") source = &e;
  }
  if (source == nullptr) {
    return Fail(file_start, "no [source] table; add [source] with dsn = \"host=... dbname=... "
                            "user=...\"");
  }
  WALBUS_RETURN_IF_ERROR(LoadSource(*source->key, *source->node));
  for (const Entry& e : entries) {
    if (e.key->str() == "envelope") WALBUS_RETURN_IF_ERROR(LoadEnvelope(*e.key, *e.node));
  }
  for (const Entry& e : entries) {
    if (e.key->str() == "sink") WALBUS_RETURN_IF_ERROR(LoadSinks(*e.key, *e.node));
  }
  if (config_.sinks.empty()) {
    return Fail(file_start, "no [[sink]]; add at least one, e.g. [[sink]] name = \"out\" "
                            "type = \"stdout\"");
  }
  for (const Entry& e : entries) {
    if (e.key->str() == "metrics") WALBUS_RETURN_IF_ERROR(LoadMetrics(*e.key, *e.node));
  }
  return std::move(config_);
}

std::string LowerFirst(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

}  // namespace

Result<Config> ParseConfig(std::string_view toml_text, const std::string& path_for_messages,
                           const GetEnv& getenv) {
  Loader loader(path_for_messages, getenv);
  try {
    toml::table root = toml::parse(toml_text, std::string_view(path_for_messages));
    return loader.Load(root);
  } catch (const toml::parse_error& e) {
    return loader.Fail(e.source().begin,
                       "invalid TOML: " + LowerFirst(std::string(e.description())));
  } catch (const std::exception& e) {
    return Status::Internal(path_for_messages + ": reading the configuration: " + e.what());
  }
}

Result<Config> LoadConfig(const std::string& path, const GetEnv& getenv) {
  auto cannot_read = [&](int err) {
    return Status::InvalidArgument(path + ": cannot read: " + std::strerror(err) +
                                   "; check the path given to -c and that the user running "
                                   "walbus may read it");
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cannot_read(errno);
  std::string text;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return cannot_read(err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ParseConfig(text, path, getenv);
}

}  // namespace walbus::conf
