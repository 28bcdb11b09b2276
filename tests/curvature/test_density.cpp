#include "moescope/curvature/density.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "curvature/known_spectrum.hpp"
#include "moescope/curvature/operator.hpp"

namespace moescope {
namespace {

using testing::gapped_spectrum;
using testing::random_orthogonal;
using testing::with_eigenpairs;

TEST(Slq, WeightsAndNodesAreAQuadratureOfTheSpectrum) {
  const std::int64_t n = 200;
  const Eigen::VectorXd d = gapped_spectrum(n, 1);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 2), d));
  SlqOptions o;
  o.runs = 4;
  o.steps = 40;
  const SlqQuadrature q = slq_quadrature(op, o);
  ASSERT_EQ(q.status, SolverStatus::Converged);
  ASSERT_EQ(q.nodes.size(), 4u);
  EXPECT_EQ(q.matvecs, 4 * 40);
  for (std::size_t r = 0; r < q.nodes.size(); ++r) {
    ASSERT_EQ(q.nodes[r].size(), 40);
    // Squared first components of an orthogonal matrix: sum 1 to rounding.
    EXPECT_NEAR(q.weights[r].sum(), 1.0, 1e-12);
    EXPECT_GE(q.weights[r].minCoeff(), 0.0);
    // Ritz values lie inside [lambda_min, lambda_max] (Cauchy interlacing), up to rounding ~ eps * ||A||.
    EXPECT_GE(q.nodes[r].minCoeff(), d.minCoeff() - 1e-12 * 10.0);
    EXPECT_LE(q.nodes[r].maxCoeff(), d.maxCoeff() + 1e-12 * 10.0);
  }
  // With 40 steps the extreme outlier (10, gap 2 to the next) is resolved to near machine precision.
  EXPECT_NEAR(q.nodes[0].maxCoeff(), 10.0, 1e-8);

  // sum_j w_j theta_j = e_1^T T e_1 = v^T A v for the run's unit start vector: reproduce run 0's start
  // (first Rademacher draw of Rng(seed)) and compare, to rounding.
  Rng rng(o.seed);
  Eigen::VectorXd v = draw_probes(rng, n, 1, ProbeDistribution::Rademacher).col(0);
  v.normalize();
  EXPECT_NEAR(q.nodes[0].dot(q.weights[0]), v.dot(op.apply(v)), 1e-12 * 10.0);
}

TEST(Slq, ExactSpectralMeasureWhenStepsReachN) {
  // n = 10 steps span the whole space (the run stops at n): nodes are the eigenvalues and weights the
  // squared components of the start vector along the eigenvectors.
  const std::int64_t n = 10;
  const Eigen::VectorXd d = gapped_spectrum(n, 3);
  const Eigen::MatrixXd qm = random_orthogonal(n, 4);
  DenseOperator op(with_eigenpairs(qm, d));
  SlqOptions o;
  o.steps = 100;
  o.seed = 9;
  const SlqQuadrature q = slq_quadrature(op, o);
  ASSERT_EQ(q.nodes[0].size(), n);
  EXPECT_EQ(q.matvecs, n);
  Rng rng(o.seed);
  Eigen::VectorXd v = draw_probes(rng, n, 1, ProbeDistribution::Rademacher).col(0);
  v.normalize();
  const Eigen::VectorXd comp = (qm.transpose() * v).array().square();
  // Match each known eigenvalue to its node (distinct eigenvalues, >= 1e-3 apart here).
  for (std::int64_t i = 0; i < n; ++i) {
    Eigen::Index j;
    (q.nodes[0].array() - d(i)).abs().minCoeff(&j);
    // Rounding of a full-dimension Lanczos with reorthogonalisation: ~1e-14 * ||A||.
    EXPECT_NEAR(q.nodes[0](j), d(i), 1e-11);
    EXPECT_NEAR(q.weights[0](j), comp(i), 1e-10);
  }
}

TEST(Slq, EarlyStopOnInvariantSubspace) {
  // Three distinct eigenvalues: the Krylov space of any start has dimension 3, the run stops there,
  // and the 3-node quadrature is exact.
  const std::int64_t n = 30;
  Eigen::VectorXd d = Eigen::VectorXd::Constant(n, 1.0);
  d.head(10).setConstant(4.0);
  d.tail(5).setConstant(-2.0);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 5), d));
  SlqOptions o;
  o.steps = 20;
  const SlqQuadrature q = slq_quadrature(op, o);
  ASSERT_EQ(q.status, SolverStatus::Converged);
  ASSERT_EQ(q.nodes[0].size(), 3);
  EXPECT_NEAR(q.nodes[0](0), -2.0, 1e-12);
  EXPECT_NEAR(q.nodes[0](1), 1.0, 1e-12);
  EXPECT_NEAR(q.nodes[0](2), 4.0, 1e-12);
}

TEST(Slq, MeanEstimatesTraceOverN) {
  const std::int64_t n = 200;
  const Eigen::VectorXd d = gapped_spectrum(n, 6);
  const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(n, 7), d);
  DenseOperator op(a);
  SlqOptions o;
  o.runs = 20;
  o.steps = 20;
  const SlqQuadrature q = slq_quadrature(op, o);
  // Each run's mean is z^T A z / n for a Rademacher z: unbiased for tr(A)/n with variance
  // 2 (||A||_F^2 - sum a_ii^2) / n^2. Four standard errors: probability >~ 0.9999 (normal approximation).
  const double var = 2.0 * (a.squaredNorm() - a.diagonal().squaredNorm()) / double(n * n);
  const double se = std::sqrt(var / o.runs);
  EXPECT_LE(std::abs(q.mean() - d.sum() / n), 4.0 * se) << "mean " << q.mean() << " exact " << d.sum() / n;
}

TEST(Density, IntegratesToOneAndKeepsTheMean) {
  const std::int64_t n = 200;
  const Eigen::VectorXd d = gapped_spectrum(n, 8);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 9), d));
  SlqOptions so;
  so.runs = 5;
  so.steps = 50;
  const DensityResult r = spectral_density(op, so);
  const SpectralDensity& s = r.density;
  ASSERT_EQ(s.grid.size(), 10000);
  ASSERT_EQ(s.values.size(), 10000);
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& nd : r.quadrature.nodes) {
    lo = std::min(lo, nd.minCoeff());
    hi = std::max(hi, nd.maxCoeff());
  }
  // Documented defaults: variance 1e-5 * max(1, range), pad max(0.01 range, 5 sigma).
  const double range = hi - lo;
  EXPECT_DOUBLE_EQ(s.variance, 1e-5 * std::max(1.0, range));
  const double pad = std::max(0.01 * range, 5.0 * std::sqrt(s.variance));
  EXPECT_NEAR(s.grid(0), lo - pad, 1e-12);
  EXPECT_NEAR(s.grid(9999), hi + pad, 1e-12);
  EXPECT_GE(s.values.minCoeff(), 0.0);
  // Mass: each kernel integrates to 1 and the weights of a run sum to 1. Lost: tails beyond the padding,
  // at most P(Z > 5) = 2.9e-7 (pad >= 5 sigma; here 0.01 * range ~ 0.12 = 6.5 sigma); the Riemann sum of a
  // Gaussian with h = range/1e4 ~ sigma/15 is exact to far below that. So |mass - 1| < 1e-6.
  EXPECT_NEAR(s.mass, 1.0, 1e-6);
  // First moment of the smoothed density = quadrature mean (symmetric kernels), up to the same tails
  // times the grid width (~12): 1e-5.
  const double m1 = (s.grid.array() * s.values.array()).sum() * s.spacing;
  EXPECT_NEAR(m1, r.quadrature.mean(), 1e-5);

  // Renormalised (PyHessian): the Riemann sum is 1 to rounding, and the shape is the same.
  DensityOptions dopt;
  dopt.renormalize = true;
  const SpectralDensity t = smooth_density(r.quadrature, dopt);
  EXPECT_NEAR(t.values.sum() * t.spacing, 1.0, 1e-12);
  EXPECT_NEAR((t.values - s.values / s.mass).cwiseAbs().maxCoeff(), 0.0, 1e-9);
}

TEST(Density, PeaksSitAtIsolatedEigenvalues) {
  // One run of 60 steps resolves the outlier at 10: the density has a local maximum within a grid step
  // (plus the node's own error, < 1e-8) of 10, of height ~ weight / sqrt(2 pi var).
  const std::int64_t n = 150;
  const Eigen::VectorXd d = gapped_spectrum(n, 10);
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 11), d));
  SlqOptions so;
  so.steps = 60;
  const DensityResult r = spectral_density(op, so);
  Eigen::Index top;
  const auto& g = r.density.grid;
  const auto& v = r.density.values;
  const Eigen::Index lo = (g.array() < 9.5).count();
  v.segment(lo, g.size() - lo).maxCoeff(&top);
  EXPECT_NEAR(g(lo + top), 10.0, r.density.spacing + 1e-8);
}

TEST(Density, SameSeedGivesBitIdenticalResults) {
  const std::int64_t n = 60;
  DenseOperator op(with_eigenpairs(random_orthogonal(n, 12), gapped_spectrum(n, 13)));
  SlqOptions so;
  so.runs = 3;
  so.steps = 15;
  so.seed = 77;
  DensityOptions dopt;
  dopt.bins = 500;
  const DensityResult a = spectral_density(op, so, dopt), b = spectral_density(op, so, dopt);
  for (std::size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(a.quadrature.nodes[r], b.quadrature.nodes[r]);
    EXPECT_EQ(a.quadrature.weights[r], b.quadrature.weights[r]);
  }
  EXPECT_EQ(a.density.values, b.density.values);
  EXPECT_EQ(a.density.grid, b.density.grid);
  so.seed = 78;
  EXPECT_NE(spectral_density(op, so, dopt).quadrature.nodes[0], a.quadrature.nodes[0]);
}

TEST(Density, InvalidArgumentsThrowWithValues) {
  DenseOperator op(Eigen::MatrixXd::Identity(4, 4));
  SlqOptions so;
  so.runs = 0;
  EXPECT_THROW(slq_quadrature(op, so), std::invalid_argument);
  so.runs = 1;
  so.steps = -3;
  try {
    slq_quadrature(op, so);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("-3"), std::string::npos) << e.what();
  }
  so.steps = 4;
  const SlqQuadrature q = slq_quadrature(op, so);
  DensityOptions d;
  d.bins = 1;
  EXPECT_THROW(smooth_density(q, d), std::invalid_argument);
  d.bins = 100;
  d.variance = -1.0;
  EXPECT_THROW(smooth_density(q, d), std::invalid_argument);
  EXPECT_THROW(smooth_density(SlqQuadrature{}, DensityOptions{}), std::invalid_argument);
  // The identity: one node at 1 (the Krylov space of any start is one-dimensional), and a density that
  // still has a proper grid (range 0: variance 1e-5, pad 5 sigma).
  ASSERT_EQ(q.nodes[0].size(), 1);
  EXPECT_NEAR(q.nodes[0](0), 1.0, 1e-15);
  const SpectralDensity s = smooth_density(q, DensityOptions{});
  EXPECT_NEAR(s.mass, 1.0, 1e-6);
}

TEST(Slq, NumericalIssueKeepsEarlierRuns) {
  // NaN from the 15th product on: run 1 (10 steps) completes, run 2 fails.
  const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(20, 14), gapped_spectrum(20, 15));
  int calls = 0;
  FunctionOperator op(20, [&](const double* x, double* y) {
    Eigen::Map<Eigen::VectorXd>(y, 20) = a * Eigen::Map<const Eigen::VectorXd>(x, 20);
    if (++calls >= 15) y[0] = NAN;
  });
  SlqOptions so;
  so.runs = 3;
  so.steps = 10;
  const DensityResult r = spectral_density(op, so);
  EXPECT_EQ(r.quadrature.status, SolverStatus::NumericalIssue);
  EXPECT_EQ(r.quadrature.nodes.size(), 1u);
  EXPECT_EQ(r.quadrature.matvecs, 15);
  EXPECT_EQ(r.density.grid.size(), 10000);  // smoothed from the run that completed
}

}  // namespace
}  // namespace moescope
