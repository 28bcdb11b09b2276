#include "moescope/data/split.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>

#include "moescope/util/random.hpp"
#include "moescope/util/error.hpp"

namespace moescope {

namespace {

// round(n * f) with halves up; exact enough for any n a vector can hold (n < 2^53)
std::int64_t round_share(std::int64_t n, double f) {
  return static_cast<std::int64_t>(std::floor(static_cast<double>(n) * f + 0.5));
}

void check_count(std::int64_t n) {
  if (n < 0) fail_input("", "split: sample count must be >= 0, got " + std::to_string(n));
}

}  // namespace

std::vector<std::int64_t> permutation(std::int64_t n, std::uint64_t seed) {
  check_count(n);
  std::vector<std::int64_t> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), std::int64_t{0});
  Rng rng(seed);
  for (std::int64_t i = n - 1; i >= 1; --i) {
    const auto j = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(i) + 1));
    std::swap(p[static_cast<std::size_t>(i)], p[static_cast<std::size_t>(j)]);
  }
  return p;
}

IndexSplit split_indices(std::int64_t n, double valid_fraction, std::uint64_t seed) {
  check_count(n);
  // written as a negated range test so that NaN fails too
  if (!(valid_fraction >= 0.0 && valid_fraction < 1.0)) {
    fail_input("", "validation fraction must be in [0, 1), got " + std::to_string(valid_fraction));
  }
  const std::vector<std::int64_t> p = permutation(n, seed);
  const auto n_valid = static_cast<std::size_t>(round_share(n, valid_fraction));
  IndexSplit s;
  s.valid.assign(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(n_valid));
  s.train.assign(p.begin() + static_cast<std::ptrdiff_t>(n_valid), p.end());
  std::sort(s.valid.begin(), s.valid.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

ContiguousSplit split_contiguous(std::int64_t n, const SplitFractions& fractions) {
  check_count(n);
  if (!(fractions.valid >= 0.0 && fractions.test >= 0.0 && fractions.valid + fractions.test < 1.0)) {
    fail_input("", "split fractions must be >= 0 with valid + test < 1, got valid " +
                       std::to_string(fractions.valid) + " and test " + std::to_string(fractions.test));
  }
  // n_valid + n_test <= n(valid + test) + 1 < n + 1, so train is never negative
  const std::int64_t n_valid = round_share(n, fractions.valid);
  const std::int64_t n_test = round_share(n, fractions.test);
  ContiguousSplit s;
  s.n = n;
  s.valid_end = n - n_test;
  s.train_end = s.valid_end - n_valid;
  return s;
}

}  // namespace moescope
