#include "moescope/stats/moments.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace moescope {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(FiniteMoments, MeanAndSampleSdOfTheFiniteValues) {
  // {2, 4, 4, 4, 5, 5, 7, 9}: mean 5, sum of squared deviations 32, sample sd sqrt(32 / 7); the NaN and the
  // infinities are not values.
  const FiniteMoments m = finite_moments({2, 4, kNaN, 4, 4, 5, kInf, 5, 7, -kInf, 9});
  EXPECT_EQ(m.n, 8);
  EXPECT_DOUBLE_EQ(m.mean, 5.0);
  EXPECT_DOUBLE_EQ(m.sd, std::sqrt(32.0 / 7.0));
}

TEST(FiniteMoments, TooFewValuesGiveNaN) {
  const FiniteMoments none = finite_moments({kNaN, kInf});
  EXPECT_EQ(none.n, 0);
  EXPECT_TRUE(std::isnan(none.mean));
  EXPECT_TRUE(std::isnan(none.sd));
  const FiniteMoments one = finite_moments({kNaN, 3.5});
  EXPECT_EQ(one.n, 1);
  EXPECT_EQ(one.mean, 3.5);
  EXPECT_TRUE(std::isnan(one.sd));
  EXPECT_EQ(finite_moments({}).n, 0);
}

}  // namespace
}  // namespace moescope
