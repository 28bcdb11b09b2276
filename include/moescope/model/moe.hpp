#pragma once
// MoE layers on tokens [..., d]: the softmax-gated dense mixture, Soft MoE (Puigcerver et al. 2023) and
// top-k sparse MoE (Mixtral / OLMoE, noisy top-k of Shazeer et al. 2017, optional expert capacity).
// Each returns its output and a RoutingInfo (forward_moe); forward() returns the output alone.
#include <cstdint>

#include <torch/torch.h>

#include "moescope/model/expert.hpp"
#include "moescope/model/routing.hpp"

namespace moescope {

/// Softmax-gated mixture where every expert runs: out = sum_e softmax(router(h) / temperature)_e expert_e(h).
/// (The vision study's "SoftMoE" head.) Batched: the experts' first layers are one product, and the router weights
/// are folded into the hidden activations so that the second layers and the weighted sum are one more
/// (BatchedExperts::mix); with keep_expert_outputs or a probe recording expert outputs, the per-expert outputs are
/// formed and weighted instead.
struct GatedMixtureOptions {
  GatedMixtureOptions(std::int64_t dim, std::int64_t experts) : dim_(dim), experts_(experts) {}
  TORCH_ARG(std::int64_t, dim);
  TORCH_ARG(std::int64_t, experts);
  /// Expert hidden width.
  TORCH_ARG(std::int64_t, hidden) = 64;
  /// Output width (0: dim).
  TORCH_ARG(std::int64_t, out_dim) = 0;
  TORCH_ARG(FFNKind, kind) = FFNKind::MLP;
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(bool, router_bias) = false;
  /// Return every expert's output [T, E, O] in RoutingInfo::expert_outputs.
  TORCH_ARG(bool, keep_expert_outputs) = false;
  /// Run the experts together (BatchedExperts: stacked weights, batched products). false runs each expert as its
  /// own module call, one after another: the same function, kept as the reference for tests and benchmarks.
  TORCH_ARG(bool, batched_experts) = true;

 public:
  FFNOptions expert_options() const;
};

class GatedMixtureImpl : public torch::nn::Cloneable<GatedMixtureImpl>, public MoELayer {
 public:
  explicit GatedMixtureImpl(GatedMixtureOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x) { return forward_moe(x).output; }
  MoEOutput forward_moe(const torch::Tensor& x) override;
  std::int64_t num_experts() const override { return options.experts(); }

  GatedMixtureOptions options;
  torch::nn::Linear router{nullptr};
  torch::nn::ModuleList experts{nullptr};
};
TORCH_MODULE(GatedMixture);

/// Soft MoE: per sequence X [m, d], logits = scale * normalize(X) normalize(Phi) [m, E*p];
/// dispatch D = softmax over tokens, slot inputs D^T X, expert e runs on its p slots,
/// combine C = softmax over slots, output = C * slot outputs. Batched: the experts run on their slots as one
/// batched product.
/// Input [B, m, d] is B sequences; input [T, d] is T sequences of one token each.
struct SoftMoEOptions {
  SoftMoEOptions(std::int64_t dim, std::int64_t experts) : dim_(dim), experts_(experts) {}
  TORCH_ARG(std::int64_t, dim);
  TORCH_ARG(std::int64_t, experts);
  /// Slots per expert (p).
  TORCH_ARG(std::int64_t, slots) = 1;
  TORCH_ARG(std::int64_t, hidden) = 64;
  TORCH_ARG(std::int64_t, out_dim) = 0;
  TORCH_ARG(FFNKind, kind) = FFNKind::MLP;
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(double, dropout) = 0.0;
  /// L2-normalise X and the columns of Phi, with a learnable scale (initialised to 1).
  TORCH_ARG(bool, normalize) = true;
  /// Return the slot outputs [B, E*p, O] in RoutingInfo::expert_outputs.
  TORCH_ARG(bool, keep_expert_outputs) = false;
  /// Run the experts together (BatchedExperts: stacked weights, batched products). false runs each expert as its
  /// own module call, one after another: the same function, kept as the reference for tests and benchmarks.
  TORCH_ARG(bool, batched_experts) = true;

 public:
  FFNOptions expert_options() const;
};

class SoftMoEImpl : public torch::nn::Cloneable<SoftMoEImpl>, public MoELayer {
 public:
  explicit SoftMoEImpl(SoftMoEOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x) { return forward_moe(x).output; }
  MoEOutput forward_moe(const torch::Tensor& x) override;
  std::int64_t num_experts() const override { return options.experts(); }

  SoftMoEOptions options;
  torch::Tensor phi;    ///< [d, E*p]; slot s belongs to expert s / p
  torch::Tensor scale;  ///< scalar (only with normalize)
  torch::nn::ModuleList experts{nullptr};
};
TORCH_MODULE(SoftMoE);

/// Top-k sparse MoE: p = softmax(router(h)) over all E, take the top k, renormalise their weights
/// (optionally), out = sum over chosen e of w_e expert_e(h). Each expert runs once, on its tokens only: batched,
/// the (token, expert) assignments sorted by expert are padded to the largest group and run as one batched
/// product, or group by group when the routing is so unbalanced that padding would double the rows
/// (BatchedExperts::grouped).
struct SparseMoEOptions {
  SparseMoEOptions(std::int64_t dim, std::int64_t experts) : dim_(dim), experts_(experts) {}
  TORCH_ARG(std::int64_t, dim);
  TORCH_ARG(std::int64_t, experts);
  TORCH_ARG(std::int64_t, top_k) = 2;
  TORCH_ARG(std::int64_t, hidden) = 64;
  TORCH_ARG(std::int64_t, out_dim) = 0;
  TORCH_ARG(FFNKind, kind) = FFNKind::MLP;
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(double, dropout) = 0.0;
  /// Divide the k chosen probabilities by their sum (Mixtral, OLMoE); false keeps the raw softmax values.
  TORCH_ARG(bool, renormalize) = true;
  /// Noisy top-k (training only): logits + N(0,1) * softplus(noise(h)), noise a Linear(d -> E) "noise".
  TORCH_ARG(bool, noisy) = false;
  /// Capacity factor CF > 0 limits each expert to C = ceil(T*k*CF/E) tokens, earlier tokens first;
  /// 0 means no limit. A dropped assignment contributes nothing (its weight is not given to the token's
  /// other experts); in a residual block the token passes through.
  TORCH_ARG(double, capacity_factor) = 0.0;
  TORCH_ARG(bool, router_bias) = false;
  /// Return the chosen experts' unweighted outputs [T, k, O] in RoutingInfo::expert_outputs.
  TORCH_ARG(bool, keep_expert_outputs) = false;
  /// Run the experts together (BatchedExperts: stacked weights, batched products). false runs each expert as its
  /// own module call, one after another: the same function, kept as the reference for tests and benchmarks.
  TORCH_ARG(bool, batched_experts) = true;

 public:
  FFNOptions expert_options() const;
};

class SparseMoEImpl : public torch::nn::Cloneable<SparseMoEImpl>, public MoELayer {
 public:
  explicit SparseMoEImpl(SparseMoEOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x) { return forward_moe(x).output; }
  MoEOutput forward_moe(const torch::Tensor& x) override;
  std::int64_t num_experts() const override { return options.experts(); }

  SparseMoEOptions options;
  torch::nn::Linear router{nullptr};
  torch::nn::Linear noise{nullptr};  ///< only when noisy
  torch::nn::ModuleList experts{nullptr};
};
TORCH_MODULE(SparseMoE);

/// Expert capacity ceil(tokens * top_k * capacity_factor / experts); 0 when capacity_factor <= 0.
std::int64_t expert_capacity(std::int64_t tokens, std::int64_t top_k, double capacity_factor, std::int64_t experts);

}  // namespace moescope
