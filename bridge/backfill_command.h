// `walbus backfill -c FILE [--no-wait] [--chunk-size N] SCHEMA.TABLE...`:
// checks every table (in the publication, a primary key, a usable replica
// identity), registers one request per table in walbus.backfill, wakes the
// streaming instance with a logical message and, unless no_wait, follows the
// requests, printing progress on stdout, until each is done or failed.
// The streaming walbus does the work (bridge/backfill.h); this only asks.
//
// Returns the exit code: 0 all done (or registered, with no_wait); 1 a
// request failed or PostgreSQL is unusable; 2 a table cannot be backfilled
// (nothing was registered). Errors are one line each on stderr.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bridge/backfill_store.h"
#include "conf/config.h"

namespace walbus::bridge {

struct BackfillCommandOptions {
  std::vector<std::string> tables;  // as given: schema.table
  bool no_wait = false;
  uint32_t chunk_size = kDefaultChunkSize;
};

int RunBackfillCommand(const conf::Config& config, const BackfillCommandOptions& options);

}  // namespace walbus::bridge
