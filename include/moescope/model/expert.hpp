#pragma once
// Feed-forward blocks: the dense FFN and the MoE expert are the same module (fc1 -> act -> dropout -> fc2,
// or SwiGLU w_gate/w_up/w_down), so parameter names follow moescope's checkpoint layout in both roles.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace moescope {

/// Hidden activation of an FFN (SwiGLU always gates with SiLU).
enum class Activation { ReLU, GELU, SiLU };
/// "relu", "gelu", "silu".
const char* activation_name(Activation a);
/// Parses activation_name's output; throws std::invalid_argument otherwise.
Activation parse_activation(const std::string& name);

/// Two-matrix MLP (fc1, fc2) or gated SwiGLU (w_gate, w_up, w_down).
enum class FFNKind { MLP, SwiGLU };
const char* ffn_kind_name(FFNKind k);
FFNKind parse_ffn_kind(const std::string& name);

/// Options of an FFN mapping dim -> hidden -> out_dim (out_dim 0 means dim).
struct FFNOptions {
  FFNOptions(std::int64_t dim, std::int64_t hidden) : dim_(dim), hidden_(hidden) {}
  TORCH_ARG(std::int64_t, dim);
  TORCH_ARG(std::int64_t, hidden);
  TORCH_ARG(std::int64_t, out_dim) = 0;
  TORCH_ARG(FFNKind, kind) = FFNKind::MLP;
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  /// Dropout after the activation (MLP only), active in training.
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(bool, bias) = true;

 public:
  std::int64_t output_dim() const { return out_dim_ > 0 ? out_dim_ : dim_; }
};

/// MLP: fc2(dropout(act(fc1(x)))); SwiGLU: w_down(silu(w_gate x) * w_up x). Works on any [..., dim].
class FFNImpl : public torch::nn::Cloneable<FFNImpl> {
 public:
  explicit FFNImpl(FFNOptions options);
  FFNImpl(std::int64_t dim, std::int64_t hidden) : FFNImpl(FFNOptions(dim, hidden)) {}
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  FFNOptions options;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};                   // MLP
  torch::nn::Linear w_gate{nullptr}, w_up{nullptr}, w_down{nullptr};  // SwiGLU
};
TORCH_MODULE(FFN);

/// An expert and the dense baseline are both FFNs.
using Expert = FFN;
using ExpertImpl = FFNImpl;
using ExpertOptions = FFNOptions;
using DenseFFN = FFN;
using DenseFFNImpl = FFNImpl;
using DenseFFNOptions = FFNOptions;

/// n experts in a ModuleList (register it as "experts": names come out as experts.<e>.fc1.weight).
torch::nn::ModuleList make_experts(const FFNOptions& options, std::int64_t n);

/// Moves the experts' parameters, group by group as BatchedExperts stacks them (input weights, output weights,
/// input biases, output biases), into one storage per group in stacking order, values and names unchanged; then
/// BatchedExperts stacks them without copying and their gradients arrive in one storage too. make_experts does
/// it; whatever later gives a parameter storage of its own (Module::to, clone, set_data) only makes the stacking
/// copy again (torch::stack), until this is called again. Throws std::invalid_argument as BatchedExperts does.
void pack_expert_parameters(const torch::nn::ModuleList& experts);

/// The E experts of a ModuleList made by make_experts, run together as batched matrix products instead of E
/// small ones. The parameters stay the experts' own (experts.<e>.fc1.weight, ...: checkpoints, parameter subsets
/// and optimisers see no change); on first use this object stacks them along a new leading expert dimension,
/// differentiably, so gradients (and double backward) reach each expert's parameters: without a copy when they are
/// packed (pack_expert_parameters: the stacked tensor is their storage, each gets its slice of the gradient), with
/// torch::stack otherwise. Make one per forward call: a copied stack is a snapshot of the weights. Every method equals running each expert's FFN::forward
/// on its rows, up to float rounding (the same products summed in another order); dropout draws one mask for all
/// experts, so it matches in distribution, not draw for draw. Training mode is that of the first expert.
class BatchedExperts {
 public:
  /// Throws std::invalid_argument when the list is null or empty or holds a module that is not an FFN, or when
  /// the experts' options differ.
  explicit BatchedExperts(const torch::nn::ModuleList& experts);

  std::int64_t size() const { return static_cast<std::int64_t>(experts_.size()); }
  const FFNOptions& options() const { return options_; }

  /// Every expert on every token: x [T, D] -> [T, E, O]. The first layer of all experts is one [T, D] x [D, E*H]
  /// product.
  torch::Tensor all(const torch::Tensor& x) const;
  /// The mixture sum_e weights[t, e] * expert_e(x[t]): x [T, D], weights [T, E] -> [T, O], differentiable in both.
  /// Two products: the first layer as in all(), then one [T, E*H] x [E*H, O] product of the weighted hidden
  /// activations (the per-expert outputs are never formed).
  torch::Tensor mix(const torch::Tensor& x, const torch::Tensor& weights) const;
  /// Expert e on its own rows: xs [E, N, D] -> [E, N, O] (batched products).
  torch::Tensor per_expert(const torch::Tensor& xs) const;
  /// Rows grouped by expert: expert e on x's rows tokens[s_e, s_e + counts[e]), s_e = counts[0] + ... +
  /// counts[e-1]; returns [N, O] in the order of `tokens` (int64 [N], N = sum of counts). When the largest group
  /// pads the batch to at most twice N rows, one padded batched product; otherwise one product per non-empty group
  /// (unbalanced routing, where padding would cost more than the E separate calls). `allow_padding` false always
  /// runs one expert after another (the reference path).
  torch::Tensor grouped(const torch::Tensor& x, const torch::Tensor& tokens, const std::vector<std::int64_t>& counts,
                        bool allow_padding = true) const;
  /// Which way grouped() runs for these counts: true for the padded batched product.
  static bool grouped_uses_padding(const std::vector<std::int64_t>& counts);

 private:
  void stack() const;
  torch::Tensor first_shared(const torch::Tensor& x) const;  // [T, D] -> hidden activations [T, E, H]
  torch::Tensor hidden(const torch::Tensor& pre) const;      // activation (+ dropout) or SwiGLU's gating
  torch::Tensor second(const torch::Tensor& h) const;        // [E, N, H] -> [E, N, O]

  std::vector<FFNImpl*> experts_;
  FFNOptions options_;
  bool training_ = false;
  // Stacked lazily: MLP w_in = fc1 weights [E, H, D]; SwiGLU w_in = w_gate and w_up side by side [E, 2H, D].
  mutable torch::Tensor w_in_, b_in_, w_out_, b_out_;
};

/// Parameters of one FFN with these options.
std::int64_t ffn_params(const FFNOptions& options);
/// All parameters of an MoE layer: experts * expert + router (E*dim, + E with bias) + noise Linear (E*dim).
std::int64_t moe_total_params(const FFNOptions& expert, std::int64_t experts, bool router_bias = false,
                              bool noisy = false);
/// Parameters used per token at inference: top_k experts + the router (the noise Linear only runs in training).
std::int64_t moe_active_params(const FFNOptions& expert, std::int64_t experts, std::int64_t top_k,
                               bool router_bias = false);
/// Hidden width h >= 1 whose FFN (`dense` with hidden = h) has the parameter count closest to target.
std::int64_t dense_hidden_for_params(std::int64_t target, const FFNOptions& dense);

namespace detail {
/// Runs expert e of a ModuleList made by make_experts.
inline torch::Tensor run_expert(const torch::nn::ModuleList& experts, std::int64_t e, const torch::Tensor& x) {
  return experts->ptr(static_cast<std::size_t>(e))->as<FFNImpl>()->forward(x);
}
/// Applies an activation.
torch::Tensor activate(const torch::Tensor& x, Activation a);
}  // namespace detail

}  // namespace moescope
