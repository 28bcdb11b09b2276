#pragma once
// Deterministic splits: random train/validation indices from a seed, and contiguous fractions of a
// sequence (a text corpus). Both are documented exactly so that other tools can reproduce them.
#include <cstdint>
#include <vector>

namespace moescope {

/// A permutation of 0..n-1 from the seed: Fisher-Yates with util/random.hpp's Rng(seed), for i = n-1 down to 1
/// swapping p[i] with p[j], j = below(i + 1). Throws InputError if n < 0.
std::vector<std::int64_t> permutation(std::int64_t n, std::uint64_t seed);

/// Indices of a train set split into train and validation parts, each sorted ascending.
struct IndexSplit {
  std::vector<std::int64_t> train;
  std::vector<std::int64_t> valid;
};

/// Splits 0..n-1: the first round(n * valid_fraction) entries of permutation(n, seed) (halves round up)
/// form `valid`, the rest `train`. Throws InputError unless n >= 0 and 0 <= valid_fraction < 1.
IndexSplit split_indices(std::int64_t n, double valid_fraction, std::uint64_t seed);

/// Fractions of a single sequence that go to validation and test; train gets the rest.
struct SplitFractions {
  double valid = 0.05;
  double test = 0.05;
};

/// Bounds of a contiguous split of [0, n): train = [0, train_end), valid = [train_end, valid_end),
/// test = [valid_end, n).
struct ContiguousSplit {
  std::int64_t train_end = 0;
  std::int64_t valid_end = 0;
  std::int64_t n = 0;
};

/// round(n * valid) elements for valid and round(n * test) for test (halves round up), taken from the
/// end; train may be empty when n is tiny. Throws InputError unless n >= 0, both fractions are >= 0
/// and valid + test < 1.
ContiguousSplit split_contiguous(std::int64_t n, const SplitFractions& fractions);

}  // namespace moescope
