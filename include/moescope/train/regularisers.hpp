#pragma once
// Auxiliary losses for MoE training: Switch load balancing, the ST-MoE router z-loss, the weight
// orthogonality loss over experts' flattened matrices, and the expert-specialisation losses of Guo et al. 2025
// (arXiv:2505.22323): an orthogonality loss on the selected experts' outputs and a routing variance term.
// Every loss is a differentiable scalar tensor on the device and in the dtype of its input.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moescope/model/routing.hpp"

namespace moescope {

/// Switch Transformer load balancing loss N * sum_i f_i P_i for router probabilities `probs` [T, N] and the
/// chosen experts `topk_indices` [T, k]: f_i = (slots choosing i) / (T k), counted per slot, a constant (no
/// gradient); P_i = mean over tokens of probs[:, i]. Uniform top-1 routing gives exactly 1.
torch::Tensor switch_load_balancing_loss(const torch::Tensor& probs, const torch::Tensor& topk_indices,
                                         std::int64_t num_experts);

/// The same on a layer's routing: `routing.probs` with `routing.topk_indices`. Assignments dropped by a
/// capacity limit still count as that slot's choice. Without top-k indices (dense GatedMixture), each token's
/// argmax of `probs` is its top-1 choice.
torch::Tensor switch_load_balancing_loss(const RoutingInfo& routing, std::int64_t num_experts);

/// Router z-loss (ST-MoE): mean over tokens of (logsumexp_j x_j)^2 for logits [..., N].
torch::Tensor router_z_loss(const torch::Tensor& router_logits);

/// Weight orthogonality loss over one layer's experts: u_e = vec(W_e) / ||vec(W_e)||,
/// L = sum_{i<j} <u_i, u_j>^2 / E^2. All matrices need the same number of elements; a zero matrix
/// contributes nothing (its u is 0). E identical matrices give (E-1) / (2E); one expert gives 0.
torch::Tensor weight_orthogonality_loss(const std::vector<torch::Tensor>& expert_weights);

/// Each expert's parameter named `name` (as in named_parameters(), e.g. "fc1.weight", "w_up.weight"),
/// in expert order: the input weight_orthogonality_loss expects. Throws when an expert lacks it.
std::vector<torch::Tensor> expert_parameters(const torch::nn::ModuleList& experts, const std::string& name);

/// Guo et al.'s orthogonality loss on the selected experts' outputs x [T, k, d] (RoutingInfo::expert_outputs):
/// for token t and slot i, u_1.. is a Gram-Schmidt orthonormal basis of the other k-1 outputs of that token
/// (in slot order; a residual of norm <= eps adds no basis vector), and
/// L_o = 1/(kT) sum_t sum_i sum_j <u_j, x_{t,i}>^2, the squared norm of the projection (not scale-normalised).
/// k = 1 gives 0.
torch::Tensor guo_orthogonality_loss(const torch::Tensor& expert_outputs, double eps = 1e-6);

/// Guo et al.'s routing variance v = mean over tokens of the unbiased variance over the N experts of
/// softmax(router_logits) [..., N] (N >= 2). This is the value itself, which training wants LARGE: it enters
/// the total loss with a minus sign (total = ... - w_v * v).
torch::Tensor guo_variance(const torch::Tensor& router_logits);

/// Shazeer et al. 2017's importance loss: with importance_e = sum over tokens of probs[:, e] ([..., N]),
/// CV^2 = var(importance) / mean(importance)^2, the variance unbiased (N - 1) as in their code. Uniform
/// importance gives 0; all mass on one of N experts gives N.
torch::Tensor importance_cv_squared(const torch::Tensor& probs);

/// Strengths of the auxiliary terms; 0 switches a term off. Typical values: load_balance 1e-2 (Switch) or
/// 1e-3, z_loss 1e-3, weight_orth 1e-2, guo_orth 1e-4, guo_var 1e-3.
struct RegulariserWeights {
  double load_balance = 0.0;
  double z_loss = 0.0;
  double weight_orth = 0.0;
  double guo_orth = 0.0;
  /// Subtracted: a positive guo_var rewards discriminative (high-variance) routing.
  double guo_var = 0.0;
  /// Shazeer et al. 2017's importance loss CV^2(importance) (the vision study uses 0.2).
  double cv_importance = 0.0;
};

/// One layer's auxiliary loss and its unweighted terms for logging. A term is evaluated only when its weight
/// is non-zero; the others read NaN (not evaluated, as opposed to 0).
struct RegulariserTerms {
  /// load_balance * L_aux + z_loss * L_z + weight_orth * L_w + guo_orth * L_o - guo_var * v + cv_importance * CV^2: a scalar tensor
  /// with gradient (0 when every weight is 0).
  torch::Tensor total;
  double load_balance = 0.0;
  double z_loss = 0.0;
  double weight_orth = 0.0;
  double guo_orth = 0.0;
  double guo_var = 0.0;
  double cv_importance = 0.0;
};

/// Combines the weighted terms for one layer's routing. Uses routing.probs and routing.topk_indices (load
/// balance), routing.logits (z-loss, variance), routing.expert_outputs (Guo orthogonality: the layer needs
/// keep_expert_outputs) and `expert_weights` (weight orthogonality, e.g. expert_parameters(experts,
/// "fc1.weight")). Throws when a term with a non-zero weight lacks its input. Reading the per-term values
/// synchronises with the device once per evaluated term.
RegulariserTerms regulariser_terms(const RoutingInfo& routing, std::int64_t num_experts,
                                   const RegulariserWeights& weights,
                                   const std::vector<torch::Tensor>& expert_weights = {});

}  // namespace moescope
