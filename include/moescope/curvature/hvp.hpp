#pragma once
// Hessian-vector products of a loss over a fixed evaluation set, by double backward, as a LinearOperator
// (for the Eigen/Spectra solvers) and as a tensor-to-tensor function on the parameters' device.
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "moescope/curvature/operator.hpp"

namespace moescope {

/// One batch's loss: the mean loss over its samples and the sample count. The batches together are the fixed
/// evaluation set; the model should be in eval mode (no dropout, frozen batch-norm statistics).
struct BatchLoss {
  torch::Tensor loss;  // scalar, differentiable in the parameters
  std::int64_t samples = 0;
};
using BatchLossFn = std::function<BatchLoss(std::int64_t batch)>;

struct HvpOptions {
  /// Keep each batch's first-order graph (gradients with create_graph) between products, so a product costs one
  /// backward instead of a forward and two backwards (PyHessian does this). Memory: every batch's graph.
  bool keep_graph = false;
  /// Data parallelism (curvature/distributed.hpp): when set, every product's, gradient's and loss's local
  /// sample-weighted sum, packed into one flat tensor with the local sample count last, is summed in place over
  /// the processes by this hook before the division; each process then holds the result for the union of all
  /// processes' batches. Every process must make the same calls in the same order.
  std::function<void(torch::Tensor&)> all_reduce;
};

/// H v for the loss L = sum_b n_b L_b / sum_b n_b (a sample-weighted mean, so the answer does not depend on how
/// the evaluation set is cut into batches), over the given parameters (any subset: one expert, the router, ...).
class HessianOperator final : public LinearOperator {
 public:
  /// Throws std::invalid_argument when params is empty, a parameter does not require grad, or batches < 1.
  HessianOperator(std::vector<torch::Tensor> params, BatchLossFn loss, std::int64_t batches, HvpOptions opts = {});
  std::int64_t size() const override { return size_; }
  /// H v on the parameters' device and dtype; v is flat with size() elements.
  torch::Tensor hvp(const torch::Tensor& v) const;
  /// The full gradient of L, flat.
  torch::Tensor gradient() const;
  /// L itself (sample-weighted mean over the batches).
  double loss() const;
  /// Device and dtype of the parameters (and of hvp's result).
  torch::TensorOptions options() const { return params_.front().options(); }

 protected:
  void apply_impl(const double* x, double* y) const override;

 private:
  // Divides a local sample-weighted sum by the sample count, after the all-reduce when there is one.
  torch::Tensor finish(const torch::Tensor& total, std::int64_t n) const;
  std::vector<torch::Tensor> grads_of(std::int64_t batch, bool create_graph, std::int64_t* samples) const;

  std::vector<torch::Tensor> params_;
  BatchLossFn loss_;
  std::int64_t batches_ = 0;
  std::int64_t size_ = 0;
  HvpOptions opts_;
  mutable std::vector<std::vector<torch::Tensor>> kept_;  // per batch: gradients with their graph
  mutable std::vector<std::int64_t> kept_samples_;
};

/// Flattens tensors into one vector / splits a flat vector into tensors shaped like `like`.
torch::Tensor flatten_tensors(const std::vector<torch::Tensor>& ts);
std::vector<torch::Tensor> unflatten_like(const torch::Tensor& flat, const std::vector<torch::Tensor>& like);

}  // namespace moescope
