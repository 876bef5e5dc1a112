#include "adapters/nats/nats_subject.h"

namespace walbus::adapters::nats {
namespace {

// Takes the next '.'-separated token off the front of *rest.
std::string_view NextToken(std::string_view* rest) {
  size_t dot = rest->find('.');
  std::string_view token = rest->substr(0, dot);
  rest->remove_prefix(dot == std::string_view::npos ? rest->size() : dot + 1);
  return token;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool FilterCovers(std::string_view pattern, std::string_view filter) {
  if (pattern.empty() || filter.empty()) return false;
  while (true) {
    bool pattern_done = pattern.empty();
    bool filter_done = filter.empty();
    if (pattern_done || filter_done) return pattern_done && filter_done;
    std::string_view p = NextToken(&pattern);
    std::string_view f = NextToken(&filter);
    if (p.empty() || f.empty()) return false;  // "a..b": not a valid subject
    if (p == ">") return true;                 // one or more tokens: f is at least one
    if (f == ">") return false;                // f reaches further than a single p token
    if (p == "*") continue;                    // any one token, '*' included
    if (f == "*" || p != f) return false;
  }
}

bool AnyCovers(const std::vector<std::string>& patterns, std::string_view filter) {
  for (const std::string& p : patterns) {
    if (FilterCovers(p, filter)) return true;
  }
  return false;
}

std::vector<std::string> SplitList(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = Trim(list.substr(0, comma));
    if (!item.empty()) out.emplace_back(item);
    list.remove_prefix(comma == std::string_view::npos ? list.size() : comma + 1);
  }
  return out;
}

std::string RedactUrls(std::string_view urls) {
  std::string out;
  bool first = true;
  for (const std::string& url : SplitList(urls)) {
    if (!first) out += ',';
    first = false;
    std::string_view u = url;
    size_t scheme = u.find("://");
    size_t host_start = scheme == std::string_view::npos ? 0 : scheme + 3;
    // The last '@' of the authority: a password may itself hold '@'.
    size_t slash = u.find('/', host_start);
    std::string_view authority = u.substr(0, slash);
    size_t at = authority.rfind('@');
    if (at == std::string_view::npos || at < host_start) {
      out += u;
      continue;
    }
    std::string_view userinfo = u.substr(host_start, at - host_start);
    out += u.substr(0, host_start);
    size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      out += "***";  // a bare token
    } else {
      out += userinfo.substr(0, colon);
      out += ":***";
    }
    out += u.substr(at);
  }
  return out;
}

}  // namespace walbus::adapters::nats
