#include "bridge/backfill_window.h"

#include <algorithm>
#include <charconv>
#include <unordered_set>

namespace walbus::bridge {
namespace {

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace

bool XidSnapshot::Parse(std::string_view text, XidSnapshot* out) {
  XidSnapshot s;
  size_t c1 = text.find(':');
  if (c1 == std::string_view::npos) return false;
  size_t c2 = text.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return false;
  if (!ParseU64(text.substr(0, c1), &s.xmin)) return false;
  if (!ParseU64(text.substr(c1 + 1, c2 - c1 - 1), &s.xmax)) return false;
  if (s.xmin > s.xmax) return false;
  std::string_view rest = text.substr(c2 + 1);
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    uint64_t x;
    if (!ParseU64(rest.substr(0, comma), &x)) return false;
    if (x < s.xmin || x >= s.xmax) return false;
    s.xip.push_back(x);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
    if (rest.empty()) return false;
  }
  std::sort(s.xip.begin(), s.xip.end());
  *out = std::move(s);
  return true;
}

bool XidSnapshot::Sees(uint32_t xid) const {
  // Widen the 32-bit xid to the 64-bit one nearest xmax: the transactions a
  // stream carries are within 2^31 of a snapshot taken while they ran.
  int32_t behind = static_cast<int32_t>(static_cast<uint32_t>(xmax) - xid);
  int64_t full = static_cast<int64_t>(xmax) - behind;
  if (full < 0) return true;  // from before the first epoch's start: long done
  uint64_t f = static_cast<uint64_t>(full);
  if (f < xmin) return true;
  if (f >= xmax) return false;
  return !std::binary_search(xip.begin(), xip.end(), f);
}

void AppendKeyPart(std::string* out, std::string_view value) {
  uint32_t n = static_cast<uint32_t>(value.size());
  char len[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                 static_cast<char>(n >> 8), static_cast<char>(n)};
  out->append(len, 4);
  out->append(value);
}

std::string EncodeKey(const std::vector<std::string>& values) {
  std::string out;
  for (const std::string& v : values) AppendKeyPart(&out, v);
  return out;
}

void ChunkRows::Add(pgwire::Tuple row, std::string key) {
  for (size_t i = 0; i < columns_; ++i) {
    Cell c{static_cast<uint32_t>(text_.size()), 0, pgwire::ColumnKind::kNull};
    if (i < row.size()) {
      c.kind = row[i].kind;
      c.length = static_cast<uint32_t>(row[i].value.size());
      text_.append(row[i].value);
    }
    cells_.push_back(c);
  }
  keys_.push_back(std::move(key));
}

pgwire::Tuple ChunkRows::Row(size_t i, std::vector<pgwire::Column>* scratch) const {
  scratch->clear();
  for (size_t c = 0; c < columns_; ++c) {
    const Cell& cell = cells_[i * columns_ + c];
    scratch->push_back({cell.kind, std::string_view(text_).substr(cell.offset, cell.length)});
  }
  return pgwire::Tuple(scratch->data(), scratch->size());
}

void ChangeWindow::Reset() {
  entries_.clear();
  low_seen_ = false;
  lost_after_low_ = false;
  low_seq_ = next_seq_;
}

void ChangeWindow::Push(Entry e) {
  entries_.push_back(std::move(e));
  if (entries_.size() > capacity_) {
    if (low_seen_ && entries_.front().seq >= low_seq_) lost_after_low_ = true;
    entries_.pop_front();
  }
}

void ChangeWindow::Record(uint32_t xid, std::string key) {
  Push({next_seq_++, xid, false, std::move(key)});
}

void ChangeWindow::RecordUnknown(uint32_t xid) { Push({next_seq_++, xid, true, {}}); }

void ChangeWindow::MarkLow() {
  low_seen_ = true;
  low_seq_ = next_seq_;
  lost_after_low_ = false;
}

ChangeWindow::Verdict ChangeWindow::Close(const std::vector<std::string>& chunk_keys,
                                          const XidSnapshot& snapshot) {
  Verdict v;
  bool low = low_seen_;
  low_seen_ = false;
  if (!low) {
    v.redo = true;
    v.reason = "the low watermark was not seen in the stream";
    return v;
  }
  if (lost_after_low_) {
    v.redo = true;
    v.reason = "more than " + std::to_string(capacity_) + " changes inside the window";
    return v;
  }
  std::unordered_set<std::string_view> changed;
  for (const Entry& e : entries_) {
    bool after_low = e.seq >= low_seq_;
    if (!after_low && snapshot.Sees(e.xid)) continue;  // the chunk already holds it
    if (e.unknown) {
      v.redo = true;
      v.reason = after_low ? "a change without a known key inside the window"
                           : "a change without a known key the chunk did not see";
      return v;
    }
    changed.insert(e.key);
  }
  v.drop.assign(chunk_keys.size(), 0);
  if (changed.empty()) return v;
  for (size_t i = 0; i < chunk_keys.size(); ++i) {
    if (changed.count(chunk_keys[i]) != 0) {
      v.drop[i] = 1;
      ++v.dropped;
    }
  }
  return v;
}

}  // namespace walbus::bridge
