#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "moescope/util/cpu.hpp"

namespace moescope {
namespace {

float from_bits(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// volatile: the products are made at run time, under the thread's mode, not folded by the compiler.
volatile float g_small = 1e-30f, g_tiny = 1e-10f, g_one = 1.0f;
volatile double g_small_d = 1e-300, g_tiny_d = 1e-10;

TEST(FlushDenormals, FlushesResultsAndOperandsAndRestores) {
  const float smallest = from_bits(1);  // 2^-149, the smallest denormal float
  volatile float denormal = smallest;
  ASSERT_FALSE(flushing_denormals()) << "the test thread starts in IEEE mode";
  // IEEE: 1e-30 * 1e-10 = 1e-40 is a denormal (below 2^-126 = 1.18e-38); a denormal times 1 is itself.
  EXPECT_GT(g_small * g_tiny, 0.0f);
  EXPECT_EQ(denormal * g_one, smallest);
  {
    const ScopedFlushDenormals flush;
    if (!flush.active()) GTEST_SKIP() << "no denormal flushing mode on this CPU";
    EXPECT_TRUE(flushing_denormals());
    EXPECT_EQ(g_small * g_tiny, 0.0f);          // flush to zero: the result
    EXPECT_EQ(denormal * g_one, 0.0f);          // denormals are zero: the operand
    EXPECT_EQ(g_small_d * g_tiny_d, 0.0);       // double too (1e-310 is a denormal double)
    EXPECT_EQ(g_small * 1e-5f, 1e-30f * 1e-5f); // normal results are untouched (1e-35 > 1.18e-38)
    {
      const ScopedFlushDenormals inner;  // nested: restores "on"
      EXPECT_TRUE(flushing_denormals());
    }
    EXPECT_TRUE(flushing_denormals());
    const ScopedFlushDenormals off(false);  // disabled: changes nothing
    EXPECT_FALSE(off.active());
    EXPECT_TRUE(flushing_denormals());
  }
  EXPECT_FALSE(flushing_denormals());
  EXPECT_GT(g_small * g_tiny, 0.0f);
  EXPECT_EQ(denormal * g_one, smallest);
}

TEST(FlushDenormals, SetReturnsThePreviousMode) {
  if (!set_flushing_denormals(true) && !flushing_denormals()) GTEST_SKIP() << "no denormal flushing mode";
  EXPECT_TRUE(set_flushing_denormals(false));
  EXPECT_FALSE(flushing_denormals());
  EXPECT_FALSE(set_flushing_denormals(false));
}

}  // namespace
}  // namespace moescope
