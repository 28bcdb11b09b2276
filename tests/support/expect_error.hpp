#pragma once
// Checks on the errors a call throws.
#include <gtest/gtest.h>

#include <string>

#include "moescope/util/error.hpp"

namespace moescope::testing {

/// Calls `fn`; fails the test unless it throws an `Error` whose what() contains `needle`.
template <class Error, class Fn>
void expect_error_mentioning(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception, expected one mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

/// The message of the InputError `fn` throws, or "" when it throws none (other exceptions pass through).
template <class Fn>
std::string input_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

/// gtest parameter-name generator for string parameters such as family names: '-' is not allowed in test names,
/// so "qwen2-moe" becomes "qwen2_moe".
struct DashFreeName {
  template <class Info>
  std::string operator()(const Info& info) const {
    std::string s = info.param;
    for (auto& c : s)
      if (c == '-') c = '_';
    return s;
  }
};

}  // namespace moescope::testing
