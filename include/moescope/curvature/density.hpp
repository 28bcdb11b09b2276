#pragma once
// Spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019; PyHessian's `density`):
// each run is m Lanczos steps with full reorthogonalisation from a normalised random start v; the
// eigenvalues of T are quadrature nodes and the squared first components of its eigenvectors their
// weights, so sum_j w_j f(theta_j) ~ v^T f(A) v. Smoothing with a Gaussian kernel gives a density.
#include <cstdint>
#include <vector>

#include <Eigen/Dense>

#include "moescope/curvature/operator.hpp"
#include "moescope/util/random.hpp"

namespace moescope {

/// Options of slq_quadrature.
struct SlqOptions {
  std::int64_t runs = 1;      // n_v, independent start vectors (PyHessian's default 1)
  std::int64_t steps = 100;   // Lanczos steps per run (PyHessian's iter), capped at n
  std::uint64_t seed = 0;     // start vectors from one Rng(seed) stream, run after run
  ProbeDistribution start = ProbeDistribution::Auto;  // Auto: Rademacher (as PyHessian); normalised
  ProgressFn progress;  // per run: value = that run's sum_j w_j theta_j
};

/// Nodes and weights of every run.
struct SlqQuadrature {
  /// Converged: every run finished (a run ends early, exactly, when its Krylov space is invariant);
  /// NumericalIssue: a non-finite value; the runs before it are kept.
  SolverStatus status = SolverStatus::Converged;
  std::vector<Eigen::VectorXd> nodes;    // per run, ascending
  std::vector<Eigen::VectorXd> weights;  // per run, non-negative, summing to 1
  std::int64_t matvecs = 0;
  /// Average over runs of sum_j w_j theta_j (= v^T A v for that run's start): an estimate of tr(A) / n.
  double mean() const;
};

/// Runs the quadrature. Throws std::invalid_argument for runs <= 0 or steps <= 0.
SlqQuadrature slq_quadrature(const LinearOperator& op, const SlqOptions& opts = {});

/// Options of smooth_density.
struct DensityOptions {
  std::int64_t bins = 10000;      // grid points, >= 2
  /// Kernel variance; 0 means variance_factor * max(1, hi_node - lo_node) (PyHessian: 1e-5 * max(1, range)).
  double variance = 0.0;
  double variance_factor = 1e-5;
  /// Grid = bins equispaced points on [lo - pad, hi + pad], both ends included (numpy.linspace), with
  /// lo/hi the smallest/largest node over all runs and pad = max(pad_fraction * (hi - lo),
  /// pad_sigmas * sqrt(variance)): the second term keeps the kernel tails on the grid when the spread
  /// is small (PyHessian pads by an absolute 0.01 around the run-averaged extremes).
  double pad_fraction = 0.01;
  double pad_sigmas = 5.0;
  /// Divide by the Riemann sum so that it is exactly 1 (PyHessian does); off by default so that `mass`
  /// stays a check.
  bool renormalize = false;
};

/// A smoothed density on a grid.
struct SpectralDensity {
  Eigen::VectorXd grid;
  /// (1/runs) sum_runs sum_j w_j N(x; theta_j, variance) at every grid point (then renormalised if asked).
  Eigen::VectorXd values;
  double variance = 0.0;  // the kernel variance used
  double spacing = 0.0;   // grid step h
  /// Riemann sum h * sum(values) before any renormalisation: 1 up to the kernel tails cut by the grid.
  double mass = 0.0;
};

/// Smooths quadrature nodes into a density. Throws std::invalid_argument for an empty quadrature, bins < 2,
/// variance < 0, variance_factor <= 0 or negative padding.
SpectralDensity smooth_density(const SlqQuadrature& quad, const DensityOptions& opts = {});

/// Both steps (density left empty if the quadrature has no run, i.e. its first run hit a NumericalIssue).
struct DensityResult {
  SlqQuadrature quadrature;
  SpectralDensity density;
};
DensityResult spectral_density(const LinearOperator& op, const SlqOptions& slq = {}, const DensityOptions& opts = {});

}  // namespace moescope
