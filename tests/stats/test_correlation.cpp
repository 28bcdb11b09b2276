// Correlations and p-values against closed forms: Student's t CDF is elementary for odd df
// (df = 1: atan; df = 3, 5: atan plus trigonometric terms), an answer independent of the incomplete beta
// function the code uses. Tolerances 1e-12: both sides are a few floating-point operations.
#include <gtest/gtest.h>

#include <cmath>

#include "moescope/stats/correlation.hpp"

namespace moescope {
namespace {

// Two-sided p of Student's t for df = 1, 3, 5 in closed form (theta = atan(t / sqrt(df))).
double closed_form_p(double t, int df) {
  const double th = std::atan(std::abs(t) / std::sqrt(static_cast<double>(df))), s = std::sin(th), c = std::cos(th);
  double f = th;
  if (df == 3) f += s * c;
  if (df == 5) f += s * c * (1.0 + 2.0 / 3.0 * c * c);
  return 1.0 - 2.0 / M_PI * f;
}

TEST(Correlation, StudentTMatchesClosedForms) {
  for (int df : {1, 3, 5})
    for (double t : {0.0, 0.3, 1.0, 2.1213, 5.0, -3.0})
      EXPECT_NEAR(student_t_two_sided_p(t, df), closed_form_p(t, df), 1e-12) << df << " " << t;
}

TEST(Correlation, PearsonByHand) {
  // sxy = 6, sxx = 10, syy = 6: r = 6 / sqrt(60) = sqrt(0.6); t = r sqrt(3 / 0.4), df = 3
  const auto c = pearson({1, 2, 3, 4, 5}, {2, 4, 5, 4, 5});
  EXPECT_NEAR(c.r, std::sqrt(0.6), 1e-15);
  EXPECT_NEAR(c.p, closed_form_p(std::sqrt(0.6) * std::sqrt(3.0 / 0.4), 3), 1e-12);
  EXPECT_EQ(c.n, 5);
  EXPECT_TRUE(std::isnan(c.ci_low));
}

TEST(Correlation, PaperHeadlineNumber) {
  // Kim 2026: r = -0.293 with n = 7 gives p = 0.523 (two-sided, df = 5); a data set with that r
  const double r = -0.293, t = r * std::sqrt(5.0 / (1.0 - r * r));
  // the paper rounds r to 3 digits: r in [-0.2935, -0.2925] moves p by about +-8e-4 (dp/dr ~ 1.6 here),
  // plus p's own rounding of 5e-4
  EXPECT_NEAR(student_t_two_sided_p(t, 5), 0.523, 1.3e-3);
}

TEST(Correlation, SpearmanUsesAverageRanks) {
  EXPECT_EQ(average_ranks({10, 20, 20, 5}), (std::vector<double>{2, 3.5, 3.5, 1}));
  // monotone but non-linear: rho = 1, Pearson < 1
  const std::vector<double> x = {1, 2, 3, 4, 5, 6}, y = {1, 4, 9, 16, 25, 1000};
  EXPECT_NEAR(spearman(x, y).r, 1.0, 1e-15);
  EXPECT_EQ(spearman(x, y).p, 0.0);
  EXPECT_LT(pearson(x, y).r, 0.8);
  // with ties: Pearson of the average ranks, computed by hand: ranks x = 1,2.5,2.5,4; y = 1,2,3,4
  // sxy = (-1.5)(-1.5) + 0(-0.5) + 0(0.5) + 1.5(1.5) = 4.5, sxx = 4.5, syy = 5: rho = 4.5 / sqrt(22.5)
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 2, 3, 4}).r, 4.5 / std::sqrt(22.5), 1e-15);
}

TEST(Correlation, BootstrapIntervalIsDeterministicAndCoversR) {
  std::vector<double> x, y;
  for (int i = 0; i < 40; ++i) {
    x.push_back(i);
    y.push_back(i + 10.0 * std::sin(i * 1.7));
  }
  BootstrapOptions b;
  b.resamples = 2000;
  b.seed = 3;
  const auto c1 = pearson(x, y, b), c2 = pearson(x, y, b);
  EXPECT_EQ(c1.ci_low, c2.ci_low);
  EXPECT_EQ(c1.ci_high, c2.ci_high);
  EXPECT_LT(c1.ci_low, c1.r);
  EXPECT_GT(c1.ci_high, c1.r);
  EXPECT_LE(c1.ci_high, 1.0);
  b.level = 0.5;
  const auto narrow = pearson(x, y, b);
  EXPECT_LT(narrow.ci_high - narrow.ci_low, c1.ci_high - c1.ci_low);
}

TEST(Correlation, BadInputThrows) {
  EXPECT_THROW(pearson({1, 2}, {1, 2}), std::invalid_argument);
  EXPECT_THROW(pearson({1, 2, 3}, {1, 2}), std::invalid_argument);
  EXPECT_THROW(pearson({1, 1, 1}, {1, 2, 3}), std::invalid_argument);
}

}  // namespace
}  // namespace moescope
