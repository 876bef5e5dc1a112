// Reader: big-endian values from one protocol message, every read checked
// before it happens (in the manner of Chromium's BigEndianReader). A Read*
// that lacks bytes returns false and leaves the reader where it was; the
// caller turns that into Corruption naming the message and offset().
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace walbus::pgwire {

class Reader {
 public:
  explicit Reader(std::string_view bytes) : start_(bytes.data()), rest_(bytes) {}

  [[nodiscard]] bool ReadU8(uint8_t* out) {
    if (rest_.empty()) return false;
    *out = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return true;
  }
  [[nodiscard]] bool ReadU16(uint16_t* out) { return ReadBE(out); }
  [[nodiscard]] bool ReadU32(uint32_t* out) { return ReadBE(out); }
  [[nodiscard]] bool ReadU64(uint64_t* out) { return ReadBE(out); }
  [[nodiscard]] bool ReadI16(int16_t* out) {
    uint16_t v;
    if (!ReadBE(&v)) return false;
    *out = static_cast<int16_t>(v);
    return true;
  }
  [[nodiscard]] bool ReadI32(int32_t* out) {
    uint32_t v;
    if (!ReadBE(&v)) return false;
    *out = static_cast<int32_t>(v);
    return true;
  }
  [[nodiscard]] bool ReadI64(int64_t* out) {
    uint64_t v;
    if (!ReadBE(&v)) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  // A NUL-terminated string; the NUL must be inside the remaining bytes and
  // is consumed but not part of *out.
  [[nodiscard]] bool ReadCString(std::string_view* out) {
    size_t nul = rest_.find('\0');
    if (nul == std::string_view::npos) return false;
    *out = rest_.substr(0, nul);
    rest_.remove_prefix(nul + 1);
    return true;
  }
  // Exactly n bytes.
  [[nodiscard]] bool ReadBytes(size_t n, std::string_view* out) {
    if (n > rest_.size()) return false;
    *out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }

  size_t remaining() const { return rest_.size(); }
  // Bytes consumed so far from the start of the message: for error messages.
  size_t offset() const { return static_cast<size_t>(rest_.data() - start_); }

 private:
  template <typename T>
  bool ReadBE(T* out) {
    if (rest_.size() < sizeof(T)) return false;
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      v = static_cast<T>((v << 8) | static_cast<uint8_t>(rest_[i]));
    }
    *out = v;
    rest_.remove_prefix(sizeof(T));
    return true;
  }

  const char* start_;
  std::string_view rest_;
};

}  // namespace walbus::pgwire
