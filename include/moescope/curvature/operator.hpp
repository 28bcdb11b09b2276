#pragma once
// Matrix-free symmetric operators: what every curvature solver sees instead of a matrix.
// A Hessian-vector product is one (wrapped elsewhere, with torch); DenseOperator serves tests and users.
#include <atomic>
#include <cstdint>
#include <functional>

#include <Eigen/Dense>

#include "moescope/util/progress.hpp"

namespace moescope {

/// Outcome of a numerical routine; numbers are never returned silently without one.
/// Converged: the stopping rule was met (for fixed-budget estimators: the budget was spent normally).
/// NotConverged: the iteration budget ran out first; results are the best available.
/// NumericalIssue: a non-finite value or a breakdown the method cannot recover from.
enum class SolverStatus { Converged, NotConverged, NumericalIssue };

/// "converged", "not_converged", "numerical_issue".
const char* status_name(SolverStatus s);


/// A real symmetric n x n operator known only through products y = A x.
/// Implement apply_impl (and, where batching pays, apply_block_impl); callers use apply / apply_block,
/// which count every column as one matvec. Counting is atomic; applying concurrently is up to the
/// implementation.
class LinearOperator {
 public:
  virtual ~LinearOperator() = default;

  /// Dimension n.
  virtual std::int64_t size() const = 0;

  /// y = A x; x and y hold size() doubles and must not overlap.
  void apply(const double* x, double* y) const {
    matvecs_.fetch_add(1, std::memory_order_relaxed);
    apply_impl(x, y);
  }
  /// Y = A X for `ncols` column-major vectors (leading dimension size()); counts ncols matvecs.
  void apply_block(const double* x, double* y, std::int64_t ncols) const {
    matvecs_.fetch_add(ncols, std::memory_order_relaxed);
    apply_block_impl(x, y, ncols);
  }
  /// Eigen conveniences over apply / apply_block. Throws std::invalid_argument on a size mismatch.
  Eigen::VectorXd apply(const Eigen::VectorXd& x) const;
  Eigen::MatrixXd apply_block(const Eigen::MatrixXd& x) const;

  /// Matvecs since construction or the last reset_matvecs().
  std::int64_t matvecs() const { return matvecs_.load(std::memory_order_relaxed); }
  void reset_matvecs() const { matvecs_.store(0, std::memory_order_relaxed); }

 protected:
  virtual void apply_impl(const double* x, double* y) const = 0;
  /// Default: one apply_impl per column.
  virtual void apply_block_impl(const double* x, double* y, std::int64_t ncols) const;

 private:
  mutable std::atomic<std::int64_t> matvecs_{0};
};

/// A LinearOperator over an explicit symmetric matrix (tests, small problems, reference answers).
class DenseOperator final : public LinearOperator {
 public:
  /// Throws std::invalid_argument unless `a` is square, non-empty and symmetric to within
  /// 1e-10 * max(1, max |a_ij|) (asymmetry from forming Q D Q^T in floating point passes).
  explicit DenseOperator(Eigen::MatrixXd a);
  std::int64_t size() const override { return a_.rows(); }
  const Eigen::MatrixXd& matrix() const { return a_; }

 protected:
  void apply_impl(const double* x, double* y) const override;
  void apply_block_impl(const double* x, double* y, std::int64_t ncols) const override;

 private:
  Eigen::MatrixXd a_;
};

/// A LinearOperator over a function y = f(x) (the function must be symmetric-linear; not checked).
class FunctionOperator final : public LinearOperator {
 public:
  using Fn = std::function<void(const double* x, double* y)>;
  /// Throws std::invalid_argument if n <= 0 or fn is empty.
  FunctionOperator(std::int64_t n, Fn fn);
  std::int64_t size() const override { return n_; }

 protected:
  void apply_impl(const double* x, double* y) const override { fn_(x, y); }

 private:
  std::int64_t n_;
  Fn fn_;
};

/// Spectra's operator concept (rows(), cols(), perform_op) over a LinearOperator, so that
/// Spectra::SymEigsSolver<SpectraAdapter> runs matrix-free. Counts its own calls as well.
class SpectraAdapter {
 public:
  using Scalar = double;
  explicit SpectraAdapter(const LinearOperator& op) : op_(op) {}
  Eigen::Index rows() const { return static_cast<Eigen::Index>(op_.size()); }
  Eigen::Index cols() const { return static_cast<Eigen::Index>(op_.size()); }
  void perform_op(const double* x_in, double* y_out) const {
    ++calls_;
    op_.apply(x_in, y_out);
  }
  std::int64_t calls() const { return calls_; }

 private:
  const LinearOperator& op_;
  mutable std::int64_t calls_ = 0;
};

}  // namespace moescope
