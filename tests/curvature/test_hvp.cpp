// Hessian-vector products through the real autograd machinery against Hessians known in closed form.
// Everything runs in float64, so agreement is to rounding: 1e-10 relative unless said otherwise.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <Eigen/Dense>

#include "moescope/curvature/eigensolvers.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/curvature/trace.hpp"
#include "moescope/model/moe.hpp"
#include "moescope/model/params.hpp"
#include "support/finite_difference.hpp"

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
  const auto shift = [&](double s) {
    torch::NoGradGuard g;
    const auto vs = unflatten_like(v, params);
    for (std::size_t i = 0; i < params.size(); ++i) params[i].add_(vs[i], s);
  };
  const torch::Tensor fd = moescope::testing::central_directional([&] { return op.gradient(); }, shift, 1e-4);
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

// Regression: grads_of called autograd::grad without allow_unused, so a Hessian over a top-k expert that received
// no token in a batch (or any parameter the loss does not reach) threw. Such a parameter's gradient and Hessian
// blocks are zero, with kept graphs or fresh ones.
TEST_F(Hvp, ParametersTheLossDoesNotReachHaveZeroBlocks) {
  torch::nn::Linear used(3, 2), unused(3, 2);
  used->to(torch::kFloat64);
  unused->to(torch::kFloat64);
  const torch::Tensor X = torch::randn({8, 3}, torch::kFloat64);
  auto loss = [&](std::int64_t) { return BatchLoss{used->forward(X).pow(2).sum(1).mean(), 8}; };
  for (bool keep : {false, true}) {
    HvpOptions o;
    o.keep_graph = keep;
    const HessianOperator op({used->weight, unused->weight}, loss, 1, o);
    const torch::Tensor v = torch::randn({op.size()}, torch::kFloat64);
    const torch::Tensor hv = op.hvp(v);
    // L = mean_t ||W x_t||^2: the used block is H v = 2 V (X^T X / 8) per output row; the unused block is 0.
    const torch::Tensor expect = 2.0 * v.narrow(0, 0, 6).view({2, 3}).mm(X.t().mm(X) / 8.0);
    EXPECT_LT((hv.narrow(0, 0, 6).view({2, 3}) - expect).abs().max().item<double>(), 1e-12) << keep;
    EXPECT_EQ(hv.narrow(0, 6, 6).abs().max().item<double>(), 0.0) << keep;
    EXPECT_EQ(op.gradient().narrow(0, 6, 6).abs().max().item<double>(), 0.0) << keep;
  }
  // Only unused parameters: the whole Hessian is zero.
  const HessianOperator none({unused->weight}, loss, 1);
  EXPECT_EQ(none.hvp(torch::ones({6}, torch::kFloat64)).abs().max().item<double>(), 0.0);
}

// The same through a real MoE layer: top-1 of 4 experts on two tokens leaves at least two experts without a token.
TEST_F(Hvp, AnExpertWithoutTokensHasAZeroHessian) {
  SparseMoE moe(SparseMoEOptions(4, 4).top_k(1).hidden(3).noisy(true));
  moe->to(torch::kFloat64);
  moe->eval();  // noisy gating's noise weights are unused in eval mode too
  const torch::Tensor X = torch::randn({2, 4}, torch::kFloat64);
  auto loss = [&](std::int64_t) { return BatchLoss{moe->forward(X).pow(2).sum(1).mean(), 2}; };
  std::vector<torch::Tensor> all;
  for (const auto& p : select_parameters(*moe, "all")) all.push_back(p.second);
  const HessianOperator op(all, loss, 1);
  const torch::Tensor hv = op.hvp(torch::randn({op.size()}, torch::kFloat64));
  EXPECT_TRUE(torch::isfinite(hv).all().item<bool>());
  int zero_experts = 0;
  for (int e = 0; e < 4; ++e) {
    std::vector<torch::Tensor> ps;
    for (const auto& p : select_parameters(*moe, "expert:0." + std::to_string(e))) ps.push_back(p.second);
    const HessianOperator ex(ps, loss, 1);
    if (ex.hvp(torch::randn({ex.size()}, torch::kFloat64)).abs().max().item<double>() == 0.0) ++zero_experts;
  }
  EXPECT_GE(zero_experts, 2);
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
