#include "adapters/redis/redis_url.h"

#include <charconv>

namespace walbus::adapters::redis {
namespace {

constexpr std::string_view kScheme = "redis://";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding of the userinfo part (RFC 3986 §2.1).
bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = HexValue(in[i + 1]);
    int lo = HexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

bool ParseInt(std::string_view text, int min, int max, int* out) {
  if (text.empty()) return false;
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return false;
  if (value < min || value > max) return false;
  *out = value;
  return true;
}

Status Invalid(std::string_view what) {
  return Status::InvalidArgument("redis url: " + std::string(what) +
                                 " (expected redis://[user:password@]host[:port][/db])");
}

}  // namespace

std::string RedisUrl::Address() const {
  bool ipv6 = host.find(':') != std::string::npos;
  std::string out;
  if (ipv6) out.push_back('[');
  out.append(host);
  if (ipv6) out.push_back(']');
  out.push_back(':');
  out.append(std::to_string(port));
  return out;
}

std::string RedisUrl::Redacted() const {
  std::string out(kScheme);
  if (!user.empty() || !password.empty()) {
    out += user;
    if (!password.empty()) out += ":***";
    out += "@";
  }
  out += Address();
  if (db != 0) {
    out.push_back('/');
    out.append(std::to_string(db));
  }
  return out;
}

Result<RedisUrl> ParseRedisUrl(std::string_view text) {
  if (text.starts_with("rediss://")) {
    return Invalid("rediss:// (TLS) is not supported by this build (hiredis without TLS)");
  }
  if (text.starts_with("unix://")) return Invalid("unix sockets are not supported");
  if (!text.starts_with(kScheme)) return Invalid("must start with redis://");
  std::string_view rest = text.substr(kScheme.size());
  RedisUrl url;

  // The password may hold '@' or '/' unencoded: the host part begins after the
  // last '@'.
  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    size_t colon = userinfo.find(':');
    std::string_view user = userinfo.substr(0, colon);
    std::string_view password =
        colon == std::string_view::npos ? std::string_view() : userinfo.substr(colon + 1);
    if (!PercentDecode(user, &url.user)) return Invalid("bad %-escape in the user name");
    if (!PercentDecode(password, &url.password)) return Invalid("bad %-escape in the password");
    if (url.password.empty()) {
      // Not echoed: `redis://secret@host` is a common slip for `:secret@`.
      if (!url.user.empty())
        return Invalid(
            "a user without a password (for a password only, write redis://:password@host)");
      return Invalid("empty user information before '@'");
    }
  }

  size_t slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view path = rest.substr(slash + 1);
    if (path.find_first_of("?#") != std::string_view::npos) {
      return Invalid("query parameters are not supported");
    }
    if (!path.empty() && !ParseInt(path, 0, 1 << 20, &url.db)) {
      return Invalid("the database must be a number, not '" + std::string(path) + "'");
    }
  } else if (hostport.find_first_of("?#") != std::string_view::npos) {
    return Invalid("query parameters are not supported");
  }

  std::string_view host = hostport;
  std::string_view port;
  if (hostport.starts_with('[')) {
    size_t close = hostport.find(']');
    if (close == std::string_view::npos) return Invalid("unterminated '[' in the host");
    host = hostport.substr(1, close - 1);
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return Invalid("unexpected text after ']'");
      port = after.substr(1);
      if (port.empty()) return Invalid("empty port");
    }
  } else {
    size_t colon = hostport.rfind(':');
    if (colon != std::string_view::npos) {
      host = hostport.substr(0, colon);
      port = hostport.substr(colon + 1);
      if (port.empty()) return Invalid("empty port");
    }
  }
  if (host.empty()) return Invalid("no host");
  if (!port.empty() && !ParseInt(port, 1, 65535, &url.port)) {
    return Invalid("the port must be a number from 1 to 65535, not '" + std::string(port) + "'");
  }
  url.host = std::string(host);
  return url;
}

}  // namespace walbus::adapters::redis
