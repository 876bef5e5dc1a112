// Parser of PostgreSQL's array text form, as array_out writes it:
//   {1,2,NULL}   {"a b","with \"q\"","back\\slash",NULL,"NULL"}   {}
//   {{1,2},{3,4}}   [0:1]={1,2}   {(3,4),(1,2);(1,1),(0,0)}  (box: ';')
// It calls a visitor as it goes and allocates nothing. The visitor's own
// errors stop the parse and are returned as they are. Malformed text is
// Corruption naming the byte offset; element text never appears in a message
// (it may hold personal data). Pure function; any thread.
#pragma once

#include <string>
#include <string_view>

#include "bridge/core/status.h"

namespace walbus::pgwire {

// PostgreSQL's MAXDIM: arrays have at most 6 dimensions.
inline constexpr int kMaxArrayDims = 6;

class ArrayVisitor {
 public:
  virtual ~ArrayVisitor() = default;
  // Around each {...}, the outermost included.
  virtual Status BeginArray() = 0;
  virtual Status EndArray() = 0;
  // One element. raw is a view into the parsed text. For a quoted element it
  // is the text between the quotes with array_out's backslash escapes still
  // in it (see AppendPgUnescaped); quoted "NULL" is the string NULL. is_null
  // is set for an unquoted NULL (any case), with raw "NULL" as written.
  virtual Status Element(std::string_view raw, bool quoted, bool is_null) = 0;
};

// Parses text, which must be one whole array literal (optionally preceded by
// its dimension decoration, which is checked and skipped; surrounding
// whitespace is allowed, as array_in allows it). delimiter is the element
// type's typdelim: ',' for all built-ins except box (';').
Status ParseArrayLiteral(std::string_view text, char delimiter, ArrayVisitor& v);

// Appends raw with array_out's escapes removed: each backslash is dropped and
// the byte after it kept.
void AppendPgUnescaped(std::string* out, std::string_view raw);

}  // namespace walbus::pgwire
