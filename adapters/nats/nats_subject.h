// NATS subject filters, as the server matches them: tokens split on '.',
// '*' matches exactly one token, '>' (last token only) one or more. Pure
// functions, thread-safe.
#pragma once

#include <string_view>
#include <vector>
#include <string>

namespace walbus::adapters::nats {

// True when every subject that `filter` can match is also matched by
// `pattern`. With a literal filter this is plain matching:
//   FilterCovers("shop.>", "shop.public.orders.insert") == true
//   FilterCovers("shop.>", "shop.*.orders.>")           == true
//   FilterCovers("shop.*", "shop.>")                    == false
bool FilterCovers(std::string_view pattern, std::string_view filter);

// True when some pattern in `patterns` covers `filter`.
bool AnyCovers(const std::vector<std::string>& patterns, std::string_view filter);

// Splits "a, b,c" on ',' and trims spaces; empty items are dropped.
std::vector<std::string> SplitList(std::string_view list);

// A broker URL list with secrets hidden: "nats://u:p@h:1,nats://tok@h:2" ->
// "nats://u:***@h:1,nats://***@h:2". Never fails; adapters may not use conf/.
std::string RedactUrls(std::string_view urls);

}  // namespace walbus::adapters::nats
