#include "pgwire/type_map.h"

#include <libpq-fe.h>

#include <algorithm>
#include <iterator>
#include <charconv>
#include <cstdio>
#include <utility>

#include "pgwire/pg_conn.h"

namespace walbus::pgwire {
namespace {

using K = ValueKind;

struct BuiltinEntry {
  uint32_t oid;
  TypeInfo info;
};

constexpr TypeInfo S(ValueKind kind) { return TypeInfo{kind, ValueKind::kText, ','}; }
constexpr TypeInfo A(ValueKind element, char delimiter = ',') {
  return TypeInfo{ValueKind::kArray, element, delimiter};
}

// Built from pg_type of PostgreSQL 15 (OIDs of built-in types never change):
// every base, range and multirange type of pg_catalog and every array of
// one. int2vector and oidvector have typcategory 'A' but print as "1 2 3",
// so they are text. Sorted by OID for the binary search.
constexpr BuiltinEntry kBuiltins[] = {
    {16, S(K::kBool)},  // bool
    {17, S(K::kBytea)},  // bytea
    {18, S(K::kText)},  // char
    {19, S(K::kText)},  // name
    {20, S(K::kInteger)},  // int8
    {21, S(K::kInteger)},  // int2
    {22, S(K::kText)},  // int2vector
    {23, S(K::kInteger)},  // int4
    {24, S(K::kText)},  // regproc
    {25, S(K::kText)},  // text
    {26, S(K::kInteger)},  // oid
    {27, S(K::kText)},  // tid
    {28, S(K::kText)},  // xid
    {29, S(K::kText)},  // cid
    {30, S(K::kText)},  // oidvector
    {114, S(K::kJson)},  // json
    {142, S(K::kText)},  // xml
    {143, A(K::kText)},  // _xml
    {194, S(K::kText)},  // pg_node_tree
    {199, A(K::kJson)},  // _json
    {271, A(K::kText)},  // _xid8
    {600, S(K::kText)},  // point
    {601, S(K::kText)},  // lseg
    {602, S(K::kText)},  // path
    {603, S(K::kText)},  // box
    {604, S(K::kText)},  // polygon
    {628, S(K::kText)},  // line
    {629, A(K::kText)},  // _line
    {650, S(K::kText)},  // cidr
    {651, A(K::kText)},  // _cidr
    {700, S(K::kFloat)},  // float4
    {701, S(K::kFloat)},  // float8
    {718, S(K::kText)},  // circle
    {719, A(K::kText)},  // _circle
    {774, S(K::kText)},  // macaddr8
    {775, A(K::kText)},  // _macaddr8
    {790, S(K::kText)},  // money
    {791, A(K::kText)},  // _money
    {829, S(K::kText)},  // macaddr
    {869, S(K::kText)},  // inet
    {1000, A(K::kBool)},  // _bool
    {1001, A(K::kBytea)},  // _bytea
    {1002, A(K::kText)},  // _char
    {1003, A(K::kText)},  // _name
    {1005, A(K::kInteger)},  // _int2
    {1006, A(K::kText)},  // _int2vector
    {1007, A(K::kInteger)},  // _int4
    {1008, A(K::kText)},  // _regproc
    {1009, A(K::kText)},  // _text
    {1010, A(K::kText)},  // _tid
    {1011, A(K::kText)},  // _xid
    {1012, A(K::kText)},  // _cid
    {1013, A(K::kText)},  // _oidvector
    {1014, A(K::kText)},  // _bpchar
    {1015, A(K::kText)},  // _varchar
    {1016, A(K::kInteger)},  // _int8
    {1017, A(K::kText)},  // _point
    {1018, A(K::kText)},  // _lseg
    {1019, A(K::kText)},  // _path
    {1020, A(K::kText, ';')},  // _box
    {1021, A(K::kFloat)},  // _float4
    {1022, A(K::kFloat)},  // _float8
    {1027, A(K::kText)},  // _polygon
    {1028, A(K::kInteger)},  // _oid
    {1033, S(K::kText)},  // aclitem
    {1034, A(K::kText)},  // _aclitem
    {1040, A(K::kText)},  // _macaddr
    {1041, A(K::kText)},  // _inet
    {1042, S(K::kText)},  // bpchar
    {1043, S(K::kText)},  // varchar
    {1082, S(K::kText)},  // date
    {1083, S(K::kText)},  // time
    {1114, S(K::kText)},  // timestamp
    {1115, A(K::kText)},  // _timestamp
    {1182, A(K::kText)},  // _date
    {1183, A(K::kText)},  // _time
    {1184, S(K::kText)},  // timestamptz
    {1185, A(K::kText)},  // _timestamptz
    {1186, S(K::kText)},  // interval
    {1187, A(K::kText)},  // _interval
    {1231, A(K::kNumeric)},  // _numeric
    {1266, S(K::kText)},  // timetz
    {1270, A(K::kText)},  // _timetz
    {1560, S(K::kText)},  // bit
    {1561, A(K::kText)},  // _bit
    {1562, S(K::kText)},  // varbit
    {1563, A(K::kText)},  // _varbit
    {1700, S(K::kNumeric)},  // numeric
    {1790, S(K::kText)},  // refcursor
    {2201, A(K::kText)},  // _refcursor
    {2202, S(K::kText)},  // regprocedure
    {2203, S(K::kText)},  // regoper
    {2204, S(K::kText)},  // regoperator
    {2205, S(K::kText)},  // regclass
    {2206, S(K::kText)},  // regtype
    {2207, A(K::kText)},  // _regprocedure
    {2208, A(K::kText)},  // _regoper
    {2209, A(K::kText)},  // _regoperator
    {2210, A(K::kText)},  // _regclass
    {2211, A(K::kText)},  // _regtype
    {2949, A(K::kText)},  // _txid_snapshot
    {2950, S(K::kText)},  // uuid
    {2951, A(K::kText)},  // _uuid
    {2970, S(K::kText)},  // txid_snapshot
    {3220, S(K::kText)},  // pg_lsn
    {3221, A(K::kText)},  // _pg_lsn
    {3361, S(K::kText)},  // pg_ndistinct
    {3402, S(K::kText)},  // pg_dependencies
    {3614, S(K::kText)},  // tsvector
    {3615, S(K::kText)},  // tsquery
    {3642, S(K::kText)},  // gtsvector
    {3643, A(K::kText)},  // _tsvector
    {3644, A(K::kText)},  // _gtsvector
    {3645, A(K::kText)},  // _tsquery
    {3734, S(K::kText)},  // regconfig
    {3735, A(K::kText)},  // _regconfig
    {3769, S(K::kText)},  // regdictionary
    {3770, A(K::kText)},  // _regdictionary
    {3802, S(K::kJson)},  // jsonb
    {3807, A(K::kJson)},  // _jsonb
    {3904, S(K::kText)},  // int4range
    {3905, A(K::kText)},  // _int4range
    {3906, S(K::kText)},  // numrange
    {3907, A(K::kText)},  // _numrange
    {3908, S(K::kText)},  // tsrange
    {3909, A(K::kText)},  // _tsrange
    {3910, S(K::kText)},  // tstzrange
    {3911, A(K::kText)},  // _tstzrange
    {3912, S(K::kText)},  // daterange
    {3913, A(K::kText)},  // _daterange
    {3926, S(K::kText)},  // int8range
    {3927, A(K::kText)},  // _int8range
    {4072, S(K::kText)},  // jsonpath
    {4073, A(K::kText)},  // _jsonpath
    {4089, S(K::kText)},  // regnamespace
    {4090, A(K::kText)},  // _regnamespace
    {4096, S(K::kText)},  // regrole
    {4097, A(K::kText)},  // _regrole
    {4191, S(K::kText)},  // regcollation
    {4192, A(K::kText)},  // _regcollation
    {4451, S(K::kText)},  // int4multirange
    {4532, S(K::kText)},  // nummultirange
    {4533, S(K::kText)},  // tsmultirange
    {4534, S(K::kText)},  // tstzmultirange
    {4535, S(K::kText)},  // datemultirange
    {4536, S(K::kText)},  // int8multirange
    {4600, S(K::kText)},  // pg_brin_bloom_summary
    {4601, S(K::kText)},  // pg_brin_minmax_multi_summary
    {5017, S(K::kText)},  // pg_mcv_list
    {5038, S(K::kText)},  // pg_snapshot
    {5039, A(K::kText)},  // _pg_snapshot
    {5069, S(K::kText)},  // xid8
    {6150, A(K::kText)},  // _int4multirange
    {6151, A(K::kText)},  // _nummultirange
    {6152, A(K::kText)},  // _tsmultirange
    {6153, A(K::kText)},  // _tstzmultirange
    {6155, A(K::kText)},  // _datemultirange
    {6157, A(K::kText)},  // _int8multirange
};

constexpr bool SortedByOid() {
  for (size_t i = 1; i < std::size(kBuiltins); ++i) {
    if (kBuiltins[i - 1].oid >= kBuiltins[i].oid) return false;
  }
  return true;
}
static_assert(SortedByOid(), "kBuiltins must be sorted by OID");

constexpr uint32_t kBoxOid = 603;  // the one built-in whose typdelim is ';'
constexpr int kMaxTypeChain = 16;  // domain-over-domain / array-of-domain links

std::string OidText(uint32_t oid) { return std::to_string(oid); }

}  // namespace

std::string_view ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kText: return "text";
    case ValueKind::kBool: return "bool";
    case ValueKind::kInteger: return "integer";
    case ValueKind::kFloat: return "float";
    case ValueKind::kNumeric: return "numeric";
    case ValueKind::kJson: return "json";
    case ValueKind::kBytea: return "bytea";
    case ValueKind::kArray: return "array";
  }
  return "unknown";
}

std::optional<TypeInfo> BuiltinType(uint32_t oid) {
  const auto* end = std::end(kBuiltins);
  const auto* it = std::lower_bound(std::begin(kBuiltins), end, oid,
                                    [](const BuiltinEntry& e, uint32_t o) { return e.oid < o; });
  if (it == end || it->oid != oid) return std::nullopt;
  return it->info;
}

TypeResolver::TypeResolver(Fetch fetch) : fetch_(std::move(fetch)) {}

Result<TypeInfo> TypeResolver::Resolve(uint32_t oid) {
  if (auto builtin = BuiltinType(oid)) return *builtin;
  auto it = cache_.find(oid);
  if (it != cache_.end()) return it->second.info;
  Result<Entry> entry = ResolveEntry(oid, 0);
  if (!entry.ok()) return entry.status();
  return entry->info;
}

Result<TypeResolver::Entry> TypeResolver::ResolveEntry(uint32_t oid, int depth) {
  if (auto builtin = BuiltinType(oid)) return Entry{*builtin, oid == kBoxOid ? ';' : ','};
  auto it = cache_.find(oid);
  if (it != cache_.end()) return it->second;
  if (depth > kMaxTypeChain) {
    return Status::Corruption("type oid " + OidText(oid) + ": chain of domains/arrays deeper than " +
                              std::to_string(kMaxTypeChain));
  }

  Result<PgTypeRow> fetched = fetch_(oid);
  if (!fetched.ok()) return fetched.status();
  const PgTypeRow& row = *fetched;
  if (row.oid != oid) {
    return Status::Corruption("type oid " + OidText(oid) + ": catalog answered for oid " +
                              OidText(row.oid));
  }

  Entry entry{TypeInfo{}, row.typdelim};
  if (row.typtype == 'd') {
    if (row.typbasetype == 0) {
      return Status::Corruption("type oid " + OidText(oid) + ": domain without a base type");
    }
    Result<Entry> base = ResolveEntry(row.typbasetype, depth + 1);
    if (!base.ok()) return base.status();
    entry.info = base->info;
  } else if (row.typtype == 'b' && row.typcategory == 'A' && row.typelem != 0 && row.typlen == -1) {
    Result<Entry> element = ResolveEntry(row.typelem, depth + 1);
    if (!element.ok()) return element.status();
    entry.info.kind = ValueKind::kArray;
    // An array of a domain over an array prints each element as a quoted
    // array literal; those elements go out as the strings PostgreSQL printed.
    entry.info.element =
        element->info.kind == ValueKind::kArray ? ValueKind::kText : element->info.kind;
    entry.info.delimiter = element->typdelim;
  }
  // Enums, composites, ranges, multiranges, other base types: text.
  cache_.emplace(oid, entry);
  return entry;
}

// ---------------------------------------------------------------------------

namespace {

constexpr const char* kStatementName = "walbus_pg_type_by_oid";
constexpr const char* kQuery =
    "SELECT typtype, typbasetype, typelem, typcategory, typdelim, typname, typlen "
    "FROM pg_catalog.pg_type WHERE oid = $1";

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

// libpq messages end with a newline; logs want one line.
std::string OneLine(const char* message) {
  std::string s = message != nullptr ? message : "";
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

template <typename T>
bool ParseInt(const char* text, T* out) {
  std::string_view s(text);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

struct CatalogTypeFetcher::State {
  struct ConnDeleter {
    void operator()(PGconn* c) const { PQfinish(c); }
  };
  std::string conninfo;
  std::unique_ptr<PGconn, ConnDeleter> conn;

  // A failed command on a connection that is still fine is a server-side
  // refusal (permissions, a catalog we do not understand): not retryable.
  Status CommandFailed(const char* what) {
    std::string m = std::string("catalog ") + what + ": " + OneLine(PQerrorMessage(conn.get()));
    if (PQstatus(conn.get()) != CONNECTION_OK) {
      conn.reset();
      return Status::Unavailable(std::move(m));
    }
    return Status::FailedPrecondition(std::move(m));
  }

  Status Connect() {
    // The source DSN may carry replication=database; this is an ordinary
    // session (prepared statements are refused on a replication one).
    const char* const keywords[] = {"dbname", "replication", "fallback_application_name", nullptr};
    const char* const values[] = {conninfo.c_str(), "false", "walbus-catalog", nullptr};
    conn.reset(PQconnectdbParams(keywords, values, /*expand_dbname=*/1));
    if (conn == nullptr) return Status::Unavailable("catalog connection: out of memory in libpq");
    if (PQstatus(conn.get()) != CONNECTION_OK) {
      std::string m = "catalog connection: " + OneLine(PQerrorMessage(conn.get()));
      conn.reset();
      return Status::Unavailable(std::move(m));
    }
    LogServerNotices(conn.get());
    const Oid param_types[] = {26};  // oid
    ResultPtr r(PQprepare(conn.get(), kStatementName, kQuery, 1, param_types));
    if (r == nullptr || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      return CommandFailed("prepare");
    }
    return Status::Ok();
  }
};

CatalogTypeFetcher::CatalogTypeFetcher(std::string conninfo) : state_(std::make_shared<State>()) {
  state_->conninfo = std::move(conninfo);
}

Result<PgTypeRow> CatalogTypeFetcher::operator()(uint32_t oid) {
  State& st = *state_;
  if (st.conn == nullptr) WALBUS_RETURN_IF_ERROR(st.Connect());

  char oid_text[16];
  std::snprintf(oid_text, sizeof(oid_text), "%u", oid);
  const char* const params[] = {oid_text};
  ResultPtr r(PQexecPrepared(st.conn.get(), kStatementName, 1, params, nullptr, nullptr, 0));
  if (r == nullptr || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    return st.CommandFailed("query on pg_type");
  }
  if (PQntuples(r.get()) == 0) {
    return Status::Corruption("type oid " + OidText(oid) + " not in pg_type");
  }
  if (PQnfields(r.get()) != 7) return Status::Internal("catalog query on pg_type: expected 7 columns");

  auto field = [&](int col) { return PQgetvalue(r.get(), 0, col); };
  auto one_char = [&](int col) {
    const char* v = field(col);
    return v[0] != '\0' && v[1] == '\0' ? v[0] : '\0';
  };
  PgTypeRow row;
  row.oid = oid;
  row.typtype = one_char(0);
  row.typcategory = one_char(3);
  row.typdelim = one_char(4);
  row.typname = field(5);
  if (row.typtype == '\0' || row.typcategory == '\0' || row.typdelim == '\0' ||
      !ParseInt(field(1), &row.typbasetype) || !ParseInt(field(2), &row.typelem) ||
      !ParseInt(field(6), &row.typlen)) {
    return Status::Corruption("type oid " + OidText(oid) + ": unexpected pg_type row");
  }
  return row;
}

}  // namespace walbus::pgwire
