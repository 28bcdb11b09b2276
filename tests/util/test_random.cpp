#include "moescope/util/random.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace moescope {
namespace {

// Known answers of the reference generators (Vigna's splitmix64.c and xoshiro256starstar.c seeded through
// splitmix64), as other implementations publish them.
TEST(Rng, Splitmix64KnownAnswers) {
  std::uint64_t state = 0;
  const std::uint64_t want[] = {0xE220A8397B1DCDAFULL, 0x6E789E6AA1B965F4ULL, 0x06C45D188009454FULL};
  for (std::uint64_t w : want) {
    EXPECT_EQ(splitmix64(state), w);
    state += 0x9e3779b97f4a7c15ULL;
  }
}

TEST(Rng, Xoshiro256StarStarKnownAnswers) {
  Rng r0(0);
  for (std::uint64_t w : {0x99EC5F36CB75F2B4ULL, 0xBF6E1F784956452AULL, 0x1A5F849D4933E6E0ULL, 0x6AA594F1262D2D2CULL})
    EXPECT_EQ(r0.next_u64(), w);
  Rng r1(1);
  EXPECT_EQ(r1.next_u64(), 0xB3F2AF6D0FC710C5ULL);
  EXPECT_EQ(r1.next_u64(), 0x853B559647364CEAULL);
}

TEST(Rng, DistributionsHaveTheirMoments) {
  Rng rng(2024);
  const int n = 200000;
  double su = 0, sr = 0, sg = 0, sg2 = 0, sg4 = 0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    su += u;
    const double r = rng.rademacher();
    ASSERT_TRUE(r == 1.0 || r == -1.0);
    sr += r;
    const double g = rng.gaussian();
    sg += g;
    sg2 += g * g;
    sg4 += g * g * g * g;
  }
  // Five standard errors of each sample mean (sd/sqrt(n)): uniform sd 0.289, Rademacher 1, Gaussian 1,
  // g^2 sd sqrt(2), g^4 sd sqrt(96).
  const double rn = std::sqrt(double(n));
  EXPECT_NEAR(su / n, 0.5, 5 * 0.289 / rn);
  EXPECT_NEAR(sr / n, 0.0, 5 * 1.0 / rn);
  EXPECT_NEAR(sg / n, 0.0, 5 * 1.0 / rn);
  EXPECT_NEAR(sg2 / n, 1.0, 5 * std::sqrt(2.0) / rn);
  EXPECT_NEAR(sg4 / n, 3.0, 5 * std::sqrt(96.0) / rn);
}

TEST(Rng, ProbeMatricesAreReproducibleAndShaped) {
  Rng a(5), b(5);
  const Eigen::MatrixXd x = draw_probes(a, 40, 3, ProbeDistribution::Sphere);
  const Eigen::MatrixXd y = draw_probes(b, 40, 3, ProbeDistribution::Sphere);
  EXPECT_EQ(x, y);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(x.col(j).norm(), std::sqrt(40.0), 1e-12);
  Rng c(5);
  const Eigen::MatrixXd z = draw_probes(c, 40, 3, ProbeDistribution::Rademacher);
  EXPECT_TRUE((z.array().abs() == 1.0).all());
  // Auto draws Rademacher.
  Rng d(5);
  EXPECT_EQ(draw_probes(d, 40, 3, ProbeDistribution::Auto), z);
}


TEST(Rng, BelowStaysInRangeAndCoversIt) {
  Rng g(42);
  std::vector<int> count(7, 0);
  const int draws = 70000;
  for (int i = 0; i < draws; ++i) {
    const auto v = g.below(7);
    ASSERT_LT(v, 7u);
    ++count[v];
  }
  // each count ~ Binomial(70000, 1/7): mean 10000, sd ~93; 6 sd is far outside chance
  for (int c : count) EXPECT_NEAR(c, 10000, 600);
  EXPECT_EQ(g.below(1), 0u);
  // a bound just above 2^63 rejects almost half of the raw draws and still stays in range
  const std::uint64_t big = (std::uint64_t{1} << 63) + 12345;
  for (int i = 0; i < 1000; ++i) ASSERT_LT(g.below(big), big);
}

TEST(Rng, DerivedSeedsDiffer) {
  EXPECT_NE(derive_seed(1, 0), derive_seed(1, 1));
  EXPECT_NE(derive_seed(1, 0), derive_seed(2, 0));
  EXPECT_EQ(derive_seed(5, 3), derive_seed(5, 3));
  EXPECT_EQ(derive_seed(5, 3), splitmix64(5 ^ splitmix64(3)));
}

}  // namespace
}  // namespace moescope
