#pragma once
// Device-resident Lanczos with full reorthogonalisation: the Krylov basis lives in one torch tensor on the
// operator's device (CPU or CUDA), every vector operation runs there, and only the tridiagonal T (a few
// scalars per step) comes to the host, where Eigen solves it (select_ritz_pairs, shared with lanczos_eigs so
// both stop alike). For Hessians of models too large for a host copy of the basis, and for GPUs.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>

#include <Eigen/Dense>

#include "moescope/curvature/eigensolvers.hpp"
#include "moescope/curvature/operator.hpp"

namespace moescope {

class HessianOperator;

/// y = A x for a symmetric A, on flat tensors of one device; x has the dtype of DeviceLanczosOptions::dtype and
/// the result is converted to it.
using TensorOperator = std::function<torch::Tensor(const torch::Tensor&)>;

/// Options of device_lanczos_eigs (the same meaning as LanczosOptions).
struct DeviceLanczosOptions {
  std::int64_t k = 1;                             // wanted pairs, 1 <= k <= n
  EigenTarget target = EigenTarget::LargestAlge;
  double tol = 1e-8;                              // stop when every wanted |beta_m s_{m,i}| <= tol * |theta_i|
  std::int64_t max_steps = 300;                   // Krylov dimension cap (min with n); memory n * (steps + 1) values
  std::int64_t check_every = 1;                   // test convergence every this many steps (and at the cap)
  /// Start vector (and restart vectors after a breakdown): standard normals drawn on the host from Rng(seed),
  /// the same stream as lanczos_eigs, so both see the same Krylov space and the result is device-independent.
  std::uint64_t seed = 0;
  /// Basis and vector dtype. Float64 keeps orthogonality to ~1e-15; float32 halves memory and suits an HVP
  /// that is itself float32 (its rounding, ~1e-7 relative, then dominates either way).
  torch::Dtype dtype = torch::kFloat64;
  ProgressFn progress;                      // after each test: value = max relative bound of wanted pairs
};

/// The result of device_lanczos_eigs: EigenResult's fields, with the eigenvectors left on the device.
struct DeviceEigenResult {
  std::string method = "device_lanczos";
  SolverStatus status = SolverStatus::NotConverged;
  Eigen::VectorXd eigenvalues;        // ordered by the target, as EigenResult
  torch::Tensor eigenvectors;         // [n, eigenvalues.size()] on the device, unit columns (undefined if none)
  Eigen::VectorXd residuals;          // ||A v_i - lambda_i v_i||, one extra matvec each (counted in matvecs)
  Eigen::VectorXd residual_estimates; // |beta_m s_{m,i}|, what the stopping rule saw
  std::int64_t iterations = 0;        // Lanczos steps
  std::int64_t matvecs = 0;           // every operator application, residual checks included
  /// A host copy (eigenvectors as float64 columns), for code written against EigenResult.
  EigenResult to_eigen_result() const;
};

/// Top-k eigenpairs of the n x n operator by Lanczos with full reorthogonalisation (two passes of classical
/// Gram-Schmidt against the whole basis, as matrix-vector products on the device; no restarts). On an invariant
/// subspace the run goes on from a fresh random vector orthogonal to the basis (as lanczos_eigs).
/// Non-convergence within max_steps is status NotConverged with the best pairs and their true residuals; a
/// non-finite product is NumericalIssue with no pairs. The operator must accept and return [n] tensors on
/// `device`. Throws std::invalid_argument for n <= 0, k <= 0, k > n, tol <= 0, max_steps < k, check_every <= 0,
/// or a dtype other than float32/float64.
DeviceEigenResult device_lanczos_eigs(const TensorOperator& op, std::int64_t n, const torch::Device& device,
                                    const DeviceLanczosOptions& opts = {});

/// The same over a HessianOperator, on its parameters' device (products through HessianOperator::hvp).
DeviceEigenResult device_lanczos_eigs(const HessianOperator& op, const DeviceLanczosOptions& opts = {});

}  // namespace moescope
