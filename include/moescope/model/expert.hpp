#pragma once
// Feed-forward blocks: the dense FFN and the MoE expert are the same module (fc1 -> act -> dropout -> fc2,
// or SwiGLU w_gate/w_up/w_down), so parameter names follow moescope's checkpoint layout in both roles.
#include <cstdint>
#include <string>

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
