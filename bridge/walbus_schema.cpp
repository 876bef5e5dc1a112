#include "bridge/walbus_schema.h"

#include <charconv>

#include "bridge/envelope_builder.h"
#include "pgwire/array_literal.h"

namespace walbus::bridge {
namespace {

// Collects the elements of a one-dimensional text[] literal.
class KeyCollector : public pgwire::ArrayVisitor {
 public:
  explicit KeyCollector(pgwire::KeyValues* out) : out_(out) {}
  Status BeginArray() override {
    if (++depth_ > 1) return Status::Corruption("a nested array");
    return Status::Ok();
  }
  Status EndArray() override {
    --depth_;
    return Status::Ok();
  }
  Status Element(std::string_view raw, bool quoted, bool is_null) override {
    if (is_null) return Status::Corruption("a NULL element");
    std::string v;
    if (quoted) {
      pgwire::AppendPgUnescaped(&v, raw);
    } else {
      v.assign(raw);
    }
    out_->push_back(std::move(v));
    return Status::Ok();
  }

 private:
  pgwire::KeyValues* out_;
  int depth_ = 0;
};

}  // namespace

std::string WalbusSchemaFix(PGconn* conn) {
  const std::string role = pgwire::QuoteIdent(PQuser(conn));
  return "GRANT CREATE ON DATABASE " + pgwire::QuoteIdent(PQdb(conn)) + " TO " + role +
         ", or create it as an administrator: CREATE SCHEMA " + std::string(kWalbusSchema) +
         " AUTHORIZATION " + role;
}

Status EnsureWalbusSchema(PGconn* conn, std::string_view purpose) {
  const std::string schema(kWalbusSchema);
  std::string state;
  Result<pgwire::Rows> ns = pgwire::Query(
      conn, "SELECT 1 FROM pg_namespace WHERE nspname = " + pgwire::QuoteLiteral(conn, schema),
      &state);
  if (!ns.ok()) return ns.status().WithContext("looking up schema " + schema);
  if (!ns->empty()) return Status::Ok();
  // CREATE SCHEMA IF NOT EXISTS checks the database privilege even when the
  // schema exists, so only a missing schema is created.
  Status st = pgwire::Exec(conn, "CREATE SCHEMA " + schema, &state);
  if (!st.ok() && state == "42501") {
    return Status::FailedPrecondition("cannot create schema " + schema + " for " +
                                      std::string(purpose) + " (" + st.message() + "); " +
                                      WalbusSchemaFix(conn));
  }
  // 42P06: a twin created it at the same moment.
  if (!st.ok() && state != "42P06") return st.WithContext("creating schema " + schema);
  return Status::Ok();
}

Result<bool> WalbusTablesExist(PGconn* conn, std::initializer_list<std::string_view> names,
                               std::string* state) {
  std::string sql = "SELECT true";
  for (std::string_view name : names) {
    sql += " AND to_regclass(";
    sql += pgwire::QuoteLiteral(conn, std::string(kWalbusSchema) + "." + std::string(name));
    sql += ") IS NOT NULL";
  }
  Result<pgwire::Rows> r = pgwire::Query(conn, sql, state);
  if (!r.ok()) return r.status();
  return !r->empty() && (*r)[0][0].value_or("f") == "t";
}

std::string KeyArraySql(PGconn* conn, const pgwire::KeyValues& key) {
  std::string out = "ARRAY[";
  for (size_t i = 0; i < key.size(); ++i) {
    if (i > 0) out += ", ";
    out += pgwire::QuoteLiteral(conn, key[i]);
  }
  return out + "]::text[]";
}

Result<std::optional<pgwire::KeyValues>> ParseKeyArray(const std::optional<std::string>& text,
                                                       std::string_view what) {
  if (!text) return std::optional<pgwire::KeyValues>();
  pgwire::KeyValues key;
  KeyCollector collect(&key);
  Status st = pgwire::ParseArrayLiteral(*text, ',', collect);
  if (!st.ok()) {
    return Status::Corruption(std::string(what) + ": last_key is not a key (" + st.message() + ")");
  }
  return std::optional<pgwire::KeyValues>(std::move(key));
}

uint64_t CountValue(const std::optional<std::string>& v) {
  uint64_t n = 0;
  if (!v) return 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  return ec == std::errc() && end == v->data() + v->size() ? n : 0;
}

}  // namespace walbus::bridge
