#pragma once
// Optimisers for training: torch's AdamW and SGD built from a JSON-able config, learning-rate schedules
// (constant, cosine, step, each with linear warm-up), global gradient-norm clipping, atomic optimizer-state
// files, and the OMoE orthogonal optimiser (Liu et al. 2023, arXiv:2310.09762) that projects each expert's
// input-side update away from the inputs the other experts of its layer have seen.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "moescope/model/routing.hpp"

namespace moescope {

/// OMoE options. JSON keys are the field names.
struct OMoEOptions {
  bool enabled = false;
  /// Every skip-th step is an orthogonal step (OMoE::is_orthogonal_step); skip >= 1. skip = 1 makes every step
  /// orthogonal, so nothing is accumulated and the projectors stay the identity.
  std::int64_t skip = 2;
  /// Regulariser of the projector P = alpha (alpha I + A A^T)^{-1} (> 0). Smaller alpha projects more exactly
  /// (a direction of the others' inputs with squared singular value s keeps the fraction alpha / (alpha + s)).
  double alpha = 1e-3;
};
void to_json(nlohmann::json& j, const OMoEOptions& o);
/// Missing keys keep their defaults; unknown keys, wrong types or out-of-range values throw InputError.
void from_json(const nlohmann::json& j, OMoEOptions& o);

/// Optimiser, schedule and clipping of a run. JSON keys are the field names ("omoe" is an object).
struct OptimConfig {
  /// "adamw" (torch's decoupled weight decay) or "sgd" (weight decay added to the gradient, as torch does).
  std::string name = "adamw";
  double lr = 1e-3;
  double weight_decay = 0.0;
  /// SGD only: heavy-ball momentum (0 switches it off) and Nesterov (needs momentum > 0).
  double momentum = 0.9;
  bool nesterov = false;
  /// AdamW only.
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  /// "constant", "cosine" or "step"; see learning_rate().
  std::string schedule = "constant";
  /// Linear warm-up from 0 over this many steps, in front of every schedule.
  std::int64_t warmup_steps = 0;
  /// Cosine floor.
  double min_lr = 0.0;
  /// Step schedule: the rate is multiplied by gamma at each milestone step (absolute step numbers, increasing).
  std::vector<std::int64_t> milestones;
  double gamma = 0.1;
  /// > 0: clip the global gradient norm to this value before each step (0: no clipping).
  double clip_norm = 0.0;
  OMoEOptions omoe;
};
void to_json(nlohmann::json& j, const OptimConfig& c);
/// Missing keys keep their defaults; unknown keys, wrong types, unknown names or out-of-range values (negative
/// rates, betas outside [0, 1), nesterov without momentum, decreasing milestones, ...) throw InputError.
void from_json(const nlohmann::json& j, OptimConfig& c);
/// The range checks of from_json on a config built in code; throws InputError("optim config: ...").
void validate(const OptimConfig& c);

/// torch::optim::AdamW(lr, (beta1, beta2), eps, weight_decay, amsgrad off) or torch::optim::SGD(lr, momentum,
/// dampening 0, weight_decay, nesterov) over `params`, one parameter group. Validates the config first.
/// The AdamW is torch's class with the same state and archive, whose step updates each contiguous float32/float64
/// CPU parameter in one fused pass over its elements (torch's formula; equal to torch's own step up to the last
/// bits of a multiply-add) instead of eleven tensor operations; other parameters take torch's step.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& config, std::vector<torch::Tensor> params);
/// How many parameter updates make_optimizer's AdamW has done in its fused pass (0 for any other optimizer).
std::int64_t fused_adamw_updates(const torch::optim::Optimizer& optimizer);

/// The rate for 0-based `step` of a run of `total_steps` steps, with W = warmup_steps:
///   step < W:  base(step) * step / W   (linear from 0: the first step has rate 0, step W the full base rate)
///   base(step): constant: lr;
///               cosine: min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2 with t = step - W, T = total_steps - W,
///                       t clamped to [0, T] (T <= 0: lr);
///               step:   lr * gamma^(number of milestones <= step), like torch's MultiStepLR counted in steps.
/// Throws std::invalid_argument for step < 0.
double learning_rate(const OptimConfig& config, std::int64_t step, std::int64_t total_steps);

/// Sets the rate of every parameter group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

/// Gradients of `loss` with respect to `params`, into fresh tensors: each parameter's gradient is cleared (not
/// zeroed) before the backward pass, so that autograd hands its result over instead of adding it to zeros (torch's
/// zero_grad(set_to_none); on the vision study's gated head the zeroing and adding were 0.4 ms of a 5 ms step).
/// A parameter the loss does not reach gets a zero gradient afterwards, as zero_grad() would have left it, so the
/// optimiser's step (weight decay, momentum) is the same as with zeroed gradients.
void compute_gradients(const torch::Tensor& loss, const std::vector<torch::Tensor>& params);

/// Global 2-norm of the gradients of `params` (tensors without a gradient are skipped), computed in float64 (one
/// pass over each contiguous CPU gradient in fixed blocks: the same bits at any thread count);
/// returns it. When max_norm > 0 and the norm exceeds it, every gradient is scaled in place by
/// max_norm / (norm + 1e-6) (torch's clip_grad_norm_ coefficient). A non-finite norm is returned as it is and
/// leaves the gradients untouched, so the caller can skip the step. One device synchronisation.
double clip_gradients(const std::vector<torch::Tensor>& params, double max_norm);

/// clip_gradients followed by `optimizer`'s step, with the scaling done inside the step where that is the same:
/// when `optimizer` is make_optimizer's AdamW and its next step updates exactly these parameters in its fused pass,
/// the gradients are left as they are and that pass reads each one times the coefficient (rounded as the in-place
/// scaling rounds it: the same update bit for bit, one pass over the gradients fewer); otherwise they are scaled
/// here. Returns the norm; call the optimizer's step next (skip it for a non-finite norm, which defers nothing).
double clip_gradients_into_step(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& params,
                                double max_norm);

/// Writes the optimizer's state (torch archive) to `path` atomically (path.tmp, then rename). Throws
/// InputError naming the file when it cannot be written.
void save_optimizer(torch::optim::Optimizer& optimizer, const std::string& path);
/// Reads a state written by save_optimizer into an optimizer of the same kind over the same parameters.
/// Throws InputError naming the file on a missing, unreadable or non-matching file.
void load_optimizer(torch::optim::Optimizer& optimizer, const std::string& path);

// ---- OWM projectors ------------------------------------------------------------------------------------
// With A = [x_1 ... x_n] (inputs as columns), the OWM projector of Zeng et al. 2019 started from P_0 = I is
//   P = I - A (A^T A + alpha I)^{-1} A^T = alpha (alpha I + A A^T)^{-1},
// so it depends on the inputs only through the Gram matrix A A^T = sum_i x_i x_i^T. These three forms are
// equal in exact arithmetic; OMoE uses the last (see below), the tests check all three against each other.

/// OWM recursion one input row at a time: for each row x of `rows` [n, d]: k = P x, P <- P - k k^T/(alpha + x^T k).
/// Returns the new P [d, d] in P's dtype. O(n d^2) with n sequential rank-one updates.
torch::Tensor owm_update_rows(const torch::Tensor& P, const torch::Tensor& rows, double alpha);
/// The same n rows at once by Woodbury: P <- P - P A (alpha I + A^T P A)^{-1} A^T P with A = rows^T.
torch::Tensor owm_update_block(const torch::Tensor& P, const torch::Tensor& rows, double alpha);
/// Closed form alpha (alpha I + gram)^{-1} for a Gram matrix gram = A A^T [d, d] (float64 advised).
torch::Tensor owm_projector(const torch::Tensor& gram, double alpha);

/// The OMoE orthogonal optimiser. For MoE layer l with experts e = 0..E-1 it keeps each expert's Gram matrix
/// C_e = sum of x x^T over the input tokens routed to e (float64, on the weights' device), and defines
///   P_e = alpha (alpha I + sum_{j != e} C_j)^{-1},
/// the OWM projector of the other experts' accumulated inputs (equal to running owm_update_rows over all of
/// them from P = I). Keeping Grams instead of E recursively updated projectors costs one [d, d] GEMM per
/// expert per accumulate (a token updates one Gram, not E-1 projectors), cannot drift, and makes the state
/// additive; an orthogonal step then costs one Cholesky factorisation per expert, O(E d^3 / 3).
///
/// The protocol the trainer follows:
///   regular step (!is_orthogonal_step(step)): backward, base optimizer step on every parameter, and
///     accumulate(l, layer input tokens, layer routing) for every MoE layer l;
///   orthogonal step: backward, orthogonal_step(lr), then the base optimizer step. orthogonal_step updates the
///     input-side expert weights itself (plain projected gradient descent, no weight decay, no Adam moments) and
///     resets their gradients to undefined, which torch's optimizers skip; so the base step updates every other
///     parameter (router, biases, output weights, backbone) as usual and leaves the projected weights alone.
/// Not thread-safe. All of a layer's input weights must be on one device.
class OMoE {
 public:
  /// input_weights[l][e]: the tensors of expert e in MoE layer l that multiply the layer input, each [out, d_l]
  /// (fc1.weight; for SwiGLU experts w_gate.weight and w_up.weight). Every layer needs >= 1 expert, every expert
  /// >= 1 tensor, and all of a layer's tensors the same d_l. Throws std::invalid_argument otherwise.
  OMoE(std::vector<std::vector<std::vector<torch::Tensor>>> input_weights, OMoEOptions options);

  /// The input-side weights of every expert of `experts` (a ModuleList of FFN made by make_experts): fc1.weight,
  /// or w_gate.weight and w_up.weight for SwiGLU. One entry of the constructor's input_weights.
  static std::vector<std::vector<torch::Tensor>> expert_input_weights(const torch::nn::ModuleList& experts);

  /// options.enabled && (step + 1) % skip == 0 for 0-based step: with skip = 2, steps 1, 3, 5, ... are orthogonal.
  bool is_orthogonal_step(std::int64_t step) const;

  /// Accumulates layer `layer`'s input tokens `inputs` [..., d] (flattened to [T, d]) into the Grams of the experts
  /// they were routed to: routing.topk_indices [T, k] where present (assignments with dropped_mask set are
  /// skipped), else each token's argmax of routing.probs [T, E] (gated and soft layers). Detached; no gradient.
  void accumulate(int layer, const torch::Tensor& inputs, const RoutingInfo& routing);
  /// Accumulates rows `inputs` [n, d] into expert `expert`'s Gram.
  void accumulate_expert(int layer, int expert, const torch::Tensor& inputs);

  /// W <- W - lr * G P_e for every input-side tensor W with a defined gradient G, in W's dtype (computed in float64),
  /// without autograd; then W's gradient is reset to undefined. Returns how many tensors were updated.
  std::int64_t orthogonal_step(double lr);

  /// P_e of `layer` [d, d], float64, on the weights' device (computed on demand and cached until the next
  /// accumulate). Throws std::out_of_range for a bad index.
  const torch::Tensor& projector(int layer, int expert) const;
  /// Token rows accumulated into expert `expert` of `layer` so far.
  std::int64_t accumulated(int layer, int expert) const;

  int num_layers() const { return static_cast<int>(weights_.size()); }
  int num_experts(int layer) const;
  std::int64_t dim(int layer) const;
  const OMoEOptions& options() const { return options_; }

  /// "layer_L.expert_E.gram" [d, d] float64 and "layer_L.expert_E.count" [] int64 for every layer and expert.
  std::map<std::string, torch::Tensor> state() const;
  /// Restores state(); every key must be present with its shape and no other key may be. Throws InputError
  /// ("OMoE state: ...") otherwise. Tensors are copied to the weights' device.
  void load_state(const std::map<std::string, torch::Tensor>& state);

 private:
  struct Layer {
    std::vector<std::vector<torch::Tensor>> experts;  // [e][i] input-side weights
    std::vector<torch::Tensor> grams;                 // [e] C_e float64 [d, d]
    std::vector<std::int64_t> counts;                 // [e] rows accumulated
    mutable std::vector<torch::Tensor> projectors;    // [e] cache; undefined when stale
    std::int64_t dim = 0;
  };
  const Layer& layer_at(int layer) const;
  Layer& layer_at(int layer);
  // alpha I + sum_{j != e} C_j
  torch::Tensor regularised_other_gram(const Layer& L, std::size_t e) const;

  std::vector<Layer> weights_;
  OMoEOptions options_;
};

}  // namespace moescope
