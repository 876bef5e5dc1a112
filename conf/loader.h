// LoadConfig / ParseConfig: read a walbus TOML file (SPEC.md §2), expand
// ${NAME} from the environment, validate every key and fill the defaults.
//
// Errors are Status::InvalidArgument with a one-line message
// "FILE:LINE:COL: message" that names the key and the fix; the CLI prints it
// and exits 2. A message never contains an expanded environment value of a
// key that may hold a secret (dsn, url, user, password, token), and never any
// part of such a value other than what RedactUrl would show. No toml++
// exception escapes these functions. Thread-safe as long as `getenv` is.
#pragma once

#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>

#include "bridge/core/status.h"
#include "conf/config.h"

namespace walbus::conf {

// Looks up an environment variable; nullptr = unset. Tests pass a fake map.
using GetEnv = std::function<const char*(const char*)>;

// Reads and validates FILE. A missing or unreadable file is
// InvalidArgument "FILE: cannot read: <strerror>".
Result<Config> LoadConfig(const std::string& path, const GetEnv& getenv = ::getenv);

// Same, from text already in memory; `path_for_messages` is the FILE of the
// messages and Config::path.
Result<Config> ParseConfig(std::string_view toml_text, const std::string& path_for_messages,
                           const GetEnv& getenv = ::getenv);

}  // namespace walbus::conf
