#pragma once
// Extreme eigenpairs of a symmetric LinearOperator: Spectra's implicitly restarted Lanczos (reference),
// an own Lanczos with full reorthogonalisation (the algorithm a device-resident variant mirrors), and
// PyHessian-style power iteration with deflation (for comparison with published numbers).
// Every result carries the true residual ||A v - lambda v|| of each pair, measured by one extra matvec.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <Eigen/Dense>

#include "moescope/curvature/operator.hpp"

namespace moescope {

/// Which end of the spectrum to compute.
enum class EigenTarget {
  LargestAlge,   // largest values, e.g. the top Hessian eigenvalues
  LargestMagn,   // largest |values|: picks a large negative eigenvalue over a smaller positive one
  SmallestAlge,  // smallest (most negative) values
};

/// "largest_alge", "largest_magn", "smallest_alge".
const char* target_name(EigenTarget t);

/// Eigenpairs with their diagnostics.
struct EigenResult {
  std::string method;  // "spectra", "lanczos" or "power"
  SolverStatus status = SolverStatus::NotConverged;
  /// Ordered by the target: LargestAlge descending, LargestMagn by |value| descending, SmallestAlge
  /// ascending; power iteration keeps the order of discovery. Spectra returns only its converged pairs,
  /// so on NotConverged this may hold fewer than k values.
  Eigen::VectorXd eigenvalues;
  /// n x eigenvalues.size(), unit columns.
  Eigen::MatrixXd eigenvectors;
  /// ||A v_i - lambda_i v_i||, each measured with one extra matvec (included in `matvecs`). For a symmetric
  /// A some eigenvalue lies within residuals[i] of eigenvalues[i].
  Eigen::VectorXd residuals;
  /// What the stopping rule saw per pair: Lanczos |beta_m s_{m,i}|; power iteration the last relative
  /// eigenvalue change or relative residual (by rule); NaN where the solver does not expose it (Spectra).
  Eigen::VectorXd residual_estimates;
  std::int64_t iterations = 0;  // Lanczos steps, Spectra restarts, or power iterations over all pairs
  std::int64_t matvecs = 0;     // every operator application, residual checks included
};

/// Options of spectra_eigs.
struct SpectraOptions {
  std::int64_t k = 1;                                // wanted pairs, 1 <= k < n (Spectra needs k < n)
  EigenTarget target = EigenTarget::LargestAlge;
  std::int64_t ncv = 0;                              // Krylov dimension, k < ncv <= n; 0: min(n, max(2k+1, 20))
  std::int64_t max_restarts = 1000;                  // Spectra's maxit
  double tol = 1e-8;                                 // Spectra's tol: Ritz estimate <= tol * max(|theta|, eps^(2/3))
  std::uint64_t seed = 0;                            // start vector: standard normal from Rng(seed)
};

/// Top-k eigenpairs by Spectra::SymEigsSolver over a SpectraAdapter.
/// Throws std::invalid_argument (values in the message) for k <= 0, k >= n, tol <= 0, bad ncv or max_restarts.
EigenResult spectra_eigs(const LinearOperator& op, const SpectraOptions& opts = {});

/// Options of lanczos_eigs.
struct LanczosOptions {
  std::int64_t k = 1;                                // wanted pairs, 1 <= k <= n
  EigenTarget target = EigenTarget::LargestAlge;
  double tol = 1e-8;                                 // stop when every wanted |beta_m s_{m,i}| <= tol * |theta_i|
  std::int64_t max_steps = 300;                      // Krylov dimension cap (min with n); memory n * (steps + 1) doubles
  std::int64_t check_every = 1;                      // test convergence every this many steps (and at the cap)
  std::uint64_t seed = 0;                            // start vector: standard normal from Rng(seed)
  ProgressFn progress;                         // after each test: value = max relative bound of wanted pairs
};

/// Top-k eigenpairs by Lanczos with full reorthogonalisation (two-pass classical Gram-Schmidt against the
/// whole basis, no restarts). On an invariant subspace (beta ~ 0, e.g. a low-rank Hessian) the run goes on
/// from a fresh random vector orthogonal to the basis, so repeated eigenvalues are found too.
/// The relative bound uses max(|theta_i|, eps^(2/3) * max_j |theta_j|) so that zero eigenvalues can converge.
/// Throws std::invalid_argument for k <= 0, k > n, tol <= 0, max_steps < k, check_every <= 0.
EigenResult lanczos_eigs(const LinearOperator& op, const LanczosOptions& opts = {});

/// Stopping rules of power iteration.
enum class PowerStopRule {
  EigenvalueChange,  // PyHessian: |lambda - lambda_prev| / (|lambda_prev| + 1e-6) < tol
  Residual,          // ||A v - lambda v|| <= tol * |lambda|, from the same matvec (no extra cost)
};

/// Options of power_eigs.
struct PowerOptions {
  std::int64_t k = 1;                                // pairs, found one after another with deflation
  double tol = 1e-3;                                 // PyHessian's default
  std::int64_t max_iter = 100;                       // per pair (PyHessian's maxIter)
  PowerStopRule rule = PowerStopRule::EigenvalueChange;
  std::uint64_t seed = 0;                            // start vectors: standard normal from Rng(seed), in turn
  ProgressFn progress;                         // per iteration: value = current Rayleigh quotient
};

/// PyHessian's power iteration: v <- A v / ||A v|| with v orthogonalised against the pairs already found,
/// lambda = v^T A v. Converges to the largest-|lambda| eigenpair of the deflated operator, so the pairs come
/// out in roughly descending |lambda|. Returned vector: the normalised last product (as PyHessian);
/// returned value: its Rayleigh quotient from the residual matvec. Converged only if every pair met the rule.
/// Throws std::invalid_argument for k <= 0, k > n, tol <= 0, max_iter <= 0.
EigenResult power_eigs(const LinearOperator& op, const PowerOptions& opts = {});

/// Ritz pairs of a Lanczos tridiagonal T (diagonal alpha[0..m), off-diagonal beta[0..m-1)), with the
/// residual norm beta_next of the last step; shared by every Lanczos variant so they stop alike.
struct RitzPairs {
  Eigen::VectorXd values;        // the min(k, m) wanted values, ordered as EigenResult::eigenvalues
  Eigen::MatrixXd coefficients;  // m x values.size(): Ritz vector i = V_m * coefficients.col(i)
  Eigen::VectorXd bounds;        // |beta_next * coefficients(m-1, i)|
  bool converged = false;        // values.size() == k and every bound <= tol * max(|theta_i|, floor)
};
/// Throws std::invalid_argument if the sizes do not match, k <= 0 or tol <= 0.
RitzPairs select_ritz_pairs(const Eigen::VectorXd& alpha, const Eigen::VectorXd& beta, double beta_next,
                            EigenTarget target, std::int64_t k, double tol);

namespace detail {
/// The stopping rule every Lanczos variant shares. Steps `proc` (anything with step() -> Process::Step::{..,
/// Breakdown, NonFinite}, restart(rng), steps(), matvecs(), alpha(), beta(), beta_next()) until the wanted Ritz
/// pairs meet opts.tol (tested every opts.check_every steps once there are opts.k, and at the cap), the step cap
/// is reached, or an invariant subspace cannot be left by a restart. Sets `status`; returns the last tested pairs
/// (meaningless when status is NumericalIssue). opts: k, tol, target, check_every, progress.
template <class Process, class Random, class Options>
RitzPairs run_lanczos(Process& proc, Random& rng, const Options& opts, std::int64_t cap, const char* stage,
                      SolverStatus& status) {
  RitzPairs rp;
  std::int64_t tested_at = -1;
  auto test = [&]() {
    rp = select_ritz_pairs(proc.alpha(), proc.beta(), proc.beta_next(), opts.target, opts.k, opts.tol);
    tested_at = proc.steps();
    if (opts.progress) {
      double worst = 0.0;
      for (Eigen::Index i = 0; i < rp.values.size(); ++i)
        worst = std::max(worst, rp.bounds(i) / std::max(std::abs(rp.values(i)), std::numeric_limits<double>::min()));
      Progress p;
      p.stage = stage;
      p.done = proc.steps();
      p.total = cap;
      p.unit = "steps";
      p.value = worst;
      p.value_name = "largest relative Ritz bound";
      p.detail = std::to_string(proc.matvecs()) + " matvecs";
      opts.progress(p);
    }
    return rp.converged;
  };
  while (true) {
    const auto st = proc.step();
    if (st == Process::Step::NonFinite) {
      status = SolverStatus::NumericalIssue;
      return rp;
    }
    const std::int64_t m = proc.steps();
    if (st == Process::Step::Breakdown) {
      // Invariant subspace: go on from a fresh direction unless the space or the budget is exhausted.
      if (proc.restart(rng)) continue;
      status = test() ? SolverStatus::Converged : SolverStatus::NotConverged;
      return rp;
    }
    const bool at_cap = m >= cap;
    if (m >= opts.k && (m % opts.check_every == 0 || at_cap) && test()) {
      status = SolverStatus::Converged;
      return rp;
    }
    if (at_cap) {
      if (tested_at != m) test();
      status = rp.converged ? SolverStatus::Converged : SolverStatus::NotConverged;
      return rp;
    }
  }
}
}  // namespace detail

}  // namespace moescope
