// The device-resident Lanczos against matrices with known spectra, the Eigen-side lanczos_eigs, Spectra, and
// the dense eigendecomposition of an MLP Hessian assembled column by column.
#include "moescope/curvature/device_lanczos.hpp"

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "curvature/known_spectrum.hpp"
#include "moescope/curvature/eigensolvers.hpp"
#include "moescope/curvature/hvp.hpp"

namespace moescope {
namespace {

using testing::gapped_spectrum;
using testing::random_orthogonal;
using testing::with_eigenpairs;

torch::Tensor to_torch(const Eigen::MatrixXd& m) {
  const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m;
  return torch::from_blob(const_cast<double*>(r.data()), {r.rows(), r.cols()}, torch::kFloat64).clone();
}

// A dense symmetric matrix as a tensor operator on `device`; counts its products.
struct DenseTensorOp {
  torch::Tensor a;
  std::int64_t* calls;
  torch::Tensor operator()(const torch::Tensor& x) const {
    ++*calls;
    EXPECT_EQ(x.device(), a.device());
    return a.to(x.dtype()).mv(x);
  }
};

// Every pair against the known spectrum (eigenvalues sorted descending in d_desc), with the bounds the
// residual gives: some eigenvalue lies within ||Av - lam v|| of lam (Krylov-Bogoliubov), and the wanted ones
// are >= 1 apart from the rest, so that eigenvalue is the i-th largest. `slack`: rounding in forming A and the
// residual, relative to ||A||.
void expect_top_pairs(const DeviceEigenResult& r, const Eigen::MatrixXd& a, const Eigen::VectorXd& d_desc,
                      std::int64_t k, double tol, double slack) {
  ASSERT_EQ(r.status, SolverStatus::Converged);
  ASSERT_EQ(r.eigenvalues.size(), k);
  ASSERT_EQ(r.eigenvectors.size(0), a.rows());
  ASSERT_EQ(r.eigenvectors.size(1), k);
  const double scale = d_desc.cwiseAbs().maxCoeff();
  const EigenResult host = r.to_eigen_result();
  for (std::int64_t i = 0; i < k; ++i) {
    SCOPED_TRACE("pair " + std::to_string(i));
    const Eigen::VectorXd v = host.eigenvectors.col(i);
    EXPECT_NEAR(v.norm(), 1.0, 10 * slack);
    // The reported residual is the true one, recomputed here on the host.
    const double resid = (a * v - r.eigenvalues(i) * v).norm();
    EXPECT_NEAR(r.residuals(i), resid, slack * scale);
    EXPECT_LE(std::abs(r.eigenvalues(i) - d_desc(i)), r.residuals(i) + slack * scale);
    // The stopping rule asked for a Ritz estimate <= tol * |lam|; the true residual equals it up to the loss of
    // orthogonality (~ eps * ||A|| * sqrt(steps)).
    EXPECT_LE(r.residuals(i), tol * std::abs(r.eigenvalues(i)) + 100 * slack * scale);
  }
}

struct Size {
  std::int64_t n, k;
};
const Size kSizes[] = {{10, 3}, {50, 5}, {200, 5}};

TEST(DeviceLanczos, TopKOfKnownSpectra) {
  for (const auto& s : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(s.n));
    const Eigen::VectorXd d = gapped_spectrum(s.n, 100 + s.n);
    const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(s.n, 200 + s.n), d);
    Eigen::VectorXd d_desc = d;
    std::sort(d_desc.data(), d_desc.data() + d_desc.size(), std::greater<>());
    std::int64_t calls = 0;
    DeviceLanczosOptions o;
    o.k = s.k;
    o.tol = 1e-10;
    const DeviceEigenResult r = device_lanczos_eigs(DenseTensorOp{to_torch(a), &calls}, s.n, torch::kCPU, o);
    // 1e-12 * ||A||: float64 rounding in A = Q D Q^T and in the residual.
    expect_top_pairs(r, a, d_desc, s.k, o.tol, 1e-12);
    EXPECT_EQ(r.matvecs, calls);
    EXPECT_EQ(r.matvecs, r.iterations + s.k);
    EXPECT_EQ(r.method, "device_lanczos");
  }
}

// The same recurrence, the same start vector, the same Ritz selection: the Eigen-side lanczos_eigs and the torch
// one differ only in the order of floating-point sums, so they agree to rounding and stop at the same step
// (give or take one where a bound sits at the tolerance).
TEST(DeviceLanczos, MatchesEigenLanczosAndSpectra) {
  const std::int64_t n = 120;
  const Eigen::VectorXd d = gapped_spectrum(n, 7);
  // SmallestAlge runs on -A, so that every wanted end is the gapped one (the bulk is too crowded for a tight
  // eigenvector comparison).
  const std::pair<EigenTarget, double> cases[] = {
      {EigenTarget::LargestAlge, 1.0}, {EigenTarget::LargestMagn, 1.0}, {EigenTarget::SmallestAlge, -1.0}};
  for (const auto& [target, sign] : cases) {
    SCOPED_TRACE(target_name(target));
    const Eigen::MatrixXd a = sign * with_eigenpairs(random_orthogonal(n, 8), d);
    DenseOperator dense(a);
    LanczosOptions lo;
    lo.k = 4;
    lo.tol = 1e-10;
    lo.target = target;
    lo.seed = 3;
    const EigenResult ref = lanczos_eigs(dense, lo);
    SpectraOptions so;
    so.k = 4;
    so.tol = 1e-12;
    so.target = target;
    const EigenResult spec = spectra_eigs(dense, so);
    DeviceLanczosOptions to;
    to.k = 4;
    to.tol = 1e-10;
    to.target = target;
    to.seed = 3;
    std::int64_t calls = 0;
    const DeviceEigenResult r = device_lanczos_eigs(DenseTensorOp{to_torch(a), &calls}, n, torch::kCPU, to);
    ASSERT_EQ(r.status, SolverStatus::Converged);
    ASSERT_EQ(ref.status, SolverStatus::Converged);
    ASSERT_EQ(spec.status, SolverStatus::Converged);
    EXPECT_NEAR(static_cast<double>(r.iterations), static_cast<double>(ref.iterations), 1.0);
    const double scale = d.cwiseAbs().maxCoeff();
    for (int i = 0; i < 4; ++i) {
      // Both converged to relative Ritz bounds <= 1e-10 on well-separated eigenvalues; the eigenvalue error is
      // of the order of residual^2 / gap, far below the 1e-9 * ||A|| allowed (the residual bound covers it too).
      EXPECT_NEAR(r.eigenvalues(i), ref.eigenvalues(i), 1e-9 * scale) << i;
      EXPECT_NEAR(r.eigenvalues(i), spec.eigenvalues(i), 1e-9 * scale) << i;
      // Same eigenvector up to sign: |cos| = 1 within the Davis-Kahan bound (residual / gap, gap >= 1).
      const Eigen::VectorXd v = r.to_eigen_result().eigenvectors.col(i);
      EXPECT_NEAR(std::abs(v.dot(spec.eigenvectors.col(i))), 1.0, 1e-8) << i;
    }
  }
}

TEST(DeviceLanczos, Float32BasisMeetsAFloat32Tolerance) {
  const std::int64_t n = 200;
  const Eigen::VectorXd d = gapped_spectrum(n, 11);
  const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(n, 12), d);
  Eigen::VectorXd d_desc = d;
  std::sort(d_desc.data(), d_desc.data() + d_desc.size(), std::greater<>());
  std::int64_t calls = 0;
  DeviceLanczosOptions o;
  o.k = 3;
  o.tol = 1e-5;
  o.dtype = torch::kFloat32;
  const DeviceEigenResult r = device_lanczos_eigs(DenseTensorOp{to_torch(a), &calls}, n, torch::kCPU, o);
  EXPECT_EQ(r.eigenvectors.dtype(), torch::kFloat32);
  // float32 unit roundoff 6e-8 times ||A|| times sqrt(n) accumulations: 1e-5 * ||A|| covers the rounding.
  expect_top_pairs(r, a, d_desc, 3, o.tol, 1e-5);
}

// Rank 3 in n = 40 with k = 5: the Krylov space is invariant after 3 steps (beta = 0); the run restarts from a
// vector orthogonal to the basis and finds the zero eigenvalue(s) too.
TEST(DeviceLanczos, LowRankOperatorRestartsAfterBreakdown) {
  const std::int64_t n = 40;
  Eigen::VectorXd d = Eigen::VectorXd::Zero(n);
  d(0) = 5.0;
  d(1) = 3.0;
  d(2) = 1.5;
  const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(n, 5), d);
  std::int64_t calls = 0;
  DeviceLanczosOptions o;
  o.k = 5;
  o.tol = 1e-10;
  const DeviceEigenResult r = device_lanczos_eigs(DenseTensorOp{to_torch(a), &calls}, n, torch::kCPU, o);
  ASSERT_EQ(r.status, SolverStatus::Converged);
  const double want[] = {5.0, 3.0, 1.5, 0.0, 0.0};
  // 1e-10 * ||A||: the zero eigenvalues converge under the eps^(2/3) floor of the relative test.
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(r.eigenvalues(i), want[i], 1e-10 * 5.0) << i;
  for (int i = 0; i < 5; ++i) EXPECT_LT(r.residuals(i), 1e-9) << i;
}

TEST(DeviceLanczos, NotConvergedIsAStatusWithTrueResiduals) {
  // A dense cluster at the top (200 eigenvalues in [0.9, 1]) cannot converge in 8 steps at tol 1e-12.
  const std::int64_t n = 200;
  Eigen::VectorXd d(n);
  for (std::int64_t i = 0; i < n; ++i) d(i) = 1.0 - 0.1 * static_cast<double>(i) / static_cast<double>(n);
  const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(n, 21), d);
  std::int64_t calls = 0;
  DeviceLanczosOptions o;
  o.k = 2;
  o.tol = 1e-12;
  o.max_steps = 8;
  const DeviceEigenResult r = device_lanczos_eigs(DenseTensorOp{to_torch(a), &calls}, n, torch::kCPU, o);
  EXPECT_EQ(r.status, SolverStatus::NotConverged);
  EXPECT_EQ(r.iterations, 8);
  ASSERT_EQ(r.eigenvalues.size(), 2);
  const EigenResult host = r.to_eigen_result();
  for (int i = 0; i < 2; ++i) {
    const Eigen::VectorXd v = host.eigenvectors.col(i);
    EXPECT_NEAR(r.residuals(i), (a * v - r.eigenvalues(i) * v).norm(), 1e-12);
    EXPECT_GT(r.residuals(i), o.tol * std::abs(r.eigenvalues(i)));  // honest: not converged
    EXPECT_LE(r.eigenvalues(i), 1.0 + 1e-12);                         // Ritz values lie inside the spectrum
  }
}

TEST(DeviceLanczos, NumericalIssueWhenTheOperatorReturnsNaN) {
  std::int64_t calls = 0;
  const TensorOperator bad = [&](const torch::Tensor& x) {
    ++calls;
    return calls >= 3 ? torch::full_like(x, std::numeric_limits<double>::quiet_NaN()) : 2.0 * x;
  };
  DeviceLanczosOptions o;
  o.k = 1;
  // 2 I breaks down after every step (each Krylov space is invariant) and restarts, so the third product,
  // the NaN, comes before the basis spans the space: the issue is reported, never a number.
  const DeviceEigenResult r = device_lanczos_eigs(bad, 10, torch::kCPU, o);
  EXPECT_EQ(r.status, SolverStatus::NumericalIssue);
  EXPECT_EQ(r.eigenvalues.size(), 0);
  EXPECT_FALSE(r.eigenvectors.defined());
  EXPECT_EQ(r.matvecs, 3);
  std::int64_t calls2 = 0;
  const TensorOperator nan_now = [&](const torch::Tensor& x) {
    ++calls2;
    return torch::full_like(x, std::numeric_limits<double>::quiet_NaN());
  };
  const DeviceEigenResult r2 = device_lanczos_eigs(nan_now, 10, torch::kCPU, o);
  EXPECT_EQ(r2.status, SolverStatus::NumericalIssue);
  EXPECT_EQ(r2.eigenvalues.size(), 0);
  EXPECT_EQ(r2.matvecs, 1);
}

TEST(DeviceLanczos, InvalidArgumentsThrowWithValues) {
  const TensorOperator id = [](const torch::Tensor& x) { return x; };
  auto opts = [](std::int64_t k, double tol, std::int64_t steps, std::int64_t every) {
    DeviceLanczosOptions o;
    o.k = k;
    o.tol = tol;
    o.max_steps = steps;
    o.check_every = every;
    return o;
  };
  EXPECT_THROW(device_lanczos_eigs(id, 0, torch::kCPU, {}), std::invalid_argument);
  EXPECT_THROW(device_lanczos_eigs(id, 5, torch::kCPU, opts(0, 1e-8, 10, 1)), std::invalid_argument);
  EXPECT_THROW(device_lanczos_eigs(id, 5, torch::kCPU, opts(6, 1e-8, 10, 1)), std::invalid_argument);
  EXPECT_THROW(device_lanczos_eigs(id, 5, torch::kCPU, opts(1, 0.0, 10, 1)), std::invalid_argument);
  EXPECT_THROW(device_lanczos_eigs(id, 50, torch::kCPU, opts(4, 1e-8, 3, 1)), std::invalid_argument);
  EXPECT_THROW(device_lanczos_eigs(id, 5, torch::kCPU, opts(1, 1e-8, 10, 0)), std::invalid_argument);
  DeviceLanczosOptions half;
  half.dtype = torch::kFloat16;
  EXPECT_THROW(device_lanczos_eigs(id, 5, torch::kCPU, half), std::invalid_argument);
  try {
    device_lanczos_eigs(id, 5, torch::kCPU, opts(6, 1e-8, 10, 1));
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("k = 6"), std::string::npos) << e.what();
  }
}

// Through the real HVP machinery: a float64 tanh MLP with cross-entropy, split into uneven batches, with the
// first-order graphs kept. The reference is the dense eigendecomposition of the Hessian assembled from n HVPs.
TEST(DeviceLanczos, MlpHessianMatchesDenseEigendecomposition) {
  torch::manual_seed(99);
  torch::nn::Sequential net(torch::nn::Linear(4, 6), torch::nn::Tanh(), torch::nn::Linear(6, 3));
  net->to(torch::kFloat64);
  const torch::Tensor X = torch::randn({30, 4}, torch::kFloat64);
  const torch::Tensor t = torch::randint(0, 3, {30}, torch::kLong);
  const std::vector<std::int64_t> cuts = {0, 7, 19, 30};
  auto loss = [&](std::int64_t b) {
    const auto lo = cuts[static_cast<std::size_t>(b)], hi = cuts[static_cast<std::size_t>(b) + 1];
    return BatchLoss{torch::nn::functional::cross_entropy(net->forward(X.slice(0, lo, hi)), t.slice(0, lo, hi)),
                     hi - lo};
  };
  HvpOptions keep;
  keep.keep_graph = true;
  HessianOperator op(net->parameters(), loss, 3, keep);
  const std::int64_t n = op.size();
  Eigen::MatrixXd H(n, n);
  for (std::int64_t j = 0; j < n; ++j) H.col(j) = op.apply(Eigen::VectorXd::Unit(n, j));
  H = (0.5 * (H + H.transpose())).eval();  // eval: the transpose aliases H
  const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(H).eigenvalues().reverse();

  DeviceLanczosOptions o;
  o.k = 3;
  o.tol = 1e-9;
  const DeviceEigenResult r = device_lanczos_eigs(op, o);
  ASSERT_EQ(r.status, SolverStatus::Converged);
  for (int i = 0; i < 3; ++i) {
    // Krylov-Bogoliubov with the reported residual; 1e-12 * |lambda_max|: the assembled H's rounding.
    EXPECT_LE(std::abs(r.eigenvalues(i) - ev(i)), r.residuals(i) + 1e-12 * std::abs(ev(0))) << i;
    EXPECT_LT(r.residuals(i), 1e-7 * std::abs(ev(0))) << i;
  }
}

// The same run on CUDA as on the CPU: same start vector (drawn on the host), same answer to rounding.
TEST(DeviceLanczos, MatchesCpuOnGpu_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (LibTorch without CUDA, or no GPU)";
  const std::int64_t n = 300;
  const Eigen::VectorXd d = gapped_spectrum(n, 31);
  const Eigen::MatrixXd a = with_eigenpairs(random_orthogonal(n, 32), d);
  Eigen::VectorXd d_desc = d;
  std::sort(d_desc.data(), d_desc.data() + d_desc.size(), std::greater<>());
  DeviceLanczosOptions o;
  o.k = 4;
  o.tol = 1e-10;
  std::int64_t cpu_calls = 0, gpu_calls = 0;
  const torch::Tensor at = to_torch(a);
  const DeviceEigenResult cpu = device_lanczos_eigs(DenseTensorOp{at, &cpu_calls}, n, torch::kCPU, o);
  const DeviceEigenResult gpu = device_lanczos_eigs(DenseTensorOp{at.to(torch::kCUDA), &gpu_calls}, n, torch::kCUDA, o);
  EXPECT_TRUE(gpu.eigenvectors.is_cuda());
  expect_top_pairs(gpu, a, d_desc, 4, o.tol, 1e-12);
  // Different summation order on the GPU: agreement to 1e-9 * ||A|| (both residuals are ~1e-10 * |lambda|).
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(gpu.eigenvalues(i), cpu.eigenvalues(i), 1e-9 * d_desc(0)) << i;
}

}  // namespace
}  // namespace moescope
