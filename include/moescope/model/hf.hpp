#pragma once
// Hugging Face MoE causal language models run natively in LibTorch: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE,
// DeepSeek-MoE, DeepSeek-V2/V2-Lite and DeepSeek-V3, built from a checkpoint folder (config.json + safetensors,
// sharded or not) and computing what transformers' modeling files compute (eager attention, no KV cache).
//
// Parameter (and buffer) names are exactly the checkpoint's tensor names (model.embed_tokens.weight,
// model.layers.3.mlp.experts.7.gate_proj.weight, lm_head.weight, ...), so model/params.hpp's
// select_parameters works unchanged: "expert:L.E" picks expert E of decoder layer L, "router" every
// mlp.gate / block_sparse_moe.gate weight. With tied embeddings there is no lm_head module: the head uses
// model.embed_tokens.weight.
//
// Numerics. Matrix products, RoPE rotation, residual sums and expert mixing run in the weights' dtype. As in
// transformers, RMSNorm normalises in float32 and casts back before the weight multiply; attention and router
// softmaxes run in float32 and cast back; RoPE's cos/sin tables are computed in float32 and cast; DeepSeek-V2/V3
// routers compute their logits in float32. transformers upcasts to float32 even for float64 weights; here the
// upcast is to "at least float32", so a float64 model computes everything in float64 (what the float64 tests
// and Hessian finite differences need). The LM loss upcasts the logits likewise.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

#include "moescope/io/hf_config.hpp"

namespace moescope {

/// Weights by checkpoint tensor name, consumed by HFCausalLM's constructor.
using HFWeights = std::unordered_map<std::string, torch::Tensor>;

namespace detail {
class HFWeightTaker;  // hands the constructors their tensors by name, checking shapes
}

/// y = x W^T (+ b); W [out, in] named "weight", optional "bias" [out].
class HFLinearImpl : public torch::nn::Module {
 public:
  HFLinearImpl(detail::HFWeightTaker& w, const std::string& prefix, bool bias);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;
};
TORCH_MODULE(HFLinear);

/// RMSNorm: weight * (x / sqrt(mean(x^2) + eps)), normalised in at least float32 and cast back to x's dtype
/// before the multiply (transformers' LlamaRMSNorm order).
class HFRMSNormImpl : public torch::nn::Module {
 public:
  HFRMSNormImpl(detail::HFWeightTaker& w, const std::string& prefix, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(HFRMSNorm);

/// SwiGLU MLP: down(silu(gate x) * up x), matrices named by the family (w1/w3/w2 or gate_proj/up_proj/down_proj).
class HFMLPImpl : public torch::nn::Module {
 public:
  HFMLPImpl(detail::HFWeightTaker& w, const std::string& prefix, const std::vector<std::string>& names);
  torch::Tensor forward(const torch::Tensor& x);
  HFLinear gate{nullptr}, up{nullptr}, down{nullptr};
};
TORCH_MODULE(HFMLP);

/// Rotary tables for positions 0..S-1: cos and sin [S, rope_dim] in `dtype`, the frequency vector repeated
/// twice (transformers' cat((freqs, freqs))). Computed in float32 like transformers (float64 for float64).
struct HFRope {
  torch::Tensor cos, sin;
};

/// Grouped-query self-attention with RoPE (rotate_half convention), optional q/k/v(/o) biases, Qwen3's per-head
/// or OLMoE's whole-projection QK RMSNorm before RoPE, OLMoE's clip_qkv, a causal (optionally sliding-window) mask.
class HFAttentionImpl : public torch::nn::Module {
 public:
  HFAttentionImpl(detail::HFWeightTaker& w, const std::string& prefix, const HFConfig& c);
  /// x [B, S, H], allowed [S, S] bool (query i may attend key j) -> [B, S, H].
  torch::Tensor forward(const torch::Tensor& x, const HFRope& rope, const torch::Tensor& allowed);
  HFConfig config;
  HFLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  HFRMSNorm q_norm{nullptr}, k_norm{nullptr};
};
TORCH_MODULE(HFAttention);

/// DeepSeek-V2/V3 multi-head latent attention: q from q_proj, or q_a_proj -> q_a_layernorm -> q_b_proj;
/// kv_a_proj_with_mqa gives the compressed kv (kv_lora_rank) and one shared rotary key part (qk_rope_head_dim);
/// kv_b_proj expands the normalised compressed kv into per-head no-rope keys and values. RoPE applies to the
/// rope parts with DeepSeek's interleaved pairs (dims 2i, 2i+1 rotate together). Softmax scale
/// qk_head_dim^-1/2, times mscale^2 under YaRN with mscale_all_dim.
class HFMLAttentionImpl : public torch::nn::Module {
 public:
  HFMLAttentionImpl(detail::HFWeightTaker& w, const std::string& prefix, const HFConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const HFRope& rope, const torch::Tensor& allowed);
  HFConfig config;
  double softmax_scale = 1.0;
  HFLinear q_proj{nullptr}, q_a_proj{nullptr}, q_b_proj{nullptr}, kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr},
      o_proj{nullptr};
  HFRMSNorm q_a_layernorm{nullptr}, kv_a_layernorm{nullptr};
};
TORCH_MODULE(HFMLAttention);

/// A router's decisions for T tokens.
struct HFRouting {
  torch::Tensor logits;   ///< [T, E] gate(x) (float32 or wider for DeepSeek-V2/V3, else the weights' dtype)
  torch::Tensor scores;   ///< [T, E] softmax of the logits (sigmoid for DeepSeek-V3), at least float32
                          ///< (DeepSeek-MoE: in the weights' dtype, as its gate computes it)
  torch::Tensor experts;  ///< [T, k] int64, the chosen experts
  torch::Tensor weights;  ///< [T, k] their weights as applied to the expert outputs (renormalised / scaled), in
                          ///< the weights' dtype (DeepSeek-V2/V3: at least float32, as transformers multiplies)
};

/// The router ("gate"): weight [E, H]; DeepSeek-V3 adds the buffer e_score_correction_bias [E].
class HFRouterImpl : public torch::nn::Module {
 public:
  HFRouterImpl(detail::HFWeightTaker& w, const std::string& prefix, const HFConfig& c);
  /// Routes tokens x [T, H] by the family's rule:
  ///  Mixtral, Qwen2/3-MoE, OLMoE: softmax, top-k, divided by their sum when norm_topk_prob (Mixtral: always);
  ///  DeepSeek-MoE/V2: softmax, greedy top-k (V2 also group_limited_greedy: the topk_group groups with the highest
  ///    single score, others zeroed), divided by (sum + 1e-20) when norm_topk_prob and k > 1, otherwise (V2)
  ///    multiplied by routed_scaling_factor;
  ///  DeepSeek-V3: sigmoid scores; choice by scores + e_score_correction_bias within the topk_group groups of
  ///    highest top-2 sums (noaux_tc); weights are the plain scores, normalised when norm_topk_prob, times
  ///    routed_scaling_factor.
  HFRouting forward(const torch::Tensor& x);
  HFConfig config;
  torch::Tensor weight, e_score_correction_bias;
};
TORCH_MODULE(HFRouter);

/// The routed MoE block: router "gate", experts "experts.E", and the family's shared expert (Qwen2-MoE:
/// "shared_expert" gated by sigmoid("shared_expert_gate"); DeepSeek: "shared_experts", ungated).
class HFSparseMoEImpl : public torch::nn::Module {
 public:
  HFSparseMoEImpl(detail::HFWeightTaker& w, const std::string& prefix, const HFConfig& c);
  /// x [T, H] -> [T, H]: sum over chosen e of w_e expert_e(x) (each expert run on its own tokens, in expert order,
  /// accumulated with index_add as transformers does), plus the shared expert.
  torch::Tensor forward(const torch::Tensor& x, HFRouting* routing = nullptr, torch::Tensor* shared_gate = nullptr);
  /// Expert e's unweighted output on x [T, H] (for running every expert on the same tokens).
  torch::Tensor expert_forward(std::int64_t e, const torch::Tensor& x);
  /// The shared expert's output on x, gated for Qwen2-MoE (undefined when there is none).
  torch::Tensor shared_forward(const torch::Tensor& x, torch::Tensor* gate_values = nullptr);
  std::int64_t num_experts() const { return static_cast<std::int64_t>(experts->size()); }

  HFConfig config;
  HFRouter gate{nullptr};
  torch::nn::ModuleList experts{nullptr};
  HFMLP shared_expert{nullptr};       ///< Qwen2-MoE
  HFLinear shared_expert_gate{nullptr};  ///< Qwen2-MoE: [1, H]
  HFMLP shared_experts{nullptr};      ///< DeepSeek
};
TORCH_MODULE(HFSparseMoE);

/// What one MoE layer saw and decided during a forward pass (HFForwardOptions::moe_trace). T = B * S tokens in
/// row-major (batch, position) order.
struct HFMoETrace {
  std::int64_t layer = 0;
  torch::Tensor inputs;         ///< [T, H] the block's input: the hidden state after post_attention_layernorm
  torch::Tensor router_logits;  ///< [T, E]
  torch::Tensor router_probs;   ///< [T, E] softmax (DeepSeek-V3: sigmoid) of the logits
  torch::Tensor topk_experts;   ///< [T, k] int64
  torch::Tensor topk_weights;   ///< [T, k] as applied to the experts' outputs
  torch::Tensor shared_gate;    ///< [T, 1] Qwen2-MoE's sigmoid(shared_expert_gate(x)); undefined otherwise
};

/// Pre-norm decoder layer: x + attn(input_layernorm(x)), then h + ffn(post_attention_layernorm(h)) with ffn a
/// dense MLP ("mlp") or the MoE block ("mlp", Mixtral "block_sparse_moe").
class HFDecoderLayerImpl : public torch::nn::Module {
 public:
  HFDecoderLayerImpl(detail::HFWeightTaker& w, std::int64_t layer, const HFConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const HFRope& rope, const torch::Tensor& allowed,
                        HFMoETrace* trace = nullptr);
  std::int64_t layer;
  HFRMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  HFAttention self_attn{nullptr};
  HFMLAttention self_attn_mla{nullptr};  ///< registered as "self_attn" for DeepSeek-V2/V3
  HFMLP mlp{nullptr};
  HFSparseMoE moe{nullptr};  ///< registered as "mlp" or "block_sparse_moe"
};
TORCH_MODULE(HFDecoderLayer);

/// The token embedding "embed_tokens": weight [V, H].
class HFEmbeddingImpl : public torch::nn::Module {
 public:
  HFEmbeddingImpl(detail::HFWeightTaker& w, const std::string& prefix);
  /// ids [...] int64 -> [..., H].
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;
};
TORCH_MODULE(HFEmbedding);

/// The decoder stack "model": embed_tokens, layers.L, norm.
class HFModelImpl : public torch::nn::Module {
 public:
  HFModelImpl(detail::HFWeightTaker& w, const HFConfig& c);
  HFEmbedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  HFRMSNorm norm{nullptr};
};
TORCH_MODULE(HFModel);

struct HFForwardOptions {
  /// Keep every layer's output in HFOutput::hidden_states.
  bool hidden_states = false;
  /// Record each MoE layer's inputs and routing in HFOutput::moe.
  bool moe_trace = false;
};

struct HFOutput {
  torch::Tensor logits;  ///< [B, S, V] in the weights' dtype
  /// With hidden_states: num_hidden_layers + 1 tensors [B, S, H]: the embeddings, then each decoder layer's output
  /// (before the final norm; transformers' output_hidden_states replaces the last one by last_hidden_state).
  std::vector<torch::Tensor> hidden_states;
  torch::Tensor last_hidden_state;  ///< [B, S, H] after the final norm
  std::vector<HFMoETrace> moe;      ///< with moe_trace: one per MoE layer, in layer order
};

/// A Hugging Face MoE causal LM: "model" (HFModel) and "lm_head" (absent with tied embeddings).
class HFCausalLMImpl : public torch::nn::Module {
 public:
  /// Builds the model from weights named as in the checkpoint (the map is consumed). Every tensor of
  /// hf_tensor_specs(config) must be present with its shape, and nothing else; float dtypes only, all the same.
  /// Throws InputError naming config.file and the tensor otherwise.
  HFCausalLMImpl(HFConfig config, HFWeights weights);

  /// Logits [B, S, V] for token ids [B, S] (int64, values in [0, vocab_size)); positions 0..S-1, causal mask.
  /// Throws InputError for ids of the wrong type/shape or out of range (naming config.json's vocab_size).
  torch::Tensor forward(const torch::Tensor& input_ids) { return forward_with(input_ids, {}).logits; }
  HFOutput forward_with(const torch::Tensor& input_ids, const HFForwardOptions& options);
  /// The LM loss: mean token cross-entropy (nats) of logits[:, :-1] against input_ids[:, 1:] over all B * (S - 1)
  /// predictions, computed in at least float32. Needs S >= 2 (InputError otherwise).
  torch::Tensor loss(const torch::Tensor& input_ids);

  const HFConfig& config() const { return config_; }
  /// dtype of the weights (and of the computation).
  torch::ScalarType dtype() const { return model->embed_tokens->weight.scalar_type(); }
  /// Decoder layers holding a routed MoE block, ascending.
  std::vector<std::int64_t> moe_layers() const;
  /// Layer `layer`'s MoE block; throws std::out_of_range for a dense layer.
  HFSparseMoE moe_block(std::int64_t layer) const;
  /// RoPE tables for positions 0..seq_len-1 in the model's dtype (cached for the last length asked).
  HFRope rope(std::int64_t seq_len) const;

  HFModel model{nullptr};
  HFLinear lm_head{nullptr};

 private:
  HFConfig config_;
  torch::Tensor inv_freq32_, inv_freq64_;  // [rope_dim / 2] rotary frequencies, computed in float32 / float64
  double rope_mscale_ = 1.0;                // YaRN's magnitude factor on cos and sin
  mutable HFRope rope_cache_;
};
TORCH_MODULE(HFCausalLM);

/// The dtype a loaded model computes in.
enum class HFDType {
  Keep,  ///< the checkpoint's (that of model.embed_tokens.weight): F64, F32, BF16; F16 becomes F32 (LibTorch's CPU
         ///< matrix products lack float16)
  F32,
  F64,
  BF16,
};
/// "keep", "f32", "f64", "bf16" (InputError naming `flag` otherwise).
HFDType parse_hf_dtype(const std::string& name, const std::string& flag = "--dtype");

struct HFLoadOptions {
  HFDType dtype = HFDType::Keep;
  /// select_parameters spec (model/params.hpp: all, router, expert:L.E, re:REGEX) of the parameters that
  /// require grad; empty: none.
  std::string trainable;
};

/// Loads a model folder: config.json (read_hf_config) and the weights (open_checkpoint: one safetensors file,
/// a sharded index, or a torch state dict; any float dtype incl. FP8 with block scales, dequantised).
/// Checks every tensor's presence, shape and dtype against the config; extra tensors are an error unless
/// hf_unused_tensor says otherwise (or they are FP8 block scales). Weights already in the target dtype are mapped
/// from the safetensors file copy-on-write (no copy; in-place changes stay private to the process); others are
/// converted straight into their final tensor. Only the `trainable` parameters require grad.
/// Throws InputError naming the file, the tensor and both shapes.
HFCausalLM load_hf_model(const std::string& dir, const HFLoadOptions& options = {});

}  // namespace moescope
