#pragma once
// The Lanczos recurrence with full reorthogonalisation, shared by lanczos_eigs and the SLQ density.
#include <cstdint>

#include <Eigen/Dense>

#include "moescope/curvature/operator.hpp"
#include "moescope/util/random.hpp"

namespace moescope::detail {

class LanczosProcess {
 public:
  enum class Step { Ok, Breakdown, NonFinite };

  LanczosProcess(const LinearOperator& op, std::int64_t max_steps);

  /// Sets v_0 = v0 / ||v0||. Returns false if v0 is zero or not finite.
  bool start(const Eigen::VectorXd& v0);
  /// w = A v_j, orthogonalised twice against v_0..v_j; alpha_j = accumulated v_j^T w, beta_j = ||w||.
  /// Appends v_{j+1} = w / beta_j unless beta_j is at rounding level (Breakdown) or the cap is reached.
  Step step();
  /// After a breakdown: v_{j+1} = a random vector orthogonal to the basis, and beta_j := 0 so that T
  /// decouples. Returns false when the basis already spans the space.
  bool restart(Rng& rng);

  std::int64_t steps() const { return steps_; }
  /// Products computed, including one that came back non-finite.
  std::int64_t matvecs() const { return matvecs_; }
  /// T's diagonal and off-diagonal (size steps-1) and the last residual norm.
  Eigen::VectorXd alpha() const { return alpha_.head(steps_); }
  Eigen::VectorXd beta() const { return beta_.head(steps_ > 0 ? steps_ - 1 : 0); }
  double beta_next() const { return steps_ > 0 ? beta_(steps_ - 1) : 0.0; }
  /// v_0..v_{steps-1} times coefficients (steps x c).
  Eigen::MatrixXd combine(const Eigen::MatrixXd& coefficients) const;

 private:
  // Two passes of classical Gram-Schmidt against the first `cols` basis vectors; returns the coefficients.
  Eigen::VectorXd orthogonalise(Eigen::VectorXd& w, std::int64_t cols) const;
  void ensure_capacity(std::int64_t cols);

  const LinearOperator& op_;
  std::int64_t n_;
  std::int64_t max_steps_;
  std::int64_t steps_ = 0;     // completed steps = columns of T
  std::int64_t matvecs_ = 0;
  double anorm_ = 0.0;         // max ||A v_j||, the scale for the breakdown test
  Eigen::MatrixXd v_;
  Eigen::VectorXd alpha_, beta_;
};

}  // namespace moescope::detail
