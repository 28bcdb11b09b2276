#pragma once
// Running experts on tokens for the activation statistics of activations.hpp: every token goes to every expert
// of an MoE layer, so experts are compared on the same inputs; outputs are streamed batch by batch into the
// float64 accumulators, so memory is one batch of [B, E, O] outputs (plus, for a checkpoint, one layer's expert
// matrices in float32).
//
// Three sources of the layer inputs:
//  - moescope's own runs: the model runs in eval mode over a data split; a Probe records each MoE layer's input
//    tokens and the layer's own routing (top-k choices, capacity drops) is used for the routed statistics;
//  - recorded activations (any framework): a safetensors file, format below, with each layer's input hidden
//    states; the experts of any checkpoint the readers support run on them without the rest of the model;
//  - random probe: standard Gaussian inputs N(0, I_d) of each layer's width d (seeded util/random Rng).
//
// Recorded-activations file (safetensors, any float dtype; tensor names use the report key of the layer that
// `moescope inspect` / detect_layout prints, e.g. "layer_03", or "encoder_layer_01" for Switch):
//   "<key>.inputs"        [T, d]  the MoE layer's input hidden states (after the layer's pre-FFN norm), one row
//                                 per token, in any token order;
//   "<key>.router_probs"  [T, E]  optional: the router's probabilities for the same tokens (when absent they are
//                                 computed as softmax(router(x)) from the checkpoint's router weight, if it has one).
// Layers without "<key>.inputs" are skipped; any other tensor name is an error.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moescope/io/layout.hpp"
#include "moescope/io/report.hpp"
#include "moescope/io/tensor.hpp"
#include "moescope/metrics/activations.hpp"
#include "moescope/metrics/geometry.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/progress.hpp"

namespace moescope {

/// Which experts each token is routed to.
struct TokenRouting {
  torch::Tensor probs;    ///< [T, E] float (undefined when unknown)
  torch::Tensor chosen;   ///< [T, k] int64, the router's choices before capacity drops (undefined when unknown)
  torch::Tensor dropped;  ///< [T, k] bool, true where the capacity limit dropped the choice (undefined: none)
  std::int64_t capacity = 0;  ///< tokens an expert may take per batch (0: no limit)
};

/// One MoE layer's experts as functions on tokens, and its router when known.
struct ExpertBank {
  std::string key;     ///< report key, "layer_NN"
  int layer = 0;       ///< the model's layer number
  std::string prefix;  ///< tensor-name prefix of the layer
  std::int64_t experts = 0, dim = 0, out_dim = 0;
  std::string kind;    ///< "swiglu", "relu" (checkpoints), or "model" (an own model's expert modules)
  std::int64_t top_k = 1;  ///< experts per token when routing from probabilities alone
  /// Expert e on x [T, dim] float32: [T, out_dim].
  std::function<torch::Tensor(std::int64_t e, const torch::Tensor& x)> expert;
  /// Routing of x [T, dim]; empty when the layer has no usable router.
  std::function<TokenRouting(const torch::Tensor& x)> route;
};

/// The experts (and router) of one layer of a checkpoint, read into float32 tensors: SwiGLU
/// down(silu(gate x + b_g) * (up x + b_u)) + b_d (Mixtral w1/w3/w2, OLMoE/Qwen/DeepSeek gate/up/down, fused
/// views), ReLU down(relu(up x + b_u)) + b_d (Switch wi/wo, fc1/fc2); biases where the checkpoint has them.
/// The router, when the layout names one, gives softmax(x R^T + b) and its top_k choices (exact for Mixtral,
/// OLMoE, Qwen and Switch; DeepSeek-V3's sigmoid and grouped routing are not reproduced: record the probabilities).
/// Throws InputError for layouts whose expert function is not one of these (gpt-oss, custom matrix names).
ExpertBank checkpoint_expert_bank(const TensorSource& src, const Layout& layout, const MoELayerLayout& layer,
                                  std::int64_t top_k);

/// Routing as a layer reports it: top-k layers give their choices and capacity drops; layers where every
/// expert contributes (GatedMixture, SoftMoE) give the argmax of their probabilities as the single choice.
TokenRouting token_routing(const RoutingInfo& r);

/// One MoE layer of a model (GatedMixture, SoftMoE or SparseMoE) as a bank: run_expert on its expert modules,
/// routed by the layer's own forward on the given tokens. Key "layer_NN" with NN = ref.index.
ExpertBank layer_expert_bank(const MoELayerRef& ref);

/// The MoE layers of an own model: run_expert on its expert modules; the router is the layer's own forward
/// (its top-k, capacity and temperature) applied to the given tokens. Keys are "layer_NN" by forward order
/// (NN = MoELayerRef::index); callers may rename them (e.g. to the checkpoint layout's keys).
std::vector<ExpertBank> model_expert_banks(const TaskModel& model);

/// Every expert of the bank on x [T, dim]: [T, E, O] float32, without autograd.
torch::Tensor run_all_experts(const ExpertBank& bank, const torch::Tensor& x);

/// Streams batches of one layer's tokens into its statistics (ActivationOverlapAccumulator, RoutingAccumulator).
class LayerActivationAccumulator {
 public:
  /// Throws InputError when the bank has fewer than 2 experts. `bank` must outlive the accumulator.
  LayerActivationAccumulator(const ExpertBank& bank, std::string routing_source);
  /// Runs every expert on the first `rows` tokens of x [T, dim] and adds their outputs with the routing of those
  /// tokens (fields left undefined are unknown: the routed statistics stay NaN).
  void add(const torch::Tensor& x, const TokenRouting& routing, std::int64_t rows);
  LayerActivations finish() const;

 private:
  const ExpertBank* bank_;
  ActivationOverlapAccumulator overlap_;
  RoutingAccumulator routing_;
  std::int64_t capacity_ = 0;
  std::string routing_source_;
};

struct ActivationsOptions {
  /// Samples (data path) or tokens (recorded / random) per batch.
  std::int64_t batch_size = 256;
  /// Stop after this many tokens per layer (0: all). Data path: samples are taken whole, so for an LM the count
  /// is rounded up to whole sequences.
  std::int64_t max_tokens = 0;
  /// Random probe: tokens per layer (used when max_tokens is 0) and seed.
  std::int64_t random_tokens = 4096;
  std::uint64_t seed = 0;
  /// Tokens (samples, on the data path) done per layer, and notes; may be empty.
  ProgressFn progress;
};

/// Own model over a split: the model runs in eval mode without gradients (mode restored afterwards); each MoE
/// layer's input tokens are given to all its experts. Layers are named as model_expert_banks names them
/// unless `keys` (one per MoE layer, forward order) is given.
ActivationsResult model_activations(const TaskModel& model, const TensorSplit& split, const ActivationsOptions& opts,
                                    const std::vector<std::pair<std::string, int>>& keys = {});

/// The banks on recorded inputs (file format above). Throws InputError naming the file and tensor on a missing
/// layer, a width mismatch, unknown tensors, or probabilities whose shape does not fit.
ActivationsResult recorded_activations(const std::vector<ExpertBank>& banks, const TensorSource& recorded,
                                       const ActivationsOptions& opts);

/// Throws InputError naming the file when a tensor is not "<key>.inputs" / "<key>.router_probs" of one of `keys`.
void check_recorded_names(const TensorSource& recorded, const std::vector<std::string>& keys);
/// One layer on its recorded inputs (std::nullopt when the file has no "<key>.inputs"); for callers that build
/// one bank at a time (a large checkpoint's layers need not all be in memory).
std::optional<LayerActivations> recorded_layer(const ExpertBank& bank, const TensorSource& recorded,
                                               const ActivationsOptions& opts);
/// One layer on the random probe.
LayerActivations random_layer(const ExpertBank& bank, const ActivationsOptions& opts);
/// The ActivationsResult::description of each path.
std::string recorded_description(const std::string& file);
std::string random_description(const ActivationsOptions& opts);

/// The banks on standard Gaussian inputs of each layer's width (opts.seed; the same stream for every layer).
ActivationsResult random_activations(const std::vector<ExpertBank>& banks, const ActivationsOptions& opts);

/// The whole `activations` analysis of a checkpoint: moescope's own runs run on data (or a recorded file, or the
/// random probe); any other checkpoint's experts run on recorded inputs or the random probe.
struct ActivationsRequest {
  std::string checkpoint;        ///< a run (Run::is_run) or any checkpoint open_checkpoint reads
  std::string data;              ///< own runs: "" = the run's data, else as parse_data_arg reads it
  std::string split = "train";
  std::string activations_file;  ///< recorded layer inputs ("" none)
  bool random_probe = false;
  std::vector<int> layers;       ///< model layer numbers (empty: all MoE layers)
  std::int64_t top_k = 0;        ///< other checkpoints: experts per token (0: config.json's, else Switch 1, others 2)
  std::string expert_pattern;    ///< LayoutOptions::expert_pattern
  std::string expert_pattern_source = "expert pattern";  ///< LayoutOptions::pattern_source
  ActivationsOptions options;
  /// Also the weight geometry of the same layers and the weight-vs-activation comparison.
  bool geometry = false;
  GeometryOptions geometry_options;
};
struct ActivationsAnalysis {
  ActivationsResult result;
  ActivationsMeta meta;
  std::string weights_file;                  ///< the checkpoint file read
  std::optional<CheckpointGeometry> geometry;
  std::vector<LayerOverlaps> overlaps;       ///< with geometry: per layer, weight and activation overlaps
  std::optional<SpaceComparison> comparison;
  std::vector<std::string> notes;            ///< things to tell the user (skipped layers, legacy runs)
};
/// Throws InputError naming the checkpoint or file for what does not fit (no MoE layers, a layer without experts,
/// --data on a checkpoint that cannot run, both or neither input source for a foreign checkpoint).
ActivationsAnalysis analyse_activations(const ActivationsRequest& request);
/// /activations, and with geometry /geometry and /compare_spaces (weight source: the checkpoint).
void write_activations_analysis(ReportWriter& w, const ActivationsAnalysis& a);

}  // namespace moescope
