// Small pure helpers for the Redis sink: stream entry ids, server version from
// INFO, and the classification of error replies. No hiredis types; callable
// from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bridge/core/lsn.h"

namespace walbus::adapters::redis {

// Longest "<uint64>-<uint32>" plus a NUL: 20 + 1 + 10 + 1.
inline constexpr size_t kStreamIdCapacity = 32;

// Writes the entry id "<commit_lsn as decimal>-<seq>" into out (at least
// kStreamIdCapacity bytes) and returns its length. Ids increase within a key
// because commit LSNs increase and seq is the position in the transaction.
size_t FormatStreamId(Lsn commit_lsn, uint32_t seq, char* out);

struct RedisVersion {
  int major = 0;
  int minor = 0;
  int patch = 0;
  bool AtLeast(int want_major, int want_minor) const {
    return major > want_major || (major == want_major && minor >= want_minor);
  }
};

// The value of `field:` in an INFO reply ("field:value\r\n" lines); false
// when absent.
bool InfoField(std::string_view info, std::string_view field, std::string_view* value);
// Parses "redis_version:7.0.15" out of INFO server; false when absent or malformed.
bool ParseRedisVersion(std::string_view info, RedisVersion* out);

// "ERR The ID specified in XADD is equal or smaller than the target stream top
// item": the entry is already in the stream, so it counts as acknowledged.
bool IsDuplicateIdError(std::string_view error);
// Errors that go away by themselves or after a failover (LOADING, BUSY,
// MASTERDOWN, READONLY, TRYAGAIN, CLUSTERDOWN, NOREPLICAS): the sink reports
// Unavailable and the pipeline retries. Every other refusal is permanent.
bool IsTransientError(std::string_view error);

}  // namespace walbus::adapters::redis
