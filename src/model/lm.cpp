#include "moescope/model/lm.hpp"

#include <cmath>
#include <limits>

#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"

namespace moescope {

void to_json(nlohmann::json& j, const LMOptions& o) {
  j = nlohmann::json{{"type", "lm"},
                     {"vocab_size", o.vocab_size()},
                     {"context", o.context()},
                     {"dim", o.dim()},
                     {"layers", o.layers()},
                     {"heads", o.heads()},
                     {"ffn_hidden", o.ffn_hidden()},
                     {"moe_every", o.moe_every()},
                     {"experts", o.experts()},
                     {"top_k", o.top_k()},
                     {"expert_hidden", o.expert_hidden()},
                     {"noisy", o.noisy()},
                     {"capacity_factor", o.capacity_factor()},
                     {"renormalize", o.renormalize()},
                     {"ffn_kind", ffn_kind_name(o.ffn_kind())},
                     {"activation", activation_name(o.activation())},
                     {"dropout", o.dropout()},
                     {"tie_embeddings", o.tie_embeddings()},
                     {"bias", o.bias()},
                     {"keep_expert_outputs", o.keep_expert_outputs()}};
}

void from_json(const nlohmann::json& j, LMOptions& o) {
  const char* what = "lm config";
  json_fields::check(j, what, "lm",
                       {"vocab_size", "context", "dim", "layers", "heads", "ffn_hidden", "moe_every", "experts",
                        "top_k", "expert_hidden", "noisy", "capacity_factor", "renormalize", "ffn_kind",
                        "activation", "dropout", "tie_embeddings", "bias", "keep_expert_outputs"});
  json_fields::read(j, what, "vocab_size", o.vocab_size());
  json_fields::read(j, what, "context", o.context());
  json_fields::read(j, what, "dim", o.dim());
  json_fields::read(j, what, "layers", o.layers());
  json_fields::read(j, what, "heads", o.heads());
  json_fields::read(j, what, "ffn_hidden", o.ffn_hidden());
  json_fields::read(j, what, "moe_every", o.moe_every());
  json_fields::read(j, what, "experts", o.experts());
  json_fields::read(j, what, "top_k", o.top_k());
  json_fields::read(j, what, "expert_hidden", o.expert_hidden());
  json_fields::read(j, what, "noisy", o.noisy());
  json_fields::read(j, what, "capacity_factor", o.capacity_factor());
  json_fields::read(j, what, "renormalize", o.renormalize());
  json_fields::read_enum(j, what, "ffn_kind", o.ffn_kind(), parse_ffn_kind);
  json_fields::read_enum(j, what, "activation", o.activation(), parse_activation);
  json_fields::read(j, what, "dropout", o.dropout());
  json_fields::read(j, what, "tie_embeddings", o.tie_embeddings());
  json_fields::read(j, what, "bias", o.bias());
  json_fields::read(j, what, "keep_expert_outputs", o.keep_expert_outputs());
  const auto need = [&](bool ok, const std::string& field, const std::string& rule) {
    if (!ok) throw InputError(std::string(what) + ": field '" + field + "' " + rule);
  };
  need(o.vocab_size() > 0, "vocab_size", "must be positive");
  need(o.context() > 0, "context", "must be positive");
  need(o.layers() > 0, "layers", "must be positive");
  need(o.heads() > 0, "heads", "must be positive");
  need(o.dim() > 0 && o.dim() % o.heads() == 0, "dim",
       "must be a positive multiple of heads (" + std::to_string(o.heads()) + "), got " + std::to_string(o.dim()));
  need(o.ffn_hidden() > 0, "ffn_hidden", "must be positive");
  need(o.moe_every() >= 0, "moe_every", "must be >= 0 (0: no MoE blocks)");
  if (o.moe_every() > 0) {
    need(o.experts() >= 2, "experts", "must be at least 2, got " + std::to_string(o.experts()));
    need(o.top_k() >= 1 && o.top_k() <= o.experts(), "top_k",
         "must be between 1 and experts (" + std::to_string(o.experts()) + "), got " + std::to_string(o.top_k()));
  }
  need(o.expert_hidden() >= 0, "expert_hidden", "must be >= 0 (0: ffn_hidden)");
  need(o.dropout() >= 0.0 && o.dropout() < 1.0, "dropout", "must be in [0, 1)");
  need(o.capacity_factor() >= 0.0, "capacity_factor", "must be >= 0 (0: no capacity limit)");
}

// ------------------------------------------------------------------------------------------------ attention

CausalSelfAttentionImpl::CausalSelfAttentionImpl(std::int64_t dim_, std::int64_t heads_, double dropout_, bool bias_)
    : dim(dim_), heads(heads_), dropout(dropout_), bias(bias_) {
  reset();
}

void CausalSelfAttentionImpl::reset() {
  TORCH_CHECK(heads > 0 && dim > 0 && dim % heads == 0, "CausalSelfAttention: dim must be a positive multiple of heads, got dim ",
              dim, ", heads ", heads);
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim, 3 * dim).bias(bias)));
  proj = register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(bias)));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == dim, "CausalSelfAttention: expected input [B, S, ", dim, "], got ",
              x.sizes());
  const std::int64_t B = x.size(0), S = x.size(1), hd = dim / heads;
  const auto parts = qkv(x).view({B, S, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3, B, h, S, hd]
  const auto q = parts[0], k = parts[1], v = parts[2];
  auto att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));  // [B, h, S, S]
  // Position i may attend to j <= i only.
  const auto future = torch::ones({S, S}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
  att = att.masked_fill(future, -std::numeric_limits<double>::infinity());
  att = torch::softmax(att, -1);
  if (dropout > 0.0) att = torch::dropout(att, dropout, is_training());
  const auto y = torch::matmul(att, v).transpose(1, 2).reshape({B, S, dim});
  return proj(y);
}

// ----------------------------------------------------------------------------------------------------- block

LMBlockImpl::LMBlockImpl(const LMOptions& options_, bool moe_) : options(options_), is_moe(moe_) { reset(); }

void LMBlockImpl::reset() {
  const auto& o = options;
  ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()})));
  attn = register_module("attn", CausalSelfAttention(o.dim(), o.heads(), o.dropout(), o.bias()));
  ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()})));
  if (is_moe) {
    moe = register_module("moe", SparseMoE(SparseMoEOptions(o.dim(), o.experts())
                                               .top_k(o.top_k())
                                               .hidden(o.expert_hidden() > 0 ? o.expert_hidden() : o.ffn_hidden())
                                               .kind(o.ffn_kind())
                                               .activation(o.activation())
                                               .renormalize(o.renormalize())
                                               .noisy(o.noisy())
                                               .capacity_factor(o.capacity_factor())
                                               .keep_expert_outputs(o.keep_expert_outputs())));
  } else {
    ffn = register_module("ffn", FFN(FFNOptions(o.dim(), o.ffn_hidden())
                                         .kind(o.ffn_kind())
                                         .activation(o.activation())
                                         .bias(o.bias())));
  }
}

MoEOutput LMBlockImpl::forward_moe(const torch::Tensor& x) {
  const double p = options.dropout();
  auto h = x + torch::dropout(attn(ln1(x)), p, is_training() && p > 0.0);
  MoEOutput out;
  torch::Tensor f;
  if (is_moe) {
    auto r = moe->forward_moe(ln2(h));
    f = std::move(r.output);
    out.routing = std::move(r.routing);
  } else {
    f = ffn(ln2(h));
  }
  out.output = h + torch::dropout(f, p, is_training() && p > 0.0);
  return out;
}

// -------------------------------------------------------------------------------------------------------- LM

TransformerLMImpl::TransformerLMImpl(LMOptions options_) : options(std::move(options_)) { reset(); }

void TransformerLMImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.vocab_size() > 0 && o.context() > 0 && o.layers() > 0,
              "TransformerLM: vocab_size, context and layers must be positive, got ", o.vocab_size(), ", ",
              o.context(), ", ", o.layers());
  TORCH_CHECK(o.moe_every() >= 0, "TransformerLM: moe_every must be >= 0, got ", o.moe_every());
  tok_emb = register_module("tok_emb", torch::nn::Embedding(o.vocab_size(), o.dim()));
  pos_emb = register_module("pos_emb", torch::nn::Embedding(o.context(), o.dim()));
  blocks = torch::nn::ModuleList();
  for (std::int64_t l = 0; l < o.layers(); ++l) blocks->push_back(LMBlock(o, o.is_moe_block(l)));
  register_module("blocks", blocks);
  ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()})));
  lm_head = nullptr;
  if (!o.tie_embeddings()) {
    lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(o.dim(), o.vocab_size()).bias(false)));
  }
}

LMOutput TransformerLMImpl::forward_with_routing(const torch::Tensor& idx) {
  TORCH_CHECK(idx.dim() == 2 && idx.scalar_type() == torch::kLong, "TransformerLM: expected int64 token ids [B, S], got ",
              idx.sizes(), " of ", idx.scalar_type());
  const std::int64_t S = idx.size(1);
  TORCH_CHECK(S > 0 && S <= options.context(), "TransformerLM: sequence length ", S, " outside [1, ",
              options.context(), "]");
  const auto pos = torch::arange(S, torch::TensorOptions().dtype(torch::kLong).device(idx.device()));
  auto h = tok_emb(idx) + pos_emb(pos).unsqueeze(0);
  if (options.dropout() > 0.0) h = torch::dropout(h, options.dropout(), is_training());
  LMOutput out;
  for (const auto& b : *blocks) {
    auto* block = b->as<LMBlockImpl>();
    auto r = block->forward_moe(h);
    h = std::move(r.output);
    if (block->is_moe) out.routing.push_back(std::move(r.routing));
  }
  h = ln_f(h);
  out.logits = lm_head ? lm_head(h) : torch::matmul(h, tok_emb->weight.t());
  return out;
}

std::vector<std::int64_t> TransformerLMImpl::moe_blocks() const {
  std::vector<std::int64_t> out;
  for (std::int64_t l = 0; l < options.layers(); ++l) {
    if (options.is_moe_block(l)) out.push_back(l);
  }
  return out;
}

SparseMoE TransformerLMImpl::moe_layer(std::int64_t layer) const {
  TORCH_CHECK(layer >= 0 && layer < options.layers(), "TransformerLM: block ", layer, " outside [0, ", options.layers(),
              ")");
  const auto* block = blocks->ptr(static_cast<std::size_t>(layer))->as<LMBlockImpl>();
  TORCH_CHECK(block->is_moe, "TransformerLM: block ", layer, " is dense (moe_every = ", options.moe_every(), ")");
  return block->moe;
}

}  // namespace moescope
