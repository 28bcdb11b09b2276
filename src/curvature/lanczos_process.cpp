#include "lanczos_process.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moescope::detail {

LanczosProcess::LanczosProcess(const LinearOperator& op, std::int64_t max_steps)
    : op_(op), n_(op.size()), max_steps_(std::min(max_steps, op.size())) {
  alpha_.resize(max_steps_);
  beta_.resize(max_steps_);
}

void LanczosProcess::ensure_capacity(std::int64_t cols) {
  if (v_.cols() >= cols) return;
  // Grow geometrically: the basis may be large, but copies stay amortised O(1) per column.
  const std::int64_t cap = std::min<std::int64_t>(max_steps_ + 1, std::max<std::int64_t>(cols, 2 * v_.cols() + 8));
  v_.conservativeResize(n_, cap);
}

bool LanczosProcess::start(const Eigen::VectorXd& v0) {
  const double nrm = v0.norm();
  if (!(nrm > 0.0) || !std::isfinite(nrm)) return false;
  steps_ = 0;
  matvecs_ = 0;
  anorm_ = 0.0;
  ensure_capacity(1);
  v_.col(0) = v0 / nrm;
  return true;
}

Eigen::VectorXd LanczosProcess::orthogonalise(Eigen::VectorXd& w, std::int64_t cols) const {
  const auto basis = v_.leftCols(cols);
  Eigen::VectorXd h = basis.transpose() * w;
  w.noalias() -= basis * h;
  // Second pass: "twice is enough" restores orthogonality to rounding level.
  const Eigen::VectorXd h2 = basis.transpose() * w;
  w.noalias() -= basis * h2;
  h += h2;
  return h;
}

LanczosProcess::Step LanczosProcess::step() {
  const std::int64_t j = steps_;
  Eigen::VectorXd w(n_);
  op_.apply(v_.col(j).data(), w.data());
  ++matvecs_;
  const double wnorm = w.norm();
  if (!std::isfinite(wnorm)) return Step::NonFinite;
  anorm_ = std::max(anorm_, wnorm);
  const Eigen::VectorXd h = orthogonalise(w, j + 1);
  alpha_(j) = h(j);
  const double b = w.norm();
  beta_(j) = b;
  steps_ = j + 1;
  if (!std::isfinite(b) || !std::isfinite(alpha_(j))) return Step::NonFinite;
  // What survives two Gram-Schmidt passes below this level is rounding noise, not a new direction.
  const double tiny = 64.0 * std::numeric_limits<double>::epsilon() * anorm_;
  if (b <= tiny || steps_ >= n_) {
    beta_(j) = 0.0;
    return Step::Breakdown;
  }
  if (steps_ < max_steps_) {
    ensure_capacity(steps_ + 1);
    v_.col(steps_) = w / b;
  }
  return Step::Ok;
}

bool LanczosProcess::restart(Rng& rng) {
  if (steps_ >= max_steps_ || steps_ >= n_) return false;
  for (int attempt = 0; attempt < 3; ++attempt) {
    Eigen::VectorXd r(n_);
    rng.fill_gaussian(r.data(), n_);
    const double before = r.norm();
    orthogonalise(r, steps_);
    const double after = r.norm();
    // A random vector keeps about sqrt((n - steps) / n) of its norm; far less means it fell into the span.
    if (after > 1e-8 * before) {
      ensure_capacity(steps_ + 1);
      v_.col(steps_) = r / after;
        beta_(steps_ - 1) = 0.0;
      return true;
    }
  }
  return false;
}

Eigen::MatrixXd LanczosProcess::combine(const Eigen::MatrixXd& coefficients) const {
  return v_.leftCols(steps_) * coefficients;
}

}  // namespace moescope::detail
