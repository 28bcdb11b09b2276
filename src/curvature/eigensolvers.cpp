#include "moescope/curvature/eigensolvers.hpp"

#include <Spectra/SymEigsSolver.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "lanczos_process.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"

namespace moescope {

const char* target_name(EigenTarget t) {
  switch (t) {
    case EigenTarget::LargestAlge: return "largest_alge";
    case EigenTarget::LargestMagn: return "largest_magn";
    case EigenTarget::SmallestAlge: return "smallest_alge";
  }
  return "unknown";
}

namespace {

void check_k_tol(const char* where, std::int64_t k, std::int64_t n, double tol) {
  if (k <= 0 || k > n) invalid_argument(where, "k must be in [1, n] = [1, " + to_text(n) + "], got k = " + to_text(k));
  if (!(tol > 0.0) || !std::isfinite(tol)) invalid_argument(where, "tol must be positive and finite, got " + to_text(tol));
}

// Indices of the ascending values `theta` in the order the target wants them.
std::vector<Eigen::Index> target_order(const Eigen::VectorXd& theta, EigenTarget target) {
  std::vector<Eigen::Index> idx(theta.size());
  std::iota(idx.begin(), idx.end(), 0);
  switch (target) {
    case EigenTarget::LargestAlge:
      std::reverse(idx.begin(), idx.end());
      break;
    case EigenTarget::SmallestAlge:
      break;
    case EigenTarget::LargestMagn:
      // Ties in |value| go to the positive one, so the order does not depend on rounding of the sort.
      std::stable_sort(idx.begin(), idx.end(), [&](Eigen::Index a, Eigen::Index b) {
        const double fa = std::abs(theta(a)), fb = std::abs(theta(b));
        if (fa != fb) return fa > fb;
        return theta(a) > theta(b);
      });
      break;
  }
  return idx;
}

bool all_finite(const Eigen::MatrixXd& m) { return m.allFinite(); }

// One block matvec over the final vectors: values (Rayleigh quotients if requested) and true residuals.
// Returns false if the operator produced a non-finite number.
bool measure_residuals(const LinearOperator& op, const Eigen::MatrixXd& vectors, Eigen::VectorXd& values,
                       bool rayleigh, Eigen::VectorXd& residuals) {
  residuals.resize(vectors.cols());
  if (vectors.cols() == 0) return true;
  const Eigen::MatrixXd av = op.apply_block(vectors);
  if (!all_finite(av)) return false;
  for (Eigen::Index i = 0; i < vectors.cols(); ++i) {
    if (rayleigh) values(i) = vectors.col(i).dot(av.col(i));
    residuals(i) = (av.col(i) - values(i) * vectors.col(i)).norm();
  }
  return values.allFinite();
}

// Spectra cannot be told to stop, so a non-finite product ends its run by this exception.
struct NonFiniteProduct {};

class CheckedSpectraOp {
 public:
  using Scalar = double;
  explicit CheckedSpectraOp(const LinearOperator& op) : inner_(op) {}
  Eigen::Index rows() const { return inner_.rows(); }
  Eigen::Index cols() const { return inner_.cols(); }
  void perform_op(const double* x, double* y) const {
    inner_.perform_op(x, y);
    if (!Eigen::Map<const Eigen::VectorXd>(y, rows()).allFinite()) throw NonFiniteProduct{};
  }
  std::int64_t calls() const { return inner_.calls(); }

 private:
  SpectraAdapter inner_;
};

Eigen::VectorXd start_vector(std::int64_t n, std::uint64_t seed) {
  Rng rng(seed);
  Eigen::VectorXd v(n);
  rng.fill_gaussian(v.data(), n);
  return v;
}

}  // namespace

RitzPairs select_ritz_pairs(const Eigen::VectorXd& alpha, const Eigen::VectorXd& beta, double beta_next,
                            EigenTarget target, std::int64_t k, double tol) {
  const Eigen::Index m = alpha.size();
  if (m == 0 || beta.size() != m - 1)
    invalid_argument("select_ritz_pairs", "need alpha of size m >= 1 and beta of size m - 1, got " + to_text(m) + " and " +
                                     to_text(beta.size()));
  if (k <= 0) invalid_argument("select_ritz_pairs", "k must be positive, got " + to_text(k));
  if (!(tol > 0.0)) invalid_argument("select_ritz_pairs", "tol must be positive, got " + to_text(tol));

  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es;
  es.computeFromTridiagonal(alpha, beta, Eigen::ComputeEigenvectors);
  const Eigen::VectorXd& theta = es.eigenvalues();
  const Eigen::MatrixXd& s = es.eigenvectors();
  const auto order = target_order(theta, target);

  const Eigen::Index c = std::min<Eigen::Index>(k, m);
  RitzPairs out;
  out.values.resize(c);
  out.coefficients.resize(m, c);
  out.bounds.resize(c);
  // Relative test with a floor, so that exactly-zero eigenvalues (common in Hessians) can still converge.
  const double floor = std::pow(std::numeric_limits<double>::epsilon(), 2.0 / 3.0) * theta.cwiseAbs().maxCoeff();
  bool ok = (c == k);
  for (Eigen::Index i = 0; i < c; ++i) {
    const Eigen::Index j = order[i];
    out.values(i) = theta(j);
    out.coefficients.col(i) = s.col(j);
    out.bounds(i) = std::abs(beta_next * s(m - 1, j));
    if (!(out.bounds(i) <= tol * std::max(std::abs(theta(j)), floor))) ok = false;
  }
  out.converged = ok;
  return out;
}

EigenResult spectra_eigs(const LinearOperator& op, const SpectraOptions& opts) {
  const std::int64_t n = op.size();
  const char* where = "spectra_eigs";
  check_k_tol(where, opts.k, n, opts.tol);
  if (opts.k >= n) invalid_argument(where, "Spectra needs k < n, got k = " + to_text(opts.k) + ", n = " + to_text(n));
  const std::int64_t ncv = opts.ncv > 0 ? opts.ncv : std::min<std::int64_t>(n, std::max<std::int64_t>(2 * opts.k + 1, 20));
  if (ncv <= opts.k || ncv > n)
    invalid_argument(where, "ncv must satisfy k < ncv <= n, got ncv = " + to_text(ncv) + ", k = " + to_text(opts.k) + ", n = " + to_text(n));
  if (opts.max_restarts <= 0) invalid_argument(where, "max_restarts must be positive, got " + to_text(opts.max_restarts));

  Spectra::SortRule rule = Spectra::SortRule::LargestAlge;
  if (opts.target == EigenTarget::LargestMagn) rule = Spectra::SortRule::LargestMagn;
  if (opts.target == EigenTarget::SmallestAlge) rule = Spectra::SortRule::SmallestAlge;

  CheckedSpectraOp adapter(op);
  Spectra::SymEigsSolver<CheckedSpectraOp> eigs(adapter, opts.k, ncv);
  const Eigen::VectorXd v0 = start_vector(n, opts.seed);
  EigenResult res;
  res.method = "spectra";
  try {
    eigs.init(v0.data());
    eigs.compute(rule, opts.max_restarts, opts.tol, rule);
  } catch (const NonFiniteProduct&) {
    res.status = SolverStatus::NumericalIssue;
    res.matvecs = adapter.calls();
    return res;
  }
  res.iterations = eigs.num_iterations();
  switch (eigs.info()) {
    case Spectra::CompInfo::Successful: res.status = SolverStatus::Converged; break;
    case Spectra::CompInfo::NotConverging: res.status = SolverStatus::NotConverged; break;
    default: res.status = SolverStatus::NumericalIssue; break;
  }
  res.eigenvalues = eigs.eigenvalues();
  res.eigenvectors = eigs.eigenvectors();
  for (Eigen::Index i = 0; i < res.eigenvectors.cols(); ++i) res.eigenvectors.col(i).normalize();
  res.residual_estimates = Eigen::VectorXd::Constant(res.eigenvalues.size(), std::numeric_limits<double>::quiet_NaN());
  if (!measure_residuals(op, res.eigenvectors, res.eigenvalues, false, res.residuals))
    res.status = SolverStatus::NumericalIssue;
  res.matvecs = adapter.calls() + res.eigenvectors.cols();
  return res;
}

EigenResult lanczos_eigs(const LinearOperator& op, const LanczosOptions& opts) {
  const std::int64_t n = op.size();
  const char* where = "lanczos_eigs";
  check_k_tol(where, opts.k, n, opts.tol);
  const std::int64_t cap = std::min(opts.max_steps, n);
  if (cap < opts.k)
    invalid_argument(where, "max_steps (" + to_text(opts.max_steps) + ") must be at least k (" + to_text(opts.k) + ")");
  if (opts.check_every <= 0) invalid_argument(where, "check_every must be positive, got " + to_text(opts.check_every));

  EigenResult res;
  res.method = "lanczos";
  Rng rng(opts.seed);
  Eigen::VectorXd v0(n);
  rng.fill_gaussian(v0.data(), n);
  detail::LanczosProcess proc(op, cap);
  proc.start(v0);

  const RitzPairs rp = detail::run_lanczos(proc, rng, opts, cap, "lanczos", res.status);
  res.iterations = proc.steps();
  res.matvecs = proc.matvecs();
  if (res.status == SolverStatus::NumericalIssue) return res;  // no numbers without meaning

  res.eigenvalues = rp.values;
  res.residual_estimates = rp.bounds;
  res.eigenvectors = proc.combine(rp.coefficients);
  for (Eigen::Index i = 0; i < res.eigenvectors.cols(); ++i) res.eigenvectors.col(i).normalize();
  if (!measure_residuals(op, res.eigenvectors, res.eigenvalues, false, res.residuals))
    res.status = SolverStatus::NumericalIssue;
  res.matvecs += res.eigenvectors.cols();
  return res;
}

namespace {
// v <- v - Q Q^T v twice (the found vectors are orthonormal), then normalise; returns the norm before
// normalising.
double deflate_normalise(Eigen::VectorXd& v, const Eigen::MatrixXd& found, Eigen::Index nfound) {
  if (nfound > 0) {
    const auto q = found.leftCols(nfound);
    for (int pass = 0; pass < 2; ++pass) v.noalias() -= q * (q.transpose() * v);
  }
  const double nrm = v.norm();
  if (nrm > 0.0) v /= nrm;
  return nrm;
}
}  // namespace

EigenResult power_eigs(const LinearOperator& op, const PowerOptions& opts) {
  const std::int64_t n = op.size();
  const char* where = "power_eigs";
  check_k_tol(where, opts.k, n, opts.tol);
  if (opts.max_iter <= 0) invalid_argument(where, "max_iter must be positive, got " + to_text(opts.max_iter));

  EigenResult res;
  res.method = "power";
  res.status = SolverStatus::Converged;
  Rng rng(opts.seed);
  Eigen::MatrixXd found(n, opts.k);
  Eigen::VectorXd values(opts.k);
  res.residual_estimates.resize(opts.k);
  Eigen::VectorXd v(n), av(n);
  std::int64_t matvecs = 0;

  for (std::int64_t p = 0; p < opts.k; ++p) {
    rng.fill_gaussian(v.data(), n);
    deflate_normalise(v, found, p);
    double lambda_prev = 0.0, lambda = 0.0, measure = std::numeric_limits<double>::quiet_NaN();
    bool converged = false;
    for (std::int64_t it = 1; it <= opts.max_iter; ++it) {
      if (!(deflate_normalise(v, found, p) > 0.0)) {
        // The start fell entirely into the found space (only possible when p == n).
        res.status = SolverStatus::NumericalIssue;
        break;
      }
      op.apply(v.data(), av.data());
      ++matvecs;
      ++res.iterations;
      lambda = v.dot(av);
      if (!std::isfinite(lambda) || !av.allFinite()) {
        res.status = SolverStatus::NumericalIssue;
        break;
      }
      if (opts.rule == PowerStopRule::EigenvalueChange) {
        if (it > 1) {
          measure = std::abs(lambda - lambda_prev) / (std::abs(lambda_prev) + 1e-6);
          converged = measure < opts.tol;
        }
      } else {
        measure = (av - lambda * v).norm() / std::abs(lambda);
        converged = measure <= opts.tol;
      }
      report(opts.progress, make_progress("power", it, opts.max_iter, "iterations", lambda, "Rayleigh quotient",
                                    "pair " + std::to_string(p + 1) + ", " + std::to_string(matvecs) + " matvecs"));
      const double nrm = av.norm();
      if (nrm == 0.0) {
        // A v = 0 exactly: v is an eigenvector for 0 in the deflated space; keep it.
        converged = true;
        measure = 0.0;
        break;
      }
      v = av / nrm;
      if (converged) break;
      lambda_prev = lambda;
    }
    if (res.status == SolverStatus::NumericalIssue) break;
    if (!converged) res.status = SolverStatus::NotConverged;
    deflate_normalise(v, found, p);
    found.col(p) = v;
    values(p) = lambda;
    res.residual_estimates(p) = measure;
  }
  res.matvecs = matvecs;
  if (res.status == SolverStatus::NumericalIssue) return res;

  res.eigenvectors = std::move(found);
  res.eigenvalues = std::move(values);
  if (!measure_residuals(op, res.eigenvectors, res.eigenvalues, true, res.residuals))
    res.status = SolverStatus::NumericalIssue;
  res.matvecs += res.eigenvectors.cols();
  return res;
}

}  // namespace moescope
