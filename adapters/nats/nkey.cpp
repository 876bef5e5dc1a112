#include "adapters/nats/nkey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

namespace walbus::adapters::nats {
namespace {

// The nkeys encoding (github.com/nats-io/nkeys, strkey.go): one prefix byte
// naming the kind (or two for a seed, which carries the kind inside), the
// 32 key bytes, CRC-16/XMODEM of all that little-endian, then RFC 4648 base32
// without padding.
constexpr uint8_t kSeedPrefix = 18 << 3;  // 'S'
constexpr uint8_t kUserPrefix = 20 << 3;  // 'U'
constexpr uint8_t kAccountPrefix = 0;     // 'A'
constexpr uint8_t kOperatorPrefix = 14 << 3;  // 'O'
constexpr size_t kSeedChars = 58;         // base32 of 2 + 32 + 2 bytes
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

uint16_t Crc16(const uint8_t* data, size_t n) {
  uint16_t crc = 0;
  for (size_t i = 0; i < n; ++i) {
    crc ^= static_cast<uint16_t>(data[i] << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

int Base32Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}

bool IsSeedWord(std::string_view w) {
  if (w.size() != kSeedChars || w[0] != 'S') return false;
  for (char c : w) {
    if (Base32Value(c) < 0) return false;
  }
  return true;
}

// Wipes the seed bytes however the function is left.
template <size_t N>
struct Secret {
  std::array<uint8_t, N> bytes{};
  ~Secret() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

}  // namespace

Result<std::string> UserPublicKeyFromSeedText(std::string_view text) {
  std::string_view word;
  for (size_t i = 0; i < text.size() && word.empty();) {
    while (i < text.size() && Base32Value(text[i]) < 0) ++i;
    size_t start = i;
    while (i < text.size() && Base32Value(text[i]) >= 0) ++i;
    if (IsSeedWord(text.substr(start, i - start))) word = text.substr(start, i - start);
  }
  if (word.empty()) {
    return Status::InvalidArgument(
        "holds no NKey seed (a 58-character word starting with S, as `nk -gen user` writes)");
  }

  Secret<36> raw;  // 290 bits of base32: 36 bytes and 2 zero bits
  uint32_t buffer = 0;
  int bits = 0;
  size_t n = 0;
  for (char c : word) {
    buffer = (buffer << 5) | static_cast<uint32_t>(Base32Value(c));
    bits += 5;
    if (bits >= 8) {
      raw.bytes[n++] = static_cast<uint8_t>(buffer >> (bits - 8));
      bits -= 8;
    }
  }
  buffer = 0;
  bits = 0;
  uint16_t crc = static_cast<uint16_t>(raw.bytes[34] | (raw.bytes[35] << 8));
  if (Crc16(raw.bytes.data(), 34) != crc) {
    return Status::InvalidArgument("holds an NKey seed whose checksum is wrong (mistyped or cut)");
  }
  if ((raw.bytes[0] & 0xF8) != kSeedPrefix) {
    return Status::InvalidArgument("holds a malformed NKey seed");
  }
  uint8_t kind = static_cast<uint8_t>(((raw.bytes[0] & 0x07) << 5) | ((raw.bytes[1] & 0xF8) >> 3));
  if (kind != kUserPrefix) {
    const char* what = kind == kAccountPrefix    ? "an account"
                       : kind == kOperatorPrefix ? "an operator"
                                                 : "a non-user";
    return Status::InvalidArgument(std::string("holds ") + what +
                                   " NKey seed; walbus logs in as a user: use a seed starting "
                                   "with SU");
  }

  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, raw.bytes.data() + 2, 32),
      EVP_PKEY_free);
  std::array<uint8_t, 35> pub{};
  size_t pub_len = 32;
  if (!key || EVP_PKEY_get_raw_public_key(key.get(), pub.data() + 1, &pub_len) != 1 ||
      pub_len != 32) {
    return Status::Internal("OpenSSL cannot derive an ed25519 public key from the NKey seed");
  }
  pub[0] = kUserPrefix;
  uint16_t pub_crc = Crc16(pub.data(), 33);
  pub[33] = static_cast<uint8_t>(pub_crc & 0xFF);
  pub[34] = static_cast<uint8_t>(pub_crc >> 8);

  std::string out;
  out.reserve(56);
  for (uint8_t b : pub) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  return out;
}

Result<std::string> UserPublicKeyFromSeedFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::FailedPrecondition("cannot use nkey_seed file " + path + ": " +
                                      std::strerror(errno) + "; fix the sink's nkey_seed path");
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Result<std::string> pub = UserPublicKeyFromSeedText(text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!pub.ok()) {
    return Status::FailedPrecondition("nkey_seed file " + path + " " + pub.status().message());
  }
  return pub;
}

}  // namespace walbus::adapters::nats
