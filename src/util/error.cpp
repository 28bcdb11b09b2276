#include "moescope/util/error.hpp"

namespace moescope {

void fail_input(const std::string& file, const std::string& what) {
  throw InputError(file.empty() ? what : file + ": " + what);
}

void invalid_argument(const std::string& where, const std::string& what) {
  throw std::invalid_argument(where + ": " + what);
}

std::string first_line(const std::exception& e) {
  const std::string s = e.what();
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

}  // namespace moescope
