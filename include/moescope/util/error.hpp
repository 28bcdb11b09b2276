#pragma once
#include <stdexcept>
#include <string>

namespace moescope {

/// Bad input (a file, a flag, a value): the CLI turns it into exit code 2 and one line on stderr.
/// The message names the file and the problem, e.g. "ckpt.safetensors: tensor 'w': offsets past end of file".
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws InputError("<file>: <what>").
[[noreturn]] void fail_input(const std::string& file, const std::string& what);

}  // namespace moescope
