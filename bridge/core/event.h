// Event: one envelope as a sink sees it. Every view points into buffers owned
// by the pipeline and is valid only during the Sink::Publish call that receives
// it; a sink that needs the bytes later copies them (broker client libraries
// copy on publish anyway).
#pragma once

#include <cstdint>
#include <string_view>

#include "bridge/core/lsn.h"

namespace walbus {

struct Event {
  uint64_t ticket = 0;           // per-sink sequence, 1-based, strictly increasing: the ack key
  std::string_view topic;        // the sink's template, rendered and sanitised
  std::string_view id;           // "00000000016B37A0:3", the deduplication key
  std::string_view op;           // insert | update | delete | truncate | read | message
  std::string_view table;        // "schema.table" (or "_message.prefix"), for error messages
  std::string_view payload;      // the envelope JSON, no trailing newline
  Lsn commit_lsn = 0;            // the id's LSN part
  uint32_t seq = 0;              // the id's seq part
  int64_t commit_time_us = 0;    // commit time, Unix us; 0 = none (a message, a snapshot row)
  std::string_view state_topic;  // rendered state topic, empty when the sink has none
  std::string_view key;          // key column values joined by ',' (for {key})
  std::string_view after;        // the "after" JSON value ("null" for delete)
};

}  // namespace walbus
