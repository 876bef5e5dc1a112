// Shared by the recipe tests (recipe_*_test.cpp): they run the files of
// compose/recipes/<name>/ as they are — the walbus.toml with its ${...}
// variables set from the environment, schema.sql, the consumer scripts — so
// the recipes' documentation cannot drift from what is tested.
//
// Every recipe test uses PostgreSQL on 56200 (one at a time: the fixture's lock
// file) with a database "shop", and its own broker ports in 56210-56249.
#pragma once

#include "harness.h"

namespace walbus::itest::recipes {

constexpr int kPgPort = 56200;

inline std::string RecipeFile(const std::string& recipe, const std::string& file) {
  return std::string(kSourceDir) + "/compose/recipes/" + recipe + "/" + file;
}

// The Debian python3 when present (the recipes' scripts need only its standard
// library), else whatever python3 PATH finds; "" when there is none.
inline std::string Python() {
  if (::access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  ShellResult r = Shell("command -v python3 2>/dev/null");
  std::string p = r.out.substr(0, r.out.find('\n'));
  return r.code == 0 ? p : "";
}

inline std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// True when `walbus version` lists `what` (e.g. "cnats", "hiredis", "mqtt"):
// the binary was built with that broker's adapter.
inline bool WalbusHas(const std::string& what) {
  ShellResult r = Shell(std::string(kWalbus) + " version 2>&1");
  return r.code == 0 && Contains(r.out, what);
}

// The conninfo of database shop on `port`.
inline std::string ShopDsnFor(int port, const std::string& user = "postgres",
                              const std::string& extra = "") {
  return "host=127.0.0.1 port=" + std::to_string(port) + " user=" + user + " dbname=shop" +
         (extra.empty() ? "" : " " + extra);
}

// A fresh database "shop" on the fixture's server with the recipe's
// schema.sql applied. Call after the fixture's SetUp (which dropped every slot).
// `admin` is connected to database postgres.
inline bool FreshShop(Pg& admin, int port, const std::string& recipe) {
  if (!admin.Exec("DROP DATABASE IF EXISTS shop WITH (FORCE)")) return false;
  if (!admin.Exec("CREATE DATABASE shop")) return false;
  std::string schema = ReadFile(RecipeFile(recipe, "schema.sql"));
  if (schema.empty()) {
    ADD_FAILURE() << "no " << RecipeFile(recipe, "schema.sql");
    return false;
  }
  Pg shop(ShopDsnFor(port));
  return shop.ok() && shop.Exec(schema);
}

// Starts `walbus run -c config` with `env` and waits for it to stream.
inline bool StartRecipeWalbus(Child* child, const std::string& config, const EnvChanges& env,
                              const std::string& dir, const std::string& tag,
                              milliseconds timeout = 30s) {
  return StartStreaming(child, config, dir, tag, timeout, env);
}

// Parses `text` as JSON into *doc; records a failure naming `what` when it is not.
inline bool ParseJson(const std::string& text, rapidjson::Document* doc, const std::string& what) {
  doc->Parse(text.c_str(), text.size());
  if (doc->HasParseError()) {
    ADD_FAILURE() << what << " is not JSON: " << text.substr(0, 500);
    return false;
  }
  return true;
}

}  // namespace walbus::itest::recipes
