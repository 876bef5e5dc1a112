// NKey seeds (NATS's ed25519 keys: base32 with a 2-byte CRC16) for the
// `nkey_seed` sink key: cnats signs the server's nonce with the seed file,
// but the CONNECT also needs the user's public key, which users do not want
// to copy by hand (nats-server configs name it, nk/nsc print both): walbus
// derives it from the seed. Any thread.
#pragma once

#include <string>
#include <string_view>

#include "bridge/core/status.h"

namespace walbus::adapters::nats {

// The public key ("U" + 55 characters) of the user seed ("SU" + 56
// characters) that `text` holds: the first word of that shape, so a file
// written by `nk -gen user` or holding comments works too. InvalidArgument
// names what is wrong (no seed, bad checksum, an account or operator seed)
// without ever quoting the seed.
Result<std::string> UserPublicKeyFromSeedText(std::string_view text);

// The same for the file at `path`; FailedPrecondition naming the file and the
// fix when it cannot be read or holds no user seed. The file's bytes are
// wiped from memory before returning.
Result<std::string> UserPublicKeyFromSeedFile(const std::string& path);

}  // namespace walbus::adapters::nats
