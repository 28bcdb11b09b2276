#pragma once
// Errors: InputError is the user's (a file, a flag, a config key: exit 2, one line naming it); std::invalid_argument
// is a caller's breach of a documented precondition (the library's own checks, as Spectra does); anything else that
// reaches the top is an internal error (exit 1).
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>

namespace moescope {

/// Bad input (a file, a flag, a value): the CLI turns it into exit code 2 and one line on stderr.
/// The message names the file and the problem, e.g. "ckpt.safetensors: tensor 'w': offsets past end of file".
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws InputError("<file>: <what>") (just <what> when file is empty).
[[noreturn]] void fail_input(const std::string& file, const std::string& what);

/// Throws std::invalid_argument("<where>: <what>"): a library precondition, with the offending values in `what`.
[[noreturn]] void invalid_argument(const std::string& where, const std::string& what);

/// A value as operator<< prints it (for messages).
template <class T>
std::string to_text(const T& v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

/// The first line of an exception's message: LibTorch's c10::Error appends a C++ backtrace to what().
std::string first_line(const std::exception& e);

/// Runs f() where user input enters the library: a precondition the input broke (std::invalid_argument) becomes an
/// InputError that names what the user gave (`context`: a flag, a config key, a file), e.g.
/// with_input_errors("--top-k 9 (n = 8)", [&] { return lanczos_eigs(op, o); }).
template <class F>
auto with_input_errors(const std::string& context, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const InputError&) {
    throw;
  } catch (const std::invalid_argument& e) {
    throw InputError(context + ": " + first_line(e));
  }
}

}  // namespace moescope
