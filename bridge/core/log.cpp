#include "bridge/core/log.h"

#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>

namespace walbus::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<bool> g_json{false};

constexpr std::string_view kNames[] = {"trace", "debug", "info", "warn", "error"};
constexpr std::string_view kUpper[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};

// Log lines are not on the hot path; a small local escaper keeps bridge/core
// free of other folders.
// quotes: escape '"' and '\\' too (JSON strings, quoted text values); a text
// line's message keeps them as written.
void AppendEscaped(std::string* out, std::string_view s, bool quotes = true) {
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += quotes ? "\\\"" : "\""; break;
      case '\\': *out += quotes ? "\\\\" : "\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
}

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (unsigned char c : v) {
    if (c <= ' ' || c == '"' || c == '=') return true;
  }
  return false;
}

void AppendTimestamp(std::string* out) {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(tv.tv_usec / 1000));
  *out += buf;
}

}  // namespace

void SetLevel(Level level) { g_level.store(static_cast<int>(level)); }
void SetJson(bool json) { g_json.store(json); }
bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

bool ParseLevel(std::string_view name, Level* out) {
  for (int i = 0; i < 5; ++i) {
    if (name == kNames[i]) {
      *out = static_cast<Level>(i);
      return true;
    }
  }
  return false;
}

void Write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  std::string line;
  line.reserve(128 + msg.size());
  int li = static_cast<int>(level);
  if (g_json.load(std::memory_order_relaxed)) {
    line += "{\"ts\":\"";
    AppendTimestamp(&line);
    line += "\",\"level\":\"";
    line += kNames[li];
    line += "\",\"msg\":\"";
    AppendEscaped(&line, msg);
    line += '"';
    for (const auto& [k, v] : fields) {
      line += ",\"";
      AppendEscaped(&line, k);
      line += "\":\"";
      AppendEscaped(&line, v);
      line += '"';
    }
    line += "}\n";
  } else {
    AppendTimestamp(&line);
    line += ' ';
    line += kUpper[li];
    line += ' ';
    AppendEscaped(&line, msg, /*quotes=*/false);
    for (const auto& [k, v] : fields) {
      line += ' ';
      line += k;
      line += '=';
      if (NeedsQuotes(v)) {
        line += '"';
        AppendEscaped(&line, v);
        line += '"';
      } else {
        line += v;
      }
    }
    line += '\n';
  }
  // One write per line so concurrent threads never interleave inside a line.
  ssize_t ignored = ::write(2, line.data(), line.size());
  (void)ignored;
}

}  // namespace walbus::log
