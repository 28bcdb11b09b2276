#include "moescope/util/error.hpp"

namespace moescope {

void fail_input(const std::string& file, const std::string& what) {
  throw InputError(file.empty() ? what : file + ": " + what);
}

}  // namespace moescope
