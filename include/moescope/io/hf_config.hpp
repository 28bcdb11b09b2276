#pragma once
// Hugging Face MoE language models' config.json (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-MoE,
// DeepSeek-V2/V2-Lite, DeepSeek-V3), read with the families' own field names and defaults, and the list of
// tensors a checkpoint of that config holds. No torch here: the synthetic model writer (io/synthetic_model.hpp)
// and the loader (model/hf.hpp) share it.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace moescope {

/// The model families moescope runs natively.
enum class HFFamily { Mixtral, Qwen2MoE, Qwen3MoE, OLMoE, DeepSeekMoE, DeepSeekV2, DeepSeekV3 };

/// "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek", "deepseek_v2", "deepseek_v3" (config.json's model_type).
std::string_view hf_model_type(HFFamily f);
/// "MixtralForCausalLM", ... (config.json's architectures[0]).
std::string_view hf_architecture(HFFamily f);

/// How queries and keys are normalised before RoPE.
enum class HFQKNorm {
  None,
  PerHead,  ///< Qwen3-MoE: RMSNorm over head_dim, one weight [head_dim] shared by the heads
  Full,     ///< OLMoE: RMSNorm over the whole projection, q_norm [heads*head_dim], k_norm [kv_heads*head_dim]
};

/// config.json's rope_scaling. Supported: none ("default"), "linear" (positions divided by factor) and "yarn"
/// (DeepSeek-V2/V3's YaRN, with its attention-scale correction).
struct HFRopeScaling {
  std::string type = "default";
  double factor = 1.0;
  std::int64_t original_max_position_embeddings = 0;  ///< yarn
  double beta_fast = 32.0, beta_slow = 1.0;           ///< yarn: correction range in rotations
  double mscale = 1.0, mscale_all_dim = 0.0;          ///< yarn: DeepSeek's magnitude corrections
};

/// A parsed config.json. Sizes are element counts. Fields a family does not use keep the values below.
struct HFConfig {
  std::string file;  ///< the config.json it came from (for messages)
  HFFamily family = HFFamily::Mixtral;
  std::string architecture, model_type;

  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;  ///< dense MLP width (Mixtral: every expert's width)
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;  ///< per-head width of q/k/v (MLA: unused, see qk_*_head_dim)
  std::string hidden_act = "silu";
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  HFRopeScaling rope_scaling;
  std::int64_t max_position_embeddings = 0;
  /// Mixtral: each token attends to itself and the sliding_window - 1 tokens before it; 0 = no window.
  std::int64_t sliding_window = 0;
  bool attention_bias = false;  ///< biases on q/k/v/o (Qwen3-MoE, OLMoE, DeepSeek); MLA: on q_a/kv_a/o
  bool qkv_bias = false;        ///< biases on q/k/v only (Qwen2-MoE)
  double clip_qkv = 0.0;        ///< OLMoE: q, k, v clamped to [-clip_qkv, clip_qkv]; 0 = none
  HFQKNorm qk_norm = HFQKNorm::None;

  // MoE
  std::int64_t num_experts = 0;          ///< routed experts per MoE layer
  std::int64_t num_experts_per_tok = 0;  ///< k
  std::int64_t moe_intermediate_size = 0;  ///< routed expert width (Mixtral: intermediate_size)
  /// Divide the k chosen weights by their sum (Mixtral: always).
  bool norm_topk_prob = false;
  std::int64_t decoder_sparse_step = 1;       ///< Qwen
  std::vector<std::int64_t> mlp_only_layers;  ///< Qwen
  std::int64_t first_k_dense_replace = 0;     ///< DeepSeek
  std::int64_t moe_layer_freq = 1;            ///< DeepSeek
  std::int64_t shared_expert_intermediate_size = 0;  ///< Qwen2-MoE's gated shared expert; 0 = none
  std::int64_t n_shared_experts = 0;  ///< DeepSeek: one shared MLP of width n_shared_experts * moe_intermediate_size
  double routed_scaling_factor = 1.0;  ///< DeepSeek-V2/V3
  std::string scoring_func = "softmax";  ///< softmax, or sigmoid (DeepSeek-V3)
  std::string topk_method = "greedy";    ///< greedy, group_limited_greedy (V2), noaux_tc (V3)
  std::int64_t n_group = 1, topk_group = 1;

  // Multi-head latent attention (DeepSeek-V2/V3)
  std::int64_t kv_lora_rank = 0, q_lora_rank = 0;  ///< q_lora_rank 0: a plain q_proj
  std::int64_t qk_rope_head_dim = 0, qk_nope_head_dim = 0, v_head_dim = 0;
  std::int64_t num_nextn_predict_layers = 0;  ///< DeepSeek-V3: multi-token-prediction layers stored after the last

  bool tie_word_embeddings = false;
  std::string torch_dtype;  ///< as written ("bfloat16", ...), informational
  std::optional<std::int64_t> bos_token_id, pad_token_id;
  std::vector<std::int64_t> eos_token_ids;  ///< eos_token_id (an integer or a list)

  /// True when decoder layer `layer` holds a routed MoE block (the family's rule: Qwen's decoder_sparse_step and
  /// mlp_only_layers, DeepSeek's first_k_dense_replace and moe_layer_freq; every layer otherwise).
  bool is_moe_layer(std::int64_t layer) const;
  /// True for DeepSeek-V2/V3's multi-head latent attention.
  bool uses_mla() const { return family == HFFamily::DeepSeekV2 || family == HFFamily::DeepSeekV3; }
  /// Width of the query/key heads: head_dim, or qk_nope_head_dim + qk_rope_head_dim for MLA.
  std::int64_t qk_head_dim() const { return uses_mla() ? qk_nope_head_dim + qk_rope_head_dim : head_dim; }
  /// Width of the rotated part of each query/key head: head_dim, or qk_rope_head_dim for MLA.
  std::int64_t rope_dim() const { return uses_mla() ? qk_rope_head_dim : head_dim; }
  /// Prefix of layer L's MoE block: "model.layers.L.block_sparse_moe." (Mixtral) or "model.layers.L.mlp.".
  std::string moe_prefix(std::int64_t layer) const;
  /// Names of an expert's gate/up/down matrices: w1/w3/w2 (Mixtral) or gate_proj/up_proj/down_proj.
  std::vector<std::string> expert_matrix_names() const;
};

/// Parses config.json's content. Throws InputError naming `file` and the field: a missing required size, a wrong
/// type, an inconsistent value (e.g. heads not a multiple of kv heads), an unknown architecture (naming the value
/// and the known ones), or a value this implementation does not support yet (rope_scaling types other than
/// linear/yarn, sliding windows outside Mixtral, sigmoid routing outside DeepSeek-V3, an activation other than
/// silu, weight quantisation other than FP8 block scales, ...).
HFConfig parse_hf_config(const nlohmann::json& j, const std::string& file);

/// Reads `path` (a config.json, or a folder holding one) and parses it. Throws InputError.
HFConfig read_hf_config(const std::string& path);

/// One tensor a checkpoint must hold.
struct HFTensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
};

/// Every tensor a checkpoint of this config holds, with its shape, in model order (embeddings, layers, final
/// norm, lm_head unless tied). These are exactly the module's parameters and buffers (model/hf.hpp).
std::vector<HFTensorSpec> hf_tensor_specs(const HFConfig& c);

/// True for tensors kept in (at least) float32 whatever the model's dtype, as transformers keeps them: DeepSeek-V3's
/// e_score_correction_bias.
bool hf_float32_tensor(const std::string& name);

/// True for tensors a checkpoint may hold that the forward pass does not use: rotary_emb.inv_freq buffers,
/// lm_head.weight beside tied embeddings, DeepSeek-V3's multi-token-prediction layers (model.layers.N.* for
/// N >= num_hidden_layers, below num_hidden_layers + num_nextn_predict_layers). FP8 block scales
/// ("<name>_scale_inv") are consumed by the readers and checked by the loader, not here.
bool hf_unused_tensor(const HFConfig& c, const std::string& name);

}  // namespace moescope
