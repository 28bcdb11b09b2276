#pragma once
// A small decoder-only transformer LM: token + learned position embeddings, pre-LN blocks with causal
// multi-head self-attention, FFN dense or SparseMoE (every moe_every-th block), tied or untied output head.
// Names: tok_emb.weight, pos_emb.weight, blocks.<L>.{ln1,attn.qkv,attn.proj,ln2}, blocks.<L>.ffn.fc1.weight
// or blocks.<L>.moe.router.weight / blocks.<L>.moe.experts.<e>.fc1.weight, ln_f, lm_head.weight (untied).
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "moescope/model/expert.hpp"
#include "moescope/model/moe.hpp"
#include "moescope/model/routing.hpp"

namespace moescope {

struct LMOptions {
  TORCH_ARG(std::int64_t, vocab_size) = 256;
  /// Longest sequence (rows of the position embedding).
  TORCH_ARG(std::int64_t, context) = 128;
  TORCH_ARG(std::int64_t, dim) = 128;
  TORCH_ARG(std::int64_t, layers) = 4;
  TORCH_ARG(std::int64_t, heads) = 4;
  /// Dense FFN hidden width.
  TORCH_ARG(std::int64_t, ffn_hidden) = 512;
  /// Block L uses SparseMoE when moe_every > 0 and (L + 1) % moe_every == 0 (1: every block; 2: blocks 1, 3, ...).
  TORCH_ARG(std::int64_t, moe_every) = 1;
  TORCH_ARG(std::int64_t, experts) = 8;
  TORCH_ARG(std::int64_t, top_k) = 2;
  /// Expert hidden width (0: ffn_hidden).
  TORCH_ARG(std::int64_t, expert_hidden) = 0;
  TORCH_ARG(bool, noisy) = false;
  TORCH_ARG(double, capacity_factor) = 0.0;
  TORCH_ARG(bool, renormalize) = true;
  TORCH_ARG(FFNKind, ffn_kind) = FFNKind::MLP;
  TORCH_ARG(Activation, activation) = Activation::GELU;
  /// Dropout on embeddings, attention weights, residual branches.
  TORCH_ARG(double, dropout) = 0.0;
  /// Output head shares the token embedding.
  TORCH_ARG(bool, tie_embeddings) = true;
  /// Biases in the attention and FFN Linears.
  TORCH_ARG(bool, bias) = true;
  /// Return the MoE blocks' selected expert outputs in RoutingInfo (for orthogonality losses).
  TORCH_ARG(bool, keep_expert_outputs) = false;

 public:
  /// True when block `layer` is an MoE block.
  bool is_moe_block(std::int64_t layer) const { return moe_every_ > 0 && (layer + 1) % moe_every_ == 0; }
};

/// JSON with every field (enums as names) and "type": "lm".
void to_json(nlohmann::json& j, const LMOptions& o);
/// Missing fields keep their defaults; unknown fields or wrong types throw InputError.
void from_json(const nlohmann::json& j, LMOptions& o);

/// Causal multi-head self-attention on [B, S, D]: qkv (D -> 3D), proj (D -> D).
class CausalSelfAttentionImpl : public torch::nn::Cloneable<CausalSelfAttentionImpl> {
 public:
  CausalSelfAttentionImpl(std::int64_t dim, std::int64_t heads, double dropout, bool bias);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  std::int64_t dim, heads;
  double dropout;
  bool bias;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

/// Pre-LN block: x + attn(ln1(x)), then x + ffn(ln2(x)) with ffn dense ("ffn") or SparseMoE ("moe").
class LMBlockImpl : public torch::nn::Cloneable<LMBlockImpl> {
 public:
  LMBlockImpl(const LMOptions& options, bool moe);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x) { return forward_moe(x).output; }
  /// Output and, for an MoE block, the routing.
  MoEOutput forward_moe(const torch::Tensor& x);

  LMOptions options;
  bool is_moe;
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  CausalSelfAttention attn{nullptr};
  FFN ffn{nullptr};
  SparseMoE moe{nullptr};
};
TORCH_MODULE(LMBlock);

/// Logits [B, S, V] and one RoutingInfo per MoE block (in block order; moe_blocks() names them).
struct LMOutput {
  torch::Tensor logits;
  std::vector<RoutingInfo> routing;
};

class TransformerLMImpl : public torch::nn::Cloneable<TransformerLMImpl> {
 public:
  explicit TransformerLMImpl(LMOptions options = LMOptions());
  void reset() override;
  /// Logits [B, S, V] for token ids [B, S] (int64, S <= context).
  torch::Tensor forward(const torch::Tensor& idx) { return forward_with_routing(idx).logits; }
  LMOutput forward_with_routing(const torch::Tensor& idx);
  /// Indices of the MoE blocks.
  std::vector<std::int64_t> moe_blocks() const;
  /// The SparseMoE of block `layer` (throws if it is dense), e.g. to attach a probe.
  SparseMoE moe_layer(std::int64_t layer) const;

  LMOptions options;
  torch::nn::Embedding tok_emb{nullptr}, pos_emb{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
  torch::nn::Linear lm_head{nullptr};  ///< only when embeddings are untied
};
TORCH_MODULE(TransformerLM);

}  // namespace moescope
