#include "moescope/train/fused_kernels.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace moescope {
namespace {

std::vector<VectorIsa> isas() {
  std::vector<VectorIsa> v;
  for (const VectorIsa i : {VectorIsa::Portable, VectorIsa::Avx2, VectorIsa::Avx512})
    if (vector_isa_available(i)) v.push_back(i);
  return v;
}

bool uses_fma(VectorIsa isa) { return isa == VectorIsa::Avx2 || isa == VectorIsa::Avx512; }

// The header's formula written out element by element, with or without fused multiply-adds: what each path must
// give bit for bit (the FMA paths; std::fma rounds once wherever it runs).
template <class T>
void reference_adamw(std::vector<T>& p, const std::vector<T>& g, std::vector<T>& m, std::vector<T>& v,
                     const AdamWScalars& s, bool fma) {
  const T b1 = static_cast<T>(s.beta1), ob1 = static_cast<T>(1.0 - s.beta1), b2 = static_cast<T>(s.beta2),
          ob2 = static_cast<T>(1.0 - s.beta2), sbc2 = static_cast<T>(std::sqrt(s.bias_correction2)),
          eps = static_cast<T>(s.eps), decay = static_cast<T>(1.0 - s.lr * s.weight_decay),
          step = static_cast<T>(-(s.lr / s.bias_correction1)), scale = static_cast<T>(s.grad_scale);
  const auto madd = [fma](T a, T b, T c) {
    if (fma) return std::fma(a, b, c);
    volatile T product = a * b;  // rounded, whatever the compiler would contract
    return product + c;
  };
  for (std::size_t i = 0; i < p.size(); ++i) {
    volatile T gi = g[i] * scale;
    const T mi = madd(gi, ob1, static_cast<T>(m[i] * b1));
    volatile T gg = gi * gi;
    const T vi = madd(gg, ob2, static_cast<T>(v[i] * b2));
    volatile T root = std::sqrt(vi);
    const T denom = static_cast<T>(root / sbc2) + eps;
    volatile T ratio = mi / denom;
    p[i] = madd(p[i], decay, static_cast<T>(step * ratio));
    m[i] = mi;
    v[i] = vi;
  }
}

template <class T>
void check_adamw_paths() {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  AdamWScalars s;
  s.lr = 3e-3;
  s.weight_decay = 0.05;
  s.beta1 = 0.85;
  s.beta2 = 0.97;
  s.eps = 1e-7;
  s.bias_correction1 = 1.0 - std::pow(s.beta1, 3.0);
  s.bias_correction2 = 1.0 - std::pow(s.beta2, 3.0);
  s.grad_scale = 0.37;  // a clipping coefficient
  // Lengths around the vector widths (8, 16) and their tails.
  for (const std::int64_t n : {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1027}) {
    std::vector<T> p0(n), g(n), m0(n), v0(n);
    for (std::int64_t i = 0; i < n; ++i) {
      p0[i] = static_cast<T>(normal(rng));
      g[i] = static_cast<T>(normal(rng) * 0.1);
      m0[i] = static_cast<T>(normal(rng) * 0.01);
      v0[i] = static_cast<T>(std::abs(normal(rng)) * 1e-3);
    }
    for (const VectorIsa isa : isas()) {
      SCOPED_TRACE(std::string(vector_isa_name(isa)) + " n " + std::to_string(n));
      auto p = p0, m = m0, v = v0, rp = p0, rm = m0, rv = v0;
      adamw_update(p.data(), g.data(), m.data(), v.data(), n, s, isa);
      reference_adamw(rp, g, rm, rv, s, uses_fma(isa));
      for (std::int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(m[i], rm[i]) << i;
        EXPECT_EQ(v[i], rv[i]) << i;
        EXPECT_EQ(p[i], rp[i]) << i;
      }
    }
  }
}

TEST(FusedKernels, AdamWEveryPathIsTheFormulaBitForBit) {
  check_adamw_paths<float>();
  check_adamw_paths<double>();
}

// One step from m = v = 0 moves every element by -lr sign(g) / (1 + eps sqrt(1 - b2) / |g|) (bias-corrected first
// step), decay aside: an answer known without the formula's intermediate roundings.
TEST(FusedKernels, AdamWFirstStepIsTheSignStep) {
  AdamWScalars s;
  s.lr = 1e-2;
  s.weight_decay = 0.0;
  s.eps = 1e-8;
  s.bias_correction1 = 1.0 - s.beta1;
  s.bias_correction2 = 1.0 - s.beta2;
  for (const VectorIsa isa : isas()) {
    std::vector<double> p(37, 1.0), g(37), m(37, 0.0), v(37, 0.0);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = (i % 2 ? -1.0 : 1.0) * (0.01 + 0.1 * static_cast<double>(i));
    adamw_update(p.data(), g.data(), m.data(), v.data(), static_cast<std::int64_t>(p.size()), s, isa);
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double expected = 1.0 - s.lr * (g[i] > 0 ? 1.0 : -1.0) / (1.0 + s.eps / std::abs(g[i]));
      EXPECT_NEAR(p[i], expected, 1e-15) << vector_isa_name(isa) << " " << i;  // a few roundings of O(1) values
    }
  }
}

// Squares of small integers sum exactly in float64, in any order: every path gives the exact sum.
TEST(FusedKernels, SumOfSquaresExactOnIntegers) {
  for (const std::int64_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1001}) {
    std::vector<float> f(n);
    std::vector<double> d(n);
    double exact = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      f[i] = d[i] = static_cast<double>((i * 37) % 201) - 100.0;
      exact += d[i] * d[i];
    }
    for (const VectorIsa isa : isas()) {
      EXPECT_EQ(sum_of_squares(f.data(), n, isa), exact) << vector_isa_name(isa) << " n " << n;
      EXPECT_EQ(sum_of_squares(d.data(), n, isa), exact) << vector_isa_name(isa) << " n " << n;
    }
  }
}

// The FMA paths follow the header's lanes bit for bit; the portable one within its extra roundings (one per
// product: at most n u relative for n terms of one sign, u = 2^-53).
TEST(FusedKernels, SumOfSquaresLanes) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const std::int64_t n : {5, 16, 17, 999}) {
    std::vector<float> x(n);
    for (auto& e : x) e = static_cast<float>(normal(rng));
    double lane[8] = {};
    for (std::int64_t i = 0; i < n; ++i) lane[i % 8] = std::fma(double(x[i]), double(x[i]), lane[i % 8]);
    const double expected = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (const VectorIsa isa : isas()) {
      const double got = sum_of_squares(x.data(), n, isa);
      if (uses_fma(isa)) EXPECT_EQ(got, expected) << vector_isa_name(isa) << " n " << n;
      else EXPECT_NEAR(got, expected, static_cast<double>(n) * 0x1p-53 * expected) << "portable n " << n;
    }
  }
}

TEST(FusedKernels, UnavailablePathIsRefused) {
  float x = 1.0f;
  for (const VectorIsa isa : {VectorIsa::Avx2, VectorIsa::Avx512}) {
    if (vector_isa_available(isa)) continue;
    EXPECT_THROW(sum_of_squares(&x, 1, isa), std::invalid_argument);
    EXPECT_THROW(adamw_update(&x, &x, &x, &x, 1, AdamWScalars{}, isa), std::invalid_argument);
  }
  EXPECT_NE(vector_isa_auto(), VectorIsa::Auto);
}

}  // namespace
}  // namespace moescope
