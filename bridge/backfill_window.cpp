#include "bridge/backfill_window.h"

#include <algorithm>
#include <unordered_set>

namespace walbus::bridge {
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

std::string EncodeKey(pgwire::Tuple row, const std::vector<size_t>& key_columns) {
  std::string out;
  for (size_t k : key_columns) {
    AppendKeyPart(&out, k < row.size() ? row[k].value : std::string_view());
  }
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
