#pragma once
// Shared experts (Qwen2-MoE's gated shared_expert, DeepSeek's shared_experts) see every token and are not routed:
// the activation analysis keeps them out of the routed experts' overlap matrices and reports them apart, against
// the routed experts on the same tokens. Torch-free: the statistics and their report group.
//
// Definitions, per MoE layer, over tokens t: s(t) is the shared expert's output as the block adds it (Qwen2-MoE:
// sigmoid(shared_expert_gate x) * shared_expert(x)); y_e(t) routed expert e's output on the same input; r(t) the
// routed mixture the block adds, sum over the token's top-k slots of w_k(t) y_{e_k}(t).
//  - overlap[e]       = mean over tokens of cos(s(t), y_e(t))   (tokens where either output is zero are skipped)
//  - mixture_overlap  = mean over tokens of cos(s(t), r(t))
//  - mean_norm        = mean over tokens of |s(t)|;  mixture_norm = mean of |r(t)|
//  - mean_gate        = mean over tokens of the sigmoid gate (Qwen2-MoE; NaN for an ungated shared expert)
#include <cstdint>
#include <string>
#include <vector>

namespace moescope {

class ReportWriter;

struct SharedExpertActivations {
  std::string key;            ///< the layer's report key ("layer_03")
  std::string kind;           ///< "gated" (Qwen2-MoE) or "ungated" (DeepSeek)
  std::int64_t tokens = 0;
  std::int64_t experts = 0;   ///< routed experts E
  std::vector<double> overlap;  ///< [E]
  std::vector<double> overlap_tokens;  ///< [E] tokens used per expert (both outputs non-zero)
  double mixture_overlap = 0.0;
  double mean_norm = 0.0, mixture_norm = 0.0;
  double mean_gate = 0.0;
};

/// Streams per-token values into SharedExpertActivations (float64 sums over tokens in order).
class SharedExpertAccumulator {
 public:
  /// Throws std::invalid_argument unless experts >= 1.
  SharedExpertAccumulator(std::string key, std::string kind, std::int64_t experts);
  /// One token: cos_e[E] its cosines with the routed experts (NaN: skipped), the mixture's cosine (NaN: skipped),
  /// the norms, and the gate (NaN when ungated).
  void add_token(const double* cos_e, double mixture_cos, double norm, double mixture_norm, double gate);
  SharedExpertActivations result() const;

 private:
  SharedExpertActivations r_;
  std::vector<double> sum_;
  double mixture_sum_ = 0.0, mixture_count_ = 0.0, norm_sum_ = 0.0, mixture_norm_sum_ = 0.0, gate_sum_ = 0.0;
};

/// /activations/<key>/shared_expert/{overlap[E], overlap_tokens[E], mixture_overlap, mean_norm, mixture_norm,
/// mean_gate, tokens} with attributes kind and definition. The layer groups must exist (write_activations first).
void write_shared_experts(ReportWriter& w, const std::vector<SharedExpertActivations>& shared);

}  // namespace moescope
