#pragma once
// The project's one PRNG (data order and splits, synthetic tasks and checkpoints, probes, start vectors): the same
// bits on every standard library (std::normal_distribution and friends are implementation-defined).
#include <cstdint>

#include <Eigen/Dense>

namespace moescope {

/// xoshiro256** (Blackman & Vigna 2018) seeded by four splitmix64 outputs of the seed.
/// Derived streams: uniform doubles from the top 53 bits; Rademacher signs from the top bit; standard
/// normals by Marsaglia's polar method (uses std::log and std::sqrt: sqrt is exact in IEEE arithmetic,
/// log may differ in the last bit between math libraries, so Gaussian streams are reproducible to
/// rounding, Rademacher streams bit for bit).
class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  /// Next raw 64-bit output.
  std::uint64_t next_u64();
  /// Uniform in [0, 1), multiples of 2^-53.
  double uniform();
  /// Uniform integer in [0, bound), bound >= 1, without modulo bias: raw draws below 2^64 mod bound are rejected,
  /// then the draw is reduced mod bound.
  std::uint64_t below(std::uint64_t bound);
  /// +1 or -1 with probability 1/2 each.
  double rademacher() { return (next_u64() >> 63) != 0 ? 1.0 : -1.0; }
  /// Standard normal.
  double gaussian();

  /// Fills x[0..n) with Rademacher signs / standard normals.
  void fill_rademacher(double* x, std::int64_t n);
  void fill_gaussian(double* x, std::int64_t n);
  /// An n x cols matrix filled column by column.
  Eigen::MatrixXd rademacher_matrix(std::int64_t n, std::int64_t cols);
  Eigen::MatrixXd gaussian_matrix(std::int64_t n, std::int64_t cols);

 private:
  std::uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

/// Distribution of random probe / start vectors. Auto lets each routine pick its documented default
/// (trace.hpp: Rademacher for Hutchinson and Hutch++, Sphere for XTrace; density.hpp: Rademacher).
enum class ProbeDistribution {
  Auto,
  Rademacher,  // entries +-1
  Gaussian,    // entries N(0, 1)
  Sphere,      // Gaussian rescaled to norm sqrt(n): uniform on the sphere of radius sqrt(n)
};

/// An n x cols matrix of probes drawn column after column from rng (Auto counts as Rademacher).
Eigen::MatrixXd draw_probes(Rng& rng, std::int64_t n, std::int64_t cols, ProbeDistribution d);

/// splitmix64's output for state x: mix(x + 0x9e3779b97f4a7c15) (Steele, Lea, Flood 2014); a good 64-bit
/// mixer, also what seeds Rng.
std::uint64_t splitmix64(std::uint64_t x);

/// A seed for an independent stream `stream` of `seed`: splitmix64(seed ^ splitmix64(stream)), so that e.g. a task's
/// structure and its samples come from unrelated streams of one user seed.
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream);

}  // namespace moescope
