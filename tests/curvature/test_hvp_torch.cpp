// Hessian-vector products through the real autograd machinery against Hessians known in closed form.
// Everything runs in float64, so agreement is to rounding: 1e-10 relative unless said otherwise.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <Eigen/Dense>

#include "moescope/curvature/eigen.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/curvature/trace.hpp"

namespace moescope {
namespace {

class Hvp : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(1234); }
};

Eigen::MatrixXd to_eigen(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat64).contiguous();
  Eigen::MatrixXd m(c.size(0), c.size(1));
  for (std::int64_t i = 0; i < c.size(0); ++i)
    for (std::int64_t j = 0; j < c.size(1); ++j) m(i, j) = c[i][j].item<double>();
  return m;
}

// The full Hessian, one HVP per column.
Eigen::MatrixXd assemble(const LinearOperator& op) {
  const std::int64_t n = op.size();
  Eigen::MatrixXd h(n, n);
  for (std::int64_t j = 0; j < n; ++j) h.col(j) = op.apply(Eigen::VectorXd::Unit(n, j));
  return h;
}

TEST_F(Hvp, QuadraticLossHasHessianA) {
  const std::int64_t n = 7;
  const torch::Tensor r = torch::randn({n, n}, torch::kFloat64);
  const torch::Tensor a = r.matmul(r.t()) + torch::eye(n, torch::kFloat64);  // SPD
  torch::Tensor x = torch::randn({n}, torch::kFloat64).requires_grad_(true);
  HessianOperator op({x}, [&](std::int64_t) { return BatchLoss{0.5 * x.dot(a.mv(x)), 1}; }, 1);
  const Eigen::MatrixXd A = to_eigen(a);
  EXPECT_TRUE(assemble(op).isApprox(A, 1e-12));
  EXPECT_TRUE(torch::allclose(op.gradient(), a.mv(x), 1e-12, 1e-12));
  EXPECT_NEAR(op.loss(), 0.5 * x.dot(a.mv(x)).item<double>(), 1e-12);
  // Lanczos on the HVP operator gives A's top eigenvalues (dense eigendecomposition as the reference)
  LanczosOptions lo;
  lo.k = 3;
  const auto res = lanczos_eigs(op, lo);
  ASSERT_EQ(res.status, SolverStatus::Converged);
  const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(A).eigenvalues().reverse();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(res.eigenvalues(i), ev(i), 1e-8 * ev(0)) << i;
  // Hutch++ with m >= 3n is exact: tr(A)
  TraceOptions to;
  to.probes = 3 * n;
  EXPECT_NEAR(hutchpp_trace(op, to).estimate, A.trace(), 1e-9 * A.trace());
}

// Linear regression with mean squared error: H = 2/N [X 1]^T [X 1], whatever the batches.
TEST_F(Hvp, LinearRegressionHessianIsIndependentOfBatching) {
  const std::int64_t N = 23, d = 4;
  const torch::Tensor X = torch::randn({N, d}, torch::kFloat64), y = torch::randn({N}, torch::kFloat64);
  torch::Tensor w = torch::randn({d}, torch::kFloat64).requires_grad_(true);
  torch::Tensor b = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
  auto batched = [&](std::vector<std::int64_t> cuts) {
    return [=](std::int64_t i) {
      const auto lo = cuts[static_cast<std::size_t>(i)], hi = cuts[static_cast<std::size_t>(i) + 1];
      const torch::Tensor xb = X.slice(0, lo, hi), yb = y.slice(0, lo, hi);
      return BatchLoss{(xb.mv(w) + b - yb).pow(2).mean(), hi - lo};
    };
  };
  const torch::Tensor X1 = torch::cat({X, torch::ones({N, 1}, torch::kFloat64)}, 1);
  const Eigen::MatrixXd H = to_eigen(X1.t().matmul(X1)) * (2.0 / N);
  HessianOperator one({w, b}, batched({0, N}), 1);
  HessianOperator three({w, b}, batched({0, 5, 6, N}), 3);  // uneven batches: 5, 1, 17 samples
  HvpOptions keep;
  keep.keep_graph = true;
  HessianOperator kept({w, b}, batched({0, 10, N}), 2, keep);
  EXPECT_TRUE(assemble(one).isApprox(H, 1e-12));
  EXPECT_TRUE(assemble(three).isApprox(H, 1e-12));
  EXPECT_TRUE(assemble(kept).isApprox(H, 1e-12));
  EXPECT_NEAR(one.loss(), three.loss(), 1e-14);
  EXPECT_TRUE(torch::allclose(one.gradient(), three.gradient(), 1e-12, 1e-14));
}

// A small tanh MLP: the assembled Hessian is symmetric, matches a central finite difference of the gradient
// (error O(eps^2) = 1e-8 at eps = 1e-4 in float64), and Lanczos matches its dense eigendecomposition.
TEST_F(Hvp, MlpHessianMatchesFiniteDifferencesAndDenseEigen) {
  torch::nn::Sequential net(torch::nn::Linear(3, 5), torch::nn::Tanh(), torch::nn::Linear(5, 2));
  net->to(torch::kFloat64);
  const torch::Tensor X = torch::randn({16, 3}, torch::kFloat64);
  const torch::Tensor t = torch::randint(0, 2, {16}, torch::kLong);
  auto loss = [&](std::int64_t) { return BatchLoss{torch::nn::functional::cross_entropy(net->forward(X), t), 16}; };
  std::vector<torch::Tensor> params = net->parameters();
  HessianOperator op(params, loss, 1);
  ASSERT_EQ(op.size(), 3 * 5 + 5 + 5 * 2 + 2);
  const Eigen::MatrixXd H = assemble(op);
  EXPECT_LT((H - H.transpose()).cwiseAbs().maxCoeff(), 1e-12 * H.cwiseAbs().maxCoeff());

  const torch::Tensor v = torch::randn({op.size()}, torch::kFloat64);
  const double eps = 1e-4;
  auto grad_at = [&](double s) {
    torch::NoGradGuard g;
    const auto vs = unflatten_like(v, params);
    for (std::size_t i = 0; i < params.size(); ++i) params[i].add_(vs[i], s);
    return s;
  };
  grad_at(eps);
  const torch::Tensor gp = op.gradient();
  grad_at(-2 * eps);
  const torch::Tensor gm = op.gradient();
  grad_at(eps);
  const torch::Tensor fd = (gp - gm) / (2 * eps);
  EXPECT_LT((fd - op.hvp(v)).abs().max().item<double>(), 1e-6 * std::max(1.0, fd.abs().max().item<double>()));

  const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(H).eigenvalues().reverse();
  LanczosOptions lo;
  lo.k = 2;
  lo.tol = 1e-10;
  const auto res = lanczos_eigs(op, lo);
  ASSERT_EQ(res.status, SolverStatus::Converged);
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(res.eigenvalues(i), ev(i), 1e-8 * std::abs(ev(0))) << i;
    EXPECT_LT(res.residuals(i), 1e-6 * std::abs(ev(0)));
  }
}

TEST_F(Hvp, BadArgumentsThrow) {
  torch::Tensor x = torch::randn({3}, torch::kFloat64);
  EXPECT_THROW(HessianOperator({}, [&](std::int64_t) { return BatchLoss{x.sum(), 1}; }, 1), std::invalid_argument);
  EXPECT_THROW(HessianOperator({x}, [&](std::int64_t) { return BatchLoss{x.sum(), 1}; }, 1), std::invalid_argument);
  x.requires_grad_(true);
  EXPECT_THROW(HessianOperator({x}, [&](std::int64_t) { return BatchLoss{x.sum(), 1}; }, 0), std::invalid_argument);
}

}  // namespace
}  // namespace moescope
