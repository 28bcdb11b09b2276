#include "moescope/data/split.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <vector>

#include "data/helpers.hpp"

namespace moescope {
namespace {

using testing::expect_input_error;

TEST(Permutation, IsAPermutationAndDeterministic) {
  for (std::int64_t n : {0, 1, 2, 17, 1000}) {
    auto p = permutation(n, 3);
    EXPECT_EQ(p, permutation(n, 3));
    std::sort(p.begin(), p.end());
    std::vector<std::int64_t> id(static_cast<std::size_t>(n));
    std::iota(id.begin(), id.end(), std::int64_t{0});
    EXPECT_EQ(p, id);
  }
  EXPECT_NE(permutation(1000, 3), permutation(1000, 4));
}

TEST(Permutation, EachPositionIsUniform) {
  // element 0 should land in each of 5 positions equally often across seeds
  std::vector<int> where(5, 0);
  for (std::uint64_t seed = 0; seed < 5000; ++seed) {
    const auto p = permutation(5, seed);
    ++where[static_cast<std::size_t>(std::find(p.begin(), p.end(), 0) - p.begin())];
  }
  for (int w : where) EXPECT_NEAR(w, 1000, 150);  // sd ~28
}

void expect_disjoint_cover(const IndexSplit& s, std::int64_t n) {
  EXPECT_TRUE(std::is_sorted(s.train.begin(), s.train.end()));
  EXPECT_TRUE(std::is_sorted(s.valid.begin(), s.valid.end()));
  std::vector<std::int64_t> all = s.train;
  all.insert(all.end(), s.valid.begin(), s.valid.end());
  std::sort(all.begin(), all.end());
  std::vector<std::int64_t> id(static_cast<std::size_t>(n));
  std::iota(id.begin(), id.end(), std::int64_t{0});
  EXPECT_EQ(all, id);  // covering, and with sizes adding up to n: disjoint
}

TEST(SplitIndices, DisjointCoveringAndFractionRespected) {
  for (std::int64_t n : {1, 10, 999, 60000}) {
    for (double f : {0.0, 0.1, 0.25, 0.5}) {
      const IndexSplit s = split_indices(n, f, 11);
      expect_disjoint_cover(s, n);
      EXPECT_EQ(static_cast<std::int64_t>(s.valid.size()),
                static_cast<std::int64_t>(std::floor(static_cast<double>(n) * f + 0.5)));
    }
  }
  EXPECT_EQ(split_indices(60000, 1.0 / 6.0, 0).valid.size(), 10000u);
}

TEST(SplitIndices, SameSeedSameSplitOtherSeedOtherSplit) {
  const IndexSplit a = split_indices(5000, 0.2, 123);
  const IndexSplit b = split_indices(5000, 0.2, 123);
  const IndexSplit c = split_indices(5000, 0.2, 124);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.valid, b.valid);
  EXPECT_NE(a.valid, c.valid);
  // and the valid set is spread over the range, not a block
  EXPECT_LT(a.valid.front(), 100);
  EXPECT_GT(a.valid.back(), 4900);
}

TEST(SplitIndices, BadArgumentsAreInputErrors) {
  expect_input_error([] { split_indices(10, 1.0, 0); }, {"[0, 1)"});
  expect_input_error([] { split_indices(10, -0.1, 0); }, {"[0, 1)"});
  expect_input_error([] { split_indices(10, std::numeric_limits<double>::quiet_NaN(), 0); }, {"[0, 1)"});
  expect_input_error([] { split_indices(-1, 0.1, 0); }, {">= 0"});
}

TEST(SplitContiguous, FractionsAndOrder) {
  const ContiguousSplit s = split_contiguous(1000, {0.1, 0.05});
  EXPECT_EQ(s.n, 1000);
  EXPECT_EQ(s.train_end, 850);
  EXPECT_EQ(s.valid_end, 950);  // 100 valid, then 50 test
  const ContiguousSplit none = split_contiguous(7, {0.0, 0.0});
  EXPECT_EQ(none.train_end, 7);
  EXPECT_EQ(none.valid_end, 7);
  for (std::int64_t n = 0; n < 50; ++n) {
    const ContiguousSplit t = split_contiguous(n, {0.45, 0.45});
    EXPECT_GE(t.train_end, 0);
    EXPECT_LE(t.train_end, t.valid_end);
    EXPECT_LE(t.valid_end, n);
  }
}

TEST(SplitContiguous, BadFractionsAreInputErrors) {
  expect_input_error([] { split_contiguous(10, {0.5, 0.5}); }, {"valid + test < 1"});
  expect_input_error([] { split_contiguous(10, {-0.1, 0.1}); }, {">= 0"});
  expect_input_error([] { split_contiguous(-5, {0.1, 0.1}); }, {">= 0"});
}

}  // namespace
}  // namespace moescope
