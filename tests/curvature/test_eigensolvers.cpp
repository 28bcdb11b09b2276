#include "moescope/curvature/eigensolvers.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "curvature/known_spectrum.hpp"
#include "support/expect_error.hpp"
#include "moescope/curvature/operator.hpp"

namespace moescope {
namespace {

using testing::gapped_spectrum;
using testing::random_orthogonal;
using testing::with_eigenpairs;

struct SpectrumProblem {
  Eigen::MatrixXd q;
  Eigen::VectorXd d;
  Eigen::MatrixXd a;
  double scale;  // max |eigenvalue| = ||A||_2
};

SpectrumProblem make_problem(const Eigen::VectorXd& d, std::uint64_t seed) {
  SpectrumProblem p;
  p.q = random_orthogonal(d.size(), seed);
  p.d = d;
  p.a = with_eigenpairs(p.q, d);
  p.scale = d.cwiseAbs().maxCoeff();
  return p;
}

// Indices of the known eigenvalues in the order a target wants them.
std::vector<Eigen::Index> wanted_order(const Eigen::VectorXd& d, EigenTarget target) {
  std::vector<Eigen::Index> idx(d.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](Eigen::Index a, Eigen::Index b) {
    switch (target) {
      case EigenTarget::LargestAlge: return d(a) > d(b);
      case EigenTarget::SmallestAlge: return d(a) < d(b);
      case EigenTarget::LargestMagn: return std::abs(d(a)) > std::abs(d(b));
    }
    return false;
  });
  return idx;
}

// Checks every returned pair against the known spectrum with bounds from the residual it reports.
void expect_known_pairs(const EigenResult& r, const SpectrumProblem& p, std::int64_t k, EigenTarget target, double tol) {
  ASSERT_EQ(r.status, SolverStatus::Converged) << r.method;
  ASSERT_EQ(r.eigenvalues.size(), k);
  ASSERT_EQ(r.eigenvectors.cols(), k);
  ASSERT_EQ(r.residuals.size(), k);
  const auto order = wanted_order(p.d, target);
  for (std::int64_t i = 0; i < k; ++i) {
    SCOPED_TRACE(r.method + " pair " + std::to_string(i));
    const Eigen::Index j = order[i];
    const double lam = r.eigenvalues(i);
    const Eigen::VectorXd v = r.eigenvectors.col(i);
    // Unit vectors: normalised to rounding.
    EXPECT_NEAR(v.norm(), 1.0, 1e-12);
    // The reported residual is the true one: recomputed here from the dense matrix (rounding ~ eps*||A||*n).
    const double resid = (p.a * v - lam * v).norm();
    EXPECT_NEAR(r.residuals(i), resid, 1e-12 * p.scale);
    // Krylov-Bogoliubov: some eigenvalue lies within ||Av - lam v|| of lam; the wanted eigenvalues are at
    // least 1 apart from the others and the residual is far smaller, so that eigenvalue is d_j.
    // 1e-12 * ||A||: rounding in forming A and the residual.
    EXPECT_LE(std::abs(lam - p.d(j)), r.residuals(i) + 1e-12 * p.scale);
    // The stopping rule asked for a relative residual <= tol; the true residual equals the Ritz estimate up to
    // the loss of orthogonality, ~ eps * ||A|| * sqrt(steps) < 1e-11 * ||A||.
    EXPECT_LE(r.residuals(i), tol * std::abs(lam) + 1e-11 * p.scale);
    // Davis-Kahan: sin(angle to q_j) <= residual / (distance from lam to the rest of the spectrum);
    // 1e-7 covers sqrt(1 - cos^2) evaluated in rounding (sqrt of ~1e-15).
    double gap = INFINITY;
    for (Eigen::Index l = 0; l < p.d.size(); ++l)
      if (l != j) gap = std::min(gap, std::abs(lam - p.d(l)));
    const double cosang = std::abs(v.dot(p.q.col(j)));
    const double sinang = std::sqrt(std::max(0.0, 1.0 - cosang * cosang));
    EXPECT_LE(sinang, r.residuals(i) / gap + 1e-7);
  }
}

struct ProblemSize {
  std::int64_t n, k;
};
const ProblemSize kProblemSizes[] = {{10, 3}, {50, 5}, {200, 5}};

TEST(SpectraEigs, TopKOfKnownSpectra) {
  for (const auto& s : kProblemSizes) {
    SCOPED_TRACE("n = " + std::to_string(s.n));
    const SpectrumProblem p = make_problem(gapped_spectrum(s.n, 100 + s.n), 200 + s.n);
    DenseOperator op(p.a);
    SpectraOptions o;
    o.k = s.k;
    o.tol = 1e-10;
    const EigenResult r = spectra_eigs(op, o);
    expect_known_pairs(r, p, s.k, EigenTarget::LargestAlge, o.tol);
    // Every matvec is counted: the operator saw exactly what the result reports.
    EXPECT_EQ(r.matvecs, op.matvecs());
    EXPECT_TRUE(r.residual_estimates.array().isNaN().all());
  }
}

TEST(LanczosEigs, TopKOfKnownSpectra) {
  for (const auto& s : kProblemSizes) {
    SCOPED_TRACE("n = " + std::to_string(s.n));
    const SpectrumProblem p = make_problem(gapped_spectrum(s.n, 100 + s.n), 200 + s.n);
    DenseOperator op(p.a);
    LanczosOptions o;
    o.k = s.k;
    o.tol = 1e-10;
    const EigenResult r = lanczos_eigs(op, o);
    expect_known_pairs(r, p, s.k, EigenTarget::LargestAlge, o.tol);
    EXPECT_EQ(r.matvecs, op.matvecs());
    EXPECT_EQ(r.matvecs, r.iterations + s.k);
    // The Ritz bound is the true residual in exact arithmetic; with full reorthogonalisation they agree
    // to rounding (1e-11 * ||A|| as above).
    for (std::int64_t i = 0; i < s.k; ++i) EXPECT_NEAR(r.residual_estimates(i), r.residuals(i), 1e-11 * p.scale);
  }
}

TEST(LanczosEigs, AgreesWithSpectra) {
  for (const auto& s : kProblemSizes) {
    SCOPED_TRACE("n = " + std::to_string(s.n));
    const SpectrumProblem p = make_problem(gapped_spectrum(s.n, 300 + s.n), 400 + s.n);
    DenseOperator op(p.a);
    SpectraOptions so;
    so.k = s.k;
    so.tol = 1e-9;
    LanczosOptions lo;
    lo.k = s.k;
    lo.tol = 1e-9;
    lo.seed = 7;
    const EigenResult a = spectra_eigs(op, so);
    const EigenResult b = lanczos_eigs(op, lo);
    ASSERT_EQ(a.status, SolverStatus::Converged);
    ASSERT_EQ(b.status, SolverStatus::Converged);
    for (std::int64_t i = 0; i < s.k; ++i) {
      // Both lie within their residuals of the same eigenvalue (gaps >= 1 >> residuals).
      EXPECT_LE(std::abs(a.eigenvalues(i) - b.eigenvalues(i)), a.residuals(i) + b.residuals(i) + 1e-12 * p.scale);
      // Same eigenvector up to sign: each is within residual/gap (gap >= 1) of it.
      const double c = std::abs(a.eigenvectors.col(i).dot(b.eigenvectors.col(i)));
      EXPECT_GE(c, 1.0 - 1e-8);
    }
  }
}

TEST(Eigs, LargestMagnitudePicksLargeNegativeEigenvalue) {
  const std::int64_t n = 60;
  Rng rng(11);
  Eigen::VectorXd d(n);
  d(0) = -20.0;
  d(1) = 10.0;
  for (std::int64_t i = 2; i < n; ++i) d(i) = -2.0 + 8.0 * rng.uniform();  // bulk in [-2, 6]
  const SpectrumProblem p = make_problem(d, 12);
  DenseOperator op(p.a);

  SpectraOptions so;
  so.k = 2;
  so.tol = 1e-10;
  so.target = EigenTarget::LargestMagn;
  const EigenResult s = spectra_eigs(op, so);
  expect_known_pairs(s, p, 2, EigenTarget::LargestMagn, so.tol);
  EXPECT_NEAR(s.eigenvalues(0), -20.0, 1e-8);  // within the residual bound checked above; 1e-8 >> 1e-10 * 20

  LanczosOptions lo;
  lo.k = 2;
  lo.tol = 1e-10;
  lo.target = EigenTarget::LargestMagn;
  const EigenResult l = lanczos_eigs(op, lo);
  expect_known_pairs(l, p, 2, EigenTarget::LargestMagn, lo.tol);
  EXPECT_NEAR(l.eigenvalues(0), -20.0, 1e-8);

  // LargestAlge on the same matrix ignores the negative end; SmallestAlge finds it first.
  lo.k = 1;
  lo.target = EigenTarget::LargestAlge;
  EXPECT_NEAR(lanczos_eigs(op, lo).eigenvalues(0), 10.0, 1e-8);
  lo.target = EigenTarget::SmallestAlge;
  EXPECT_NEAR(lanczos_eigs(op, lo).eigenvalues(0), -20.0, 1e-8);
  so.k = 1;
  so.target = EigenTarget::SmallestAlge;
  EXPECT_NEAR(spectra_eigs(op, so).eigenvalues(0), -20.0, 1e-8);
}

TEST(PowerEigs, FindsLambdaMaxOfGappedSpectrumWithPyHessianDefaults) {
  const SpectrumProblem p = make_problem(gapped_spectrum(100, 21), 22);
  DenseOperator op(p.a);
  PowerOptions o;  // PyHessian: tol 1e-3 on the eigenvalue change, 100 iterations
  const EigenResult r = power_eigs(op, o);
  ASSERT_EQ(r.status, SolverStatus::Converged);
  ASSERT_EQ(r.eigenvalues.size(), 1);
  // Krylov-Bogoliubov with the reported true residual (the next eigenvalue is 2 away).
  EXPECT_LE(std::abs(r.eigenvalues(0) - 10.0), r.residuals(0) + 1e-12 * p.scale);
  // An eigenvalue change below 1e-3 after iterations with ratio 0.8 puts the Rayleigh quotient well within
  // 1e-2 of lambda_max (its error decays like 0.8^(2t), the change is ~0.36 of it).
  EXPECT_NEAR(r.eigenvalues(0), 10.0, 1e-2);
  EXPECT_EQ(r.matvecs, op.matvecs());
  EXPECT_EQ(r.matvecs, r.iterations + 1);
}

TEST(PowerEigs, DeflationFindsTopThree) {
  const SpectrumProblem p = make_problem(gapped_spectrum(80, 31), 32);
  DenseOperator op(p.a);
  PowerOptions o;
  o.k = 3;
  o.tol = 1e-6;
  o.rule = PowerStopRule::Residual;
  o.max_iter = 2000;
  const EigenResult r = power_eigs(op, o);
  expect_known_pairs(r, p, 3, EigenTarget::LargestAlge, o.tol);
  // Deflated vectors are orthogonal to rounding plus their own angle errors (<= residual / gap).
  const Eigen::MatrixXd g = r.eigenvectors.transpose() * r.eigenvectors;
  EXPECT_LE((g - Eigen::MatrixXd::Identity(3, 3)).cwiseAbs().maxCoeff(), 1e-5);
}

// The benchmark relies on this: at the same relative residual (1e-4), Lanczos needs fewer matvecs than
// power iteration, for one pair and for several, on spectra with a moderate and a tight gap.
TEST(Eigs, LanczosUsesFewerMatvecsThanPowerIteration) {
  struct Case {
    std::int64_t n;
    double second;  // lambda_2 / lambda_1 with lambda_1 = 10
    std::int64_t k;
  };
  const Case cases[] = {{50, 0.8, 1}, {200, 0.8, 1}, {200, 0.95, 1}, {200, 0.8, 3}};
  for (const auto& c : cases) {
    SCOPED_TRACE("n = " + std::to_string(c.n) + ", ratio " + std::to_string(c.second) + ", k = " + std::to_string(c.k));
    Eigen::VectorXd d = gapped_spectrum(c.n, 40 + c.n);
    d(1) = 10.0 * c.second;
    const SpectrumProblem p = make_problem(d, 50 + c.n);
    DenseOperator op(p.a);
    const double tol = 1e-4;

    LanczosOptions lo;
    lo.k = c.k;
    lo.tol = tol;
    const EigenResult l = lanczos_eigs(op, lo);
    PowerOptions po;
    po.k = c.k;
    po.tol = tol;
    po.rule = PowerStopRule::Residual;
    po.max_iter = 100000;
    const EigenResult w = power_eigs(op, po);
    ASSERT_EQ(l.status, SolverStatus::Converged);
    ASSERT_EQ(w.status, SolverStatus::Converged);
    for (std::int64_t i = 0; i < c.k; ++i) {
      // Both met the relative residual (power: its returned vector is one power step past the checked
      // one, which only shrinks the non-dominant components here since every other |lambda| < lambda_i).
      EXPECT_LE(l.residuals(i), tol * std::abs(l.eigenvalues(i)) + 1e-11 * p.scale);
      EXPECT_LE(w.residuals(i), tol * std::abs(w.eigenvalues(i)));
    }
    EXPECT_LT(l.matvecs, w.matvecs);
  }
}

TEST(Eigs, NotConvergedWhenBudgetIsTiny) {
  const SpectrumProblem p = make_problem(gapped_spectrum(200, 61), 62);
  DenseOperator op(p.a);

  SpectraOptions so;
  so.k = 5;
  so.ncv = 11;
  so.max_restarts = 1;
  so.tol = 1e-14;
  const EigenResult s = spectra_eigs(op, so);
  EXPECT_EQ(s.status, SolverStatus::NotConverged);
  // Only converged pairs come back from Spectra, each with a measured residual.
  EXPECT_LT(s.eigenvalues.size(), 5);
  EXPECT_EQ(s.residuals.size(), s.eigenvalues.size());

  LanczosOptions lo;
  lo.k = 5;
  lo.max_steps = 6;
  const EigenResult l = lanczos_eigs(op, lo);
  EXPECT_EQ(l.status, SolverStatus::NotConverged);
  EXPECT_EQ(l.iterations, 6);
  ASSERT_EQ(l.eigenvalues.size(), 5);
  // The best available pairs, with residuals that show they are not converged.
  EXPECT_GT(l.residuals.maxCoeff(), lo.tol * 10.0);

  PowerOptions po;
  po.max_iter = 2;
  const EigenResult w = power_eigs(op, po);
  EXPECT_EQ(w.status, SolverStatus::NotConverged);
  EXPECT_EQ(w.iterations, 2);
  EXPECT_EQ(w.matvecs, 3);
}

TEST(LanczosEigs, RepeatedEigenvaluesOfLowRankOperator) {
  // Eigenvalues 3, 2, 2 and 47 zeros: one start vector sees a 3-dimensional Krylov space (3 distinct
  // values), breaks down, and must go on from fresh vectors to find the second 2.
  const std::int64_t n = 50;
  Eigen::VectorXd d = Eigen::VectorXd::Zero(n);
  d(0) = 3.0;
  d(1) = 2.0;
  d(2) = 2.0;
  const SpectrumProblem p = make_problem(d, 71);
  DenseOperator op(p.a);
  LanczosOptions o;
  o.k = 4;
  o.tol = 1e-10;
  const EigenResult r = lanczos_eigs(op, o);
  ASSERT_EQ(r.status, SolverStatus::Converged);
  // Rounding level: the pairs come from exact invariant subspaces.
  EXPECT_NEAR(r.eigenvalues(0), 3.0, 1e-12);
  EXPECT_NEAR(r.eigenvalues(1), 2.0, 1e-12);
  EXPECT_NEAR(r.eigenvalues(2), 2.0, 1e-12);
  EXPECT_NEAR(r.eigenvalues(3), 0.0, 1e-12);
  EXPECT_LE(r.residuals.maxCoeff(), 1e-12);
  // The two eigenvectors for 2 span the eigenspace: orthonormal and inside span(q_1, q_2).
  const Eigen::MatrixXd v = r.eigenvectors.middleCols(1, 2);
  const Eigen::MatrixXd inside = p.q.middleCols(1, 2).transpose() * v;
  EXPECT_NEAR((inside.transpose() * inside - Eigen::MatrixXd::Identity(2, 2)).norm(), 0.0, 1e-10);
}

TEST(Eigs, InvalidArgumentsThrowWithValues) {
  DenseOperator op(Eigen::MatrixXd::Identity(5, 5));
  auto expect_throw = [](auto&& fn, const std::string& needle) {
    moescope::testing::expect_error_mentioning<std::invalid_argument>(fn, needle);
  };
  LanczosOptions lo;
  lo.k = 0;
  expect_throw([&] { lanczos_eigs(op, lo); }, "k = 0");
  lo.k = 6;
  expect_throw([&] { lanczos_eigs(op, lo); }, "k = 6");
  lo.k = 2;
  lo.tol = 0.0;
  expect_throw([&] { lanczos_eigs(op, lo); }, "got 0");
  lo.tol = -1e-3;
  expect_throw([&] { lanczos_eigs(op, lo); }, "-0.001");
  lo.tol = 1e-8;
  lo.max_steps = 1;
  expect_throw([&] { lanczos_eigs(op, lo); }, "max_steps (1)");

  SpectraOptions so;
  so.k = 5;  // Spectra needs k < n
  expect_throw([&] { spectra_eigs(op, so); }, "k = 5");
  so.k = -1;
  expect_throw([&] { spectra_eigs(op, so); }, "k = -1");
  so.k = 2;
  so.ncv = 2;
  expect_throw([&] { spectra_eigs(op, so); }, "ncv = 2");

  PowerOptions po;
  po.k = 9;
  expect_throw([&] { power_eigs(op, po); }, "k = 9");
  po.k = 1;
  po.tol = -2.0;
  expect_throw([&] { power_eigs(op, po); }, "-2");
  po.tol = 1e-3;
  po.max_iter = 0;
  expect_throw([&] { power_eigs(op, po); }, "got 0");
}

TEST(Eigs, SameSeedGivesBitIdenticalResults) {
  const SpectrumProblem p = make_problem(gapped_spectrum(120, 81), 82);
  DenseOperator op(p.a);
  auto same = [](const EigenResult& a, const EigenResult& b) {
    return a.eigenvalues == b.eigenvalues && a.eigenvectors == b.eigenvectors && a.residuals == b.residuals &&
           a.matvecs == b.matvecs;
  };
  LanczosOptions lo;
  lo.k = 3;
  lo.seed = 5;
  EXPECT_TRUE(same(lanczos_eigs(op, lo), lanczos_eigs(op, lo)));
  SpectraOptions so;
  so.k = 3;
  so.seed = 5;
  EXPECT_TRUE(same(spectra_eigs(op, so), spectra_eigs(op, so)));
  PowerOptions po;
  po.k = 2;
  po.seed = 5;
  EXPECT_TRUE(same(power_eigs(op, po), power_eigs(op, po)));
  // Another seed: another start, so other bits (same eigenvalues to within the residuals).
  LanczosOptions lo2 = lo;
  lo2.seed = 6;
  EXPECT_FALSE(same(lanczos_eigs(op, lo), lanczos_eigs(op, lo2)));
}

TEST(SelectRitzPairs, OrdersAndBounds) {
  // T = diag(1, 3, 2) (off-diagonals zero): Ritz values are the diagonal, coefficients unit vectors.
  const Eigen::Vector3d alpha(1.0, 3.0, 2.0);
  const Eigen::Vector2d beta(0.0, 0.0);
  const RitzPairs r = select_ritz_pairs(alpha, beta, 0.5, EigenTarget::LargestAlge, 2, 1e-8);
  ASSERT_EQ(r.values.size(), 2);
  EXPECT_DOUBLE_EQ(r.values(0), 3.0);
  EXPECT_DOUBLE_EQ(r.values(1), 2.0);
  // Bound = |beta_next * last component|: 0 for e_2, 0.5 for e_3.
  EXPECT_DOUBLE_EQ(r.bounds(0), 0.0);
  EXPECT_DOUBLE_EQ(r.bounds(1), 0.5);
  EXPECT_FALSE(r.converged);
  // Fewer steps than k: never converged.
  EXPECT_FALSE(select_ritz_pairs(alpha, beta, 0.0, EigenTarget::LargestAlge, 4, 1e-8).converged);
  EXPECT_TRUE(select_ritz_pairs(alpha, beta, 0.0, EigenTarget::SmallestAlge, 3, 1e-8).converged);
  EXPECT_THROW(select_ritz_pairs(alpha, Eigen::VectorXd(1), 0.0, EigenTarget::LargestAlge, 1, 1e-8),
               std::invalid_argument);
}

TEST(Eigs, ProgressCallbackSeesEveryTest) {
  const SpectrumProblem p = make_problem(gapped_spectrum(50, 91), 92);
  DenseOperator op(p.a);
  LanczosOptions o;
  o.k = 2;
  std::int64_t calls = 0, last_step = 0;
  o.progress = [&](const Progress& pr) {
    ++calls;
    EXPECT_EQ(pr.stage, "lanczos");
    EXPECT_GT(pr.done, last_step);
    last_step = pr.done;
  };
  const EigenResult r = lanczos_eigs(op, o);
  // One test per step from step k on (check_every = 1, no breakdown here).
  EXPECT_EQ(calls, r.iterations - o.k + 1);
}

TEST(Eigs, NumericalIssueWhenTheOperatorReturnsNaN) {
  // A product that turns NaN on its third call: no silent numbers, a status instead.
  const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(30, 95), gapped_spectrum(30, 96));
  int calls = 0;
  FunctionOperator op(30, [&](const double* x, double* y) {
    Eigen::Map<Eigen::VectorXd>(y, 30) = a * Eigen::Map<const Eigen::VectorXd>(x, 30);
    if (++calls >= 3) y[0] = NAN;
  });
  LanczosOptions lo;
  lo.k = 2;
  const EigenResult l = lanczos_eigs(op, lo);
  EXPECT_EQ(l.status, SolverStatus::NumericalIssue);
  EXPECT_EQ(l.eigenvalues.size(), 0);
  EXPECT_EQ(l.matvecs, 3);
  calls = 0;
  SpectraOptions so;
  so.k = 2;
  const EigenResult s = spectra_eigs(op, so);
  EXPECT_EQ(s.status, SolverStatus::NumericalIssue);
  EXPECT_EQ(s.matvecs, 3);
  calls = 0;
  const EigenResult p = power_eigs(op, PowerOptions{});
  EXPECT_EQ(p.status, SolverStatus::NumericalIssue);
  EXPECT_EQ(p.matvecs, 3);
}

}  // namespace
}  // namespace moescope
