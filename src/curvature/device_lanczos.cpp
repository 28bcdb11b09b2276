#include "moescope/curvature/device_lanczos.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "moescope/curvature/hvp.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"

namespace moescope {

namespace {

// The Lanczos recurrence of detail::LanczosProcess with the basis as rows of one device tensor.
class TorchLanczos {
 public:
  enum class Step { Ok, Breakdown, NonFinite };

  TorchLanczos(const TensorOperator& op, std::int64_t n, std::int64_t max_steps, torch::TensorOptions to)
      : op_(op), n_(n), max_steps_(std::min(max_steps, n)), to_(to) {
    alpha_.resize(max_steps_);
    beta_.resize(max_steps_);
  }

  bool start(const torch::Tensor& v0) {
    const double nrm = v0.norm().item<double>();
    if (!(nrm > 0.0) || !std::isfinite(nrm)) return false;
    steps_ = 0;
    anorm_ = 0.0;
    ensure_capacity(1);
    v_[0].copy_(v0 / nrm);
    return true;
  }

  Step step() {
    const std::int64_t j = steps_;
    torch::Tensor w = apply(v_[j]);
    const double wnorm = w.norm().item<double>();
    if (!std::isfinite(wnorm)) return Step::NonFinite;
    anorm_ = std::max(anorm_, wnorm);
    const torch::Tensor h = orthogonalise(w, j + 1);
    alpha_(j) = h[j].item<double>();
    const double b = w.norm().item<double>();
    beta_(j) = b;
    steps_ = j + 1;
    if (!std::isfinite(b) || !std::isfinite(alpha_(j))) return Step::NonFinite;
    // What survives two Gram-Schmidt passes below this level is rounding noise, not a new direction; the
    // unit roundoff of the basis dtype sets the level (float32 bases break down at ~1e-5 relative).
    const double eps = to_.dtype() == torch::kFloat32 ? std::numeric_limits<float>::epsilon()
                                                      : std::numeric_limits<double>::epsilon();
    const double tiny = 64.0 * eps * anorm_;
    if (b <= tiny || steps_ >= n_) {
      beta_(j) = 0.0;
      return Step::Breakdown;
    }
    if (steps_ < max_steps_) {
      ensure_capacity(steps_ + 1);
      v_[steps_].copy_(w / b);
    }
    return Step::Ok;
  }

  bool restart(Rng& rng) {
    if (steps_ >= max_steps_ || steps_ >= n_) return false;
    for (int attempt = 0; attempt < 3; ++attempt) {
      torch::Tensor r = host_gaussian(rng);
      const double before = r.norm().item<double>();
      orthogonalise(r, steps_);
      const double after = r.norm().item<double>();
      // A random vector keeps about sqrt((n - steps) / n) of its norm; far less means it fell into the span.
      if (after > 1e-8 * before) {
        ensure_capacity(steps_ + 1);
        v_[steps_].copy_(r / after);
        beta_(steps_ - 1) = 0.0;
        return true;
      }
    }
    return false;
  }

  // n x c on the device: v_0..v_{steps-1} combined by the host coefficients (steps x c).
  torch::Tensor combine(const Eigen::MatrixXd& coefficients) const {
    const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> c = coefficients;
    const torch::Tensor ct = torch::from_blob(const_cast<double*>(c.data()), {c.rows(), c.cols()}, torch::kFloat64)
                                 .to(to_);
    return v_.narrow(0, 0, steps_).t().mm(ct);
  }

  torch::Tensor host_gaussian(Rng& rng) const {
    torch::Tensor h = torch::empty({n_}, torch::kFloat64);
    rng.fill_gaussian(h.data_ptr<double>(), n_);
    return h.to(to_);
  }

  torch::Tensor apply(const torch::Tensor& x) {
    ++matvecs_;
    // The caller's NoGradGuard covers the basis only: an HVP differentiates inside the operator.
    torch::AutoGradMode grad_mode(true);
    torch::Tensor y = op_(x);
    TORCH_CHECK(y.numel() == n_, "device_lanczos_eigs: the operator returned ", y.numel(), " values for n = ", n_);
    return y.detach().reshape({n_}).to(to_);
  }

  std::int64_t steps() const { return steps_; }
  std::int64_t matvecs() const { return matvecs_; }
  Eigen::VectorXd alpha() const { return alpha_.head(steps_); }
  Eigen::VectorXd beta() const { return beta_.head(steps_ > 0 ? steps_ - 1 : 0); }
  double beta_next() const { return steps_ > 0 ? beta_(steps_ - 1) : 0.0; }

 private:
  // Two passes of classical Gram-Schmidt against the first `cols` basis rows, as two matrix-vector products
  // each (one kernel per product on a GPU); returns the accumulated coefficients.
  torch::Tensor orthogonalise(torch::Tensor& w, std::int64_t cols) const {
    const torch::Tensor basis = v_.narrow(0, 0, cols);
    torch::Tensor h = basis.mv(w);
    w = w.addmv(basis.t(), h, /*beta=*/1, /*alpha=*/-1);
    const torch::Tensor h2 = basis.mv(w);
    w = w.addmv(basis.t(), h2, 1, -1);
    return h + h2;
  }

  void ensure_capacity(std::int64_t rows) {
    const std::int64_t have = v_.defined() ? v_.size(0) : 0;
    if (have >= rows) return;
    // Grow geometrically so that copies stay amortised O(1) per vector; never beyond the cap.
    const std::int64_t cap =
        std::min<std::int64_t>(max_steps_ + 1, std::max<std::int64_t>(rows, 2 * have + 8));
    torch::Tensor grown = torch::empty({cap, n_}, to_);
    if (have > 0) grown.narrow(0, 0, have).copy_(v_);
    v_ = grown;
  }

  const TensorOperator& op_;
  std::int64_t n_;
  std::int64_t max_steps_;
  torch::TensorOptions to_;
  std::int64_t steps_ = 0;
  std::int64_t matvecs_ = 0;
  double anorm_ = 0.0;
  torch::Tensor v_;  // [capacity, n]: row j is v_j
  Eigen::VectorXd alpha_, beta_;
};

}  // namespace

EigenResult DeviceEigenResult::to_eigen_result() const {
  EigenResult r;
  r.method = method;
  r.status = status;
  r.eigenvalues = eigenvalues;
  r.residuals = residuals;
  r.residual_estimates = residual_estimates;
  r.iterations = iterations;
  r.matvecs = matvecs;
  if (eigenvectors.defined() && eigenvectors.numel() > 0) {
    // Column-major n x c host copy: the row-major [c, n] transpose has exactly that memory layout.
    const torch::Tensor t = eigenvectors.t().to(torch::kCPU, torch::kFloat64).contiguous();
    r.eigenvectors = Eigen::Map<const Eigen::MatrixXd>(t.data_ptr<double>(), eigenvectors.size(0), eigenvectors.size(1));
  } else {
    r.eigenvectors.resize(0, eigenvalues.size());
  }
  return r;
}

DeviceEigenResult device_lanczos_eigs(const TensorOperator& op, std::int64_t n, const torch::Device& device,
                                    const DeviceLanczosOptions& opts) {
  if (n <= 0) invalid_argument("device_lanczos_eigs", "n must be positive, got " + to_text(n));
  if (opts.k <= 0 || opts.k > n) invalid_argument("device_lanczos_eigs", "k must be in [1, n] = [1, " + to_text(n) + "], got k = " + to_text(opts.k));
  if (!(opts.tol > 0.0) || !std::isfinite(opts.tol)) invalid_argument("device_lanczos_eigs", "tol must be positive and finite, got " + to_text(opts.tol));
  const std::int64_t cap = std::min(opts.max_steps, n);
  if (cap < opts.k) invalid_argument("device_lanczos_eigs", "max_steps (" + to_text(opts.max_steps) + ") must be at least k (" + to_text(opts.k) + ")");
  if (opts.check_every <= 0) invalid_argument("device_lanczos_eigs", "check_every must be positive, got " + to_text(opts.check_every));
  if (opts.dtype != torch::kFloat64 && opts.dtype != torch::kFloat32)
    invalid_argument("device_lanczos_eigs", "dtype must be float32 or float64, got " + to_text(opts.dtype));
  if (!op) invalid_argument("device_lanczos_eigs", "empty operator");

  torch::NoGradGuard no_grad;  // the basis never needs a graph (an HVP builds its own inside the operator)
  const torch::TensorOptions to = torch::TensorOptions().dtype(opts.dtype).device(device);
  DeviceEigenResult res;
  Rng rng(opts.seed);
  TorchLanczos proc(op, n, cap, to);
  proc.start(proc.host_gaussian(rng));

  const RitzPairs rp = detail::run_lanczos(proc, rng, opts, cap, "device_lanczos", res.status);
  res.iterations = proc.steps();
  res.matvecs = proc.matvecs();
  if (res.status == SolverStatus::NumericalIssue) return res;  // no numbers without meaning

  res.eigenvalues = rp.values;
  res.residual_estimates = rp.bounds;
  torch::Tensor vecs = proc.combine(rp.coefficients);  // [n, c]
  vecs = vecs / vecs.norm(2, {0}, /*keepdim=*/true);
  res.residuals.resize(vecs.size(1));
  for (std::int64_t i = 0; i < vecs.size(1); ++i) {
    const torch::Tensor v = vecs.select(1, i).contiguous();
    const torch::Tensor av = proc.apply(v);
    const double r = (av - res.eigenvalues(i) * v).norm().item<double>();
    if (!std::isfinite(r)) res.status = SolverStatus::NumericalIssue;
    res.residuals(i) = r;
  }
  res.eigenvectors = vecs.contiguous();
  res.matvecs = proc.matvecs();
  return res;
}

DeviceEigenResult device_lanczos_eigs(const HessianOperator& op, const DeviceLanczosOptions& opts) {
  const torch::Device device = op.options().device();
  const TensorOperator f = [&op](const torch::Tensor& x) { return op.hvp(x); };
  return device_lanczos_eigs(f, op.size(), device, opts);
}

}  // namespace moescope
