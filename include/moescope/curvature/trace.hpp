#pragma once
// Stochastic trace estimators over a symmetric LinearOperator, all with a probe budget m (= matvecs) and a
// seed, and all with a standard error:
//   Hutchinson (Girard-Hutchinson), optionally with PyHessian's stopping rule;
//   Hutch++ (Meyer, Musco, Musco, Woodruff 2021);
//   XTrace (Epperly, Tropp, Webber 2024, SIAM J. Matrix Anal. Appl.).
#include <cstdint>
#include <string>

#include <Eigen/Dense>

#include "moescope/curvature/operator.hpp"
#include "moescope/util/random.hpp"

namespace moescope {

/// The estimators of this header, for estimate_trace and for reports.
enum class TraceMethod { Hutchinson, HutchPlusPlus, XTrace };
/// "hutchinson", "hutch++", "xtrace".
const char* trace_method_name(TraceMethod m);

/// Options shared by the estimators.
struct TraceOptions {
  std::int64_t probes = 30;  // budget m: the most matvecs the estimator may use
  std::uint64_t seed = 0;    // probes come from Rng(seed), column after column
  ProbeDistribution distribution = ProbeDistribution::Auto;
  /// Hutchinson only; 0 = off. PyHessian's rule: stop after probe i when
  /// |mean_i - mean_{i-1}| / (|mean_{i-1}| + 1e-6) < stop_tol, where mean_0 = 0 (as PyHessian starts).
  double stop_tol = 0.0;
  ProgressFn progress;  // per probe (Hutchinson) or per stage; value = running estimate
};

/// A trace estimate and its diagnostics.
struct TraceResult {
  TraceMethod method = TraceMethod::Hutchinson;
  /// Converged: the budget was spent normally, or PyHessian's rule was met; NotConverged: the rule was
  /// asked for but not met within the budget; NumericalIssue: a non-finite value.
  SolverStatus status = SolverStatus::Converged;
  double estimate = 0.0;
  /// Hutchinson: sample std of z^T A z / sqrt(probes). Hutch++: the same for the residual samples, i.e.
  /// conditional on the sketch S (which fixes the low-rank part). XTrace: sample std of the leave-one-out estimates /
  /// sqrt(count) (its authors' error estimate). NaN with fewer than two samples.
  double std_error = 0.0;
  /// Hutch++: tr(Q^T A Q); XTrace: tr(Q^T A Q) of the full basis; Hutchinson: 0.
  double low_rank_part = 0.0;
  /// Per-sample values behind std_error: z_i^T A z_i (Hutchinson), g_i^T P A P g_i with P = I - QQ^T, each
  /// an unbiased estimate of the residual trace (Hutch++), or the leave-one-out estimates t_i (XTrace).
  Eigen::VectorXd samples;
  std::int64_t probes = 0;   // random vectors drawn
  std::int64_t matvecs = 0;  // operator applications (<= the budget)
};

/// Girard-Hutchinson: mean of z^T A z over `probes` probes. Throws std::invalid_argument for probes <= 0
/// or stop_tol < 0.
TraceResult hutchinson_trace(const LinearOperator& op, const TraceOptions& opts = {});

/// Hutch++ with budget m: S and G with k = floor(m/3) columns each and the m - 2k leftover matvecs spent on
/// G (so g = m - 2k >= k); Q = thin QR basis (Householder) of A S, at most n columns;
/// estimate = tr(Q^T A Q) + (1/g) tr(G^T (I - QQ^T) A (I - QQ^T) G). With k >= n, Q spans everything and the
/// result is exact up to rounding. Throws std::invalid_argument for probes < 3.
TraceResult hutchpp_trace(const LinearOperator& op, const TraceOptions& opts = {});

/// XTrace with budget m: k = floor(m/2) probes W, Y = A W = QR, Z = A Q. For each i, Q_(i) spans A W
/// without column i, and t_i = tr(Q_(i)^T A Q_(i)) + w_i^T (I - Q_(i)Q_(i)^T) A (I - Q_(i)Q_(i)^T) w_i,
/// with w_i's residual part rescaled to norm sqrt(n - rank Q_(i)) for Sphere probes (the "improved"
/// variant). estimate = mean t_i, std_error = std(t_i) / sqrt(k). A rank-deficient A W (low-rank A)
/// is handled with a rank-revealing basis per i. Throws std::invalid_argument for probes < 2 or
/// floor(probes/2) > n.
TraceResult xtrace_trace(const LinearOperator& op, const TraceOptions& opts = {});

/// Dispatches to one of the above.
TraceResult estimate_trace(const LinearOperator& op, TraceMethod method, const TraceOptions& opts = {});

}  // namespace moescope
