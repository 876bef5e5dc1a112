// Logging: one line per record on stderr, with timestamp and level; text or
// JSON lines (--log-format json). Thread-safe (one write(2) per line).
// Row contents never go above TRACE; secrets never go in at all (callers
// redact DSNs and URLs with conf/redact.h before logging them).
#pragma once

#include <atomic>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace walbus::log {

enum class Level : int { kTrace = 0, kDebug, kInfo, kWarn, kError };

void SetLevel(Level level);
void SetJson(bool json);
bool Enabled(Level level);
// Parses "trace|debug|info|warn|error"; false when unknown.
bool ParseLevel(std::string_view name, Level* out);

using Field = std::pair<std::string_view, std::string_view>;
// Writes one record: `2026-11-25T01:02:03.456Z INFO msg key=value ...` or
// {"ts":...,"level":"info","msg":...,"key":"value"}.
void Write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

inline void Trace(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kTrace)) Write(Level::kTrace, m, f);
}
inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kDebug)) Write(Level::kDebug, m, f);
}
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kInfo)) Write(Level::kInfo, m, f);
}
inline void Warn(std::string_view m, std::initializer_list<Field> f = {}) {
  if (Enabled(Level::kWarn)) Write(Level::kWarn, m, f);
}
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kError, m, f);
}

}  // namespace walbus::log
