// Hugging Face MoE causal LMs: the modules and the forward pass (the loader is in hf_load.cpp).
#include "moescope/model/hf.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "moescope/io/tensor.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace detail {

// Hands each module constructor its tensors by checkpoint name: every name must be one of hf_tensor_specs(config)
// (a module asking for anything else is a bug here), present in the weights and of the spec's shape.
class HFWeightTaker {
 public:
  HFWeightTaker(const HFConfig& c, HFWeights& w) : c_(c), w_(w) {
    for (auto& s : hf_tensor_specs(c)) shapes_.emplace(s.name, s.shape);
  }

  torch::Tensor take(const std::string& name) {
    const auto spec = shapes_.find(name);
    TORCH_CHECK(spec != shapes_.end(), "HFCausalLM: module asks for '", name, "', which hf_tensor_specs does not list");
    const auto it = w_.find(name);
    if (it == w_.end())
      fail_input(c_.file, "tensor '" + name + "' (shape " + shape_string(spec->second) + ") is missing from the weights");
    torch::Tensor t = std::move(it->second);
    w_.erase(it);
    if (!t.defined()) fail_input(c_.file, "tensor '" + name + "' is undefined");
    if (t.sizes().vec() != spec->second)
      fail_input(c_.file, "tensor '" + name + "' has shape " + shape_string(t.sizes().vec()) + " but the config implies " +
                              shape_string(spec->second));
    if (!t.is_floating_point()) fail_input(c_.file, "tensor '" + name + "' is not a floating-point tensor");
    if (!hf_float32_tensor(name)) {  // DeepSeek-V3's score correction bias keeps its own (float32) dtype
      if (dtype_ == at::ScalarType::Undefined) {
        dtype_ = t.scalar_type();
        first_ = name;
      } else if (t.scalar_type() != dtype_) {
        fail_input(c_.file, "tensor '" + name + "' is " + std::string(c10::toString(t.scalar_type())) + " but '" + first_ +
                                "' is " + c10::toString(dtype_) + ": the weights must share one dtype");
      }
    }
    return t;
  }

  // Everything handed in must have been used.
  void finish() const {
    if (w_.empty()) return;
    std::vector<std::string> left;
    for (const auto& kv : w_) left.push_back(kv.first);
    std::sort(left.begin(), left.end());
    fail_input(c_.file, "unexpected tensor '" + left.front() + "' (not part of a " + c_.architecture +
                            " with this config)" + (left.size() > 1 ? " and " + std::to_string(left.size() - 1) + " more" : ""));
  }

 private:
  const HFConfig& c_;
  HFWeights& w_;
  std::map<std::string, std::vector<std::int64_t>> shapes_;
  torch::ScalarType dtype_ = at::ScalarType::Undefined;
  std::string first_;
};

}  // namespace detail

namespace {

using detail::HFWeightTaker;

// The dtype softmaxes and norms compute in: at least float32.
torch::ScalarType wide(torch::ScalarType t) { return t == torch::kDouble ? torch::kDouble : torch::kFloat; }

torch::Tensor rotate_half(const torch::Tensor& x) {
  const std::int64_t h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

// x [..., S, d] with cos/sin [S, d]: x cos + rotate_half(x) sin.
torch::Tensor apply_rope(const torch::Tensor& x, const HFRope& r) { return x * r.cos + rotate_half(x) * r.sin; }

// DeepSeek's rope parts pair dims (2i, 2i+1): gather evens then odds, then rotate halves (as its modeling code).
torch::Tensor deinterleave(const torch::Tensor& x) {
  auto sizes = x.sizes().vec();
  const std::int64_t d = sizes.back();
  sizes.back() = d / 2;
  sizes.push_back(2);
  return x.reshape(sizes).transpose(-1, -2).reshape(x.sizes());
}

// [B, kv, S, d] -> [B, kv * rep, S, d], head h reading kv head h / rep.
torch::Tensor repeat_kv(const torch::Tensor& x, std::int64_t rep) {
  if (rep == 1) return x;
  const auto s = x.sizes();
  return x.unsqueeze(2).expand({s[0], s[1], rep, s[2], s[3]}).reshape({s[0], s[1] * rep, s[2], s[3]});
}

// softmax(q k^T * scale, masked) v in q's dtype, the softmax in at least float32. q [B, h, S, dq], k [B, h, S, dq],
// v [B, h, S, dv] -> [B, S, h * dv].
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                     const torch::Tensor& allowed) {
  auto scores = torch::matmul(q, k.transpose(2, 3)) * scale;
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  const auto probs = torch::softmax(scores.to(wide(q.scalar_type())), -1).to(q.scalar_type());
  const auto out = torch::matmul(probs, v);  // [B, h, S, dv]
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), q.size(1) * v.size(3)});
}

// YaRN's magnitude factor (DeepSeek's yarn_get_mscale).
double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// DeepSeek's yarn_find_correction_dim: the dimension whose wavelength fits num_rotations times in max_pos.
double yarn_correction_dim(double rotations, double dim, double base, double max_pos) {
  return dim * std::log(max_pos / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}

}  // namespace

// ----------------------------------------------------------------------------------------------- building blocks

HFLinearImpl::HFLinearImpl(HFWeightTaker& w, const std::string& prefix, bool has_bias) {
  weight = register_parameter("weight", w.take(prefix + "weight"), /*requires_grad=*/false);
  if (has_bias) bias = register_parameter("bias", w.take(prefix + "bias"), false);
}

torch::Tensor HFLinearImpl::forward(const torch::Tensor& x) {
  return bias.defined() ? torch::linear(x, weight, bias) : torch::linear(x, weight);
}

HFRMSNormImpl::HFRMSNormImpl(HFWeightTaker& w, const std::string& prefix, double eps_) : eps(eps_) {
  weight = register_parameter("weight", w.take(prefix + "weight"), false);
}

torch::Tensor HFRMSNormImpl::forward(const torch::Tensor& x) {
  const auto in = x.scalar_type();
  auto h = x.to(wide(in));
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(in);
}

HFMLPImpl::HFMLPImpl(HFWeightTaker& w, const std::string& prefix, const std::vector<std::string>& names) {
  gate = register_module(names[0], HFLinear(w, prefix + names[0] + ".", false));
  up = register_module(names[1], HFLinear(w, prefix + names[1] + ".", false));
  down = register_module(names[2], HFLinear(w, prefix + names[2] + ".", false));
}

torch::Tensor HFMLPImpl::forward(const torch::Tensor& x) { return down(torch::silu(gate(x)) * up(x)); }

HFEmbeddingImpl::HFEmbeddingImpl(HFWeightTaker& w, const std::string& prefix) {
  weight = register_parameter("weight", w.take(prefix + "weight"), false);
}

torch::Tensor HFEmbeddingImpl::forward(const torch::Tensor& ids) {
  auto shape = ids.sizes().vec();
  shape.push_back(weight.size(1));
  return weight.index_select(0, ids.reshape(-1)).view(shape);
}

// ------------------------------------------------------------------------------------------------- attention

HFAttentionImpl::HFAttentionImpl(HFWeightTaker& w, const std::string& p, const HFConfig& c) : config(c) {
  const bool qkv_bias = c.qkv_bias || c.attention_bias;
  q_proj = register_module("q_proj", HFLinear(w, p + "q_proj.", qkv_bias));
  k_proj = register_module("k_proj", HFLinear(w, p + "k_proj.", qkv_bias));
  v_proj = register_module("v_proj", HFLinear(w, p + "v_proj.", qkv_bias));
  o_proj = register_module("o_proj", HFLinear(w, p + "o_proj.", c.attention_bias));
  if (c.qk_norm != HFQKNorm::None) {
    q_norm = register_module("q_norm", HFRMSNorm(w, p + "q_norm.", c.rms_norm_eps));
    k_norm = register_module("k_norm", HFRMSNorm(w, p + "k_norm.", c.rms_norm_eps));
  }
}

torch::Tensor HFAttentionImpl::forward(const torch::Tensor& x, const HFRope& rope, const torch::Tensor& allowed) {
  const auto& c = config;
  const std::int64_t B = x.size(0), S = x.size(1), nh = c.num_attention_heads, kv = c.num_key_value_heads,
                     hd = c.head_dim;
  auto q = q_proj(x), k = k_proj(x), v = v_proj(x);
  if (c.qk_norm == HFQKNorm::Full) {  // OLMoE: over the whole projection, then the clip
    q = q_norm(q);
    k = k_norm(k);
  }
  if (c.clip_qkv > 0.0) {
    q = q.clamp(-c.clip_qkv, c.clip_qkv);
    k = k.clamp(-c.clip_qkv, c.clip_qkv);
    v = v.clamp(-c.clip_qkv, c.clip_qkv);
  }
  q = q.view({B, S, nh, hd});
  k = k.view({B, S, kv, hd});
  v = v.view({B, S, kv, hd});
  if (c.qk_norm == HFQKNorm::PerHead) {  // Qwen3: each head over head_dim
    q = q_norm(q);
    k = k_norm(k);
  }
  q = apply_rope(q.transpose(1, 2), rope);
  k = apply_rope(k.transpose(1, 2), rope);
  v = v.transpose(1, 2);
  const double scale = std::pow(static_cast<double>(hd), -0.5);  // transformers' head_dim**-0.5
  return o_proj(attend(q, repeat_kv(k, nh / kv), repeat_kv(v, nh / kv), scale, allowed));
}

HFMLAttentionImpl::HFMLAttentionImpl(HFWeightTaker& w, const std::string& p, const HFConfig& c) : config(c) {
  if (c.q_lora_rank > 0) {
    q_a_proj = register_module("q_a_proj", HFLinear(w, p + "q_a_proj.", c.attention_bias));
    q_a_layernorm = register_module("q_a_layernorm", HFRMSNorm(w, p + "q_a_layernorm.", c.rms_norm_eps));
    q_b_proj = register_module("q_b_proj", HFLinear(w, p + "q_b_proj.", false));
  } else {
    q_proj = register_module("q_proj", HFLinear(w, p + "q_proj.", false));
  }
  kv_a_proj_with_mqa = register_module("kv_a_proj_with_mqa", HFLinear(w, p + "kv_a_proj_with_mqa.", c.attention_bias));
  kv_a_layernorm = register_module("kv_a_layernorm", HFRMSNorm(w, p + "kv_a_layernorm.", c.rms_norm_eps));
  kv_b_proj = register_module("kv_b_proj", HFLinear(w, p + "kv_b_proj.", false));
  o_proj = register_module("o_proj", HFLinear(w, p + "o_proj.", c.attention_bias));
  softmax_scale = std::pow(static_cast<double>(c.qk_head_dim()), -0.5);
  if (c.rope_scaling.type == "yarn" && c.rope_scaling.mscale_all_dim != 0.0) {
    const double m = yarn_mscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
    softmax_scale *= m * m;
  }
}

torch::Tensor HFMLAttentionImpl::forward(const torch::Tensor& x, const HFRope& rope, const torch::Tensor& allowed) {
  const auto& c = config;
  const std::int64_t B = x.size(0), S = x.size(1), nh = c.num_attention_heads, nope = c.qk_nope_head_dim,
                     rd = c.qk_rope_head_dim, vd = c.v_head_dim, r = c.kv_lora_rank;
  const auto q_flat = c.q_lora_rank > 0 ? q_b_proj(q_a_layernorm(q_a_proj(x))) : q_proj(x);
  const auto q = q_flat.view({B, S, nh, nope + rd}).transpose(1, 2);  // [B, nh, S, qk]
  const auto ckv = kv_a_proj_with_mqa(x);                               // [B, S, r + rd]
  const auto k_pe = ckv.narrow(-1, r, rd).view({B, S, 1, rd}).transpose(1, 2);  // [B, 1, S, rd]
  const auto kv = kv_b_proj(kv_a_layernorm(ckv.narrow(-1, 0, r))).view({B, S, nh, nope + vd}).transpose(1, 2);
  const auto q_pe = apply_rope(deinterleave(q.narrow(-1, nope, rd)), rope);
  const auto k_rot = apply_rope(deinterleave(k_pe), rope).expand({B, nh, S, rd});
  const auto query = torch::cat({q.narrow(-1, 0, nope), q_pe}, -1);
  const auto key = torch::cat({kv.narrow(-1, 0, nope), k_rot}, -1);
  return o_proj(attend(query, key, kv.narrow(-1, nope, vd), softmax_scale, allowed));
}

// ------------------------------------------------------------------------------------------------------ MoE

HFRouterImpl::HFRouterImpl(HFWeightTaker& w, const std::string& p, const HFConfig& c) : config(c) {
  weight = register_parameter("weight", w.take(p + "weight"), false);
  if (c.family == HFFamily::DeepSeekV3)
    e_score_correction_bias = register_buffer("e_score_correction_bias", w.take(p + "e_score_correction_bias"));
}

HFRouting HFRouterImpl::forward(const torch::Tensor& x) {
  const auto& c = config;
  const auto dt = x.scalar_type(), ct = wide(dt);
  const std::int64_t T = x.size(0), E = c.num_experts, k = c.num_experts_per_tok;
  const bool deepseek = c.family == HFFamily::DeepSeekMoE || c.family == HFFamily::DeepSeekV2 ||
                        c.family == HFFamily::DeepSeekV3;
  HFRouting r;
  // DeepSeek-V2/V3 compute the router logits in float32; the others in the weights' dtype.
  r.logits = c.uses_mla() ? torch::linear(x.to(ct), weight.to(ct)) : torch::linear(x, weight);
  // DeepSeek-MoE's gate takes its softmax in the weights' dtype; the others in at least float32.
  const auto st = c.family == HFFamily::DeepSeekMoE ? dt : ct;
  r.scores = c.scoring_func == "sigmoid" ? torch::sigmoid(r.logits.to(st)) : torch::softmax(r.logits.to(st), -1);
  torch::Tensor w;
  if (c.topk_method == "greedy") {
    auto top = torch::topk(r.scores, k, -1);
    w = std::get<0>(top);
    r.experts = std::get<1>(top);
  } else {
    // Grouped choice: keep the topk_group best groups of E / n_group experts, zero the rest, then top-k.
    const std::int64_t G = c.n_group;
    auto choice = r.scores;
    torch::Tensor group_scores;
    if (c.topk_method == "noaux_tc") {
      choice = r.scores + e_score_correction_bias.to(ct);
      group_scores = std::get<0>(torch::topk(choice.view({T, G, E / G}), 2, -1)).sum(-1);
    } else {  // group_limited_greedy: a group's best single score
      group_scores = std::get<0>(choice.view({T, G, E / G}).max(-1));
    }
    const auto groups = std::get<1>(torch::topk(group_scores, c.topk_group, -1));
    const auto keep = torch::zeros({T, G}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                          .scatter_(1, groups, true)
                          .unsqueeze(-1)
                          .expand({T, G, E / G})
                          .reshape({T, E});
    r.experts = std::get<1>(torch::topk(choice.masked_fill(keep.logical_not(), 0.0), k, -1));
    w = r.scores.gather(1, r.experts);  // V3: the weights are the plain scores, not the biased ones
  }
  if (deepseek) {
    if (c.norm_topk_prob && k > 1) w = w / (w.sum(-1, true) + 1e-20);
    // V2 scales only when it does not normalise; V3 always (their modeling code).
    if (c.family == HFFamily::DeepSeekV3 || (c.family == HFFamily::DeepSeekV2 && !(c.norm_topk_prob && k > 1)))
      w = w * c.routed_scaling_factor;
  } else if (c.norm_topk_prob) {
    w = w / w.sum(-1, true);
  }
  // DeepSeek-V2/V3 weigh the expert outputs in float32 (cast to the weights' dtype after the product); the others
  // cast the routing weights first.
  r.weights = c.uses_mla() ? w : w.to(dt);
  return r;
}

HFSparseMoEImpl::HFSparseMoEImpl(HFWeightTaker& w, const std::string& p, const HFConfig& c) : config(c) {
  gate = register_module("gate", HFRouter(w, p + "gate.", c));
  experts = torch::nn::ModuleList();
  for (std::int64_t e = 0; e < c.num_experts; ++e)
    experts->push_back(HFMLP(w, p + "experts." + std::to_string(e) + ".", c.expert_matrix_names()));
  register_module("experts", experts);
  const std::vector<std::string> names = {"gate_proj", "up_proj", "down_proj"};
  if (c.shared_expert_intermediate_size > 0) {
    shared_expert = register_module("shared_expert", HFMLP(w, p + "shared_expert.", names));
    shared_expert_gate = register_module("shared_expert_gate", HFLinear(w, p + "shared_expert_gate.", false));
  }
  if (c.n_shared_experts > 0) shared_experts = register_module("shared_experts", HFMLP(w, p + "shared_experts.", names));
}

torch::Tensor HFSparseMoEImpl::expert_forward(std::int64_t e, const torch::Tensor& x) {
  return experts->at<HFMLPImpl>(static_cast<std::size_t>(e)).forward(x);
}

torch::Tensor HFSparseMoEImpl::shared_forward(const torch::Tensor& x, torch::Tensor* gate_values) {
  if (shared_expert) {
    const auto g = torch::sigmoid(shared_expert_gate(x));
    if (gate_values) *gate_values = g;
    return g * shared_expert(x);
  }
  if (shared_experts) return shared_experts(x);
  return {};
}

torch::Tensor HFSparseMoEImpl::forward(const torch::Tensor& x, HFRouting* routing, torch::Tensor* shared_gate) {
  HFRouting r = gate(x);
  auto out = torch::zeros_like(x);
  // Expert by expert in index order, each on its own tokens (slot-major, as transformers' torch.where over its
  // [k, T] mask lists them), added in place: transformers' order of operations.
  const auto slots = r.experts.t();  // [k, T]
  for (std::int64_t e = 0; e < num_experts(); ++e) {
    const auto hit = (slots == e).nonzero();  // [n, 2]: (slot, token)
    if (hit.size(0) == 0) continue;
    const auto slot = hit.select(1, 0), tok = hit.select(1, 1);
    const auto y = expert_forward(e, x.index_select(0, tok)) * r.weights.index({tok, slot}).unsqueeze(-1);
    out.index_add_(0, tok, y.to(x.scalar_type()));
  }
  const auto shared = shared_forward(x, shared_gate);
  if (shared.defined()) out = out + shared;
  if (routing) *routing = std::move(r);
  return out;
}

// ---------------------------------------------------------------------------------------------------- layers

HFDecoderLayerImpl::HFDecoderLayerImpl(HFWeightTaker& w, std::int64_t layer_, const HFConfig& c) : layer(layer_) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  input_layernorm = register_module("input_layernorm", HFRMSNorm(w, p + "input_layernorm.", c.rms_norm_eps));
  if (c.uses_mla())
    self_attn_mla = register_module("self_attn", HFMLAttention(w, p + "self_attn.", c));
  else
    self_attn = register_module("self_attn", HFAttention(w, p + "self_attn.", c));
  post_attention_layernorm =
      register_module("post_attention_layernorm", HFRMSNorm(w, p + "post_attention_layernorm.", c.rms_norm_eps));
  if (c.is_moe_layer(layer)) {
    moe = register_module(c.family == HFFamily::Mixtral ? "block_sparse_moe" : "mlp",
                          HFSparseMoE(w, c.moe_prefix(layer), c));
  } else {
    mlp = register_module("mlp", HFMLP(w, p + "mlp.", std::vector<std::string>{"gate_proj", "up_proj", "down_proj"}));
  }
}

torch::Tensor HFDecoderLayerImpl::forward(const torch::Tensor& x, const HFRope& rope, const torch::Tensor& allowed,
                                          HFMoETrace* trace) {
  const auto n1 = input_layernorm(x);
  const auto h = x + (self_attn ? self_attn(n1, rope, allowed) : self_attn_mla(n1, rope, allowed));
  const auto n2 = post_attention_layernorm(h);
  if (!moe) return h + mlp(n2);
  const auto flat = n2.reshape({-1, n2.size(-1)});
  HFRouting r;
  torch::Tensor g;
  const auto f = moe(flat, trace ? &r : nullptr, trace ? &g : nullptr).view(n2.sizes());
  if (trace) {
    trace->layer = layer;
    trace->inputs = flat;
    trace->router_logits = r.logits;
    trace->router_probs = r.scores;
    trace->topk_experts = r.experts;
    trace->topk_weights = r.weights;
    trace->shared_gate = g;
  }
  return h + f;
}

HFModelImpl::HFModelImpl(HFWeightTaker& w, const HFConfig& c) {
  embed_tokens = register_module("embed_tokens", HFEmbedding(w, "model.embed_tokens."));
  layers = torch::nn::ModuleList();
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) layers->push_back(HFDecoderLayer(w, l, c));
  register_module("layers", layers);
  norm = register_module("norm", HFRMSNorm(w, "model.norm.", c.rms_norm_eps));
}

// ------------------------------------------------------------------------------------------------------- LM

HFCausalLMImpl::HFCausalLMImpl(HFConfig config, HFWeights weights) : config_(std::move(config)) {
  const auto& c = config_;
  {
    HFWeightTaker w(c, weights);
    model = register_module("model", HFModel(w, c));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", HFLinear(w, "lm_head.", false));
    w.finish();
  }
  // Rotary frequencies theta^(-2i/d), i < d/2, as transformers computes them in float32 (and in float64 for float64
  // models); linear scaling divides them by the factor; DeepSeek's YaRN blends interpolated (divided by the factor)
  // and extrapolated frequencies over a ramp between the correction dimensions.
  const std::int64_t d = c.rope_dim();
  const auto& rs = c.rope_scaling;
  auto freqs = [&](torch::ScalarType t) {
    const auto expo = torch::arange(0, d, 2, torch::kInt64).to(t) / static_cast<double>(d);
    auto base = torch::pow(c.rope_theta, expo);  // theta^(2i/d)
    auto extra = base.reciprocal();
    if (rs.type == "linear") return extra / rs.factor;
    if (rs.type != "yarn") return extra;
    const auto inter = (base * rs.factor).reciprocal();
    const double mp = static_cast<double>(rs.original_max_position_embeddings);
    const double low =
        std::max(std::floor(yarn_correction_dim(rs.beta_fast, static_cast<double>(d), c.rope_theta, mp)), 0.0);
    double high = std::min(std::ceil(yarn_correction_dim(rs.beta_slow, static_cast<double>(d), c.rope_theta, mp)),
                           static_cast<double>(d - 1));
    if (low == high) high += 0.001;  // avoid a zero-width ramp
    const auto ramp = ((torch::arange(d / 2, torch::kInt64).to(t) - low) / (high - low)).clamp(0.0, 1.0);
    const auto extra_weight = 1.0 - ramp;
    return inter * (1.0 - extra_weight) + extra * extra_weight;
  };
  inv_freq32_ = freqs(torch::kFloat);
  inv_freq64_ = freqs(torch::kDouble);
  if (rs.type == "yarn") rope_mscale_ = yarn_mscale(rs.factor, rs.mscale) / yarn_mscale(rs.factor, rs.mscale_all_dim);
}

HFRope HFCausalLMImpl::rope(std::int64_t seq_len) const {
  const auto dt = dtype();
  if (rope_cache_.cos.defined() && rope_cache_.cos.size(0) == seq_len && rope_cache_.cos.scalar_type() == dt &&
      rope_cache_.cos.device() == model->embed_tokens->weight.device())
    return rope_cache_;
  const auto& inv = dt == torch::kDouble ? inv_freq64_ : inv_freq32_;
  const auto pos = torch::arange(seq_len, torch::kInt64).to(inv.scalar_type());
  const auto f = torch::outer(pos, inv);
  const auto emb = torch::cat({f, f}, -1);
  const auto dev = model->embed_tokens->weight.device();
  HFRope r{(emb.cos() * rope_mscale_).to(dt).to(dev), (emb.sin() * rope_mscale_).to(dt).to(dev)};
  rope_cache_ = r;
  return r;
}

std::vector<std::int64_t> HFCausalLMImpl::moe_layers() const {
  std::vector<std::int64_t> out;
  for (std::int64_t l = 0; l < config_.num_hidden_layers; ++l)
    if (config_.is_moe_layer(l)) out.push_back(l);
  return out;
}

HFSparseMoE HFCausalLMImpl::moe_block(std::int64_t layer) const {
  if (layer < 0 || layer >= config_.num_hidden_layers || !config_.is_moe_layer(layer))
    throw std::out_of_range("HFCausalLM: layer " + std::to_string(layer) + " has no MoE block");
  return model->layers->at<HFDecoderLayerImpl>(static_cast<std::size_t>(layer)).moe;
}

HFOutput HFCausalLMImpl::forward_with(const torch::Tensor& ids, const HFForwardOptions& o) {
  const auto& c = config_;
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != torch::kLong || ids.size(0) < 1 || ids.size(1) < 1)
    throw InputError("input_ids: expected a non-empty int64 tensor [batch, sequence]");
  const auto lo = ids.min().item<std::int64_t>(), hi = ids.max().item<std::int64_t>();
  if (lo < 0 || hi >= c.vocab_size) {
    const std::int64_t bad = lo < 0 ? lo : hi;
    const auto at = (ids == bad).nonzero()[0];
    fail_input(c.file, "token id " + std::to_string(bad) + " at [" + std::to_string(at[0].item<std::int64_t>()) + ", " +
                           std::to_string(at[1].item<std::int64_t>()) + "] is out of range: vocab_size is " +
                           std::to_string(c.vocab_size));
  }
  const std::int64_t S = ids.size(1);
  const auto dev = model->embed_tokens->weight.device();
  // Query i attends key j for j <= i, and with a sliding window W for j > i - W.
  const auto qi = torch::arange(S, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(1);
  const auto kj = qi.transpose(0, 1);
  auto allowed = kj <= qi;
  if (c.sliding_window > 0) allowed = allowed.logical_and(kj > qi - c.sliding_window);
  const HFRope r = rope(S);

  HFOutput out;
  auto h = model->embed_tokens(ids.to(dev));
  for (std::size_t l = 0; l < model->layers->size(); ++l) {
    if (o.hidden_states) out.hidden_states.push_back(h);
    auto& layer = model->layers->at<HFDecoderLayerImpl>(l);
    HFMoETrace trace;
    const bool traced = o.moe_trace && layer.moe;
    h = layer.forward(h, r, allowed, traced ? &trace : nullptr);
    if (traced) out.moe.push_back(std::move(trace));
  }
  if (o.hidden_states) out.hidden_states.push_back(h);
  out.last_hidden_state = model->norm(h);
  out.logits = lm_head ? lm_head(out.last_hidden_state)
                       : torch::linear(out.last_hidden_state, model->embed_tokens->weight);
  return out;
}

torch::Tensor HFCausalLMImpl::loss(const torch::Tensor& ids) {
  if (ids.defined() && ids.dim() == 2 && ids.size(1) < 2)
    throw InputError("input_ids: the LM loss needs sequences of at least 2 tokens");
  const auto logits = forward(ids);
  const std::int64_t S = ids.size(1), V = logits.size(2);
  const auto pred = logits.narrow(1, 0, S - 1).reshape({-1, V}).to(wide(logits.scalar_type()));
  const auto target = ids.narrow(1, 1, S - 1).reshape({-1}).to(pred.device());
  return torch::nn::functional::cross_entropy(pred, target);
}

HFDType parse_hf_dtype(const std::string& name, const std::string& flag) {
  if (name == "keep") return HFDType::Keep;
  if (name == "f32") return HFDType::F32;
  if (name == "f64") return HFDType::F64;
  if (name == "bf16") return HFDType::BF16;
  throw InputError(flag + " '" + name + "': expected keep, f32, f64 or bf16");
}

}  // namespace moescope
