// config.json of the released models, parsed with their real field names; the tensor lists they imply add up to the
// published parameter counts; bad and unsupported values give one-line errors naming the file and the field.
#include <gtest/gtest.h>

#include "moescope/io/hf_config.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using nlohmann::json;

// The released configs (fields as published, irrelevant ones trimmed).
const char* kMixtral = R"({"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32, "num_experts_per_tok": 2,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": false,
  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": true,
  "vocab_size": 32000})";

const char* kQwen15MoE = R"({"architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 5632, "max_position_embeddings": 8192, "max_window_layers": 21, "model_type": "qwen2_moe",
  "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 16, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936, "decoder_sparse_step": 1,
  "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4,
  "num_experts": 60, "norm_topk_prob": false, "output_router_logits": false, "router_aux_loss_coef": 0.001})";

const char* kQwen3 = R"({"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144, "max_position_embeddings": 40960,
  "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe", "moe_intermediate_size": 768,
  "norm_topk_prob": true, "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
  "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": false, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";

const char* kOlmoe = R"({"architectures": ["OlmoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "clip_qkv": null, "eos_token_id": 50279, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 1024, "max_position_embeddings": 4096, "model_type": "olmoe", "norm_topk_prob": false,
  "num_attention_heads": 16, "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16,
  "num_key_value_heads": 16, "output_router_logits": false, "pad_token_id": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": null, "rope_theta": 10000.0, "router_aux_loss_coef": 0.01, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 50304})";

const char* kDeepseekMoE = R"({"architectures": ["DeepseekForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 100000, "eos_token_id": 100001,
  "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 10944, "max_position_embeddings": 4096, "model_type": "deepseek", "moe_intermediate_size": 1408,
  "moe_layer_freq": 1, "n_routed_experts": 64, "n_shared_experts": 2, "norm_topk_prob": false,
  "num_attention_heads": 16, "num_experts_per_tok": 6, "num_hidden_layers": 28, "num_key_value_heads": 16,
  "pretraining_tp": 1, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 10000, "scoring_func": "softmax",
  "seq_aux": true, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 102400})";

const char* kDeepseekV2Lite = R"({"architectures": ["DeepseekV2ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 100000, "eos_token_id": 100001,
  "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 10944, "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2",
  "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2,
  "norm_topk_prob": false, "num_attention_heads": 16, "num_experts_per_tok": 6, "num_hidden_layers": 27,
  "num_key_value_heads": 16, "pretraining_tp": 1, "q_lora_rank": null, "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
  "mscale": 0.707, "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096, "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": true,
  "tie_word_embeddings": false, "topk_group": 1, "topk_method": "greedy", "torch_dtype": "bfloat16",
  "use_cache": true, "v_head_dim": 128, "vocab_size": 102400})";

const char* kDeepseekV3 = R"({"architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1,
  "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02,
  "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3",
  "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1,
  "norm_topk_prob": true, "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61,
  "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64, "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
  "quant_method": "fp8", "weight_block_size": [128, 128]}, "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32,
  "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
  "type": "yarn"}, "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": true,
  "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
  "use_cache": true, "v_head_dim": 128, "vocab_size": 129280})";

std::int64_t parameter_count(const HFConfig& c) {
  std::int64_t n = 0;
  for (const auto& s : hf_tensor_specs(c)) {
    std::int64_t k = 1;
    for (auto d : s.shape) k *= d;
    n += k;
  }
  return n;
}

HFConfig parse(const char* text) { return parse_hf_config(json::parse(text), "config.json"); }

// The tensor lists add up to the published totals: Mixtral-8x7B 46.7B, Qwen1.5-MoE-A2.7B 14.3B, Qwen3-30B-A3B
// 30.5B, OLMoE-1B-7B 6.9B, DeepSeek-MoE-16B 16.4B, DeepSeek-V2-Lite 15.7B, DeepSeek-V3 671B (without its 14B
// multi-token-prediction layer). The exact counts were worked out by hand from the shapes.
TEST(HFConfig, ReleasedModelsHaveTheirPublishedParameterCounts) {
  EXPECT_EQ(parameter_count(parse(kMixtral)), 46'702'792'704);
  EXPECT_EQ(parameter_count(parse(kQwen15MoE)), 14'315'784'192);
  EXPECT_EQ(parameter_count(parse(kQwen3)), 30'532'122'624);
  EXPECT_EQ(parameter_count(parse(kOlmoe)), 6'919'161'856);
  EXPECT_EQ(parameter_count(parse(kDeepseekMoE)), 16'375'728'128);
  EXPECT_EQ(parameter_count(parse(kDeepseekV2Lite)), 15'706'484'224);
  EXPECT_EQ(parameter_count(parse(kDeepseekV3)), 671'026'419'200);
}

TEST(HFConfig, MixtralFields) {
  const HFConfig c = parse(kMixtral);
  EXPECT_EQ(c.family, HFFamily::Mixtral);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.moe_intermediate_size, 14336);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.moe_prefix(3), "model.layers.3.block_sparse_moe.");
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<std::int64_t>{2});
  const auto specs = hf_tensor_specs(c);
  EXPECT_EQ(specs.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(specs.back().name, "lm_head.weight");
  auto shape_of = [&](const std::string& n) {
    for (const auto& s : specs)
      if (s.name == n) return s.shape;
    return std::vector<std::int64_t>{};
  };
  EXPECT_EQ(shape_of("model.layers.31.block_sparse_moe.experts.7.w2.weight"), (std::vector<std::int64_t>{4096, 14336}));
  EXPECT_EQ(shape_of("model.layers.0.self_attn.k_proj.weight"), (std::vector<std::int64_t>{1024, 4096}));
  EXPECT_EQ(shape_of("model.layers.0.block_sparse_moe.gate.weight"), (std::vector<std::int64_t>{8, 4096}));
}

TEST(HFConfig, QwenAndOlmoeFields) {
  const HFConfig q2 = parse(kQwen15MoE);
  EXPECT_TRUE(q2.qkv_bias);
  EXPECT_FALSE(q2.attention_bias);
  EXPECT_EQ(q2.shared_expert_intermediate_size, 5632);
  EXPECT_EQ(q2.sliding_window, 0);  // use_sliding_window false
  const HFConfig q3 = parse(kQwen3);
  EXPECT_EQ(q3.qk_norm, HFQKNorm::PerHead);
  EXPECT_EQ(q3.head_dim, 128);  // not hidden / heads = 64
  EXPECT_TRUE(q3.norm_topk_prob);
  EXPECT_FALSE(q3.qkv_bias);
  const HFConfig o = parse(kOlmoe);
  EXPECT_EQ(o.qk_norm, HFQKNorm::Full);
  EXPECT_EQ(o.moe_intermediate_size, 1024);
  EXPECT_EQ(o.clip_qkv, 0.0);
  EXPECT_FALSE(o.bos_token_id.has_value());
  EXPECT_EQ(o.pad_token_id, 1);
  // Qwen's layer rules
  auto j = json::parse(kQwen15MoE);
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  const HFConfig s = parse_hf_config(j, "config.json");
  EXPECT_FALSE(s.is_moe_layer(0));
  EXPECT_TRUE(s.is_moe_layer(1));
  EXPECT_FALSE(s.is_moe_layer(3));  // listed in mlp_only_layers
  EXPECT_TRUE(s.is_moe_layer(5));
}

TEST(HFConfig, DeepseekFields) {
  const HFConfig v1 = parse(kDeepseekMoE);
  EXPECT_FALSE(v1.is_moe_layer(0));
  EXPECT_TRUE(v1.is_moe_layer(1));
  EXPECT_EQ(v1.n_shared_experts, 2);
  EXPECT_FALSE(v1.uses_mla());
  EXPECT_EQ(v1.head_dim, 128);
  const HFConfig v2 = parse(kDeepseekV2Lite);
  EXPECT_TRUE(v2.uses_mla());
  EXPECT_EQ(v2.q_lora_rank, 0);
  EXPECT_EQ(v2.qk_head_dim(), 192);
  EXPECT_EQ(v2.rope_dim(), 64);
  EXPECT_EQ(v2.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(v2.rope_scaling.factor, 40.0);
  EXPECT_DOUBLE_EQ(v2.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_EQ(v2.rope_scaling.original_max_position_embeddings, 4096);
  const HFConfig v3 = parse(kDeepseekV3);
  EXPECT_EQ(v3.scoring_func, "sigmoid");
  EXPECT_EQ(v3.topk_method, "noaux_tc");
  EXPECT_EQ(v3.n_group, 8);
  EXPECT_EQ(v3.topk_group, 4);
  EXPECT_DOUBLE_EQ(v3.routed_scaling_factor, 2.5);
  EXPECT_FALSE(v3.is_moe_layer(2));
  EXPECT_TRUE(v3.is_moe_layer(3));
  // the multi-token-prediction layer 61 is stored but unused; layer 62 would be foreign
  EXPECT_TRUE(hf_unused_tensor(v3, "model.layers.61.eh_proj.weight"));
  EXPECT_FALSE(hf_unused_tensor(v3, "model.layers.62.eh_proj.weight"));
  EXPECT_FALSE(hf_unused_tensor(v3, "model.layers.60.mlp.gate.weight"));
  EXPECT_TRUE(hf_unused_tensor(v3, "model.layers.0.self_attn.rotary_emb.inv_freq"));
}

// ------------------------------------------------------------------------------------------------- errors

std::string error_of(json j) {
  try {
    parse_hf_config(j, "m/config.json");
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("m/config.json: ", 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  }
  return "";
}

json with(const char* base, const json& patch) {
  json j = json::parse(base);
  j.merge_patch(patch);
  return j;
}

TEST(HFConfig, ErrorsNameTheField) {
  EXPECT_NE(error_of(with(kMixtral, {{"architectures", {"LlamaForCausalLM"}}})).find("\"LlamaForCausalLM\" is not supported"),
            std::string::npos);
  EXPECT_NE(error_of(with(kMixtral, {{"hidden_size", nullptr}})).find("'hidden_size' is missing"), std::string::npos);
  EXPECT_NE(error_of(with(kMixtral, {{"hidden_size", "big"}})).find("'hidden_size': expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of(with(kMixtral, {{"num_key_value_heads", 5}})).find("'num_key_value_heads'"), std::string::npos);
  EXPECT_NE(error_of(with(kMixtral, {{"num_experts_per_tok", 9}})).find("'num_experts_per_tok'"), std::string::npos);
  EXPECT_NE(error_of(with(kOlmoe, {{"rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}}}))
                .find("'rope_scaling': rope type \"dynamic\" is not supported yet"),
            std::string::npos);
  EXPECT_NE(error_of(with(kQwen3, {{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}})).find("not supported yet"),
            std::string::npos);
  EXPECT_NE(error_of(with(kQwen3, {{"use_sliding_window", true}})).find("'use_sliding_window'"), std::string::npos);
  EXPECT_NE(error_of(with(kDeepseekV2Lite, {{"scoring_func", "sigmoid"}})).find("'scoring_func'"), std::string::npos);
  EXPECT_NE(error_of(with(kDeepseekV2Lite, {{"topk_method", "noaux_tc"}})).find("'topk_method'"), std::string::npos);
  EXPECT_NE(error_of(with(kDeepseekV3, {{"n_group", 7}})).find("'n_group'"), std::string::npos);
  EXPECT_NE(error_of(with(kDeepseekV3, {{"quantization_config", {{"quant_method", "gptq"}}}})).find("'quantization_config'"),
            std::string::npos);
  EXPECT_NE(error_of(with(kMixtral, {{"hidden_act", "gelu"}})).find("'hidden_act'"), std::string::npos);
  EXPECT_NE(error_of(with(kDeepseekV2Lite, {{"rope_scaling", {{"factor", -1}}}})).find("'rope_scaling.factor'"),
            std::string::npos);
  EXPECT_NE(error_of(with(kQwen15MoE, {{"mlp_only_layers", {30}}})).find("'mlp_only_layers'"), std::string::npos);
  EXPECT_NE(error_of(json::array()).find("expected a JSON object"), std::string::npos);
  json no_arch = json::parse(kOlmoe);
  no_arch.erase("architectures");
  EXPECT_EQ(parse_hf_config(no_arch, "c.json").family, HFFamily::OLMoE);  // model_type suffices
  no_arch["model_type"] = "llama";
  EXPECT_NE(error_of(no_arch).find("model_type \"llama\""), std::string::npos);
}

TEST(HFConfig, ReadsAFolderOrAFile) {
  testing::TempDir dir;
  testing::write_text(dir.file("config.json"), kOlmoe);
  EXPECT_EQ(read_hf_config(dir.path()).file, dir.file("config.json"));
  EXPECT_EQ(read_hf_config(dir.file("config.json")).num_experts, 64);
  testing::write_text(dir.file("bad.json"), "{\"hidden_size\": ");
  EXPECT_THROW(read_hf_config(dir.file("bad.json")), InputError);
  EXPECT_THROW(read_hf_config(dir.file("none.json")), InputError);
}

}  // namespace
}  // namespace moescope
