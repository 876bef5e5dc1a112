#include "adapters/redis/redis_protocol.h"

#include <charconv>

namespace walbus::adapters::redis {

size_t FormatStreamId(Lsn commit_lsn, uint32_t seq, char* out) {
  char* end = out + kStreamIdCapacity - 1;
  char* p = std::to_chars(out, end, commit_lsn).ptr;
  *p++ = '-';
  p = std::to_chars(p, end, seq).ptr;
  *p = '\0';
  return static_cast<size_t>(p - out);
}

bool InfoField(std::string_view info, std::string_view field, std::string_view* value) {
  size_t pos = 0;
  while (pos < info.size()) {
    size_t eol = info.find('\n', pos);
    if (eol == std::string_view::npos) eol = info.size();
    std::string_view line = info.substr(pos, eol - pos);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.size() > field.size() && line.starts_with(field) && line[field.size()] == ':') {
      *value = line.substr(field.size() + 1);
      return true;
    }
    pos = eol + 1;
  }
  return false;
}

bool ParseRedisVersion(std::string_view info, RedisVersion* out) {
  std::string_view text;
  if (!InfoField(info, "redis_version", &text)) return false;
  int parts[3] = {0, 0, 0};
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int i = 0; i < 3; ++i) {
    auto [next, ec] = std::from_chars(p, end, parts[i]);
    if (ec != std::errc()) {
      if (i == 0) return false;  // no major version at all
      break;                     // "7.2.x": keep what was read
    }
    p = next;
    if (p == end || *p != '.') break;  // "7.2.4-rc1": stop at the suffix
    ++p;
  }
  out->major = parts[0];
  out->minor = parts[1];
  out->patch = parts[2];
  return true;
}

bool IsDuplicateIdError(std::string_view error) {
  return error.starts_with("ERR The ID specified in XADD is equal or smaller");
}

bool IsTransientError(std::string_view error) {
  static constexpr std::string_view kTransient[] = {
      "LOADING ", "BUSY ", "MASTERDOWN ", "READONLY ", "TRYAGAIN ", "CLUSTERDOWN ", "NOREPLICAS ",
  };
  for (std::string_view prefix : kTransient) {
    if (error.starts_with(prefix)) return true;
  }
  return false;
}

}  // namespace walbus::adapters::redis
