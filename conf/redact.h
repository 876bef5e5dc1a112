// RedactDsn / RedactUrl: hide the secrets of a connection string before it is
// shown anywhere (logs, `walbus check` output, error messages). Pure
// functions, thread-safe; they never fail: input they cannot parse is
// redacted generously rather than passed through.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace walbus::conf {

// A libpq connection string, either key=value conninfo
//   "host=db user=walbus password='s3 cr\'et'"  -> "host=db user=walbus password=***"
// or a URI
//   "postgresql://walbus:s3cret@db:5432/shop?password=x&sslmode=require"
//   -> "postgresql://walbus:***@db:5432/shop?password=***&sslmode=require".
std::string RedactDsn(std::string_view conninfo);

// A broker URL, or a comma-separated list of them (a NATS cluster):
//   "redis://app:s3cret@cache:6379/0" -> "redis://app:***@cache:6379/0"
//   "nats://TOKEN@a:4222,nats://b:4222" -> "nats://***@a:4222,nats://b:4222"
// A user-info part without ':' is a NATS token and is hidden entirely;
// `password=` and `token=` query parameters are hidden too.
std::string RedactUrl(std::string_view url);

// The values RedactDsn / RedactUrl hide, exactly as they appear in the input
// (a quoted conninfo value keeps its quotes). Used to tell whether a text
// holds a secret at all; never print what they return.
std::vector<std::string> DsnSecrets(std::string_view conninfo);
std::vector<std::string> UrlSecrets(std::string_view url);

}  // namespace walbus::conf
