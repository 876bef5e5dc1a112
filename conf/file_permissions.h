// PermissionWarnings: files that hold a secret and that every local user can
// read. Checked once at start; each finding is one warning line that names
// the file, its mode and the fix. Pure apart from stat(2); thread-safe.
#pragma once

#include <string>
#include <vector>

#include "conf/config.h"

namespace walbus::conf {

// One line per problem, none when all is well:
//  - the configuration file (config.path) when config.secrets_in_file is not
//    empty and the file's mode has the world-read bit (0004);
//  - a sink's tls_key or creds file with the world-read bit.
// A file that cannot be stat'ed is skipped (its own reader reports it).
// The lines name keys and paths only, never a secret.
std::vector<std::string> PermissionWarnings(const Config& config);

}  // namespace walbus::conf
