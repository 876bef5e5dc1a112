#include "adapters/nats/nkey.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace walbus::adapters::nats {
namespace {

// Made outside walbus: seed bytes 01..20, the public key from
// `openssl pkey -pubout` on the PKCS#8 form of that seed, the nkeys framing
// (prefix bytes, CRC-16/XMODEM little-endian, base32) from Python's
// binascii.crc_hqx and base64.b32encode.
constexpr char kUserSeed[] = "SUAACAQDAQCQMBYIBEFAWDANBYHRAEISCMKBKFQXDAMRUGY4DUPB6IC5CQ";
constexpr char kUserPublic[] = "UB43KVROR7TFJ6KAPCYRF2FJROTZAH4FHLTJLPWX4DRZCC5NASLGJBFE";
constexpr char kAccountSeed[] = "SAAACAQDAQCQMBYIBEFAWDANBYHRAEISCMKBKFQXDAMRUGY4DUPB6IFO3A";

TEST(NatsNKey, DerivesTheUserPublicKeyFromItsSeed) {
  Result<std::string> pub = UserPublicKeyFromSeedText(kUserSeed);
  ASSERT_TRUE(pub.ok()) << pub.status().message();
  EXPECT_EQ(*pub, kUserPublic);
}

TEST(NatsNKey, FindsTheSeedAmongOtherText) {
  // nk writes the seed alone; people add comments or keep the .creds layout.
  for (const std::string& text :
       {std::string(kUserSeed) + "\n", std::string("  ") + kUserSeed + "  ",
        std::string("# walbus publisher\n") + kUserSeed + "\n# end\n",
        std::string("-----BEGIN USER NKEY SEED-----\n") + kUserSeed +
            "\n------END USER NKEY SEED------\n"}) {
    Result<std::string> pub = UserPublicKeyFromSeedText(text);
    ASSERT_TRUE(pub.ok()) << text << ": " << pub.status().message();
    EXPECT_EQ(*pub, kUserPublic) << text;
  }
}

TEST(NatsNKey, RefusesWhatIsNotAUserSeedWithoutQuotingIt) {
  std::string flipped = kUserSeed;
  flipped[20] = flipped[20] == 'A' ? 'B' : 'A';  // one mistyped character
  struct Case {
    std::string text;
    std::string needle;
  } cases[] = {
      {"", "holds no NKey seed"},
      {kUserPublic, "holds no NKey seed"},                       // the public key by mistake
      {std::string(kUserSeed).substr(0, 57), "holds no NKey seed"},  // cut by one character
      {std::string(kUserSeed) + "A", "holds no NKey seed"},      // one too many
      {flipped, "checksum is wrong"},
      {kAccountSeed, "an account NKey seed"},
  };
  for (const Case& c : cases) {
    Result<std::string> pub = UserPublicKeyFromSeedText(c.text);
    ASSERT_FALSE(pub.ok()) << c.text;
    EXPECT_EQ(pub.status().code(), Code::kInvalidArgument) << c.text;
    EXPECT_NE(pub.status().message().find(c.needle), std::string::npos)
        << c.text << ": " << pub.status().message();
    EXPECT_EQ(pub.status().message().find(kUserSeed + 2), std::string::npos);
  }
}

TEST(NatsNKey, FileErrorsNameTheFileAndTheFix) {
  std::string dir = ::testing::TempDir();
  Result<std::string> missing = UserPublicKeyFromSeedFile(dir + "/walbus-no-such.nk");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("cannot use nkey_seed file " + dir +
                                            "/walbus-no-such.nk: No such file"),
            std::string::npos)
      << missing.status().message();

  std::string path = dir + "/walbus-account.nk";
  std::ofstream(path) << kAccountSeed << "\n";
  Result<std::string> account = UserPublicKeyFromSeedFile(path);
  ASSERT_FALSE(account.ok());
  EXPECT_EQ(account.status().message(),
            "nkey_seed file " + path +
                " holds an account NKey seed; walbus logs in as a user: use a seed starting with SU");

  std::ofstream(path) << kUserSeed << "\n";
  Result<std::string> user = UserPublicKeyFromSeedFile(path);
  ASSERT_TRUE(user.ok()) << user.status().message();
  EXPECT_EQ(*user, kUserPublic);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace walbus::adapters::nats
