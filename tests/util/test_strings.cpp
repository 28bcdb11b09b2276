// Text from files in one-line messages: control bytes escaped, backslashes doubled, long text cut.
#include "moescope/util/strings.hpp"

#include <gtest/gtest.h>

#include <string>

namespace moescope {
namespace {

TEST(Printable, EscapesControlBytesAndKeepsUtf8) {
  EXPECT_EQ(printable("layers.0.weight"), "layers.0.weight");
  EXPECT_EQ(printable(std::string("a\nb\0c\x7f", 6)), "a\\x0ab\\x00c\\x7f");
  EXPECT_EQ(printable("back\\slash"), "back\\\\slash");
  EXPECT_EQ(printable("gr\xc3\xbc\xc3\x9f"), "gr\xc3\xbc\xc3\x9f");  // UTF-8 passes through
  EXPECT_EQ(printable(""), "");
}

TEST(Printable, CutsLongText) {
  EXPECT_EQ(printable(std::string(10, 'x'), 4), "xxxx...");
  EXPECT_EQ(printable(std::string(4, 'x'), 4), "xxxx");
  EXPECT_EQ(printable(std::string(300, 'y')).size(), 203u);
}

}  // namespace
}  // namespace moescope
