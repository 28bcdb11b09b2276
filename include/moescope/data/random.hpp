#pragma once
// A small, fully specified PRNG for data shuffling, splits and synthetic tasks. The standard library's
// engines are portable but its distributions are not (libstdc++ and libc++ give different numbers), so
// everything the data module draws goes through this class and its integer/float arithmetic only.
#include <cstdint>

namespace moescope {

/// SplitMix64 (Steele, Lea & Flood 2014; constants as in Vigna's reference splitmix64.c):
/// state += 0x9e3779b97f4a7c15, then the 64-bit finaliser of the new state. Seed 0 gives
/// 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f, ...
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  /// The next 64 random bits.
  std::uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix(state_);
  }

  /// Uniform in [0, 1): the top 53 bits of next() times 2^-53.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// Uniform integer in [0, bound), bound >= 1, without modulo bias: draws below 2^64 mod bound are
  /// rejected, then the draw is reduced mod bound.
  std::uint64_t below(std::uint64_t bound) {
    const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

  /// Approximately standard normal: the sum of 12 uniform() draws minus 6 (Irwin-Hall; mean 0,
  /// variance 1, support [-6, 6]). Only + and - are used, so the value is the same on every
  /// IEEE-754 platform, which log/cos (Box-Muller) do not promise.
  double normal() {
    double s = 0.0;
    for (int i = 0; i < 12; ++i) s += uniform();
    return s - 6.0;
  }

  /// The SplitMix64 finaliser (a bijection on 64-bit integers).
  static std::uint64_t mix(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t state_;
};

/// A seed for an independent stream `stream` derived from `seed`: mix(seed ^ mix(stream + 1)), so that
/// e.g. a task's structure and its samples come from unrelated streams of one user seed.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  return SplitMix64::mix(seed ^ SplitMix64::mix(stream + 1));
}

}  // namespace moescope
