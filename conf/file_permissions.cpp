#include "conf/file_permissions.h"

#include <sys/stat.h>

#include <cstdio>

namespace walbus::conf {
namespace {

// The permission bits of `path`, or -1 when it cannot be stat'ed.
int ModeOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

std::string Octal(int mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode));
  return buf;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}

}  // namespace

std::vector<std::string> PermissionWarnings(const Config& config) {
  std::vector<std::string> out;
  if (!config.secrets_in_file.empty()) {
    int mode = ModeOf(config.path);
    if (mode >= 0 && (mode & 0004) != 0) {
      out.push_back("configuration file " + config.path + " is readable by every user (mode " +
                    Octal(mode) + ") and holds a secret in " + Join(config.secrets_in_file) +
                    "; restrict it: chmod 600 " + config.path + " (or chmod 640 with walbus's "
                    "group), or move the secret to an environment variable (${NAME})");
    }
  }
  for (const SinkConfig& s : config.sinks) {
    for (const auto& [key, path] : {std::pair<const char*, const std::string&>{"tls_key", s.tls_key},
                                    std::pair<const char*, const std::string&>{"creds", s.creds},
                                    std::pair<const char*, const std::string&>{"nkey_seed", s.nkey_seed}}) {
      if (path.empty()) continue;
      int mode = ModeOf(path);
      if (mode >= 0 && (mode & 0004) != 0) {
        out.push_back("sink '" + s.name + "' " + key + " file " + path +
                      " is readable by every user (mode " + Octal(mode) +
                      "); restrict it: chmod 600 " + path);
      }
    }
  }
  return out;
}

}  // namespace walbus::conf
