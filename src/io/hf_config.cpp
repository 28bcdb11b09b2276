#include "moescope/io/hf_config.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "moescope/util/error.hpp"
#include "moescope/util/strings.hpp"

namespace moescope {
namespace {

using nlohmann::json;

struct FamilyRow {
  HFFamily family;
  const char* architecture;
  const char* model_type;
};
constexpr FamilyRow kFamilies[] = {
    {HFFamily::Mixtral, "MixtralForCausalLM", "mixtral"},
    {HFFamily::Qwen2MoE, "Qwen2MoeForCausalLM", "qwen2_moe"},
    {HFFamily::Qwen3MoE, "Qwen3MoeForCausalLM", "qwen3_moe"},
    {HFFamily::OLMoE, "OlmoeForCausalLM", "olmoe"},
    {HFFamily::DeepSeekMoE, "DeepseekForCausalLM", "deepseek"},
    {HFFamily::DeepSeekV2, "DeepseekV2ForCausalLM", "deepseek_v2"},
    {HFFamily::DeepSeekV3, "DeepseekV3ForCausalLM", "deepseek_v3"},
};

const FamilyRow& row_of(HFFamily f) {
  for (const auto& r : kFamilies)
    if (r.family == f) return r;
  return kFamilies[0];
}

std::string known_architectures() {
  std::string s;
  for (const auto& r : kFamilies) s += std::string(s.empty() ? "" : ", ") + r.architecture;
  return s;
}

// Typed access to config.json fields; null counts as absent (HF writes null for "not set").
class Fields {
 public:
  Fields(const json& j, const std::string& file, std::string prefix = "")
      : j_(j), file_(file), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const {
    const auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  const json* get(const std::string& key) const {
    const auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    fail_input(file_, "field '" + prefix_ + key + "': " + what);
  }

  std::int64_t integer(const std::string& key, std::int64_t fallback) const {
    const json* v = get(key);
    return v ? as_integer(key, *v) : fallback;
  }
  std::int64_t required_integer(const std::string& key) const {
    const json* v = get(key);
    if (!v) fail_input(file_, "field '" + prefix_ + key + "' is missing");
    return as_integer(key, *v);
  }
  std::int64_t as_integer(const std::string& key, const json& v) const {
    if (v.is_number_integer()) return v.get<std::int64_t>();
    // Some writers store integral sizes as floats (4096.0); anything else is an error.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<std::int64_t>(d);
    }
    fail(key, "expected an integer, got " + v.dump());
  }
  double number(const std::string& key, double fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    if (!v->is_number()) fail(key, "expected a number, got " + v->dump());
    return v->get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(key, "expected true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    if (!v->is_string()) fail(key, "expected a string, got " + v->dump());
    return v->get<std::string>();
  }
  std::vector<std::int64_t> integers(const std::string& key) const {
    const json* v = get(key);
    if (!v) return {};
    if (v->is_number()) return {as_integer(key, *v)};
    if (!v->is_array()) fail(key, "expected a list of integers, got " + v->dump());
    std::vector<std::int64_t> out;
    for (const auto& x : *v) out.push_back(as_integer(key, x));
    return out;
  }

 private:
  const json& j_;
  const std::string& file_;
  std::string prefix_;
};

HFFamily detect_family(const json& j, const std::string& file, std::string* architecture, std::string* model_type) {
  const Fields f(j, file);
  *model_type = f.string("model_type", "");
  const json* arch = f.get("architectures");
  if (arch) {
    if (!arch->is_array() || arch->empty() || !(*arch)[0].is_string())
      f.fail("architectures", "expected a list of names, got " + arch->dump());
    *architecture = (*arch)[0].get<std::string>();
    for (const auto& r : kFamilies)
      if (*architecture == r.architecture) return r.family;
    fail_input(file, "architectures \"" + *architecture + "\" is not supported (known: " + known_architectures() + ")");
  }
  for (const auto& r : kFamilies)
    if (*model_type == r.model_type) {
      *architecture = r.architecture;
      return r.family;
    }
  fail_input(file, "no architectures field and model_type \"" + *model_type + "\" is not supported (known: " +
                       known_architectures() + ")");
}

void parse_rope(const Fields& f, HFConfig& c) {
  // transformers >= 5 writes rope_parameters {"rope_type", "rope_theta", ...}; older files rope_theta and
  // rope_scaling {"type" or "rope_type", "factor", ...}.
  const char* key = f.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const json* r = f.get(key);
  if (!r) return;
  if (!r->is_object()) f.fail(key, "expected an object, got " + r->dump());
  const Fields rf(*r, c.file, std::string(key) + ".");
  const std::string type = rf.string("rope_type", rf.string("type", "default"));
  c.rope_theta = rf.number("rope_theta", c.rope_theta);
  if (type == "default") return;
  if (type != "linear" && type != "yarn")
    f.fail(key, "rope type \"" + type + "\" is not supported yet (supported: default, linear, yarn)");
  if (type == "yarn" && c.family != HFFamily::DeepSeekV2 && c.family != HFFamily::DeepSeekV3)
    f.fail(key, "rope type \"yarn\" is not supported yet for " + c.architecture +
                    " (implemented for DeepSeek-V2/V3's YaRN only)");
  c.rope_scaling.type = type;
  c.rope_scaling.factor = rf.number("factor", 1.0);
  c.rope_scaling.original_max_position_embeddings =
      rf.integer("original_max_position_embeddings", c.max_position_embeddings);
  c.rope_scaling.beta_fast = rf.number("beta_fast", 32.0);
  c.rope_scaling.beta_slow = rf.number("beta_slow", 1.0);
  c.rope_scaling.mscale = rf.number("mscale", 1.0);
  c.rope_scaling.mscale_all_dim = rf.number("mscale_all_dim", 0.0);
  for (const char* unsupported :
       {"attention_factor", "long_factor", "short_factor", "low_freq_factor", "high_freq_factor", "truncate"})
    if (rf.has(unsupported)) rf.fail(unsupported, "not supported yet");
  if (!(c.rope_scaling.factor > 0.0)) rf.fail("factor", "must be positive");
  if (type == "yarn" && c.rope_scaling.original_max_position_embeddings <= 0)
    rf.fail("original_max_position_embeddings", "must be positive");
}

void require_positive(const Fields& f, const char* key, std::int64_t v) {
  if (v <= 0) f.fail(key, "must be positive, got " + std::to_string(v));
}

}  // namespace

std::string_view hf_model_type(HFFamily f) { return row_of(f).model_type; }
std::string_view hf_architecture(HFFamily f) { return row_of(f).architecture; }

bool HFConfig::is_moe_layer(std::int64_t layer) const {
  if (num_experts <= 0 || layer < 0 || layer >= num_hidden_layers) return false;
  switch (family) {
    case HFFamily::Mixtral:
    case HFFamily::OLMoE:
      return true;
    case HFFamily::Qwen2MoE:
    case HFFamily::Qwen3MoE:
      return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) == mlp_only_layers.end() &&
             (layer + 1) % decoder_sparse_step == 0;
    case HFFamily::DeepSeekMoE:
    case HFFamily::DeepSeekV2:
    case HFFamily::DeepSeekV3:
      return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  return false;
}

std::string HFConfig::moe_prefix(std::int64_t layer) const {
  return "model.layers." + std::to_string(layer) + (family == HFFamily::Mixtral ? ".block_sparse_moe." : ".mlp.");
}

std::vector<std::string> HFConfig::expert_matrix_names() const {
  if (family == HFFamily::Mixtral) return {"w1", "w3", "w2"};
  return {"gate_proj", "up_proj", "down_proj"};
}

HFConfig parse_hf_config(const json& j, const std::string& file) {
  if (!j.is_object()) fail_input(file, "expected a JSON object");
  HFConfig c;
  c.file = file;
  c.family = detect_family(j, file, &c.architecture, &c.model_type);
  const Fields f(j, file);
  const HFFamily fam = c.family;
  const bool qwen = fam == HFFamily::Qwen2MoE || fam == HFFamily::Qwen3MoE;

  c.vocab_size = f.required_integer("vocab_size");
  c.hidden_size = f.required_integer("hidden_size");
  c.num_hidden_layers = f.required_integer("num_hidden_layers");
  c.num_attention_heads = f.required_integer("num_attention_heads");
  require_positive(f, "vocab_size", c.vocab_size);
  require_positive(f, "hidden_size", c.hidden_size);
  require_positive(f, "num_hidden_layers", c.num_hidden_layers);
  require_positive(f, "num_attention_heads", c.num_attention_heads);
  // Absent: the configuration class's default; null: as many as the attention heads.
  const std::int64_t kv_default = fam == HFFamily::Mixtral ? 8 : fam == HFFamily::Qwen3MoE ? 4 : c.num_attention_heads;
  c.num_key_value_heads = j.contains("num_key_value_heads") ? f.integer("num_key_value_heads", c.num_attention_heads)
                                                           : kv_default;
  require_positive(f, "num_key_value_heads", c.num_key_value_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    f.fail("num_key_value_heads", std::to_string(c.num_key_value_heads) + " does not divide num_attention_heads " +
                                      std::to_string(c.num_attention_heads));

  c.hidden_act = f.string("hidden_act", "silu");
  if (c.hidden_act != "silu" && c.hidden_act != "swish")
    f.fail("hidden_act", "\"" + c.hidden_act + "\" is not supported yet (supported: silu)");
  c.rms_norm_eps = f.number("rms_norm_eps", fam == HFFamily::Mixtral || fam == HFFamily::OLMoE ? 1e-5 : 1e-6);
  if (!(c.rms_norm_eps >= 0.0)) f.fail("rms_norm_eps", "must be >= 0");
  c.rope_theta = f.number("rope_theta", fam == HFFamily::Mixtral ? 1e6 : 10000.0);
  c.max_position_embeddings = f.integer("max_position_embeddings", 0);
  parse_rope(f, c);
  if (!(c.rope_theta > 0.0)) f.fail("rope_theta", "must be positive");
  if (f.has("partial_rotary_factor") && f.number("partial_rotary_factor", 1.0) != 1.0)
    f.fail("partial_rotary_factor", "values other than 1 are not supported yet");
  if (f.boolean("mlp_bias", false)) f.fail("mlp_bias", "MLP biases are not supported yet");
  if (f.has("quantization_config")) {
    // FP8 with 128x128 block scales is dequantised by the readers; nothing else is.
    const json& q = *f.get("quantization_config");
    // Compared as JSON values: a field of another type is "not fp8", not a type_error.
    const bool fp8 = q.is_object() && q.contains("quant_method") && q["quant_method"] == "fp8" &&
                     q.contains("weight_block_size") && q["weight_block_size"] == json::array({128, 128});
    if (!fp8)
      f.fail("quantization_config", q.dump() + " is not supported yet (supported: fp8 with weight_block_size [128, 128])");
  }

  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.torch_dtype = f.string("torch_dtype", f.string("dtype", ""));
  if (f.has("bos_token_id")) c.bos_token_id = f.integer("bos_token_id", 0);
  if (f.has("pad_token_id")) c.pad_token_id = f.integer("pad_token_id", 0);
  c.eos_token_ids = f.integers("eos_token_id");

  // Attention
  if (!c.uses_mla()) {
    const bool has_head_dim_field = fam == HFFamily::Mixtral || qwen;  // OLMoE and DeepSeek-MoE derive it
    c.head_dim = has_head_dim_field ? f.integer("head_dim", 0) : 0;
    if (c.head_dim == 0) {
      if (c.hidden_size % c.num_attention_heads != 0)
        f.fail("num_attention_heads", std::to_string(c.num_attention_heads) + " does not divide hidden_size " +
                                          std::to_string(c.hidden_size));
      c.head_dim = c.hidden_size / c.num_attention_heads;
    }
    require_positive(f, "head_dim", c.head_dim);
    if (c.head_dim % 2 != 0) f.fail("head_dim", "must be even for rotary embeddings, got " + std::to_string(c.head_dim));
  }
  if (fam == HFFamily::Qwen2MoE) c.qkv_bias = f.boolean("qkv_bias", true);
  if (fam != HFFamily::Mixtral && fam != HFFamily::Qwen2MoE) c.attention_bias = f.boolean("attention_bias", false);
  if (fam == HFFamily::Qwen3MoE) c.qk_norm = HFQKNorm::PerHead;
  if (fam == HFFamily::OLMoE) {
    c.qk_norm = HFQKNorm::Full;
    c.clip_qkv = f.number("clip_qkv", 0.0);
    if (c.clip_qkv < 0.0) f.fail("clip_qkv", "must be positive");
  }
  if (fam == HFFamily::Mixtral) {
    c.sliding_window = f.integer("sliding_window", 0);
    if (c.sliding_window < 0) f.fail("sliding_window", "must be positive or null");
  } else if (qwen && f.boolean("use_sliding_window", false)) {
    // transformers' releases disagree on which Qwen layers use the window; no released Qwen MoE model sets it.
    f.fail("use_sliding_window", "true is not supported yet");
  }

  // MoE
  switch (fam) {
    case HFFamily::Mixtral:
      c.num_experts = f.integer("num_local_experts", 8);
      c.num_experts_per_tok = f.integer("num_experts_per_tok", 2);
      c.intermediate_size = f.required_integer("intermediate_size");
      c.moe_intermediate_size = c.intermediate_size;
      c.norm_topk_prob = true;  // Mixtral always renormalises
      break;
    case HFFamily::OLMoE:
      c.num_experts = f.integer("num_experts", 64);
      c.num_experts_per_tok = f.integer("num_experts_per_tok", 8);
      c.intermediate_size = f.required_integer("intermediate_size");
      c.moe_intermediate_size = c.intermediate_size;  // OlmoeMLP uses intermediate_size
      c.norm_topk_prob = f.boolean("norm_topk_prob", false);
      break;
    case HFFamily::Qwen2MoE:
    case HFFamily::Qwen3MoE:
      c.num_experts = f.integer("num_experts", fam == HFFamily::Qwen2MoE ? 60 : 128);
      c.num_experts_per_tok = f.integer("num_experts_per_tok", fam == HFFamily::Qwen2MoE ? 4 : 8);
      c.intermediate_size = f.required_integer("intermediate_size");
      c.moe_intermediate_size = f.required_integer("moe_intermediate_size");
      c.norm_topk_prob = f.boolean("norm_topk_prob", false);
      c.decoder_sparse_step = f.integer("decoder_sparse_step", 1);
      require_positive(f, "decoder_sparse_step", c.decoder_sparse_step);
      c.mlp_only_layers = f.integers("mlp_only_layers");
      if (fam == HFFamily::Qwen2MoE) {
        c.shared_expert_intermediate_size = f.integer("shared_expert_intermediate_size", 5632);
        if (c.shared_expert_intermediate_size < 0) f.fail("shared_expert_intermediate_size", "must be >= 0");
      }
      break;
    case HFFamily::DeepSeekMoE:
    case HFFamily::DeepSeekV2:
    case HFFamily::DeepSeekV3: {
      const bool v3 = fam == HFFamily::DeepSeekV3;
      c.num_experts = f.integer("n_routed_experts", v3 ? 256 : 0);
      c.num_experts_per_tok = f.integer("num_experts_per_tok", v3 ? 8 : 0);
      c.intermediate_size = f.required_integer("intermediate_size");
      c.moe_intermediate_size = c.num_experts > 0 ? f.required_integer("moe_intermediate_size") : 0;
      c.norm_topk_prob = f.boolean("norm_topk_prob", v3);
      c.first_k_dense_replace = f.integer("first_k_dense_replace", v3 ? 3 : 0);
      c.moe_layer_freq = f.integer("moe_layer_freq", 1);
      require_positive(f, "moe_layer_freq", c.moe_layer_freq);
      if (c.first_k_dense_replace < 0) f.fail("first_k_dense_replace", "must be >= 0");
      c.n_shared_experts = f.integer("n_shared_experts", v3 ? 1 : 0);
      if (c.n_shared_experts < 0) f.fail("n_shared_experts", "must be >= 0");
      c.scoring_func = f.string("scoring_func", v3 ? "sigmoid" : "softmax");
      c.topk_method = f.string("topk_method", v3 ? "noaux_tc" : "greedy");
      if (fam != HFFamily::DeepSeekMoE) c.routed_scaling_factor = f.number("routed_scaling_factor", v3 ? 2.5 : 1.0);
      c.n_group = f.integer("n_group", v3 ? 8 : 1);
      c.topk_group = f.integer("topk_group", v3 ? 4 : 1);
      if (v3) {
        if (c.scoring_func != "sigmoid")
          f.fail("scoring_func", "\"" + c.scoring_func + "\" is not supported yet for DeepSeek-V3 (supported: sigmoid)");
        if (c.topk_method != "noaux_tc")
          f.fail("topk_method", "\"" + c.topk_method + "\" is not supported yet for DeepSeek-V3 (supported: noaux_tc)");
        c.num_nextn_predict_layers = f.integer("num_nextn_predict_layers", 0);
      } else {
        if (c.scoring_func != "softmax")
          f.fail("scoring_func", "\"" + c.scoring_func + "\" is not supported yet for " + c.architecture +
                                     " (supported: softmax)");
        const bool group = fam == HFFamily::DeepSeekV2 && c.topk_method == "group_limited_greedy";
        if (c.topk_method != "greedy" && !group)
          f.fail("topk_method", "\"" + c.topk_method + "\" is not supported yet for " + c.architecture +
                                    (fam == HFFamily::DeepSeekV2 ? " (supported: greedy, group_limited_greedy)"
                                                                 : " (supported: greedy)"));
      }
      if (c.num_experts > 0 && (c.topk_method == "group_limited_greedy" || c.topk_method == "noaux_tc")) {
        require_positive(f, "n_group", c.n_group);
        if (c.num_experts % c.n_group != 0)
          f.fail("n_group", std::to_string(c.n_group) + " does not divide n_routed_experts " +
                                std::to_string(c.num_experts));
        if (c.topk_group < 1 || c.topk_group > c.n_group)
          f.fail("topk_group", "must be in [1, n_group = " + std::to_string(c.n_group) + "], got " +
                                   std::to_string(c.topk_group));
        if (c.topk_method == "noaux_tc" && c.num_experts / c.n_group < 2)
          f.fail("n_group", "noaux_tc needs at least 2 experts per group");
        if (c.num_experts_per_tok > c.topk_group * (c.num_experts / c.n_group))
          f.fail("num_experts_per_tok", "exceeds the experts in topk_group groups");
      }
      if (c.uses_mla()) {
        c.kv_lora_rank = f.required_integer("kv_lora_rank");
        c.q_lora_rank = f.integer("q_lora_rank", 0);
        c.qk_rope_head_dim = f.required_integer("qk_rope_head_dim");
        c.qk_nope_head_dim = f.required_integer("qk_nope_head_dim");
        c.v_head_dim = f.required_integer("v_head_dim");
        require_positive(f, "kv_lora_rank", c.kv_lora_rank);
        if (c.q_lora_rank < 0) f.fail("q_lora_rank", "must be positive or null");
        require_positive(f, "qk_rope_head_dim", c.qk_rope_head_dim);
        if (c.qk_rope_head_dim % 2 != 0) f.fail("qk_rope_head_dim", "must be even");
        if (c.qk_nope_head_dim < 0) f.fail("qk_nope_head_dim", "must be >= 0");
        require_positive(f, "v_head_dim", c.v_head_dim);
        c.head_dim = c.qk_rope_head_dim;
      }
      break;
    }
  }
  require_positive(f, "intermediate_size", c.intermediate_size);
  if (c.num_experts < 0) f.fail(fam == HFFamily::Mixtral ? "num_local_experts" : "num_experts", "must be >= 0");
  if (c.num_experts > 0) {
    require_positive(f, "num_experts_per_tok", c.num_experts_per_tok);
    if (c.num_experts_per_tok > c.num_experts)
      f.fail("num_experts_per_tok", std::to_string(c.num_experts_per_tok) + " exceeds the " +
                                        std::to_string(c.num_experts) + " experts");
    require_positive(f, "moe_intermediate_size", c.moe_intermediate_size);
  }
  for (std::int64_t l : c.mlp_only_layers)
    if (l < 0 || l >= c.num_hidden_layers) f.fail("mlp_only_layers", "layer " + std::to_string(l) + " out of range");
  return c;
}

HFConfig read_hf_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "config.json").string() : path;
  std::ifstream in(file, std::ios::binary);
  if (!in) fail_input(file, "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail_input(file, std::string("invalid JSON (") + e.what() + ")");
  }
  return parse_hf_config(j, file);
}

std::vector<HFTensorSpec> hf_tensor_specs(const HFConfig& c) {
  std::vector<HFTensorSpec> out;
  const std::int64_t H = c.hidden_size, V = c.vocab_size, nh = c.num_attention_heads, kv = c.num_key_value_heads;
  auto add = [&](std::string name, std::vector<std::int64_t> shape) { out.push_back({std::move(name), std::move(shape)}); };
  auto mlp = [&](const std::string& p, const std::vector<std::string>& names, std::int64_t width) {
    add(p + names[0] + ".weight", {width, H});
    add(p + names[1] + ".weight", {width, H});
    add(p + names[2] + ".weight", {H, width});
  };
  const std::vector<std::string> dense_names = {"gate_proj", "up_proj", "down_proj"};
  add("model.embed_tokens.weight", {V, H});
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H});
    const std::string a = p + "self_attn.";
    if (c.uses_mla()) {
      const std::int64_t qk = c.qk_head_dim();
      if (c.q_lora_rank > 0) {
        add(a + "q_a_proj.weight", {c.q_lora_rank, H});
        if (c.attention_bias) add(a + "q_a_proj.bias", {c.q_lora_rank});
        add(a + "q_a_layernorm.weight", {c.q_lora_rank});
        add(a + "q_b_proj.weight", {nh * qk, c.q_lora_rank});
      } else {
        add(a + "q_proj.weight", {nh * qk, H});
      }
      add(a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, H});
      if (c.attention_bias) add(a + "kv_a_proj_with_mqa.bias", {c.kv_lora_rank + c.qk_rope_head_dim});
      add(a + "kv_a_layernorm.weight", {c.kv_lora_rank});
      add(a + "kv_b_proj.weight", {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
      add(a + "o_proj.weight", {H, nh * c.v_head_dim});
      if (c.attention_bias) add(a + "o_proj.bias", {H});
    } else {
      const std::int64_t hd = c.head_dim;
      const bool qkv_b = c.qkv_bias || c.attention_bias;
      add(a + "q_proj.weight", {nh * hd, H});
      if (qkv_b) add(a + "q_proj.bias", {nh * hd});
      add(a + "k_proj.weight", {kv * hd, H});
      if (qkv_b) add(a + "k_proj.bias", {kv * hd});
      add(a + "v_proj.weight", {kv * hd, H});
      if (qkv_b) add(a + "v_proj.bias", {kv * hd});
      add(a + "o_proj.weight", {H, nh * hd});
      if (c.attention_bias) add(a + "o_proj.bias", {H});
      if (c.qk_norm == HFQKNorm::PerHead) {
        add(a + "q_norm.weight", {hd});
        add(a + "k_norm.weight", {hd});
      } else if (c.qk_norm == HFQKNorm::Full) {
        add(a + "q_norm.weight", {nh * hd});
        add(a + "k_norm.weight", {kv * hd});
      }
    }
    add(p + "post_attention_layernorm.weight", {H});
    if (c.is_moe_layer(l)) {
      const std::string m = c.moe_prefix(l);
      const std::int64_t E = c.num_experts;
      add(m + "gate.weight", {E, H});
      if (c.family == HFFamily::DeepSeekV3) add(m + "gate.e_score_correction_bias", {E});
      for (std::int64_t e = 0; e < E; ++e)
        mlp(m + "experts." + std::to_string(e) + ".", c.expert_matrix_names(), c.moe_intermediate_size);
      if (c.shared_expert_intermediate_size > 0) {
        mlp(m + "shared_expert.", dense_names, c.shared_expert_intermediate_size);
        add(m + "shared_expert_gate.weight", {1, H});
      }
      if (c.n_shared_experts > 0) mlp(m + "shared_experts.", dense_names, c.n_shared_experts * c.moe_intermediate_size);
    } else {
      mlp(p + "mlp.", dense_names, c.intermediate_size);
    }
  }
  add("model.norm.weight", {H});
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, H});
  return out;
}

bool hf_float32_tensor(const std::string& name) {
  constexpr std::string_view kSuffix = ".e_score_correction_bias";
  return name.size() > kSuffix.size() && ends_with(name, kSuffix);
}

bool hf_unused_tensor(const HFConfig& c, const std::string& name) {
  if (ends_with(name, "rotary_emb.inv_freq")) return true;
  if (c.tie_word_embeddings && name == "lm_head.weight") return true;
  if (c.num_nextn_predict_layers > 0 && name.rfind("model.layers.", 0) == 0) {
    const std::string rest = name.substr(13);
    const std::size_t dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || dot > 9) return false;
    for (std::size_t i = 0; i < dot; ++i)
      if (rest[i] < '0' || rest[i] > '9') return false;
    const std::int64_t layer = std::stoll(rest.substr(0, dot));
    return layer >= c.num_hidden_layers && layer < c.num_hidden_layers + c.num_nextn_predict_layers;
  }
  return false;
}

}  // namespace moescope
