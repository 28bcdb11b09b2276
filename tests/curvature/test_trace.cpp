#include "moescope/curvature/trace.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "curvature/known_spectrum.hpp"
#include "support/expect_error.hpp"
#include "moescope/curvature/operator.hpp"

namespace moescope {
namespace {

using testing::random_orthogonal;
using testing::with_eigenpairs;

// Hessian-like spectrum: a few large outliers over a bulk of both signs around zero.
Eigen::VectorXd hessian_like_spectrum(std::int64_t n, std::uint64_t seed) {
  Rng rng(seed ^ testing::kMatrixSalt);
  Eigen::VectorXd d(n);
  const double top[] = {50.0, 20.0, 10.0, 5.0, 2.0};
  for (std::int64_t i = 0; i < n; ++i) d(i) = i < 5 ? top[i] : 0.5 * rng.gaussian();
  return d;
}

// Eigenvalues 1/i^2: fast decay, the case low-rank deflation is made for.
Eigen::VectorXd decaying_spectrum(std::int64_t n) {
  Eigen::VectorXd d(n);
  for (std::int64_t i = 0; i < n; ++i) d(i) = 1.0 / static_cast<double>((i + 1) * (i + 1));
  return d;
}

const TraceMethod kMethods[] = {TraceMethod::Hutchinson, TraceMethod::HutchPlusPlus, TraceMethod::XTrace};

TEST(Trace, EstimatesWithinFourStandardErrors) {
  const std::int64_t n = 120;
  const Eigen::VectorXd d = hessian_like_spectrum(n, 1);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 2), d));
  const double exact = d.sum();
  for (TraceMethod m : kMethods) {
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
      SCOPED_TRACE(std::string(trace_method_name(m)) + " seed " + std::to_string(seed));
      TraceOptions o;
      o.probes = 60;
      o.seed = seed;
      const TraceResult r = estimate_trace(op, m, o);
      ASSERT_EQ(r.status, SolverStatus::Converged);
      ASSERT_GT(r.std_error, 0.0);
      // |error| <= 4 standard errors: probability >~ 0.9999 per run under a normal approximation
      // (P(|Z| > 4) = 6.3e-5); with 20-30 samples the t-distribution's tail is heavier (~1e-3), still rare.
      EXPECT_LE(std::abs(r.estimate - exact), 4.0 * r.std_error) << "estimate " << r.estimate << " exact " << exact;
      // The budget is respected, and spent in full here (k <= n for every method).
      EXPECT_EQ(r.matvecs, 60);
    }
  }
}

TEST(Trace, DeflatedEstimatorsBeatHutchinsonOnDecayingSpectrum) {
  const std::int64_t n = 300;
  const Eigen::VectorXd d = decaying_spectrum(n);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 3), d));
  const double exact = d.sum();
  double mae[3] = {0.0, 0.0, 0.0};
  const int seeds = 50;
  for (int s = 0; s < seeds; ++s) {
    TraceOptions o;
    o.probes = 30;
    o.seed = static_cast<std::uint64_t>(s);
    for (int m = 0; m < 3; ++m) mae[m] += std::abs(estimate_trace(op, kMethods[m], o).estimate - exact) / seeds;
  }
  // Theory: Hutchinson's error scales with ||A||_F sqrt(2/m) ~ 0.27, Hutch++'s with
  // ||A - A_10||_F sqrt(2/g) ~ 0.018 * 0.45 ~ 0.008 (A_10: best rank 10), about 30x less; XTrace is at
  // least as good. A factor 4 leaves ample room for the spread over 50 seeds.
  EXPECT_LT(mae[1], 0.25 * mae[0]) << "hutch++ " << mae[1] << " hutchinson " << mae[0];
  EXPECT_LT(mae[2], 0.25 * mae[0]) << "xtrace " << mae[2] << " hutchinson " << mae[0];
}

TEST(Trace, HutchPlusPlusIsExactWithThreeNProbes) {
  const std::int64_t n = 20;
  const Eigen::VectorXd d = hessian_like_spectrum(n, 4);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 5), d));
  const double exact = d.sum();
  for (std::int64_t m : {3 * n, 3 * n + 2, 4 * n}) {
    SCOPED_TRACE("m = " + std::to_string(m));
    TraceOptions o;
    o.probes = m;
    const TraceResult r = hutchpp_trace(op, o);
    // Q spans R^n, the residual part vanishes: exact up to rounding, ~ n * eps * sum |d_i|.
    EXPECT_NEAR(r.estimate, exact, 1e-12 * d.cwiseAbs().sum());
    EXPECT_NEAR(r.low_rank_part, exact, 1e-12 * d.cwiseAbs().sum());
    const std::int64_t k = m / 3, g = m - 2 * k;
    EXPECT_EQ(r.matvecs, k + std::min(k, n) + g);
  }
}

TEST(Trace, XTraceIsExactWithTwoNSphereProbes) {
  // k = n probes: each Q_(i) spans n - 1 dimensions, and the rescaled residual probe measures the last one
  // exactly (its Rayleigh quotient times 1).
  const std::int64_t n = 20;
  const Eigen::VectorXd d = hessian_like_spectrum(n, 6);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 7), d));
  TraceOptions o;
  o.probes = 2 * n;
  o.distribution = ProbeDistribution::Sphere;
  const TraceResult r = xtrace_trace(op, o);
  // Rounding only, amplified by cond(R) of a 20 x 20 sketch: 1e-9 relative.
  EXPECT_NEAR(r.estimate, d.sum(), 1e-9 * d.cwiseAbs().sum());
}

TEST(Trace, LowRankOperatorIsExactForDeflatedEstimators) {
  // Rank 5 < sketch size: A Q Q^T = A, so both deflated estimators are exact; XTrace's A W is
  // rank-deficient here, which takes its rank-revealing path.
  const std::int64_t n = 100;
  Eigen::VectorXd d = Eigen::VectorXd::Zero(n);
  d.head(5) << 9.0, 7.0, 3.0, 1.0, 0.5;
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 8), d));
  for (auto dist : {ProbeDistribution::Rademacher, ProbeDistribution::Sphere}) {
    TraceOptions o;
    o.probes = 30;
    o.distribution = dist;
    const TraceResult hp = hutchpp_trace(op, o);
    const TraceResult xt = xtrace_trace(op, o);
    // Rounding: entries of A ~ 1e-16 * ||A|| leak through the projections; 1e-10 relative is generous.
    EXPECT_NEAR(hp.estimate, d.sum(), 1e-10 * d.sum());
    EXPECT_NEAR(xt.estimate, d.sum(), 1e-10 * d.sum());
    EXPECT_LE(hp.std_error, 1e-10 * d.sum());
    EXPECT_LE(xt.std_error, 1e-10 * d.sum());
  }
}

TEST(Trace, HutchinsonWithRademacherIsExactOnDiagonalMatrices) {
  // z^T D z = sum d_i z_i^2 = tr(D) for z_i = +-1: every sample is exact, the standard error 0.
  Eigen::VectorXd d(7);
  d << 3.0, -1.0, 0.25, 8.0, 0.0, 2.0, -4.5;
  DenseOperator op(Eigen::MatrixXd(d.asDiagonal()));
  TraceOptions o;
  o.probes = 5;
  const TraceResult r = hutchinson_trace(op, o);
  EXPECT_DOUBLE_EQ(r.estimate, d.sum());
  EXPECT_EQ(r.std_error, 0.0);
  EXPECT_EQ(r.samples.size(), 5);
}

TEST(Trace, PyHessianStoppingRule) {
  // Diagonal matrix: the first mean is compared with 0 (as PyHessian starts), the second equals the first.
  Eigen::VectorXd d(6);
  d << 1.0, 2.0, 3.0, 4.0, 5.0, 6.0;
  DenseOperator diag(Eigen::MatrixXd(d.asDiagonal()));
  TraceOptions o;
  o.probes = 100;
  o.stop_tol = 1e-3;
  const TraceResult r = hutchinson_trace(diag, o);
  EXPECT_EQ(r.status, SolverStatus::Converged);
  EXPECT_EQ(r.probes, 2);
  EXPECT_EQ(r.matvecs, 2);
  EXPECT_DOUBLE_EQ(r.estimate, 21.0);

  // A dense matrix and a tolerance no running mean meets: the whole budget, and NotConverged.
  const std::int64_t n = 50;
  const Eigen::VectorXd h = hessian_like_spectrum(n, 9);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 10), h));
  o.probes = 40;
  o.stop_tol = 1e-15;
  const TraceResult s = hutchinson_trace(op, o);
  EXPECT_EQ(s.status, SolverStatus::NotConverged);
  EXPECT_EQ(s.probes, 40);
  // The early-stopped run is a prefix of the full one: same stream, same first samples.
  o.stop_tol = 0.0;
  const TraceResult full = hutchinson_trace(op, o);
  EXPECT_EQ(full.samples, s.samples);
}

TEST(Trace, SameSeedGivesBitIdenticalResults) {
  const std::int64_t n = 80;
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 11), hessian_like_spectrum(n, 12)));
  for (TraceMethod m : kMethods) {
    SCOPED_TRACE(trace_method_name(m));
    TraceOptions o;
    o.probes = 24;
    o.seed = 42;
    const TraceResult a = estimate_trace(op, m, o), b = estimate_trace(op, m, o);
    EXPECT_EQ(a.estimate, b.estimate);
    EXPECT_EQ(a.std_error, b.std_error);
    EXPECT_EQ(a.samples, b.samples);
    o.seed = 43;
    EXPECT_NE(estimate_trace(op, m, o).estimate, a.estimate);
  }
}

TEST(Trace, InvalidArgumentsThrowWithValues) {
  DenseOperator op(Eigen::MatrixXd::Identity(10, 10));
  auto expect_throw = [](auto&& fn, const std::string& needle) {
    moescope::testing::expect_error_mentioning<std::invalid_argument>(fn, needle);
  };
  TraceOptions o;
  o.probes = 0;
  expect_throw([&] { hutchinson_trace(op, o); }, "got 0");
  o.probes = 2;
  expect_throw([&] { hutchpp_trace(op, o); }, "got 2");
  o.probes = 1;
  expect_throw([&] { xtrace_trace(op, o); }, "got 1");
  o.probes = 22;
  expect_throw([&] { xtrace_trace(op, o); }, "probes / 2 = 11 exceeds n = 10");
  o.probes = 10;
  o.stop_tol = -1.0;
  expect_throw([&] { hutchinson_trace(op, o); }, "-1");
}

TEST(Trace, NumericalIssueWhenTheOperatorReturnsNaN) {
  FunctionOperator op(12, [](const double* x, double* y) {
    for (int i = 0; i < 12; ++i) y[i] = x[i];
    y[3] = NAN;
  });
  for (TraceMethod m : kMethods) {
    SCOPED_TRACE(trace_method_name(m));
    TraceOptions o;
    o.probes = 6;
    const TraceResult r = estimate_trace(op, m, o);
    EXPECT_EQ(r.status, SolverStatus::NumericalIssue);
    EXPECT_TRUE(std::isnan(r.estimate));
  }
}

}  // namespace
}  // namespace moescope
