#pragma once
// Activation overlap of a Hugging Face MoE model's routed experts on the model's own hidden states (the `activations`
// analysis of a model folder). The model runs over token windows without gradients; at each MoE layer the block's
// input tokens (the hidden states after post_attention_layernorm, HFMoETrace::inputs) go to every routed expert
// (HFSparseMoEImpl::expert_forward), and the router's real decisions are the routing: its top-k choices
// (HFMoETrace::topk_experts) and probabilities (router_probs: softmax of the router logits; DeepSeek-V3's sigmoid
// scores are divided by their sum per token so that importance and entropy read as for the others). Statistics are
// activations.hpp's, accumulated in float64 from outputs in the model's dtype (float64 models stay float64 end to
// end). Shared experts are kept out of the overlap matrices and reported apart (metrics/shared_experts.hpp).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "moescope/metrics/activations.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/metrics/shared_experts.hpp"
#include "moescope/model/task.hpp"

namespace moescope {

/// One MoE layer of a Hugging Face model and the report key it goes under.
struct HFLayerKey {
  std::int64_t layer = 0;  ///< decoder layer number
  std::string key;         ///< report key, "layer_03" (the checkpoint layout's key for the block)
};

/// The report keys of the model's MoE layers as detect_layout names the same blocks (matched by tensor prefix,
/// "model.layers.L.mlp" / "...block_sparse_moe"), "layer_%02d" for a block the layout does not list.
std::vector<HFLayerKey> hf_layer_keys(const HFCausalLMImpl& model, const Layout& layout);

/// Layer `layer`'s routed experts as a bank: expert e is expert_forward(e, x) in the model's dtype; route() is the
/// block's router (top-k and scores). kind "swiglu"; prefix the block's tensor prefix without the final dot.
/// Throws std::out_of_range for a dense layer.
ExpertBank hf_expert_bank(const HFCausalLMImpl& model, const HFLayerKey& layer);

struct HFActivations {
  ActivationsResult result;                     ///< inputs "data"; routing_source "model"; samples = sequences run
  std::vector<SharedExpertActivations> shared;  ///< one per chosen layer with a shared expert
  std::map<std::string, std::int64_t> top_k;    ///< per key: the router's k
};

/// Runs `model` (a Hugging Face TaskModel) over the windows of `split` (inputs [N, S] ids), opts.batch_size windows
/// per forward pass, until opts.max_tokens tokens (0: all) have been given to every chosen layer (a window is cut
/// at the count, so exactly max_tokens tokens per layer when the split has them). Expert outputs are computed in
/// chunks of at most 2^24 output values. Throws InputError for an empty split or a layer with fewer than 2 experts,
/// std::invalid_argument when the model is not a Hugging Face one or a layer is not an MoE layer.
HFActivations hf_activations(const TaskModel& model, const TensorSplit& split, const std::vector<HFLayerKey>& layers,
                             const ActivationsOptions& opts);

}  // namespace moescope
