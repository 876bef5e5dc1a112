// The pure data side of a backfill (DBLog watermarks), with no server and no
// threads, so it can be tested on plain values (which transactions a chunk's
// SELECT could see is an XidSnapshot, bridge/xid_snapshot.h):
//   EncodeKey    one byte string per primary key, the same for a key read by
//                the chunk SELECT and a key taken from a streamed change.
//   ChunkRows    the rows of one chunk, owned (the reader's views die with the
//                next row), bounded by the caller.
//   ChangeWindow the primary keys of the backfilled table that the stream
//                changed, with their transaction ids, around the low
//                watermark; at the high watermark it says which chunk rows
//                must be dropped, or that the chunk must be read again.
//
// The rule (docs/backfill.md): a chunk row is emitted at the high watermark
// unless its key was changed in the stream after the low watermark, or before
// it by a transaction the chunk's snapshot did not see (a commit that reached
// the WAL before the low watermark but became visible only after the
// snapshot). A change whose key cannot be known (TRUNCATE, an out-of-line key
// value PostgreSQL did not send) in either place means "read the chunk again".
//
// Threads: none; the owner serialises calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/xid_snapshot.h"
#include "pgwire/pgoutput.h"

namespace walbus::bridge {

// Appends one key part (a column's text value) to an encoded key: 4-byte
// big-endian length, then the bytes, so ("a,b") and ("a","b") differ.
void AppendKeyPart(std::string* out, std::string_view value);
std::string EncodeKey(const std::vector<std::string>& values);
// The same for the key columns (indexes into row, key order) of a row; a
// missing or NULL column counts as an empty part.
std::string EncodeKey(pgwire::Tuple row, const std::vector<size_t>& key_columns);

// Rows of one chunk in one buffer: cells refer to offsets, so growing the
// buffer never invalidates them.
class ChunkRows {
 public:
  explicit ChunkRows(size_t columns = 0) : columns_(columns) {}
  void Add(pgwire::Tuple row, std::string key);
  size_t size() const { return keys_.size(); }
  size_t bytes() const { return text_.size() + cells_.size() * sizeof(Cell); }
  const std::vector<std::string>& keys() const { return keys_; }
  // Row i as a pgoutput tuple; views into this object, columns in *scratch.
  pgwire::Tuple Row(size_t i, std::vector<pgwire::Column>* scratch) const;

 private:
  struct Cell {
    uint32_t offset;
    uint32_t length;
    pgwire::ColumnKind kind;
  };
  size_t columns_;
  std::string text_;
  std::vector<Cell> cells_;
  std::vector<std::string> keys_;
};

class ChangeWindow {
 public:
  // `capacity`: changes remembered; older ones before the low watermark are
  // forgotten, and losing one after it makes the chunk be read again.
  explicit ChangeWindow(size_t capacity = 65536) : capacity_(capacity) {}

  // Forget everything (another table, a rewound stream).
  void Reset();
  // A change of the backfilled table by transaction `xid`, its primary key
  // encoded with EncodeKey.
  void Record(uint32_t xid, std::string key);
  // A change of the table whose key is not known (TRUNCATE, key not sent).
  void RecordUnknown(uint32_t xid);
  // The low watermark passed in the stream.
  void MarkLow();
  bool low_seen() const { return low_seen_; }
  size_t remembered() const { return entries_.size(); }

  struct Verdict {
    bool redo = false;
    std::string reason;          // why the chunk must be read again
    std::vector<uint8_t> drop;   // per chunk key: 1 = drop
    size_t dropped = 0;
  };
  // The high watermark passed: judges the chunk read under `snapshot` and
  // closes the window (the memory of earlier changes is kept for the next one).
  Verdict Close(const std::vector<std::string>& chunk_keys, const XidSnapshot& snapshot);

 private:
  struct Entry {
    uint64_t seq;
    uint32_t xid;
    bool unknown;
    std::string key;
  };
  void Push(Entry e);

  size_t capacity_;
  std::deque<Entry> entries_;
  uint64_t next_seq_ = 0;
  uint64_t low_seq_ = 0;
  bool low_seen_ = false;
  bool lost_after_low_ = false;
};

}  // namespace walbus::bridge
