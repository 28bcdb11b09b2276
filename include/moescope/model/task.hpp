#pragma once
// The task model: a classifier or an MoE LM behind one interface (forward with routing, batch loss, MoE layers),
// its evaluation over a data split, and a trained run opened for analysis.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "moescope/data/dataset_torch.hpp"
#include "moescope/io/run.hpp"
#include "moescope/model/routing.hpp"

namespace moescope {

class MoELayer;

/// One MoE layer of a model.
struct MoELayerRef {
  /// The layer number as layout detection and --params expert:L.E count it: the block index for an LM
  /// ("blocks.L.moe"), 0 for a classifier head.
  int index = 0;
  std::string prefix;      ///< parameter-name prefix: "head" (classifier) or "blocks.L.moe" (LM)
  MoELayer* layer = nullptr;
  torch::nn::ModuleList experts{nullptr};
};

/// Logits and the routing of every MoE layer (in MoELayerRef order).
struct TaskForward {
  torch::Tensor logits;
  std::vector<RoutingInfo> routing;
};

/// A batch's mean cross-entropy (over samples, or over tokens for an LM), differentiable, with its counts.
struct BatchResult {
  torch::Tensor loss;
  std::int64_t correct = 0;  ///< argmax hits (samples or tokens)
  std::int64_t count = 0;    ///< samples or tokens in the mean
  std::vector<RoutingInfo> routing;
};

/// A classifier or an LM behind one interface. Cheap to copy (shares the module).
class TaskModel {
 public:
  /// From {"type": "classifier", ...ClassifierOptions fields} or {"type": "lm", ...LMOptions fields}. Throws
  /// InputError naming the field for an unknown type or field, a wrong type, or values the model cannot be built
  /// with (e.g. top_k > experts).
  static TaskModel create(const nlohmann::json& config);
  bool is_lm() const { return is_lm_; }
  /// The model's own JSON (with "type").
  nlohmann::json config() const;
  torch::nn::Module& module() const { return *module_; }
  std::shared_ptr<torch::nn::Module> module_ptr() const { return module_; }
  TaskForward forward(const torch::Tensor& inputs) const;
  BatchResult batch_loss(const torch::Tensor& inputs, const torch::Tensor& targets) const;
  std::vector<MoELayerRef> moe_layers() const;
  /// Moves the parameters and buffers.
  void to(const torch::Device& device) const;
  torch::Device device() const;

 private:
  bool is_lm_ = false;
  std::shared_ptr<torch::nn::Module> module_;
};

/// Parses a model config as create() does, without building the model: throws the same InputErrors.
void check_model_config(const nlohmann::json& config);

/// Mean loss, accuracy (argmax hits / count) and perplexity exp(loss) over a split, in eval mode without
/// gradients; the mean is weighted by sample (token) count, so it does not depend on batch_size. The model's
/// train/eval mode is restored afterwards.
struct EvalResult {
  double loss = 0.0;
  double accuracy = 0.0;
  double perplexity = 0.0;
  std::int64_t count = 0;
};
/// Throws std::invalid_argument when batch_size < 1.
EvalResult evaluate(const TaskModel& model, const TensorSplit& split, std::int64_t batch_size = 256);

/// A trained run opened for analysis.
struct LoadedRun {
  Run run;                    ///< where it is on disk: config, step, weights file
  TaskModel model;            ///< weights loaded, eval mode, on CPU
  DataSpec data;              ///< the run's own data (config["data"])
  /// Things the caller should tell the user (e.g. a run written before input statistics were stored).
  std::vector<std::string> notes;
  const std::string& weights_file() const { return run.weights_file(); }
};
/// Throws InputError naming `file` and the first tensor (by state-dict order) holding a NaN or an infinity, with
/// its index and how many of its values are not finite.
void require_finite_weights(const torch::nn::Module& module, const std::string& file);

/// Opens a run (Run::open) and loads its model. Throws InputError when something is missing or does not fit, or
/// when a weight is NaN or infinite (require_finite_weights): every analysis of the run would be NaN.
LoadedRun load_run(const std::string& path);

/// The data of an analysis: the spec resolved against the run's own, loaded, and each split cut to max_samples.
struct EvalData {
  DataSpec spec;
  Dataset data;
  std::vector<std::string> names;  ///< the split names, in EvalSpec order
  std::vector<TensorSplit> splits;
};
/// Throws InputError for bad data, an unknown or empty split, data that does not fit the model (input shape,
/// classes, vocabulary), and std::invalid_argument for max_samples < 0 or batch_size < 1.
EvalData load_eval_data(const LoadedRun& run, const EvalSpec& spec);

}  // namespace moescope
