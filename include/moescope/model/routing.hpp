#pragma once
// What an MoE layer reports about its routing, and the Probe that records it for analysis.
#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

namespace moescope {

/// Routing of one forward call of an MoE layer. Token tensors are flattened: T = product of the input's
/// leading dimensions. Fields a layer type does not produce stay undefined (`!t.defined()`).
struct RoutingInfo {
  /// [T, E] scores fed to the softmax (after temperature and, in training, noise). SoftMoE: [T, E*p] slot logits.
  torch::Tensor logits;
  /// [T, E] softmax over all experts. SoftMoE: each token's combine weight summed over an expert's slots.
  torch::Tensor probs;
  /// [T, k] int64 experts chosen per token (SparseMoE only).
  torch::Tensor topk_indices;
  /// [T, k] their weights (renormalised when the layer says so); a dropped assignment keeps its weight here.
  torch::Tensor topk_weights;
  /// [T, k] bool, true where capacity dropped the assignment (SparseMoE with a capacity factor only).
  torch::Tensor dropped_mask;
  /// [E] int64 rows each expert processed: kept tokens (sparse), all T (gated), B*p slots (soft).
  torch::Tensor expert_counts;
  /// (token, expert) assignments dropped by the capacity limit.
  std::int64_t dropped = 0;
  /// Tokens each expert may take (0: no limit).
  std::int64_t capacity = 0;
  /// Only when the layer is asked (keep_expert_outputs): unweighted outputs of the selected experts.
  /// SparseMoE [T, k, O] (zeros where dropped); GatedMixture [T, E, O]; SoftMoE slot outputs [B, E*p, O].
  torch::Tensor expert_outputs;
  /// Noisy top-k in training only: the logits before noise [T, E] and the noise's standard deviation [T, E]
  /// (what Shazeer et al.'s smooth load estimator needs).
  torch::Tensor clean_logits;
  torch::Tensor noise_stddev;
  /// SoftMoE only: dispatch (softmax over tokens) and combine (softmax over slots) weights, [B, m, E*p].
  torch::Tensor dispatch;
  torch::Tensor combine;
};

/// A layer's output [..., O] and its routing.
struct MoEOutput {
  torch::Tensor output;
  RoutingInfo routing;
};

/// Records routing for analysis when attached to a layer (`layer->set_probe(probe)`). Each forward call
/// appends one detached tensor per enabled flag; `clear()` empties the records. With no probe attached, a
/// layer does no extra work.
struct Probe {
  bool record_probs = false;           ///< router probabilities [T, E]
  bool record_choices = false;         ///< chosen experts [T, k] and their weights (gated/soft: argmax, k = 1)
  bool record_expert_outputs = false;  ///< every expert applied to every token [T, E, O] (extra compute)
  bool record_inputs = false;          ///< the layer's flattened input tokens [T, d]

  std::vector<torch::Tensor> probs;
  std::vector<torch::Tensor> choices;
  std::vector<torch::Tensor> choice_weights;
  std::vector<torch::Tensor> expert_outputs;
  std::vector<torch::Tensor> inputs;
  std::int64_t calls = 0;  ///< forward calls seen while attached

  /// Drops every record (flags stay).
  void clear();
  /// True when any record flag is set.
  bool any() const { return record_probs || record_choices || record_expert_outputs || record_inputs; }
};

/// What every MoE layer offers besides its module interface.
class MoELayer {
 public:
  virtual ~MoELayer() = default;
  /// Output and routing of tokens x [..., d].
  virtual MoEOutput forward_moe(const torch::Tensor& x) = 0;
  virtual std::int64_t num_experts() const = 0;
  /// Attaches a probe (nullptr detaches).
  void set_probe(std::shared_ptr<Probe> probe) { probe_ = std::move(probe); }
  const std::shared_ptr<Probe>& probe() const { return probe_; }

 protected:
  std::shared_ptr<Probe> probe_;
};

namespace detail {
/// Flattens x [..., d] to [T, d]; checks d.
torch::Tensor flatten_tokens(const torch::Tensor& x, std::int64_t dim, const char* layer);
/// Restores the leading dimensions of `like` on y [T, O].
torch::Tensor restore_tokens(const torch::Tensor& y, const torch::Tensor& like);
}  // namespace detail

}  // namespace moescope
