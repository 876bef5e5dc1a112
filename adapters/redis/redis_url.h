// RedisUrl: the parts of a sink URL `redis://[user:password@]host[:port][/db]`.
// `:password@` (no user) means the legacy `AUTH password`; `user:password@`
// means `AUTH user password`. User and password may be percent-encoded. The
// port defaults to 6379 and the database to 0. `rediss://` is refused: the
// hiredis this is built with (0.14) has no TLS.
// Plain value type; ParseRedisUrl is a pure function, callable from any thread.
#pragma once

#include <string>
#include <string_view>

#include "bridge/core/status.h"

namespace walbus::adapters::redis {

struct RedisUrl {
  std::string host;  // a name, an IPv4 address, or an IPv6 address without brackets
  int port = 6379;
  int db = 0;
  std::string user;      // empty: the default user
  std::string password;  // empty: no AUTH

  // The URL with the password replaced by "***", for messages and logs.
  std::string Redacted() const;
  // "host:port" ("[::1]:6379" for IPv6), for messages.
  std::string Address() const;
};

// InvalidArgument, naming what is wrong (never echoing the password), when
// the text is not such a URL.
Result<RedisUrl> ParseRedisUrl(std::string_view text);

}  // namespace walbus::adapters::redis
