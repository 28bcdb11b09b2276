#include "moescope/curvature/density.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "lanczos_process.hpp"

namespace moescope {

namespace {

template <class T>
std::string str(const T& v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

[[noreturn]] void invalid(const char* where, const std::string& what) {
  throw std::invalid_argument(std::string(where) + ": " + what);
}

}  // namespace

double SlqQuadrature::mean() const {
  if (nodes.empty()) return std::numeric_limits<double>::quiet_NaN();
  double sum = 0.0;
  for (std::size_t r = 0; r < nodes.size(); ++r) sum += nodes[r].dot(weights[r]);
  return sum / static_cast<double>(nodes.size());
}

SlqQuadrature slq_quadrature(const LinearOperator& op, const SlqOptions& opts) {
  if (opts.runs <= 0) invalid("slq_quadrature", "runs must be positive, got " + str(opts.runs));
  if (opts.steps <= 0) invalid("slq_quadrature", "steps must be positive, got " + str(opts.steps));
  const std::int64_t n = op.size();
  const ProbeDistribution dist = opts.start == ProbeDistribution::Auto ? ProbeDistribution::Rademacher : opts.start;
  Rng rng(opts.seed);
  SlqQuadrature out;
  for (std::int64_t run = 0; run < opts.runs; ++run) {
    const Eigen::VectorXd v0 = draw_probes(rng, n, 1, dist).col(0);
    detail::LanczosProcess proc(op, opts.steps);
    proc.start(v0);
    bool bad = false;
    while (proc.steps() < std::min(opts.steps, n)) {
      const auto st = proc.step();
      if (st == detail::LanczosProcess::Step::NonFinite) {
        bad = true;
        break;
      }
      // Invariant Krylov space: the quadrature is already exact for this start vector.
      if (st == detail::LanczosProcess::Step::Breakdown) break;
    }
    out.matvecs += proc.matvecs();
    if (bad) {
      out.status = SolverStatus::NumericalIssue;
      break;
    }
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es;
    es.computeFromTridiagonal(proc.alpha(), proc.beta(), Eigen::ComputeEigenvectors);
    out.nodes.push_back(es.eigenvalues());
    out.weights.push_back(es.eigenvectors().row(0).transpose().array().square().matrix());
    report(opts.progress, make_progress("slq", run + 1, opts.runs, "runs", out.nodes.back().dot(out.weights.back()), "mean",
                                   std::to_string(out.matvecs) + " matvecs"));
  }
  return out;
}

SpectralDensity smooth_density(const SlqQuadrature& quad, const DensityOptions& opts) {
  const char* where = "smooth_density";
  if (quad.nodes.empty() || quad.nodes.size() != quad.weights.size())
    invalid(where, "need at least one run with nodes and weights, got " + str(quad.nodes.size()) + " node sets and " +
                       str(quad.weights.size()) + " weight sets");
  if (opts.bins < 2) invalid(where, "bins must be at least 2, got " + str(opts.bins));
  if (!(opts.variance >= 0.0)) invalid(where, "variance must be >= 0, got " + str(opts.variance));
  if (!(opts.variance_factor > 0.0)) invalid(where, "variance_factor must be > 0, got " + str(opts.variance_factor));
  if (!(opts.pad_fraction >= 0.0) || !(opts.pad_sigmas >= 0.0))
    invalid(where, "padding must be >= 0, got pad_fraction = " + str(opts.pad_fraction) +
                       ", pad_sigmas = " + str(opts.pad_sigmas));

  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& nd : quad.nodes) {
    if (nd.size() == 0) continue;
    lo = std::min(lo, nd.minCoeff());
    hi = std::max(hi, nd.maxCoeff());
  }
  if (!std::isfinite(lo) || !std::isfinite(hi)) invalid(where, "nodes are empty or not finite");
  const double range = hi - lo;

  SpectralDensity d;
  d.variance = opts.variance > 0.0 ? opts.variance : opts.variance_factor * std::max(1.0, range);
  const double sigma = std::sqrt(d.variance);
  const double pad = std::max(opts.pad_fraction * range, opts.pad_sigmas * sigma);
  const double a = lo - pad, b = hi + pad;
  const std::int64_t nb = opts.bins;
  d.grid.resize(nb);
  d.spacing = (b - a) / static_cast<double>(nb - 1);
  for (std::int64_t i = 0; i < nb; ++i) d.grid(i) = a + d.spacing * static_cast<double>(i);
  d.grid(nb - 1) = b;
  d.values = Eigen::VectorXd::Zero(nb);

  // Each kernel is evaluated within 12 sigma of its node: beyond, exp(-72) ~ 5e-32 of its peak.
  constexpr double kPi = 3.14159265358979323846;
  const double norm = 1.0 / std::sqrt(2.0 * kPi * d.variance);
  const double runs = static_cast<double>(quad.nodes.size());
  for (std::size_t r = 0; r < quad.nodes.size(); ++r) {
    const Eigen::VectorXd& nd = quad.nodes[r];
    const Eigen::VectorXd& wt = quad.weights[r];
    for (Eigen::Index j = 0; j < nd.size(); ++j) {
      const double c = wt(j) * norm / runs;
      if (c == 0.0) continue;
      const auto first = static_cast<std::int64_t>(std::floor((nd(j) - 12.0 * sigma - a) / d.spacing));
      const auto last = static_cast<std::int64_t>(std::ceil((nd(j) + 12.0 * sigma - a) / d.spacing));
      for (std::int64_t i = std::max<std::int64_t>(0, first); i <= std::min(nb - 1, last); ++i) {
        const double x = d.grid(i) - nd(j);
        d.values(i) += c * std::exp(-x * x / (2.0 * d.variance));
      }
    }
  }
  d.mass = d.values.sum() * d.spacing;
  if (opts.renormalize && d.mass > 0.0) d.values /= d.mass;
  return d;
}

DensityResult spectral_density(const LinearOperator& op, const SlqOptions& slq, const DensityOptions& opts) {
  DensityResult r;
  r.quadrature = slq_quadrature(op, slq);
  // A first run that failed leaves nothing to smooth; the quadrature's status says why.
  if (!r.quadrature.nodes.empty()) r.density = smooth_density(r.quadrature, opts);
  return r;
}

}  // namespace moescope
