#include "conf/redact.h"

#include <cctype>
#include <vector>

namespace walbus::conf {
namespace {

constexpr std::string_view kHidden = "***";

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

bool IsSecretParam(std::string_view key) {
  return key == "password" || key == "token" || key == "pass";
}

// The spans a redaction hid, when the caller wants them (DsnSecrets, UrlSecrets).
using Hidden = std::vector<std::string>;

void Note(Hidden* hidden, std::string_view span) {
  if (hidden != nullptr) hidden->emplace_back(span);
}

// Redacts "a=1&password=x&b=2" (the part after '?', without '#fragment').
std::string RedactQuery(std::string_view query, Hidden* hidden) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t amp = query.find('&', pos);
    std::string_view param = query.substr(pos, amp == std::string_view::npos ? query.npos : amp - pos);
    size_t eq = param.find('=');
    if (eq != std::string_view::npos && IsSecretParam(param.substr(0, eq))) {
      out.append(param.substr(0, eq + 1));
      out.append(kHidden);
      Note(hidden, param.substr(eq + 1));
    } else {
      out.append(param);
    }
    if (amp == std::string_view::npos) break;
    out.push_back('&');
    pos = amp + 1;
  }
  return out;
}

// One URL. The user-info is taken to end at the LAST '@' of the string, so a
// password holding an unencoded '/', '?' or '@' is still hidden (at worst a
// little more than the password is hidden, never less).
std::string RedactOneUrl(std::string_view url, bool hide_lone_user, Hidden* hidden) {
  std::string out;
  size_t scheme_end = url.find("://");
  size_t auth_begin = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  out.append(url.substr(0, auth_begin));
  std::string_view rest = url.substr(auth_begin);

  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    size_t colon = userinfo.find(':');
    if (colon != std::string_view::npos) {
      out.append(userinfo.substr(0, colon + 1));
      out.append(kHidden);
      Note(hidden, userinfo.substr(colon + 1));
    } else if (hide_lone_user) {
      out.append(kHidden);
      Note(hidden, userinfo);
    } else {
      out.append(userinfo);
    }
    rest = rest.substr(at);  // "@host..."
  }

  size_t q = rest.find('?');
  if (q == std::string_view::npos) {
    out.append(rest);
    return out;
  }
  out.append(rest.substr(0, q + 1));
  std::string_view query = rest.substr(q + 1);
  size_t hash = query.find('#');
  out.append(RedactQuery(query.substr(0, hash), hidden));
  if (hash != std::string_view::npos) out.append(query.substr(hash));
  return out;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// " nats://..." : optional blanks, then scheme "://".
bool StartsWithScheme(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && IsSpace(s[i])) ++i;
  if (i >= s.size() || !std::isalpha(static_cast<unsigned char>(s[i]))) return false;
  while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '+' ||
                          s[i] == '-' || s[i] == '.')) {
    ++i;
  }
  return StartsWith(s.substr(i), "://");
}

// key=value conninfo as libpq's conninfo_parse reads it: whitespace around
// '=' allowed; a value is either single-quoted (backslash escapes \' and \\)
// or runs to the next whitespace (backslash escapes the next character).
std::string RedactConninfo(std::string_view s, Hidden* hidden) {
  std::string out;
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    while (i < n && IsSpace(s[i])) out.push_back(s[i++]);
    if (i >= n) break;
    size_t key_begin = i;
    while (i < n && s[i] != '=' && !IsSpace(s[i])) ++i;
    std::string_view key = s.substr(key_begin, i - key_begin);
    out.append(key);
    while (i < n && IsSpace(s[i])) out.push_back(s[i++]);
    if (i >= n) break;
    if (s[i] != '=') continue;  // malformed; libpq will refuse it, nothing to hide here
    out.push_back(s[i++]);
    while (i < n && IsSpace(s[i])) out.push_back(s[i++]);

    size_t value_begin = i;
    if (i < n && s[i] == '\'') {
      ++i;
      while (i < n && s[i] != '\'') {
        if (s[i] == '\\' && i + 1 < n) ++i;
        ++i;
      }
      if (i < n) ++i;  // closing quote; an unterminated value runs to the end
    } else {
      while (i < n && !IsSpace(s[i])) {
        if (s[i] == '\\' && i + 1 < n) ++i;
        ++i;
      }
    }
    if (key == "password") {
      out.append(kHidden);
      Note(hidden, s.substr(value_begin, i - value_begin));
    } else {
      out.append(s.substr(value_begin, i - value_begin));
    }
  }
  return out;
}

std::string RedactDsnInto(std::string_view conninfo, Hidden* hidden) {
  size_t lead = 0;
  while (lead < conninfo.size() && IsSpace(conninfo[lead])) ++lead;
  std::string_view body = conninfo.substr(lead);
  if (StartsWith(body, "postgresql://") || StartsWith(body, "postgres://")) {
    return std::string(conninfo.substr(0, lead)) +
           RedactOneUrl(body, /*hide_lone_user=*/false, hidden);
  }
  return RedactConninfo(conninfo, hidden);
}

std::string RedactUrlInto(std::string_view url, Hidden* hidden) {
  // A comma separates two URLs only when a scheme follows it; otherwise it is
  // part of the current one (a password may hold a ','), which keeps the
  // whole password inside the part that gets hidden.
  std::string out;
  size_t begin = 0;
  size_t search = 0;
  while (true) {
    size_t comma = url.find(',', search);
    if (comma != std::string_view::npos && !StartsWithScheme(url.substr(comma + 1))) {
      search = comma + 1;
      continue;
    }
    std::string_view one =
        url.substr(begin, comma == std::string_view::npos ? url.npos : comma - begin);
    out.append(RedactOneUrl(one, /*hide_lone_user=*/true, hidden));
    if (comma == std::string_view::npos) break;
    out.push_back(',');
    begin = search = comma + 1;
  }
  return out;
}

}  // namespace

std::string RedactDsn(std::string_view conninfo) { return RedactDsnInto(conninfo, nullptr); }

std::string RedactUrl(std::string_view url) { return RedactUrlInto(url, nullptr); }

std::vector<std::string> DsnSecrets(std::string_view conninfo) {
  Hidden hidden;
  RedactDsnInto(conninfo, &hidden);
  return hidden;
}

std::vector<std::string> UrlSecrets(std::string_view url) {
  Hidden hidden;
  RedactUrlInto(url, &hidden);
  return hidden;
}

}  // namespace walbus::conf
