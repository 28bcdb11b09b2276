#include "moescope/curvature/operator.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace moescope {

const char* status_name(SolverStatus s) {
  switch (s) {
    case SolverStatus::Converged: return "converged";
    case SolverStatus::NotConverged: return "not_converged";
    case SolverStatus::NumericalIssue: return "numerical_issue";
  }
  return "unknown";
}

Eigen::VectorXd LinearOperator::apply(const Eigen::VectorXd& x) const {
  if (x.size() != size()) {
    std::ostringstream msg;
    msg << "LinearOperator::apply: vector has " << x.size() << " entries, operator size is " << size();
    throw std::invalid_argument(msg.str());
  }
  Eigen::VectorXd y(x.size());
  apply(x.data(), y.data());
  return y;
}

Eigen::MatrixXd LinearOperator::apply_block(const Eigen::MatrixXd& x) const {
  if (x.rows() != size()) {
    std::ostringstream msg;
    msg << "LinearOperator::apply_block: block has " << x.rows() << " rows, operator size is " << size();
    throw std::invalid_argument(msg.str());
  }
  Eigen::MatrixXd y(x.rows(), x.cols());
  if (x.cols() > 0) apply_block(x.data(), y.data(), x.cols());
  return y;
}

void LinearOperator::apply_block_impl(const double* x, double* y, std::int64_t ncols) const {
  const std::int64_t n = size();
  for (std::int64_t j = 0; j < ncols; ++j) apply_impl(x + j * n, y + j * n);
}

DenseOperator::DenseOperator(Eigen::MatrixXd a) : a_(std::move(a)) {
  if (a_.rows() != a_.cols() || a_.rows() == 0) {
    std::ostringstream msg;
    msg << "DenseOperator: matrix must be square and non-empty, got " << a_.rows() << " x " << a_.cols();
    throw std::invalid_argument(msg.str());
  }
  const double scale = std::max(1.0, a_.cwiseAbs().maxCoeff());
  const double asym = (a_ - a_.transpose()).cwiseAbs().maxCoeff();
  if (!(asym <= 1e-10 * scale)) {
    std::ostringstream msg;
    msg << "DenseOperator: matrix is not symmetric: max |a_ij - a_ji| = " << asym << " (max |a_ij| = " << scale
        << ")";
    throw std::invalid_argument(msg.str());
  }
}

void DenseOperator::apply_impl(const double* x, double* y) const {
  const Eigen::Index n = a_.rows();
  Eigen::Map<Eigen::VectorXd>(y, n).noalias() = a_ * Eigen::Map<const Eigen::VectorXd>(x, n);
}

void DenseOperator::apply_block_impl(const double* x, double* y, std::int64_t ncols) const {
  const Eigen::Index n = a_.rows();
  Eigen::Map<Eigen::MatrixXd>(y, n, ncols).noalias() = a_ * Eigen::Map<const Eigen::MatrixXd>(x, n, ncols);
}

FunctionOperator::FunctionOperator(std::int64_t n, Fn fn) : n_(n), fn_(std::move(fn)) {
  if (n_ <= 0) throw std::invalid_argument("FunctionOperator: size must be positive, got " + std::to_string(n_));
  if (!fn_) throw std::invalid_argument("FunctionOperator: empty function");
}

}  // namespace moescope
