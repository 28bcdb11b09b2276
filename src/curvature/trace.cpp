#include "moescope/curvature/trace.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"
#include "moescope/util/numbers.hpp"

namespace moescope {

const char* trace_method_name(TraceMethod m) {
  switch (m) {
    case TraceMethod::Hutchinson: return "hutchinson";
    case TraceMethod::HutchPlusPlus: return "hutch++";
    case TraceMethod::XTrace: return "xtrace";
  }
  return "unknown";
}

namespace {


void check_common(const char* where, const TraceOptions& opts, std::int64_t min_probes) {
  if (opts.probes < min_probes)
    invalid_argument(where, "probes must be at least " + to_text(min_probes) + ", got " + to_text(opts.probes));
  if (!(opts.stop_tol >= 0.0)) invalid_argument(where, "stop_tol must be >= 0, got " + to_text(opts.stop_tol));
}

ProbeDistribution resolve(ProbeDistribution d, ProbeDistribution fallback) {
  return d == ProbeDistribution::Auto ? fallback : d;
}

// Sample mean and standard error of the mean (NaN below two samples).
void mean_and_se(const Eigen::VectorXd& x, double& mean, double& se) {
  const Eigen::Index m = x.size();
  mean = x.mean();
  if (m < 2) {
    se = kNaN;
    return;
  }
  const double var = (x.array() - mean).square().sum() / static_cast<double>(m - 1);
  se = std::sqrt(var / static_cast<double>(m));
}

// Thin orthonormal basis of the columns of y (Householder), at most y.rows() columns.
Eigen::MatrixXd thin_q(const Eigen::MatrixXd& y) {
  const Eigen::Index c = std::min(y.rows(), y.cols());
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(y);
  return qr.householderQ() * Eigen::MatrixXd::Identity(y.rows(), c);
}

// The result for an operator that returned a non-finite product: no estimate, the matvecs spent so far.
TraceResult non_finite(TraceMethod m, std::int64_t probes, std::int64_t matvecs) {
  TraceResult r;
  r.method = m;
  r.status = SolverStatus::NumericalIssue;
  r.estimate = r.std_error = r.low_rank_part = kNaN;
  r.probes = probes;
  r.matvecs = matvecs;
  return r;
}

void finish(TraceResult& r) {
  if (!std::isfinite(r.estimate)) r.status = SolverStatus::NumericalIssue;
}

}  // namespace

TraceResult hutchinson_trace(const LinearOperator& op, const TraceOptions& opts) {
  check_common("hutchinson_trace", opts, 1);
  const std::int64_t n = op.size();
  const ProbeDistribution dist = resolve(opts.distribution, ProbeDistribution::Rademacher);
  Rng rng(opts.seed);
  TraceResult r;
  r.method = TraceMethod::Hutchinson;
  Eigen::VectorXd samples(opts.probes);
  Eigen::VectorXd az(n);
  double sum = 0.0, prev_mean = 0.0;
  bool stopped = false;
  std::int64_t used = 0;
  for (std::int64_t i = 0; i < opts.probes; ++i) {
    const Eigen::MatrixXd z = draw_probes(rng, n, 1, dist);
    op.apply(z.data(), az.data());
    samples(i) = z.col(0).dot(az);
    sum += samples(i);
    used = i + 1;
    const double mean = sum / static_cast<double>(used);
    report(opts.progress, make_progress("hutchinson", used, opts.probes, "probes", mean, "estimate"));
    if (!std::isfinite(mean)) break;
    if (opts.stop_tol > 0.0) {
      if (std::abs(mean - prev_mean) / (std::abs(prev_mean) + 1e-6) < opts.stop_tol) {
        stopped = true;
        break;
      }
      prev_mean = mean;
    }
  }
  r.samples = samples.head(used);
  r.probes = used;
  r.matvecs = used;
  mean_and_se(r.samples, r.estimate, r.std_error);
  r.status = (opts.stop_tol > 0.0 && !stopped) ? SolverStatus::NotConverged : SolverStatus::Converged;
  finish(r);
  return r;
}

TraceResult hutchpp_trace(const LinearOperator& op, const TraceOptions& opts) {
  check_common("hutchpp_trace", opts, 3);
  const std::int64_t n = op.size();
  const ProbeDistribution dist = resolve(opts.distribution, ProbeDistribution::Rademacher);
  const std::int64_t k = opts.probes / 3;
  const std::int64_t g = opts.probes - 2 * k;  // leftover budget goes to the residual part
  Rng rng(opts.seed);
  const Eigen::MatrixXd s = draw_probes(rng, n, k, dist);
  const Eigen::MatrixXd gm = draw_probes(rng, n, g, dist);

  TraceResult r;
  r.method = TraceMethod::HutchPlusPlus;
  r.probes = k + g;
  const Eigen::MatrixXd as = op.apply_block(s);
  if (!as.allFinite()) return non_finite(TraceMethod::HutchPlusPlus, k + g, k);
  const Eigen::MatrixXd q = thin_q(as);
  const Eigen::MatrixXd aq = op.apply_block(q);
  if (!aq.allFinite()) return non_finite(TraceMethod::HutchPlusPlus, k + g, k + q.cols());
  r.low_rank_part = (q.transpose() * aq).trace();
  report(opts.progress, make_progress("hutch++", k + q.cols(), opts.probes, "matvecs", r.low_rank_part, "low-rank part"));

  // (I - QQ^T) G, projected twice so that rounding in Q^T G does not leak back into range(Q).
  Eigen::MatrixXd pg = gm - q * (q.transpose() * gm);
  pg -= q * (q.transpose() * pg);
  const Eigen::MatrixXd apg = op.apply_block(pg);
  r.samples.resize(g);
  for (std::int64_t i = 0; i < g; ++i) r.samples(i) = pg.col(i).dot(apg.col(i));
  double res_mean = 0.0;
  mean_and_se(r.samples, res_mean, r.std_error);
  r.estimate = r.low_rank_part + res_mean;
  r.matvecs = k + q.cols() + g;
  report(opts.progress, make_progress("hutch++", r.matvecs, opts.probes, "matvecs", r.estimate, "estimate", "", true));
  finish(r);
  return r;
}

TraceResult xtrace_trace(const LinearOperator& op, const TraceOptions& opts) {
  check_common("xtrace_trace", opts, 2);
  const std::int64_t n = op.size();
  const std::int64_t k = opts.probes / 2;
  if (k > n)
    invalid_argument("xtrace_trace", "probes / 2 = " + to_text(k) + " exceeds n = " + to_text(n) +
                                "; n matvecs give the exact trace");
  const ProbeDistribution dist = resolve(opts.distribution, ProbeDistribution::Sphere);
  const bool improved = dist == ProbeDistribution::Sphere;
  Rng rng(opts.seed);
  const Eigen::MatrixXd w = draw_probes(rng, n, k, dist);

  TraceResult r;
  r.method = TraceMethod::XTrace;
  r.probes = k;
  const Eigen::MatrixXd y = op.apply_block(w);
  if (!y.allFinite()) return non_finite(TraceMethod::XTrace, k, k);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(y);
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(n, k);
  const Eigen::MatrixXd rr = qr.matrixQR().topRows(k).triangularView<Eigen::Upper>();
  const Eigen::MatrixXd z = op.apply_block(q);
  if (!z.allFinite()) return non_finite(TraceMethod::XTrace, k, 2 * k);
  r.matvecs = 2 * k;
  Eigen::MatrixXd h = q.transpose() * z;
  h = 0.5 * (h + h.transpose());  // A is symmetric; drop the rounding asymmetry
  const Eigen::MatrixXd c = q.transpose() * w;
  r.low_rank_part = h.trace();
  report(opts.progress, make_progress("xtrace", r.matvecs, opts.probes, "matvecs", r.low_rank_part, "low-rank part"));

  // Q_(i) = Q U_i with U_i an orthonormal basis of range(R without column i), i.e. of A W without w_i.
  // Well-conditioned R: U_i U_i^T = I - s_i s_i^T, s_i = normalised column i of R^{-T}.
  // Otherwise (A W rank-deficient, e.g. a low-rank A): U_i from an SVD of R_(i), thresholded relative to
  // its own largest singular value, so that Q_(i) still depends on the other probes only.
  const Eigen::VectorXd sv = Eigen::JacobiSVD<Eigen::MatrixXd>(rr).singularValues();
  const bool well_conditioned = sv.size() > 0 && sv(sv.size() - 1) > 1e-8 * sv(0);
  Eigen::MatrixXd s_fast;
  if (well_conditioned) {
    s_fast = rr.transpose().triangularView<Eigen::Lower>().solve(Eigen::MatrixXd::Identity(k, k));
    for (std::int64_t i = 0; i < k; ++i) s_fast.col(i).normalize();
  }

  r.samples.resize(k);
  for (std::int64_t i = 0; i < k; ++i) {
    Eigen::MatrixXd proj;  // U_i U_i^T (k x k)
    std::int64_t rank_i = k - 1;
    if (well_conditioned) {
      proj = Eigen::MatrixXd::Identity(k, k) - s_fast.col(i) * s_fast.col(i).transpose();
    } else {
      Eigen::MatrixXd ri(k, k - 1);
      ri << rr.leftCols(i), rr.rightCols(k - 1 - i);
      rank_i = 0;
      proj = Eigen::MatrixXd::Zero(k, k);
      if (k > 1) {
        Eigen::JacobiSVD<Eigen::MatrixXd> svd(ri, Eigen::ComputeThinU);
        const Eigen::VectorXd& si = svd.singularValues();
        const double cut = 1e-12 * (si.size() > 0 ? si(0) : 0.0);
        for (Eigen::Index j = 0; j < si.size(); ++j)
          if (si(j) > cut) ++rank_i;
        const Eigen::MatrixXd u = svd.matrixU().leftCols(rank_i);
        proj = u * u.transpose();
      }
    }
    const double tr_low = (proj * h).trace();
    const Eigen::VectorXd pc = proj * c.col(i);
    const Eigen::VectorXd u = w.col(i) - q * pc;   // (I - Q_(i) Q_(i)^T) w_i
    const Eigen::VectorXd au = y.col(i) - z * pc;  // A u without another matvec
    double tail = u.dot(au);
    if (improved) {
      const double unorm2 = u.squaredNorm();
      // Rescale the residual probe to norm sqrt(n - rank): uniform on the complement's sphere.
      tail *= unorm2 > 0.0 ? static_cast<double>(n - rank_i) / unorm2 : 0.0;
    }
    r.samples(i) = tr_low + tail;
  }
  mean_and_se(r.samples, r.estimate, r.std_error);
  report(opts.progress, make_progress("xtrace", r.matvecs, opts.probes, "matvecs", r.estimate, "estimate", "", true));
  finish(r);
  return r;
}

TraceResult estimate_trace(const LinearOperator& op, TraceMethod method, const TraceOptions& opts) {
  switch (method) {
    case TraceMethod::Hutchinson: return hutchinson_trace(op, opts);
    case TraceMethod::HutchPlusPlus: return hutchpp_trace(op, opts);
    case TraceMethod::XTrace: return xtrace_trace(op, opts);
  }
  throw std::invalid_argument("estimate_trace: unknown method");
}

}  // namespace moescope
