#pragma once
// Text taken from a file, made fit for a one-line error message.
#include <cstddef>
#include <string>
#include <string_view>

namespace moescope {

/// `s` with control bytes (below 0x20, and 0x7f) written as \xHH and backslashes doubled, cut to `max_len`
/// bytes of input (then "..." appended). Other bytes, UTF-8 included, pass through.
std::string printable(std::string_view s, std::size_t max_len = 200);

}  // namespace moescope
