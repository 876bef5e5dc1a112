// Glob matching for `include` filters on "schema.table": '*' matches any run
// of characters (dots included), '?' exactly one.
#pragma once

#include <string_view>

namespace walbus::bridge {

bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace walbus::bridge
