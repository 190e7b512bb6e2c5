// Text quoted in a one-line message (a name, a value, a key or a file name a caller gave): control characters
// escaped as \xNN and at most `limit` characters, so that a value cannot break the message's one line, inject a
// terminal escape sequence or fill a log. Header-only: the library and the program (src/cli) both use it.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace diffsample::detail {

/// @p text with every control character (below 0x20, and 0x7f) written as \xNN, cut after @p limit characters of
/// the result with "..." appended.
inline std::string printable(const std::string& text, std::size_t limit = 64) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= limit) return out + "...";
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  return out;
}

}  // namespace diffsample::detail
