// Loads the pgoutput fixtures that tests/fixtures/capture_pgoutput.sh
// captured from a real PostgreSQL 15 (tests/fixtures/pgoutput/NAME.txt):
// '#' comment lines, then one message a line: "<lsn X/Y> <xid> <hex>".
// A missing or malformed file fails the current test (ADD_FAILURE) and
// throws, so the test stops there. Header-only; for unit tests only.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bridge/core/lsn.h"

#ifndef WALBUS_FIXTURES_DIR
#error "WALBUS_FIXTURES_DIR must be defined (tests/CMakeLists.txt does)"
#endif

namespace walbus::testing {

struct FixtureMessage {
  Lsn lsn;        // the lsn column of pg_logical_slot_get_binary_changes
  uint32_t xid;   // its xid column (0 for a non-transactional message)
  std::string data;  // the pgoutput message bytes
};

// One row of tests/fixtures/pgoutput/types_catalog.txt (pg_type).
struct CatalogType {
  uint32_t oid;
  char typtype;        // 'b' base (arrays), 'e' enum, 'd' domain, ...
  uint32_t typbasetype;  // domains: the base type, else 0
  uint32_t typelem;      // arrays: the element type, else 0
  char typcategory;
  char typdelim;
  std::string typname;
};

namespace fixtures_internal {

[[noreturn]] inline void Fail(const std::string& message) {
  ADD_FAILURE() << message;
  throw std::runtime_error(message);
}

inline std::ifstream Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot open fixture " + path + " (regenerate: tests/fixtures/capture_pgoutput.sh)");
  return in;
}

inline int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

inline bool DecodeHex(const std::string& hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  out->reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexDigit(hex[i]);
    int lo = HexDigit(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>((hi << 4) | lo));
  }
  return true;
}

}  // namespace fixtures_internal

inline std::string PgoutputFixturePath(const std::string& name) {
  return std::string(WALBUS_FIXTURES_DIR) + "/pgoutput/" + name + ".txt";
}

// The messages of fixture NAME, in capture order.
inline std::vector<FixtureMessage> LoadPgoutputFixture(const std::string& name) {
  const std::string path = PgoutputFixturePath(name);
  std::ifstream in = fixtures_internal::Open(path);
  std::vector<FixtureMessage> messages;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string lsn_text, hex;
    uint64_t xid = 0;
    FixtureMessage m{};
    if (!(fields >> lsn_text >> xid >> hex) || !ParseLsn(lsn_text, &m.lsn) ||
        xid > UINT32_MAX || !fixtures_internal::DecodeHex(hex, &m.data)) {
      fixtures_internal::Fail(path + ":" + std::to_string(line_no) +
                              ": expected \"<lsn X/Y> <xid> <hex>\"");
    }
    m.xid = static_cast<uint32_t>(xid);
    messages.push_back(std::move(m));
  }
  if (messages.empty()) fixtures_internal::Fail(path + ": no messages");
  return messages;
}

// Every row of types_catalog.txt.
inline std::vector<CatalogType> LoadTypesCatalog() {
  const std::string path = std::string(WALBUS_FIXTURES_DIR) + "/pgoutput/types_catalog.txt";
  std::ifstream in = fixtures_internal::Open(path);
  std::vector<CatalogType> types;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    CatalogType t{};
    if (!(fields >> t.oid >> t.typtype >> t.typbasetype >> t.typelem >> t.typcategory >>
          t.typdelim >> t.typname)) {
      fixtures_internal::Fail(path + ":" + std::to_string(line_no) +
                              ": expected \"oid typtype typbasetype typelem typcategory "
                              "typdelim typname\"");
    }
    types.push_back(std::move(t));
  }
  if (types.empty()) fixtures_internal::Fail(path + ": no types");
  return types;
}

}  // namespace walbus::testing
