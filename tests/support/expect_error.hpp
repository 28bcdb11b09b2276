#pragma once
// Checks that a call throws a given exception type whose message contains a given piece of text.
#include <gtest/gtest.h>

#include <string>

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

}  // namespace moescope::testing
