// conf: which keys hold a secret written in the file (Config::secrets_in_file),
// the warning for a world-readable configuration / key file
// (PermissionWarnings), the secret spans of DsnSecrets / UrlSecrets, the
// rediss:// configuration error, and the metrics listen default.
#include "conf/file_permissions.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "conf/loader.h"
#include "conf/redact.h"

namespace walbus::conf {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using V = std::vector<std::string>;

GetEnv Env(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

const char* kSink = "\n[[sink]]\nname = \"out\"\ntype = \"stdout\"\n";

std::vector<std::string> SecretsOf(const std::string& text) {
  Result<Config> c = ParseConfig(text, "t.toml", Env({{"PW", "s3cret"}, {"DSN", "host=x password=y"}}));
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? c->secrets_in_file : std::vector<std::string>{"<parse error>"};
}

TEST(SecretsInFile, DsnPasswordLiteralOrFromEnvironment) {
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"host=db user=u password=s3cret\"\n" + std::string(kSink)),
              testing::Eq(V{"source.dsn"}));
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"host=db user=u password='a b'\"\n" + std::string(kSink)),
              testing::Eq(V{"source.dsn"}));
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"postgresql://u:s3cret@db/shop\"\n" + std::string(kSink)),
              testing::Eq(V{"source.dsn"}));
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"postgresql://u@db/shop?password=x\"\n" + std::string(kSink)),
              testing::Eq(V{"source.dsn"}));
  // From the environment: the file itself holds no secret.
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"host=db user=u password=${PW}\"\n" + std::string(kSink)),
              testing::Eq(V{}));
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"host=db user=u password='${PW}'\"\n" + std::string(kSink)),
              testing::Eq(V{}));
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"postgresql://u:${PW}@db/shop\"\n" + std::string(kSink)),
              testing::Eq(V{}));
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"${DSN}\"\n" + std::string(kSink)), testing::Eq(V{}));
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"host=db user=u\"\n" + std::string(kSink)), testing::Eq(V{}));
  // Part literal, part environment: the literal part is in the file.
  EXPECT_THAT(SecretsOf("[source]\ndsn = \"host=db password=pre${PW}\"\n" + std::string(kSink)),
              testing::Eq(V{"source.dsn"}));
}

TEST(SecretsInFile, SinkPasswordTokenAndUrlCredentials) {
  const std::string src = "[source]\ndsn = \"host=db\"\n";
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h:4222\"\n"
                              "user = \"u\"\npassword = \"s3cret\"\n"),
              testing::Eq(V{"sink 'n' password"}));
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h:4222\"\n"
                              "user = \"u\"\npassword = \"${PW}\"\n"),
              testing::Eq(V{}));
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://h:4222\"\n"
                              "token = \"t0ken\"\n"),
              testing::Eq(V{"sink 'n' token"}));
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://t0ken@h:4222\"\n"),
              testing::Eq(V{"sink 'n' url"}));
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
                              "url = \"redis://:s3cret@h:6379/0\"\n"),
              testing::Eq(V{"sink 'r' url"}));
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
                              "url = \"redis://:${PW}@h:6379/0\"\n"),
              testing::Eq(V{}));
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"tcp://h:1883\"\n"
                              "user = \"u\"\npassword = \"p\"\n"),
              testing::Eq(V{"sink 'm' password"}));
  // An empty password is no secret; tls_key / creds are paths, not secrets.
  EXPECT_THAT(SecretsOf(src + "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"ssl://h:8883\"\n"
                              "user = \"u\"\npassword = \"\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n"),
              testing::Eq(V{}));
}

TEST(Redact, SecretsAreTheHiddenSpans) {
  EXPECT_THAT(DsnSecrets("host=db password=abc user=u"), testing::Eq(V{"abc"}));
  EXPECT_THAT(DsnSecrets("host=db password = 'a b' user=u"), testing::Eq(V{"'a b'"}));
  EXPECT_THAT(DsnSecrets("postgres://u:pw@db/x?password=q"), testing::Eq(V{"pw", "q"}));
  EXPECT_THAT(DsnSecrets("host=db user=u"), testing::Eq(V{}));
  EXPECT_THAT(UrlSecrets("nats://tok@a:1,nats://u:p@b:2"), testing::Eq(V{"tok", "p"}));
  EXPECT_THAT(UrlSecrets("nats://a:1"), testing::Eq(V{}));
}

// A real file on disk with a chosen mode.
class PermissionFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("walbus-perm-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const std::string& text, mode_t mode) {
    std::string path = (dir_ / name).string();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    if (f != nullptr) {
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
    }
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }
  std::vector<std::string> Warnings(const std::string& path) {
    Result<Config> c = LoadConfig(path, Env({{"PW", "x"}}));
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? PermissionWarnings(*c) : std::vector<std::string>{};
  }
  std::filesystem::path dir_;
};

TEST_F(PermissionFile, WorldReadableConfigWithSecretWarnsOnceWithTheFix) {
  const std::string secret = "[source]\ndsn = \"host=db password=Hunter2x\"\n" + std::string(kSink);
  std::string path = Write("w.toml", secret, 0644);
  std::vector<std::string> w = Warnings(path);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_THAT(w[0], HasSubstr(path));
  EXPECT_THAT(w[0], HasSubstr("mode 0644"));
  EXPECT_THAT(w[0], HasSubstr("source.dsn"));
  EXPECT_THAT(w[0], HasSubstr("chmod 600 " + path));
  EXPECT_THAT(w[0], HasSubstr("chmod 640"));
  EXPECT_THAT(w[0], Not(HasSubstr("Hunter2x")));
  EXPECT_EQ(w[0].find('\n'), std::string::npos);

  // 0640 / 0600 are fine, and so is 0604's neighbour 0660 (group only).
  for (mode_t ok : {0600, 0640, 0660, 0400}) {
    std::string p = Write("ok.toml", secret, ok);
    EXPECT_THAT(Warnings(p), testing::Eq(V{})) << std::oct << ok;
  }
  EXPECT_THAT(Warnings(Write("o4.toml", secret, 0604)), testing::Property(&V::size, 1u));
}

TEST_F(PermissionFile, NoSecretOrSecretFromEnvironmentNoWarning) {
  std::string plain = Write("p.toml", "[source]\ndsn = \"host=db\"\n" + std::string(kSink), 0644);
  EXPECT_THAT(Warnings(plain), testing::Eq(V{}));
  std::string env = Write("e.toml", "[source]\ndsn = \"host=db password=${PW}\"\n" + std::string(kSink),
                          0644);
  EXPECT_THAT(Warnings(env), testing::Eq(V{}));
}

TEST_F(PermissionFile, WorldReadableTlsKeyAndCredsWarn) {
  std::string key = Write("client.key", "x", 0644);
  std::string creds = Write("u.creds", "x", 0644);
  std::string seed = Write("u.nk", "x", 0604);
  std::string good_key = Write("good.key", "x", 0600);
  std::string cfg = Write(
      "k.toml",
      "[source]\ndsn = \"host=db\"\n"
      "[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"ssl://h:8883\"\ntls_cert = \"/c\"\n"
      "tls_key = \"" + key + "\"\n"
      "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"tls://h:4222\"\ncreds = \"" + creds + "\"\n"
      "[[sink]]\nname = \"g\"\ntype = \"nats\"\nurl = \"tls://h:4222\"\ntls_cert = \"/c\"\n"
      "tls_key = \"" + good_key + "\"\n"
      "[[sink]]\nname = \"s\"\ntype = \"nats\"\nurl = \"nats://h:4222\"\nnkey_seed = \"" + seed + "\"\n",
      0600);
  std::vector<std::string> w = Warnings(cfg);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_THAT(w[0], HasSubstr("sink 'm' tls_key file " + key));
  EXPECT_THAT(w[0], HasSubstr("chmod 600 " + key));
  EXPECT_THAT(w[1], HasSubstr("sink 'n' creds file " + creds));
  EXPECT_THAT(w[2], HasSubstr("sink 's' nkey_seed file " + seed + " is readable by every user"));
}

TEST(RedisTls, RedissUrlIsAClearConfigurationError) {
  Result<Config> c = ParseConfig(
      "[source]\ndsn = \"host=db\"\n[[sink]]\nname = \"r\"\ntype = \"redis\"\n"
      "url = \"rediss://:pw@h:6380/0\"\n",
      "r.toml", Env({}));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("r.toml:6:7:"));
  EXPECT_THAT(c.status().message(), HasSubstr("rediss:// (TLS) is not supported"));
  EXPECT_THAT(c.status().message(), HasSubstr("tunnel"));
  EXPECT_THAT(c.status().message(), Not(HasSubstr("pw@")));
}

TEST(MetricsDefault, LoopbackOnly) {
  Result<Config> c = ParseConfig("[source]\ndsn = \"host=db\"\n" + std::string(kSink), "m.toml",
                                 Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->metrics.listen, "127.0.0.1:9187");
}

}  // namespace
}  // namespace walbus::conf
