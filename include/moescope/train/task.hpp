#pragma once
// A task is data + model. This module turns a run's JSON config into tensors and a model, computes losses and
// metrics on batches, and writes and reads a run's weights. The trainer writes runs with it; every analysis
// (activations, hessian, landscape) opens a trained run with load_run().
//
// A run directory:  runs/NAME/config.json            the whole run config (see RunConfig in trainer.hpp)
//                   runs/NAME/step_N/model.safetensors  float32 weights (parameters and buffers, state_dict names)
//                   runs/NAME/step_N/config.json       a copy, so a step directory stands alone
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "moescope/data/synthetic.hpp"
#include "moescope/data/text.hpp"
#include "moescope/model/routing.hpp"

namespace moescope {

/// Which data a run trains on and is analysed on. JSON keys are the field names.
struct DataSpec {
  /// "fashion-mnist" (IDX files, default path kFashionMnistDir), "cifar10" (binary batches in `path`),
  /// "clustered" (the synthetic clustered task), "text-word" (WikiText/PTB: path holds
  /// {wiki.,}{train,valid,test}.tokens or ptb.{train,valid,test}.txt as read_word_corpus reads them),
  /// "text-byte" / "text-char" (a text file or a folder of text files, split contiguously).
  std::string name = "fashion-mnist";
  /// Empty: the name's default (fashion-mnist only).
  std::string path;
  /// Images and the clustered task: fraction of the train files held out as validation (split_indices(seed)).
  double valid_fraction = 0.1;
  /// When > 0, keep only the first N samples (sequences for text) of the train split / of valid and test.
  std::int64_t max_train = 0;
  std::int64_t max_eval = 0;
  /// Text: tokens per sequence (non-overlapping windows; targets are the inputs shifted by one).
  std::int64_t context = 64;
  /// The clustered task's sizes; its seed is `seed`. The test split is a further 20% generated after train.
  ClusteredTaskOptions clustered;
  /// Seeds the validation split and the clustered task.
  std::uint64_t seed = 0;
};
void to_json(nlohmann::json& j, const DataSpec& s);
/// Missing keys keep their defaults; unknown keys or wrong types throw InputError.
void from_json(const nlohmann::json& j, DataSpec& s);

/// One split as CPU tensors. Images: inputs float32 [N, C, H, W], standardised per channel with the train split's
/// mean and standard deviation; clustered: float32 [N, d]; targets int64 [N]. Text: inputs and targets int64
/// [N, S], targets the next tokens. `groups` is the clustered task's true cluster per sample (else undefined).
struct TensorSplit {
  torch::Tensor inputs;
  torch::Tensor targets;
  torch::Tensor groups;
  std::int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
  /// Samples [begin, end) (views, no copy).
  TensorSplit slice(std::int64_t begin, std::int64_t end) const;
  /// The first min(n, size()) samples (n <= 0: all).
  TensorSplit head(std::int64_t n) const { return slice(0, n > 0 && n < size() ? n : size()); }
};

struct TaskData {
  DataSpec spec;
  TensorSplit train, valid, test;
  bool is_text = false;
  /// Classes, or the vocabulary size for text.
  std::int64_t num_classes = 0;
  /// One sample's input shape: {C, H, W}, {d} or {S}.
  std::vector<std::int64_t> input_shape;
  /// Text only (nullptr otherwise).
  std::shared_ptr<Vocabulary> vocab;
  /// Images: per-channel mean and standard deviation of the train split's pixels / 255.
  std::vector<double> mean, stddev;
  /// The split named "train", "valid" or "test"; throws InputError otherwise.
  const TensorSplit& split(const std::string& name) const;
};
/// The CLI's --data: "" keeps `base`; "NAME" or "NAME:PATH" sets the name (and path; for a new name the other
/// fields keep base's values); a path ending in ".json" is read as a whole DataSpec. Throws InputError.
DataSpec parse_data_arg(const std::string& arg, const DataSpec& base = {});

/// Reads and tensorises the data. Throws InputError naming the file on any format problem.
TaskData load_task_data(const DataSpec& spec);

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
  /// From {"type": "classifier", ...ClassifierOptions fields} or {"type": "lm", ...LMOptions fields}; throws
  /// InputError on an unknown type or field.
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

/// Mean loss, accuracy (argmax hits / count) and perplexity exp(loss) over a split, in eval mode without
/// gradients; the mean is weighted by sample (token) count, so it does not depend on batch_size. The model's
/// train/eval mode is restored afterwards.
struct EvalResult {
  double loss = 0.0;
  double accuracy = 0.0;
  double perplexity = 0.0;
  std::int64_t count = 0;
};
EvalResult evaluate(const TaskModel& model, const TensorSplit& split, std::int64_t batch_size = 512);

/// Writes named tensors as safetensors, atomically (tmp + rename): floating tensors as float64 when `float64`,
/// else float32, integer ones as int64; `metadata` goes in the header's __metadata__.
void write_tensor_map(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      bool float64, const std::vector<std::pair<std::string, std::string>>& metadata = {});
/// Writes the state_dict (parameters and buffers) as float32 safetensors, atomically (tmp + rename), with
/// `metadata` in the header's __metadata__ (beside format and moescope_version).
void save_weights(const TaskModel& model, const std::string& path,
                  const std::vector<std::pair<std::string, std::string>>& metadata = {});
/// Copies weights from a safetensors file into the model. Every parameter and buffer must be present with its
/// shape; extra tensors are an error too. Throws InputError naming the file and the tensor.
void load_weights(const TaskModel& model, const std::string& path);

/// Reads a JSON file. Throws InputError naming the file when it cannot be opened ("cannot open <what>") or is not
/// valid JSON.
nlohmann::json read_json_file(const std::string& path, const std::string& what);
/// N for a directory named step_N, else -1.
std::int64_t step_number(const std::string& dir);
/// The step_N directory of `run_dir` with the highest N that holds `file`, or "" when there is none.
std::string latest_step_dir(const std::string& run_dir, const std::string& file);

/// A trained run opened for analysis.
struct LoadedRun {
  nlohmann::json config;      ///< the whole run config
  TaskModel model;            ///< weights loaded, eval mode, on CPU
  DataSpec data;              ///< config["data"]
  std::string weights_file;   ///< the model.safetensors read
  std::string directory;      ///< the step directory
  std::int64_t step = -1;     ///< from the directory name step_N (-1 when it has no such name)
};
/// `path`: a step directory (runs/NAME/step_N), its model.safetensors, or a run directory (its highest step).
/// config.json is looked for in the step directory, then its parent. Throws InputError when something is
/// missing or does not fit.
LoadedRun load_run(const std::string& path);
/// True when `path` looks like one of moescope's runs (a config.json with a "model" beside or above it).
bool is_run_path(const std::string& path);

}  // namespace moescope
