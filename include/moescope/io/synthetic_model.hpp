#pragma once
// Tiny random Hugging Face MoE model folders, complete enough to load and run: config.json with the family's real
// field names, every weight (embeddings, attention, norms, routers, experts, shared experts, lm_head), a
// tokenizer.json (a small BPE with the family's normalizer / pre-tokenizer / post-processor / decoder as the real
// model ships them) and tokenizer_config.json. For tests and `moescope synth FAMILY --model -o DIR`.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moescope/io/tensor.hpp"

namespace moescope {

struct SyntheticModelOptions {
  /// mixtral, qwen2-moe, qwen3-moe, olmoe, deepseek-moe, deepseek-v2, deepseek-v3
  std::string family = "mixtral";
  DType dtype = DType::F32;  ///< F32, BF16 or F64
  std::uint64_t seed = 0;
  int shards = 1;  ///< > 1: model-0000k-of-0000n.safetensors and model.safetensors.index.json
  /// Sizes replacing the family's tiny defaults when > 0: decoder layers, routed experts per MoE layer, hidden size,
  /// routed expert width (Mixtral and OLMoE: intermediate_size; the others: moe_intermediate_size).
  int layers = 0, experts = 0;
  std::int64_t hidden = 0, intermediate = 0;
  /// Merged into the family's tiny config.json (RFC 7396 merge patch: null removes a key) before the weights are
  /// planned, e.g. {"sliding_window": 3}, {"tie_word_embeddings": true}, {"num_hidden_layers": 4}.
  nlohmann::json config_overrides = nlohmann::json::object();
};

/// The families write_synthetic_model knows.
std::vector<std::string> synthetic_model_families();

/// The config.json the options describe (the family's tiny defaults, then the sizes, then the overrides). Tiny defaults:
/// hidden 32, 2-3 layers, 4-8 experts of width 16-48, GQA where the family uses it, Qwen2-MoE's gated shared
/// expert and a dense layer (mlp_only_layers), DeepSeek's dense first layer and shared experts, DeepSeek-V2's
/// YaRN rope scaling, DeepSeek-V3's grouped sigmoid router. Throws InputError for an unknown family.
nlohmann::json synthetic_model_config(const SyntheticModelOptions& options);

/// The family's tokenizer.json: 256 byte tokens (GPT-2's byte-level alphabet; Mixtral: SentencePiece-style
/// <0xNN> byte-fallback tokens and single characters), a few dozen English merges, and the family's special tokens
/// as added tokens. Its size is synthetic_model_config's vocab_size.
nlohmann::ordered_json synthetic_tokenizer(const std::string& family);

/// Writes DIR/{config.json, tokenizer.json, tokenizer_config.json, model.safetensors (or shards and an index)}.
/// Weights: Gaussian from util/random.hpp's Rng (seeded by seed and the tensor's name), matrices with std
/// 1/sqrt(fan_in), norm weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1); DeepSeek-V3's e_score_correction_bias is
/// written in F32 (as the real checkpoints) unless dtype is F64. Files are written as NAME.tmp and renamed.
/// Throws InputError for bad options, a config the loader would reject, or I/O errors.
void write_synthetic_model(const std::string& dir, const SyntheticModelOptions& options);

}  // namespace moescope
