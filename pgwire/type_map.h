// How a column's type OID maps to the JSON shape of its values (SPEC §3).
// BuiltinType answers for PostgreSQL's own types from a static table; the
// TypeResolver adds the catalog for domains, enums, user arrays and anything
// else, asking once per OID per process. The resolver and the fetcher are
// owned by the source thread and are not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "bridge/core/status.h"

namespace walbus::pgwire {

enum class ValueKind : uint8_t { kText, kBool, kInteger, kFloat, kNumeric, kJson, kBytea, kArray };

std::string_view ValueKindName(ValueKind kind);  // "text", "bool", ...

// element and delimiter matter only for kArray: the kind of the elements and
// the element type's typdelim, which array_out puts between them.
struct TypeInfo {
  ValueKind kind = ValueKind::kText;
  ValueKind element = ValueKind::kText;
  char delimiter = ',';

  friend bool operator==(const TypeInfo&, const TypeInfo&) = default;
};

// A pg_type row, as the catalog lookup returns it. typlen tells a true array
// type (-1) from a fixed-length type with typelem set, like point.
struct PgTypeRow {
  uint32_t oid = 0;
  char typtype = 'b';
  uint32_t typbasetype = 0;
  uint32_t typelem = 0;
  char typcategory = 'U';
  char typdelim = ',';
  std::string typname;
  int16_t typlen = -1;
};

// PostgreSQL's built-in types (pg_type.dat, stable across 12..17): bool,
// int2/4/8, oid, float4/8, numeric, json, jsonb, bytea, the text-like ones
// (text, varchar, bpchar, name, char, uuid, date/time types, interval,
// network, money, bit, tsvector, geometric, ranges, reg*, pg_lsn, ...) and
// the arrays of all of them. nullopt for any other OID.
std::optional<TypeInfo> BuiltinType(uint32_t oid);

// Resolves a type OID to its TypeInfo and caches every answer: built-ins from
// the table, others through fetch, once per OID. Domains resolve to their
// base type (recursively), enums to kText, arrays (typcategory 'A', typelem
// set, typlen -1) to kArray with the element's kind and typdelim, composite,
// range, multirange and every other type to kText. Errors from fetch are
// returned as they are and not cached, so a later call retries.
class TypeResolver {
 public:
  using Fetch = std::function<Result<PgTypeRow>(uint32_t oid)>;
  explicit TypeResolver(Fetch fetch);

  Result<TypeInfo> Resolve(uint32_t oid);

 private:
  struct Entry {
    TypeInfo info;
    char typdelim;  // of this type itself: what an array of it uses
  };
  Result<Entry> ResolveEntry(uint32_t oid, int depth);

  Fetch fetch_;
  std::unordered_map<uint32_t, Entry> cache_;
};

// The production Fetch: one ordinary (non-replication) libpq connection,
// opened on first use from conninfo, and a prepared query on pg_type by oid.
// A connection that cannot be opened or that broke is Unavailable (the next
// call reconnects); an OID missing from pg_type is Corruption. Copies share
// one connection, so it fits in a std::function; not thread-safe.
class CatalogTypeFetcher {
 public:
  explicit CatalogTypeFetcher(std::string conninfo);
  Result<PgTypeRow> operator()(uint32_t oid);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace walbus::pgwire
