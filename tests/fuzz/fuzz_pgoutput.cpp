// libFuzzer target: arbitrary bytes as one pgoutput message -> Decoder::Decode.
// Checks: no crash or sanitizer report; a failure is Corruption with a
// message; on success every string_view lies inside the input, every span's
// elements can be read (ASan reports a dangling one) and no span has more
// entries than the input has bytes; every truncated prefix of a message that
// decodes is Corruption.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <type_traits>
#include <variant>

#include "pgwire/pgoutput.h"

namespace {

using walbus::pgwire::Column;
using walbus::pgwire::ColumnKind;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "fuzz_pgoutput: invariant broken: %s\n", what);
  std::abort();
}

struct Checker {
  const char* begin;
  const char* end;

  void View(std::string_view v, const char* what) const {
    if (v.empty()) return;  // an empty view may point anywhere
    if (v.data() < begin || v.data() > end || v.size() > static_cast<size_t>(end - v.data())) {
      Fail(what);
    }
    // Touch the bytes so ASan sees any read out of bounds.
    volatile char sink = 0;
    for (char c : v) sink = sink ^ c;
    (void)sink;
  }

  template <typename T>
  void SpanBound(std::span<const T> s, const char* what) const {
    if (s.size() > static_cast<size_t>(end - begin)) Fail(what);
  }

  void CheckTuple(walbus::pgwire::Tuple t, const char* what) const {
    SpanBound(t, what);
    for (const Column& c : t) {
      switch (c.kind) {
        case ColumnKind::kNull:
        case ColumnKind::kUnchanged:
          if (!c.value.empty()) Fail("null/unchanged column with a value");
          break;
        case ColumnKind::kText:
          View(c.value, what);
          break;
        default:
          Fail("unknown column kind in a decoded tuple");
      }
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One decoder for the whole run, like a session: its scratch vectors are
  // reused between messages, which is the path production takes.
  static walbus::pgwire::Decoder decoder;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  walbus::pgwire::Message m;
  walbus::Status s = decoder.Decode(bytes, &m);
  if (!s.ok()) {
    if (s.code() != walbus::Code::kCorruption) Fail("failure that is not Corruption");
    if (s.message().empty()) Fail("Corruption without a message");
    return 0;
  }
  const Checker ck{bytes.data(), bytes.data() + bytes.size()};
  (void)walbus::pgwire::MessageName(m);
  std::visit(
      [&](const auto& msg) {
        using T = std::decay_t<decltype(msg)>;
        if constexpr (std::is_same_v<T, walbus::pgwire::Origin>) {
          ck.View(msg.name, "Origin.name");
        } else if constexpr (std::is_same_v<T, walbus::pgwire::Relation>) {
          ck.View(msg.nspname, "Relation.nspname");
          ck.View(msg.relname, "Relation.relname");
          ck.SpanBound(msg.columns, "Relation.columns size");
          for (const auto& c : msg.columns) ck.View(c.name, "Relation column name");
        } else if constexpr (std::is_same_v<T, walbus::pgwire::Type>) {
          ck.View(msg.nspname, "Type.nspname");
          ck.View(msg.typname, "Type.typname");
        } else if constexpr (std::is_same_v<T, walbus::pgwire::Insert>) {
          ck.CheckTuple(msg.new_tuple, "Insert new tuple");
        } else if constexpr (std::is_same_v<T, walbus::pgwire::Update>) {
          if (msg.old_kind != 0 && msg.old_kind != 'K' && msg.old_kind != 'O') {
            Fail("Update.old_kind");
          }
          if (msg.old_kind == 0 && !msg.old_tuple.empty()) Fail("Update old tuple without kind");
          ck.CheckTuple(msg.old_tuple, "Update old tuple");
          ck.CheckTuple(msg.new_tuple, "Update new tuple");
        } else if constexpr (std::is_same_v<T, walbus::pgwire::Delete>) {
          if (msg.old_kind != 'K' && msg.old_kind != 'O') Fail("Delete.old_kind");
          ck.CheckTuple(msg.old_tuple, "Delete old tuple");
        } else if constexpr (std::is_same_v<T, walbus::pgwire::Truncate>) {
          ck.SpanBound(msg.relations, "Truncate.relations size");
          volatile uint32_t sink = 0;
          for (uint32_t r : msg.relations) sink = sink ^ r;
          (void)sink;
        } else if constexpr (std::is_same_v<T, walbus::pgwire::LogicalMessage>) {
          ck.View(msg.prefix, "Message.prefix");
          ck.View(msg.content, "Message.content");
        } else if constexpr (std::is_same_v<T, walbus::pgwire::Commit>) {
          if (msg.flags != 0) Fail("Commit.flags != 0 accepted");
        }
      },
      m);

  // STYLE.md §6: every truncated prefix of a message that decodes is
  // Corruption (the decoder requires every byte to be consumed). A second
  // decoder, so the views checked above stay valid while this runs.
  static walbus::pgwire::Decoder prefix_decoder;
  walbus::pgwire::Message pm;
  // Every prefix of a short message; of a long one (fixtures reach 10 kB) the
  // first and last 64 and every 37th between, which keeps exec/s high.
  for (size_t len = 0; len < size; ++len) {
    if (size > 256 && len >= 64 && len < size - 64 && len % 37 != 0) continue;
    walbus::Status ps = prefix_decoder.Decode(bytes.substr(0, len), &pm);
    if (ps.ok()) {
      std::fprintf(stderr, "prefix of %zu of %zu bytes decoded\n", len, size);
      Fail("a truncated prefix of a valid message decoded ok");
    }
    if (ps.code() != walbus::Code::kCorruption) Fail("prefix failure that is not Corruption");
  }
  return 0;
}
