// util/error: the one error boundary's pieces.
#include "moescope/util/error.hpp"

#include <gtest/gtest.h>

namespace moescope {
namespace {

TEST(Errors, FailInputNamesTheFile) {
  try {
    fail_input("a.safetensors", "header too long");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "a.safetensors: header too long");
  }
  EXPECT_THROW(invalid_argument("lanczos", "k must be positive"), std::invalid_argument);
}

// Regression: an internal error printed LibTorch's C++ backtrace (the lines after c10::Error's message) to the
// user. main prints first_line() and the rest only at --log-level debug.
TEST(Errors, FirstLineDropsABacktrace) {
  const std::runtime_error torch_like("expected scalar type Float but found Double\nException raised from "
                                      "check at aten/src/ATen/native/X.cpp:12 (most recent call first):\nframe #0: ...");
  EXPECT_EQ(first_line(torch_like), "expected scalar type Float but found Double");
  EXPECT_EQ(first_line(std::runtime_error("one line")), "one line");
  EXPECT_EQ(first_line(std::runtime_error("")), "");
}

// Where user input enters the library, a broken precondition becomes bad input naming what the user gave.
TEST(Errors, WithInputErrorsNamesTheFlags) {
  try {
    with_input_errors("--top-k 9 (n = 8)", [] { invalid_argument("lanczos_eigs", "k must be in [1, 8], got 9"); });
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "--top-k 9 (n = 8): lanczos_eigs: k must be in [1, 8], got 9");
  }
  EXPECT_EQ(with_input_errors("x", [] { return 3; }), 3);
  EXPECT_THROW(with_input_errors("x", [] { fail_input("f", "bad"); }), InputError);
  EXPECT_THROW(with_input_errors("x", []() -> int { throw std::runtime_error("internal"); }), std::runtime_error);
}

}  // namespace
}  // namespace moescope
