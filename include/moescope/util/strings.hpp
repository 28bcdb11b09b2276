#pragma once
// Small string helpers: text from a file made fit for a one-line message, suffixes, joining.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace moescope {

/// `s` with control bytes (below 0x20, and 0x7f) written as \xHH and backslashes doubled, cut to `max_len`
/// bytes of input (then "..." appended). Other bytes, UTF-8 included, pass through.
std::string printable(std::string_view s, std::size_t max_len = 200);

/// printable(s) in single quotes: a name from a file inside a message ('layer_09.inputs').
std::string quoted(std::string_view s);

/// Whether `s` ends with `suffix`.
bool ends_with(std::string_view s, std::string_view suffix);

/// The items joined by `sep` ("a,b,c").
std::string join(const std::vector<std::string>& items, std::string_view sep = ",");

}  // namespace moescope
