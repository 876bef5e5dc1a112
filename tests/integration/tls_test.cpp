// TLS end to end, with certificates from compose/tls-certs.sh (a throwaway CA,
// a server certificate for localhost/127.0.0.1, client certificates):
//  - PostgreSQL over TLS (sslmode=verify-full, sslrootcert, and a client
//    certificate for `cert` authentication): the walsender's pg_stat_ssl row
//    says ssl = true and names walbus's certificate;
//  - NATS core (tls://, user/password) and JetStream (tls://, token and a
//    client certificate, server `verify: true`);
//  - MQTT over TLS (ssl://, server verified) and mqtts:// with a client
//    certificate (mosquitto require_certificate true);
//  and every misconfiguration (wrong CA, missing or foreign client
//  certificate, plain connection where only TLS is admitted, host name not in
//  the certificate, rediss://) ends walbus with ONE clear line naming the
//  cause and the fix, and `walbus check` prints it as its FAIL line.
//
// Ports (this binary's range 56100-56149): PostgreSQL 56100, nats-server
// 56101 (TLS, user/password), 56102 (TLS, verify: true, token), 56105
// (TLS, operator mode: a .creds file made here without nsc) and 56106 (TLS,
// an NKey user), mosquitto
// 56103 (TLS) and 56104 (TLS, require_certificate). Lock file
// /tmp/walbus-sec-tls-56100.lock.
#include <nats/nats.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <functional>
#include <set>

#include "tests/integration/harness.h"

namespace walbus::itest {
namespace {

constexpr int kPgPort = 56100;
constexpr int kNatsPwPort = 56101;
constexpr int kNatsCertPort = 56102;
constexpr int kMqttPort = 56103;
constexpr int kMqttCertPort = 56104;
constexpr const char* kBase = "/tmp/walbus-sec-tls";
constexpr const char* kNatsPassword = "NatsPw-7f3a";
constexpr const char* kNatsToken = "NatsTok-91c2";

std::string Certs() { return std::string(kBase) + "/certs"; }
std::string CertFile(const std::string& name) { return Certs() + "/" + name; }

// Only certificate authentication for `walbus` and TLS-only trust for
// `walbus_tls`; the test's own admin connection (postgres) is plain.
const char* kHba =
    "local all all trust\n"
    "host all postgres 127.0.0.1/32 trust\n"
    "hostssl all walbus 127.0.0.1/32 cert\n"
    "hostssl all walbus_tls 127.0.0.1/32 trust";

std::string PgScript() {
  return "WALBUS_PG_DIR=" + std::string(kBase) + "-pg WALBUS_PG_SSL_DIR='" + Certs() +
         "' WALBUS_PG_HBA='" + kHba + "' '" + std::string(kSourceDir) + "/compose/pg.sh'";
}

std::string NatsEnv(const std::string& auth_conf, bool verify) {
  return "WALBUS_NATS_HTTP_PORT=0 WALBUS_NATS_TLS_DIR='" + Certs() + "' WALBUS_NATS_CONF='" +
         auth_conf + "'" + (verify ? " WALBUS_NATS_TLS_VERIFY=1" : "");
}

std::string MqttEnv(bool require_cert) {
  return "WALBUS_MQTT_TLS_DIR='" + Certs() + "'" +
         (require_cert ? " WALBUS_MQTT_TLS_REQUIRE_CERT=1" : "");
}

// A cnats connection with TLS options, for reading back what walbus wrote.
struct NatsTls {
  std::string url, user, password, token, cert, key;
};

natsConnection* ConnectTls(const NatsTls& n) {
  natsOptions* o = nullptr;
  natsConnection* nc = nullptr;
  if (natsOptions_Create(&o) != NATS_OK) return nullptr;
  natsOptions_SetURL(o, n.url.c_str());
  natsOptions_SetSecure(o, true);
  natsOptions_LoadCATrustedCertificates(o, CertFile("ca.crt").c_str());
  if (!n.cert.empty()) natsOptions_LoadCertificatesChain(o, n.cert.c_str(), n.key.c_str());
  if (!n.user.empty()) natsOptions_SetUserInfo(o, n.user.c_str(), n.password.c_str());
  if (!n.token.empty()) natsOptions_SetToken(o, n.token.c_str());
  natsStatus s = natsConnection_Connect(&nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    ADD_FAILURE() << "test client cannot connect to " << n.url << " over TLS: "
                  << natsStatus_GetText(s) << " " << nats_GetLastError(nullptr);
    return nullptr;
  }
  return nc;
}

// --- NATS decentralised auth, made without nsc: NKeys (ed25519 keys in
// NATS's base32 + CRC16 encoding) and JWTs signed with them, enough for an
// operator-mode nats-server and a user .creds file.

uint16_t Crc16(const std::vector<uint8_t>& data) {  // CRC-16/XMODEM, as nkeys uses
  uint16_t crc = 0;
  for (uint8_t b : data) {
    crc ^= static_cast<uint16_t>(b << 8);
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

std::string Base32(const std::vector<uint8_t>& data) {  // RFC 4648, no padding
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (uint8_t b : data) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

std::string Base64Url(std::string_view data) {  // RFC 4648 §5, no padding
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : data) {
    buffer = (buffer << 8) | static_cast<uint8_t>(c);
    bits += 8;
    while (bits >= 6) {
      out.push_back(kAlphabet[(buffer >> (bits - 6)) & 63]);
      bits -= 6;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (6 - bits)) & 63]);
  return out;
}

std::string WithCrc(std::vector<uint8_t> raw) {
  uint16_t crc = Crc16(raw);
  raw.push_back(static_cast<uint8_t>(crc & 0xFF));
  raw.push_back(static_cast<uint8_t>(crc >> 8));
  return Base32(raw);
}

// One NKey: prefix 14<<3 operator (O...), 0 account (A...), 20<<3 user (U...).
struct NKey {
  std::string pub;   // public key, e.g. "UAB..."
  std::string seed;  // "SU..." / "SA..." / "SO..."
  std::shared_ptr<EVP_PKEY> key;
};

NKey MakeNKey(uint8_t prefix) {
  NKey k;
  uint8_t seed[32];
  uint8_t pub[32];
  size_t pub_len = sizeof pub;
  if (RAND_bytes(seed, sizeof seed) != 1) ADD_FAILURE() << "RAND_bytes";
  k.key.reset(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed, sizeof seed),
              EVP_PKEY_free);
  if (!k.key || EVP_PKEY_get_raw_public_key(k.key.get(), pub, &pub_len) != 1) {
    ADD_FAILURE() << "ed25519 key";
    return k;
  }
  std::vector<uint8_t> p{prefix};
  p.insert(p.end(), pub, pub + 32);
  k.pub = WithCrc(p);
  constexpr uint8_t kSeedPrefix = 18 << 3;
  std::vector<uint8_t> s{static_cast<uint8_t>(kSeedPrefix | (prefix >> 5)),
                         static_cast<uint8_t>((prefix & 31) << 3)};
  s.insert(s.end(), seed, seed + 32);
  k.seed = WithCrc(s);
  return k;
}

// A JWT "header.claims.signature" signed by `issuer` (alg ed25519-nkey).
std::string Jwt(const NKey& issuer, const std::string& claims) {
  std::string signing = Base64Url(R"({"typ":"JWT","alg":"ed25519-nkey"})") + "." + Base64Url(claims);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char sig[64];
  size_t sig_len = sizeof sig;
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, issuer.key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig, &sig_len,
                     reinterpret_cast<const unsigned char*>(signing.data()), signing.size()) != 1) {
    ADD_FAILURE() << "ed25519 signature";
  }
  return signing + "." + Base64Url(std::string_view(reinterpret_cast<char*>(sig), sig_len));
}

std::string Claims(const NKey& issuer, const std::string& subject, const std::string& name,
                   const std::string& nats) {
  static int serial = 0;
  return R"({"jti":")" + Base32({static_cast<uint8_t>(++serial), 1, 2, 3, 4}) + R"(","iat":)" +
         std::to_string(::time(nullptr)) + R"(,"iss":")" + issuer.pub + R"(","name":")" + name +
         R"(","sub":")" + subject + R"(","nats":)" + nats + "}";
}

// The .creds file cnats reads: the user's JWT and NKey seed.
std::string CredsText(const std::string& user_jwt, const NKey& user) {
  return "-----BEGIN NATS USER JWT-----\n" + user_jwt +
         "\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n" + user.seed +
         "\n------END USER NKEY SEED------\n";
}

// The test's own subscriber on postgres.public.t.> over TLS to 127.0.0.1:port,
// logged in by `login` (creds, an NKey seed, ...).
struct TlsSubscriber {
  natsConnection* nc = nullptr;
  natsSubscription* sub = nullptr;
  ~TlsSubscriber() {
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
  }
  // "" when subscribed, else why not.
  std::string Open(int port, const std::function<natsStatus(natsOptions*)>& login) {
    natsOptions* o = nullptr;
    if (natsOptions_Create(&o) != NATS_OK) return "natsOptions_Create failed";
    natsOptions_SetURL(o, ("tls://127.0.0.1:" + std::to_string(port)).c_str());
    natsOptions_SetSecure(o, true);
    natsOptions_LoadCATrustedCertificates(o, CertFile("ca.crt").c_str());
    natsStatus s = login(o);
    if (s == NATS_OK) s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    if (s == NATS_OK) s = natsConnection_SubscribeSync(&sub, nc, "postgres.public.t.>");
    if (s == NATS_OK) s = natsConnection_Flush(nc);
    if (s == NATS_OK) return "";
    const char* last = nats_GetLastError(nullptr);
    return std::string(natsStatus_GetText(s)) + " " + (last != nullptr ? last : "");
  }
};

// The one " ERROR " line of a fatal exit; a failure when there is not exactly one.
std::string OneErrorLine(const std::string& err, const std::string& tag) {
  std::vector<std::string> lines = LinesWith(err, " ERROR ");
  EXPECT_EQ(lines.size(), 1u) << tag << ": a fatal error is one line on stderr:\n" << err;
  return lines.empty() ? std::string() : lines[0];
}

class Tls : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    lock_ = std::make_unique<FileLock>("/tmp/walbus-sec-tls-" + std::to_string(kPgPort) + ".lock");
    std::error_code ec;
    std::filesystem::create_directories(kBase, ec);
    ShellResult certs = Shell("'" + std::string(kSourceDir) + "/compose/tls-certs.sh' '" +
                              Certs() + "' 2>&1");
    if (certs.code != 0) {
      ADD_FAILURE() << "compose/tls-certs.sh failed: " << certs.out;
      return;
    }
    // A server left running by an aborted run would keep its old settings.
    Shell(PgScript() + " stop " + std::to_string(kPgPort) + " >/dev/null 2>&1");
    ShellResult pg = Shell(PgScript() + " start " + std::to_string(kPgPort) + " 2>&1");
    if (pg.code != 0) {
      ADD_FAILURE() << "compose/pg.sh start (ssl) failed: " << pg.out;
      return;
    }
    WriteFile(std::string(kBase) + "/nats-users.conf",
              "authorization {\n  user: walbus\n  password: \"" + std::string(kNatsPassword) +
                  "\"\n}\n");
    WriteFile(std::string(kBase) + "/nats-token.conf",
              "authorization {\n  token: \"" + std::string(kNatsToken) + "\"\n}\n");
    nats_pw_ = std::make_unique<ComposeBroker>(
        ComposeBroker::Kind::kNats, kNatsPwPort, std::string(kBase) + "-nats-pw",
        NatsEnv(std::string(kBase) + "/nats-users.conf", false));
    nats_cert_ = std::make_unique<ComposeBroker>(
        ComposeBroker::Kind::kNats, kNatsCertPort, std::string(kBase) + "-nats-cert",
        NatsEnv(std::string(kBase) + "/nats-token.conf", true));
    mqtt_ = std::make_unique<ComposeBroker>(ComposeBroker::Kind::kMosquitto, kMqttPort,
                                            std::string(kBase) + "-mqtt", MqttEnv(false));
    mqtt_cert_ = std::make_unique<ComposeBroker>(ComposeBroker::Kind::kMosquitto, kMqttCertPort,
                                                 std::string(kBase) + "-mqtt-cert", MqttEnv(true));
    ready_ = nats_pw_->Start() && nats_cert_->Start() && mqtt_->Start() && mqtt_cert_->Start();
    Pg admin(AdminDsn());
    ready_ = ready_ && admin.ok() &&
             admin.Exec("DO $$ BEGIN "
                        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'walbus') THEN "
                        "CREATE ROLE walbus LOGIN SUPERUSER; END IF; "
                        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'walbus_tls') THEN "
                        "CREATE ROLE walbus_tls LOGIN SUPERUSER; END IF; END $$");
  }

  static void TearDownTestSuite() {
    nats_pw_.reset();
    nats_cert_.reset();
    mqtt_.reset();
    mqtt_cert_.reset();
    Shell(PgScript() + " stop " + std::to_string(kPgPort) + " >/dev/null 2>&1");
    lock_.reset();
  }

  static std::string AdminDsn() {
    return "host=127.0.0.1 port=" + std::to_string(kPgPort) +
           " user=postgres dbname=postgres sslmode=disable";
  }

  // walbus's DSN: verify-full against the test CA, certificate authentication.
  static std::string TlsDsn(const std::string& extra = "") {
    return "host=127.0.0.1 port=" + std::to_string(kPgPort) +
           " user=walbus dbname=postgres sslmode=verify-full sslrootcert=" + CertFile("ca.crt") +
           " sslcert=" + CertFile("client.crt") + " sslkey=" + CertFile("client.key") +
           (extra.empty() ? "" : " " + extra);
  }

 protected:
  void SetUp() override {
    ASSERT_TRUE(ready_) << "the TLS servers did not start";
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = FreshDir(std::string("sec-") + info->test_suite_name() + "-" + info->name());
    sql_ = std::make_unique<Pg>(AdminDsn());
    ASSERT_TRUE(sql_->ok());
    ResetDatabase(*sql_);
    ASSERT_TRUE(sql_->Exec("CREATE TABLE t (id int PRIMARY KEY, v text)"));
  }

  // A configuration file (mode 0600) with `dsn` and the given [[sink]] tables.
  std::string Config(const std::string& name, const std::string& dsn, const std::string& sinks) {
    std::string path = dir_ + "/" + name + ".toml";
    WriteFile(path, "[source]\n"
                    "dsn = \"" + dsn + "\"\n"
                    "slot = \"tls_slot\"\n"
                    "publication = \"tls_pub\"\n"
                    "status_interval_ms = 200\n"
                    "standby_retry_ms = 300\n"
                    "\n[metrics]\nlisten = \"\"\n\n" + sinks);
    ::chmod(path.c_str(), 0600);
    return path;
  }

  static std::string StdoutSink() { return "[[sink]]\nname = \"out\"\ntype = \"stdout\"\n"; }

  // `walbus run` must stop by itself with exit 1 and one ERROR line holding
  // every `needles`; `walbus check` must print a FAIL line holding them too.
  void ExpectFatalLine(const std::string& cfg, const std::string& tag,
                       const std::vector<std::string>& needles, const std::string& check_what) {
    RunResult run = RunWalbus({"run", "-c", cfg}, dir_, tag + "_run", 60s);
    EXPECT_EQ(run.code, std::optional<int>(1)) << tag << ": walbus run must stop:\n" << run.err;
    std::string line = OneErrorLine(run.err, tag);
    for (const std::string& n : needles) {
      EXPECT_TRUE(Contains(line, n)) << tag << ": the error line lacks '" << n << "':\n" << line;
    }
    EXPECT_FALSE(Contains(run.err, "INFO streaming")) << tag << ": it must not stream:\n" << run.err;
    RunResult check = RunWalbus({"check", "-c", cfg}, dir_, tag + "_check", 60s);
    EXPECT_EQ(check.code, std::optional<int>(1)) << tag << ": " << check.out << check.err;
    bool found = false;
    for (const std::string& l : LinesWith(check.out, check_what)) {
      if (l.rfind("FAIL", 0) != 0) continue;
      found = true;
      for (const std::string& n : needles) {
        EXPECT_TRUE(Contains(l, n)) << tag << ": the check line lacks '" << n << "':\n" << l;
      }
    }
    EXPECT_TRUE(found) << tag << ": no FAIL line for " << check_what << ":\n" << check.out;
    std::printf("[ info ] %s: %s\n", tag.c_str(), line.c_str());
  }

  // Runs walbus on `cfg` (its `walbus check` passing first), inserts three
  // rows and returns the envelope ids `sub` received; stops walbus with
  // SIGTERM and expects exit 0 and `secret` nowhere in its output.
  std::set<std::string> PublishThreeRows(const std::string& cfg, natsSubscription* sub,
                                         const std::string& tag, const std::string& secret) {
    RunResult check = RunWalbus({"check", "-c", cfg}, dir_, tag + "_check");
    EXPECT_EQ(check.code, std::optional<int>(0)) << check.out << check.err;
    Child walbus;
    std::set<std::string> ids;
    if (!walbus.Start({kWalbus, "run", "-c", cfg}, dir_ + "/" + tag + ".out", dir_ + "/" + tag + ".err")) {
      ADD_FAILURE() << tag << ": cannot start walbus";
      return ids;
    }
    if (!WaitUntil([&] { return !walbus.Running() || Contains(walbus.err(), "INFO streaming"); }, 30s) ||
        !walbus.Running()) {
      ADD_FAILURE() << tag << ": walbus did not stream:\n" << walbus.err();
      return ids;
    }
    EXPECT_TRUE(sql().Exec("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')"));
    for (int i = 0; i < 12 && ids.size() < 3; ++i) {
      natsMsg* m = nullptr;
      if (natsSubscription_NextMsg(&m, sub, 5000) != NATS_OK) continue;
      std::string payload(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
      std::optional<Envelope> e = ParseEnvelopeLine(std::string(natsMsg_GetSubject(m)) + "\t" + payload);
      if (e) ids.insert(e->id);
      natsMsg_Destroy(m);
    }
    walbus.Signal(SIGTERM);
    EXPECT_EQ(walbus.Wait(20s), std::optional<int>(0)) << walbus.err();
    EXPECT_FALSE(Contains(walbus.err(), secret)) << walbus.err();
    return ids;
  }

  Pg& sql() { return *sql_; }
  const std::string& dir() const { return dir_; }

  static inline std::unique_ptr<FileLock> lock_;
  static inline std::unique_ptr<ComposeBroker> nats_pw_, nats_cert_, mqtt_, mqtt_cert_;
  static inline bool ready_ = false;

 private:
  std::string dir_;
  std::unique_ptr<Pg> sql_;
};

// Every retained state message under postgres/public/t/state/ on an MQTT
// broker, read over TLS by mosquitto_sub (an independent client).
std::set<std::string> RetainedStateKeys(int port, bool client_cert, size_t expect) {
  std::string cmd = "mosquitto_sub -h 127.0.0.1 -p " + std::to_string(port) + " --cafile '" +
                    CertFile("ca.crt") + "'" +
                    (client_cert ? " --cert '" + CertFile("client.crt") + "' --key '" +
                                       CertFile("client.key") + "'"
                                 : std::string()) +
                    " -t 'postgres/public/t/state/#' -v -C " + std::to_string(expect) +
                    " -W 20 2>&1";
  ShellResult r = Shell(cmd);
  std::set<std::string> keys;
  for (const std::string& line : LinesWith(r.out, "postgres/public/t/state/")) {
    std::string topic = line.substr(0, line.find(' '));
    keys.insert(topic.substr(topic.rfind('/') + 1));
  }
  EXPECT_EQ(r.code, 0) << "mosquitto_sub on " << port << ":\n" << r.out;
  return keys;
}

// Rows written to PostgreSQL over a TLS replication connection reach NATS
// core, JetStream and two MQTT brokers, each over TLS.
TEST_F(Tls, EndToEndEverySinkOverTls) {
  const std::string ca = CertFile("ca.crt"), cert = CertFile("client.crt"),
                    key = CertFile("client.key");
  const std::string sinks =
      "[[sink]]\nname = \"core\"\ntype = \"nats\"\nurl = \"tls://127.0.0.1:" +
      std::to_string(kNatsPwPort) + "\"\nuser = \"walbus\"\npassword = \"" + kNatsPassword +
      "\"\ntls_ca = \"" + ca + "\"\n\n"
      "[[sink]]\nname = \"js\"\ntype = \"jetstream\"\nurl = \"tls://127.0.0.1:" +
      std::to_string(kNatsCertPort) + "\"\ntoken = \"" + kNatsToken + "\"\ntls_ca = \"" + ca +
      "\"\ntls_cert = \"" + cert + "\"\ntls_key = \"" + key + "\"\nstream = \"TLS\"\n\n"
      "[[sink]]\nname = \"mq\"\ntype = \"mqtt\"\nurl = \"ssl://127.0.0.1:" +
      std::to_string(kMqttPort) + "\"\ntls_ca = \"" + ca +
      "\"\nclient_id = \"walbus-tls-1\"\nstate_topic = \"{db}/{schema}/{table}/state/{key}\"\n\n"
      "[[sink]]\nname = \"mqc\"\ntype = \"mqtt\"\nurl = \"mqtts://localhost:" +
      std::to_string(kMqttCertPort) + "\"\ntls_ca = \"" + ca + "\"\ntls_cert = \"" + cert +
      "\"\ntls_key = \"" + key +
      "\"\nclient_id = \"walbus-tls-2\"\nstate_topic = \"{db}/{schema}/{table}/state/{key}\"\n";
  std::string cfg = Config("all", TlsDsn(), sinks);

  // `check` passes over TLS everywhere.
  RunResult check = RunWalbus({"check", "-c", cfg}, dir(), "check");
  EXPECT_EQ(check.code, std::optional<int>(0)) << check.out << check.err;
  EXPECT_EQ(LinesWith(check.out, "FAIL").size(), 0u) << check.out;

  // A core NATS subscriber (over TLS) before the rows are written.
  natsConnection* sub_nc = ConnectTls({"tls://127.0.0.1:" + std::to_string(kNatsPwPort), "walbus",
                                       kNatsPassword, "", "", ""});
  ASSERT_NE(sub_nc, nullptr);
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&sub, sub_nc, "postgres.public.t.>"), NATS_OK);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  ASSERT_EQ(natsConnection_Flush(sub_nc), NATS_OK);

  Child walbus;
  ASSERT_TRUE(walbus.Start({kWalbus, "run", "-c", cfg}, dir() + "/run.out", dir() + "/run.err"));
  ASSERT_TRUE(WaitUntil([&] { return !walbus.Running() || Contains(walbus.err(), "INFO streaming"); },
                        30s));
  ASSERT_TRUE(walbus.Running()) << walbus.err();

  // The walsender streaming to walbus runs over TLS, authenticated by
  // walbus's client certificate.
  Rows ssl;
  ASSERT_TRUE(WaitUntil(
      [&] {
        ssl = sql().Query(
            "SELECT s.ssl::text, coalesce(s.version, ''), coalesce(s.client_dn, ''), "
            "a.backend_type, a.usename::text FROM pg_replication_slots r "
            "JOIN pg_stat_ssl s ON s.pid = r.active_pid "
            "JOIN pg_stat_activity a ON a.pid = r.active_pid WHERE r.slot_name = 'tls_slot'");
        return !ssl.empty();
      },
      10s));
  EXPECT_EQ(ssl[0][0], std::optional<std::string>("true"));
  EXPECT_EQ(ssl[0][1].value_or("").rfind("TLSv1.", 0), 0u) << ssl[0][1].value_or("");
  EXPECT_EQ(ssl[0][2], std::optional<std::string>("/CN=walbus"));
  EXPECT_EQ(ssl[0][3], std::optional<std::string>("walsender"));
  EXPECT_EQ(ssl[0][4], std::optional<std::string>("walbus"));
  std::printf("[ info ] walsender pid: ssl=%s %s client %s\n", ssl[0][0].value_or("?").c_str(),
              ssl[0][1].value_or("?").c_str(), ssl[0][2].value_or("?").c_str());

  constexpr int kRows = 60;
  for (int tx = 0; tx < 6; ++tx) {
    std::string values;
    for (int i = 1; i <= 10; ++i) {
      int id = tx * 10 + i;
      values += (values.empty() ? "" : ", ") + ("(" + std::to_string(id) + ", 'row " +
                                                std::to_string(id) + "')");
    }
    ASSERT_TRUE(sql().Exec("INSERT INTO t VALUES " + values));
  }
  uint64_t end = sql().CurrentWalLsn();
  uint64_t seen = 0;
  EXPECT_TRUE(WaitSlotConfirmed(sql(), "tls_slot", end, 60s, &seen))
      << "every sink must acknowledge; confirmed " << FormatLsn(seen) << " of " << FormatLsn(end)
      << "\n" << walbus.err();

  // NATS core over TLS.
  std::set<std::string> core_ids;
  for (int i = 0; i < 2 * kRows; ++i) {
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, core_ids.size() >= kRows ? 300 : 5000) != NATS_OK) break;
    std::string payload(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m)));
    std::optional<Envelope> e = ParseEnvelopeLine(std::string(natsMsg_GetSubject(m)) + "\t" + payload);
    if (e) core_ids.insert(e->id);
    natsMsg_Destroy(m);
  }
  EXPECT_EQ(core_ids.size(), static_cast<size_t>(kRows)) << "NATS core (tls, user/password)";
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(sub_nc);

  // JetStream over TLS with a client certificate: the stream holds every row.
  natsConnection* js_nc = ConnectTls({"tls://127.0.0.1:" + std::to_string(kNatsCertPort), "", "",
                                      kNatsToken, cert, key});
  ASSERT_NE(js_nc, nullptr);
  jsCtx* js = nullptr;
  jsStreamInfo* si = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, js_nc, nullptr), NATS_OK);
  ASSERT_EQ(js_GetStreamInfo(&si, js, "TLS", nullptr, nullptr), NATS_OK);
  EXPECT_EQ(si->State.Msgs, static_cast<uint64_t>(kRows)) << "JetStream (tls, token, client cert)";
  std::printf("[ info ] core NATS got %zu, JetStream stream TLS holds %llu\n", core_ids.size(),
              static_cast<unsigned long long>(si->State.Msgs));
  jsStreamInfo_Destroy(si);
  jsCtx_Destroy(js);
  natsConnection_Destroy(js_nc);

  // MQTT over TLS: the retained state of every row, read by mosquitto_sub.
  std::set<std::string> want;
  for (int id = 1; id <= kRows; ++id) want.insert(std::to_string(id));
  EXPECT_EQ(RetainedStateKeys(kMqttPort, false, kRows), want) << "mqtt ssl://";
  EXPECT_EQ(RetainedStateKeys(kMqttCertPort, true, kRows), want) << "mqtt mqtts:// + client cert";

  walbus.Signal(SIGTERM);
  EXPECT_EQ(walbus.Wait(20s), std::optional<int>(0)) << walbus.err();
  // A 0600 configuration file draws no permission warning; nothing failed.
  EXPECT_FALSE(Contains(walbus.err(), "readable by every user")) << walbus.err();
  EXPECT_EQ(LinesWith(walbus.err(), " ERROR ").size(), 0u) << walbus.err();
  EXPECT_FALSE(Contains(walbus.err(), kNatsPassword)) << walbus.err();
  EXPECT_FALSE(Contains(walbus.err(), kNatsToken)) << walbus.err();
}

// PostgreSQL TLS mistakes: one line each, naming the DSN key to fix.
TEST_F(Tls, PostgresTlsMistakesAreOneClearLine) {
  const std::string host = "host=127.0.0.1 port=" + std::to_string(kPgPort) + " dbname=postgres";
  const std::string ca = " sslrootcert=" + CertFile("ca.crt");
  const std::string cert = " sslcert=" + CertFile("client.crt") + " sslkey=" + CertFile("client.key");
  struct Case {
    std::string tag, dsn;
    std::vector<std::string> needles;
  };
  const Case cases[] = {
      {"wrong_ca", host + " user=walbus sslmode=verify-full sslrootcert=" +
                       CertFile("other-ca.crt") + cert,
       {"not trusted", "sslrootcert="}},
      {"missing_ca_file", host + " user=walbus sslmode=verify-full sslrootcert=" + dir() +
                              "/none.crt" + cert,
       {"does not exist", "sslrootcert="}},
      {"no_client_cert", host + " user=walbus sslmode=verify-full" + ca + " sslcert=" + dir() +
                             "/none.crt sslkey=" + dir() + "/none.key",
       {"client certificate", "sslcert=", "sslkey="}},
      {"foreign_client_cert", host + " user=walbus sslmode=verify-full" + ca + " sslcert=" +
                                  CertFile("other-client.crt") + " sslkey=" +
                                  CertFile("other-client.key"),
       {"client certificate", "sslcert="}},
      {"plain_to_hostssl", host + " user=walbus_tls sslmode=disable",
       {"hostssl", "sslmode=verify-full"}},
      {"wrong_host_name", "hostaddr=127.0.0.1 host=db.invalid port=" + std::to_string(kPgPort) +
                              " dbname=postgres user=walbus sslmode=verify-full" + ca + cert,
       {"does not match host name", "source.dsn"}},
  };
  for (const Case& c : cases) {
    ExpectFatalLine(Config(c.tag, c.dsn, StdoutSink()), c.tag, c.needles, "postgres connection");
  }
  // The positive control: the same server, user and files, done right.
  RunResult ok = RunWalbus({"check", "-c", Config("ok", TlsDsn(), StdoutSink())}, dir(), "ok");
  EXPECT_EQ(ok.code, std::optional<int>(0)) << ok.out << ok.err;
  RunResult tls_user = RunWalbus(
      {"check", "-c", Config("tls_user", host + " user=walbus_tls sslmode=verify-full" + ca,
                             StdoutSink())},
      dir(), "tls_user");
  EXPECT_EQ(tls_user.code, std::optional<int>(0)) << tls_user.out << tls_user.err;
}

// Broker TLS mistakes: one line each, naming the sink key to fix.
TEST_F(Tls, BrokerTlsMistakesAreOneClearLine) {
  const std::string other_ca = CertFile("other-ca.crt"), ca = CertFile("ca.crt");
  struct Case {
    std::string tag, sink;
    std::vector<std::string> needles;
  };
  const Case cases[] = {
      {"nats_wrong_ca",
       "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"tls://127.0.0.1:" +
           std::to_string(kNatsPwPort) + "\"\nuser = \"walbus\"\npassword = \"" + kNatsPassword +
           "\"\ntls_ca = \"" + other_ca + "\"\n",
       {"sink n", "not trusted", "tls_ca"}},
      {"nats_no_client_cert",
       "[[sink]]\nname = \"n\"\ntype = \"jetstream\"\nstream = \"TLSX\"\nurl = \"tls://127.0.0.1:" +
           std::to_string(kNatsCertPort) + "\"\ntoken = \"" + kNatsToken + "\"\ntls_ca = \"" + ca +
           "\"\n",
       {"sink n", "client certificate", "tls_cert", "tls_key"}},
      {"mqtt_wrong_ca",
       "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"ssl://127.0.0.1:" +
           std::to_string(kMqttPort) + "\"\ntls_ca = \"" + other_ca + "\"\n",
       {"sink m", "not trusted", "tls_ca"}},
      {"mqtt_no_client_cert",
       "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"ssl://127.0.0.1:" +
           std::to_string(kMqttCertPort) + "\"\ntls_ca = \"" + ca + "\"\n",
       {"sink m", "client certificate", "tls_cert", "tls_key"}},
      {"mqtt_foreign_client_cert",
       "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"ssl://127.0.0.1:" +
           std::to_string(kMqttCertPort) + "\"\ntls_ca = \"" + ca + "\"\ntls_cert = \"" +
           CertFile("other-client.crt") + "\"\ntls_key = \"" + CertFile("other-client.key") + "\"\n",
       {"sink m", "client certificate", "tls_cert"}},
      {"nats_foreign_client_cert",
       "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"tls://127.0.0.1:" +
           std::to_string(kNatsCertPort) + "\"\ntoken = \"" + kNatsToken + "\"\ntls_ca = \"" + ca +
           "\"\ntls_cert = \"" + CertFile("other-client.crt") + "\"\ntls_key = \"" +
           CertFile("other-client.key") + "\"\n",
       {"sink n", "client certificate", "tls_cert"}},
  };
  for (const Case& c : cases) {
    ExpectFatalLine(Config(c.tag, TlsDsn(), c.sink), c.tag, c.needles, "sink ");
  }
}

// A .creds file (user JWT + NKey seed) against an operator-mode nats-server
// over TLS: walbus publishes with it, and creds from an account the server
// does not know are refused in one line. Port 56105.
TEST_F(Tls, NatsCredsFileOverTls) {
  constexpr int kPort = 56105;
  NKey op = MakeNKey(14 << 3), account = MakeNKey(0), user = MakeNKey(20 << 3);
  NKey stranger_account = MakeNKey(0), stranger = MakeNKey(20 << 3);
  ASSERT_EQ(op.pub[0], 'O');
  ASSERT_EQ(account.pub[0], 'A');
  ASSERT_EQ(user.seed.substr(0, 2), "SU");
  const std::string op_jwt =
      Jwt(op, Claims(op, op.pub, "walbus-test-operator", R"({"type":"operator","version":2})"));
  const std::string account_nats =
      R"({"limits":{"subs":-1,"data":-1,"payload":-1,"imports":-1,"exports":-1,)"
      R"("wildcards":true,"conn":-1,"leaf":-1},"default_permissions":{"pub":{},"sub":{}},)"
      R"("type":"account","version":2})";
  const std::string account_jwt = Jwt(op, Claims(op, account.pub, "walbus-test", account_nats));
  // nats.sh runs JetStream, which an operator-mode server only starts with a
  // system account.
  NKey system = MakeNKey(0);
  const std::string system_jwt = Jwt(op, Claims(op, system.pub, "SYS", account_nats));
  const std::string user_nats =
      R"({"pub":{},"sub":{},"subs":-1,"data":-1,"payload":-1,"type":"user","version":2})";
  const std::string creds = dir() + "/walbus.creds";
  WriteFile(creds, CredsText(Jwt(account, Claims(account, user.pub, "walbus", user_nats)), user));
  ::chmod(creds.c_str(), 0600);
  const std::string stranger_creds = dir() + "/stranger.creds";
  WriteFile(stranger_creds,
            CredsText(Jwt(stranger_account, Claims(stranger_account, stranger.pub, "x", user_nats)),
                      stranger));
  ::chmod(stranger_creds.c_str(), 0600);
  WriteFile(dir() + "/operator.jwt", op_jwt);
  WriteFile(dir() + "/operator.conf", "operator: \"" + dir() + "/operator.jwt\"\n"
                                      "system_account: " + system.pub + "\n"
                                      "resolver: MEMORY\n"
                                      "resolver_preload: {\n  " + account.pub + ": \"" +
                                      account_jwt + "\"\n  " + system.pub + ": \"" + system_jwt +
                                      "\"\n}\n");
  ComposeBroker nats(ComposeBroker::Kind::kNats, kPort, std::string(kBase) + "-nats-creds",
                     NatsEnv(dir() + "/operator.conf", false));
  ASSERT_TRUE(nats.Start());

  // An independent subscriber with the same creds, over TLS.
  TlsSubscriber reader;
  std::string why = reader.Open(kPort, [&](natsOptions* o) {
    return natsOptions_SetUserCredentialsFromFiles(o, creds.c_str(), nullptr);
  });
  ASSERT_EQ(why, "") << "the test's own creds login failed\n" << ReadFile(nats.dir() + "/nats.log");

  const std::string sink = "[[sink]]\nname = \"creds\"\ntype = \"nats\"\nurl = \"tls://127.0.0.1:" +
                           std::to_string(kPort) + "\"\ncreds = \"" + creds + "\"\ntls_ca = \"" +
                           CertFile("ca.crt") + "\"\n";
  EXPECT_EQ(PublishThreeRows(Config("creds", TlsDsn(), sink), reader.sub, "creds", user.seed).size(),
            3u);

  // Creds of an account the server does not trust, and a missing file.
  std::string bad = sink;
  bad.replace(bad.find(creds), creds.size(), stranger_creds);
  ExpectFatalLine(Config("stranger", TlsDsn(), bad), "creds_stranger",
                  {"sink creds", "refused the credentials", "creds"}, "sink ");
  std::string missing = sink;
  missing.replace(missing.find(creds), creds.size(), dir() + "/none.creds");
  ExpectFatalLine(Config("missing", TlsDsn(), missing), "creds_missing",
                  {"sink creds", "cannot use creds file " + dir() + "/none.creds"}, "sink ");
}

// An NKey user (server: authorization { users = [ { nkey: U... } ] }) with
// only its seed file in walbus's config (`nkey_seed`; walbus derives the
// public key): walbus publishes; a seed the server does not know, an account
// seed and a missing file each end in one line. Port 56106.
TEST_F(Tls, NatsNKeySeedFile) {
  constexpr int kPort = 56106;
  NKey user = MakeNKey(20 << 3), stranger = MakeNKey(20 << 3), account = MakeNKey(0);
  ASSERT_EQ(user.pub[0], 'U');
  WriteFile(dir() + "/nkey.conf",
            "authorization {\n  users = [\n    { nkey: " + user.pub + " }\n  ]\n}\n");
  const std::string seed = dir() + "/walbus.nk";
  WriteFile(seed, user.seed + "\n");
  ::chmod(seed.c_str(), 0600);
  const std::string stranger_seed = dir() + "/stranger.nk";
  WriteFile(stranger_seed, stranger.seed + "\n");
  ::chmod(stranger_seed.c_str(), 0600);
  const std::string account_seed = dir() + "/account.nk";
  WriteFile(account_seed, account.seed + "\n");
  ::chmod(account_seed.c_str(), 0600);
  ComposeBroker nats(ComposeBroker::Kind::kNats, kPort, std::string(kBase) + "-nats-nkey",
                     NatsEnv(dir() + "/nkey.conf", false));
  ASSERT_TRUE(nats.Start());

  // The test's own subscriber signs with the same seed and its own public key.
  TlsSubscriber reader;
  std::string why = reader.Open(kPort, [&](natsOptions* o) {
    return natsOptions_SetNKeyFromSeed(o, user.pub.c_str(), seed.c_str());
  });
  ASSERT_EQ(why, "") << "the test's own nkey login failed\n" << ReadFile(nats.dir() + "/nats.log");

  const std::string sink = "[[sink]]\nname = \"nkey\"\ntype = \"nats\"\nurl = \"tls://127.0.0.1:" +
                           std::to_string(kPort) + "\"\nnkey_seed = \"" + seed + "\"\ntls_ca = \"" +
                           CertFile("ca.crt") + "\"\n";
  EXPECT_EQ(PublishThreeRows(Config("nkey", TlsDsn(), sink), reader.sub, "nkey", user.seed).size(),
            3u);

  std::string bad = sink;
  bad.replace(bad.find(seed), seed.size(), stranger_seed);
  ExpectFatalLine(Config("nkey_stranger", TlsDsn(), bad), "nkey_stranger",
                  {"sink nkey", "refused the credentials", "nkey_seed"}, "sink ");
  std::string wrong_kind = sink;
  wrong_kind.replace(wrong_kind.find(seed), seed.size(), account_seed);
  ExpectFatalLine(Config("nkey_account", TlsDsn(), wrong_kind), "nkey_account",
                  {"sink nkey", "nkey_seed file " + account_seed + " holds an account NKey seed",
                   "use a seed starting with SU"},
                  "sink ");
  std::string missing = sink;
  missing.replace(missing.find(seed), seed.size(), dir() + "/none.nk");
  ExpectFatalLine(Config("nkey_missing", TlsDsn(), missing), "nkey_missing",
                  {"sink nkey", "cannot use nkey_seed file " + dir() + "/none.nk: No such file"},
                  "sink ");
}

// rediss:// is refused up front (Debian 12's hiredis 0.14 has no TLS): exit 2,
// one line naming the file position and the way out.
TEST_F(Tls, RedissIsAConfigurationError) {
  std::string cfg = Config("rediss", TlsDsn(),
                           "[[sink]]\nname = \"r\"\ntype = \"redis\"\nurl = "
                           "\"rediss://:S3cretR@127.0.0.1:56149/0\"\n");
  for (const std::string cmd : {"run", "check"}) {
    RunResult r = RunWalbus({cmd, "-c", cfg}, dir(), "rediss_" + cmd);
    EXPECT_EQ(r.code, std::optional<int>(2)) << r.err;
    std::string line = OneErrorLine(r.err, "rediss " + cmd);
    EXPECT_TRUE(Contains(line, cfg + ":")) << line;
    EXPECT_TRUE(Contains(line, "rediss:// (TLS) is not supported")) << line;
    EXPECT_TRUE(Contains(line, "tunnel")) << line;
    EXPECT_FALSE(Contains(r.err + r.out, "S3cretR")) << r.err;
  }
}

}  // namespace
}  // namespace walbus::itest
