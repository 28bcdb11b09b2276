#include "moescope/util/random.hpp"

#include <cmath>

namespace moescope {

std::uint64_t splitmix64(std::uint64_t x) {
  std::uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

namespace {
inline std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(std::uint64_t seed) {
  // splitmix64 as a sequence: state advances by the golden-ratio increment.
  std::uint64_t state = seed;
  for (auto& s : s_) {
    s = splitmix64(state);
    state += 0x9e3779b97f4a7c15ULL;
  }
}

std::uint64_t Rng::next_u64() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::uint64_t Rng::below(std::uint64_t bound) {
  const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const std::uint64_t r = next_u64();
    if (r >= threshold) return r % bound;
  }
}

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) { return splitmix64(seed ^ splitmix64(stream)); }

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Rng::gaussian() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u, v, s;
  do {
    u = 2.0 * uniform() - 1.0;
    v = 2.0 * uniform() - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  const double f = std::sqrt(-2.0 * std::log(s) / s);
  spare_ = v * f;
  has_spare_ = true;
  return u * f;
}

void Rng::fill_rademacher(double* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = rademacher();
}

void Rng::fill_gaussian(double* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = gaussian();
}

Eigen::MatrixXd Rng::rademacher_matrix(std::int64_t n, std::int64_t cols) {
  Eigen::MatrixXd m(n, cols);
  fill_rademacher(m.data(), n * cols);
  return m;
}

Eigen::MatrixXd Rng::gaussian_matrix(std::int64_t n, std::int64_t cols) {
  Eigen::MatrixXd m(n, cols);
  fill_gaussian(m.data(), n * cols);
  return m;
}

Eigen::MatrixXd draw_probes(Rng& rng, std::int64_t n, std::int64_t cols, ProbeDistribution d) {
  if (d == ProbeDistribution::Auto || d == ProbeDistribution::Rademacher) return rng.rademacher_matrix(n, cols);
  Eigen::MatrixXd w = rng.gaussian_matrix(n, cols);
  if (d == ProbeDistribution::Sphere) {
    const double r = std::sqrt(static_cast<double>(n));
    for (std::int64_t j = 0; j < cols; ++j) w.col(j) *= r / w.col(j).norm();
  }
  return w;
}

}  // namespace moescope
