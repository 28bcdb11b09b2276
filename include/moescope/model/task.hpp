#pragma once
// The task model: a classifier, moescope's MoE LM or a Hugging Face MoE causal LM behind one interface (forward with
// routing, batch loss, MoE layers), its evaluation over a data split, and a run opened for analysis (a moescope run
// or a Hugging Face model folder).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "moescope/data/dataset_torch.hpp"
#include "moescope/io/run.hpp"
#include "moescope/model/hf.hpp"
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

/// A classifier, an LM or a Hugging Face causal LM behind one interface. Cheap to copy (shares the module).
///
/// The LMs (moescope's and Hugging Face's) take token ids [B, S] (int64) with targets [B, S], the next token of
/// every position; their batch loss is the mean token cross-entropy (nats) over all B * S positions, computed from
/// logits widened to at least float32 (as transformers computes its loss). A data window's last target is the token
/// after the window, so every position of a window is predicted (transformers' labels=input_ids loss predicts
/// S - 1 positions of each sequence instead).
class TaskModel {
 public:
  enum class Kind { Classifier, LM, HF };
  /// From {"type": "classifier", ...ClassifierOptions fields} or {"type": "lm", ...LMOptions fields}. Throws
  /// InputError naming the field for an unknown type or field, a wrong type, or values the model cannot be built
  /// with (e.g. top_k > experts).
  static TaskModel create(const nlohmann::json& config);
  /// A loaded Hugging Face model (load_hf_model).
  static TaskModel from_hf(HFCausalLM model);
  Kind kind() const { return kind_; }
  /// True for both kinds of language model (token ids in, next-token targets).
  bool is_lm() const { return kind_ != Kind::Classifier; }
  bool is_hf() const { return kind_ == Kind::HF; }
  /// The Hugging Face model; throws std::logic_error for the other kinds.
  HFCausalLMImpl& hf() const;
  /// The model's own JSON (with "type"). Hugging Face: {"type": "hf", "architecture", "model_type", "vocab_size",
  /// "tensors": {name: shape}} (what two checkpoints must share to be interpolated), not config.json itself.
  nlohmann::json config() const;
  torch::nn::Module& module() const { return *module_; }
  std::shared_ptr<torch::nn::Module> module_ptr() const { return module_; }
  /// Logits and routing. Hugging Face: logits [B, S, V] in the weights' dtype and, per MoE layer (ascending), the
  /// router's logits, probabilities (softmax; DeepSeek-V3 sigmoid), top-k experts and weights.
  TaskForward forward(const torch::Tensor& inputs) const;
  /// Hugging Face: the loss without recording routing (BatchResult::routing stays empty).
  BatchResult batch_loss(const torch::Tensor& inputs, const torch::Tensor& targets) const;
  /// Classifier and LM MoE layers. Empty for a Hugging Face model, whose MoE blocks are not moescope's MoELayer:
  /// use hf().moe_layers() and hf().moe_block(L) (metrics/hf_activations_torch.hpp does).
  std::vector<MoELayerRef> moe_layers() const;
  /// Moves the parameters and buffers.
  void to(const torch::Device& device) const;
  torch::Device device() const;

 private:
  Kind kind_ = Kind::Classifier;
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

/// How load_run loads a Hugging Face model folder (moescope runs are float32 with every parameter trainable).
struct RunLoadOptions {
  /// The dtype the model computes in (HFDType::Keep: the checkpoint's).
  HFDType dtype = HFDType::Keep;
  /// select_parameters spec of the parameters that require grad ("": none). Only these can be studied by
  /// `hessian` / `landscape` (select_parameters picks parameters that require grad), so a large model is probed
  /// through a few tensors without gradients for the rest.
  std::string trainable = "all";
};

/// A run opened for analysis: a moescope run, or a Hugging Face model folder.
struct LoadedRun {
  Run run;                    ///< a moescope run: where it is on disk (config, step, weights file); empty for HF
  TaskModel model;            ///< weights loaded, eval mode, on CPU
  /// The run's own data (config["data"]); a Hugging Face folder has none: {"text", no path, context 128}, so
  /// `--data text:PATH` or `--tokens FILE` must name it.
  DataSpec data;
  /// Things the caller should tell the user (e.g. a run written before input statistics were stored).
  std::vector<std::string> notes;
  std::string hf_folder;      ///< a Hugging Face model folder ("" for a moescope run)
  RunLoadOptions options;     ///< how it was loaded (a second run for interpolation is loaded alike)
  /// The weights: a moescope run's model.safetensors, or the Hugging Face folder.
  const std::string& weights_file() const { return hf_folder.empty() ? run.weights_file() : hf_folder; }
  bool is_hf() const { return !hf_folder.empty(); }
};
/// Throws InputError naming `file` and the first tensor (by state-dict order) holding a NaN or an infinity, with
/// its index and how many of its values are not finite.
void require_finite_weights(const torch::nn::Module& module, const std::string& file);

/// Whether load_run opens `path`: a moescope run (Run::is_run) or a Hugging Face model folder (is_hf_model_folder).
/// Never throws.
bool is_loadable_run(const std::string& path);
/// Opens a moescope run (Run::open) or a Hugging Face model folder (load_hf_model with `options`) and loads its
/// model. Throws InputError when something is missing or does not fit (for a folder, naming config.json and the
/// field or the weights file and the tensor), or when a moescope run's weight is NaN or infinite
/// (require_finite_weights): every analysis of the run would be NaN.
LoadedRun load_run(const std::string& path, const RunLoadOptions& options = {});

/// The DataSpec a Hugging Face run starts from: {"text", no path, context 128}.
DataSpec hf_default_data();
/// Sequences per batch when the user gives none, for a Hugging Face model on data `data_arg` (parse_data_arg over
/// hf_default_data()) with `context` (0: the spec's): max(1, 1024 / context), about 1024 tokens per forward pass
/// (logits are tokens x vocabulary). Throws InputError as parse_data_arg.
std::int64_t hf_default_batch_size(const std::string& data_arg, std::int64_t context);

/// The data of an analysis: the spec resolved against the run's own, loaded, and each split cut to max_samples.
struct EvalData {
  DataSpec spec;
  Dataset data;
  std::vector<std::string> names;  ///< the split names, in EvalSpec order
  std::vector<TensorSplit> splits;
};
/// `spec.context` (> 0) replaces the data's sequence length (text data only). A Hugging Face run reads "text"
/// (encoded by the folder's tokenizer.json) or "tokens" data only (data/token_dataset_torch.hpp: ids range-checked
/// against config.json's vocab_size).
/// Throws InputError for bad data, an unknown or empty split, data that does not fit the model (input shape,
/// classes, vocabulary, context), and std::invalid_argument for max_samples < 0 or batch_size < 1.
EvalData load_eval_data(const LoadedRun& run, const EvalSpec& spec);

}  // namespace moescope
