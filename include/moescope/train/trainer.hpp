#pragma once
// The trainer: a run config (model + data + optimisation + regularisers) in, a run directory out:
//   OUT/NAME/config.json                  the run config as trained (model fitted to the data)
//   OUT/NAME/step_N/model.safetensors     float32 weights (read back by load_run, inspect, geometry, any reader)
//   OUT/NAME/step_N/{config.json, optimizer.pt, state.json[, omoe.safetensors]}   what --resume needs
//   OUT/NAME/log.h5                       /train/... per logged step, /valid/... per evaluation
// A step directory is written as step_N.tmp and renamed, so a killed run leaves either a whole checkpoint or
// none. Determinism: the model's initial weights come from the seed, epoch e visits the train split in
// permutation(N, splitmix64(seed + e)), and step s reseeds torch's generator with splitmix64(seed ^ (s + 1))
// (dropout, noisy routing), so a resumed run repeats an uninterrupted one exactly at equal thread counts.
#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "moescope/io/report.hpp"
#include "moescope/util/progress.hpp"
#include "moescope/train/optim.hpp"
#include "moescope/train/regularisers.hpp"
#include "moescope/data/dataset_torch.hpp"
#include "moescope/model/task.hpp"

namespace moescope {

/// How to train. JSON keys are the field names; "regularisers" holds RegulariserWeights' fields and
/// "weight_orth_param"; "optim" an OptimConfig.
struct TrainConfig {
  /// Total optimiser steps; 0: epochs * steps per epoch (steps per epoch = floor(N / batch_size), at least 1).
  std::int64_t steps = 0;
  std::int64_t epochs = 1;
  std::int64_t batch_size = 128;
  /// Evaluate on the validation split every this many steps (0: only at the end).
  std::int64_t eval_every = 0;
  /// Write step_N every this many steps (0: only the final step).
  std::int64_t checkpoint_every = 0;
  /// Record a log row every this many steps.
  std::int64_t log_every = 10;
  std::int64_t eval_batch_size = 512;
  /// At the end, also evaluate on the first this many samples of the train split (eval mode, like valid and test;
  /// 0: skip), logged as /train/train_eval_{loss,acc,perplexity}: the train accuracy a study reports.
  std::int64_t eval_train_samples = 0;
  RegulariserWeights regularisers;
  /// The expert parameter the weight-orthogonality loss compares (as named inside an expert).
  std::string weight_orth_param = "fc1.weight";
  OptimConfig optim;
  /// Train with denormal floats flushed to zero (results that would be denormal, below 1.2e-38 in float32, become
  /// zero, and such operands read as zero) on the training thread and its intra-op pool, as TensorFlow does
  /// on CPUs: an operation that makes or reads a denormal costs a microcode assist of about a hundred cycles on
  /// x86, and training makes more of them as it goes, so that steps slowed down over a run by up to 40%
  /// (train/denormals.hpp).
  bool flush_denormals = true;
};
void to_json(nlohmann::json& j, const TrainConfig& c);
void from_json(const nlohmann::json& j, TrainConfig& c);

/// A whole run: {"name", "seed", "out_dir", "model": {...}, "data": DataSpec, "train": TrainConfig}.
struct RunConfig {
  std::string name = "run";
  std::uint64_t seed = 0;
  std::string out_dir = "runs";
  nlohmann::json model;
  DataSpec data;
  TrainConfig train;
};
void to_json(nlohmann::json& j, const RunConfig& c);
/// Unknown keys or wrong types throw InputError naming the key.
void from_json(const nlohmann::json& j, RunConfig& c);

/// A run config file over a base: its "model" and "data" replace the base's whole (a model of another type shares no
/// fields), "train" is merged key by key, anything else replaces.
nlohmann::json merge_run_config(nlohmann::json base, const nlohmann::json& file);

/// The default run: Fashion-MNIST, a CNN backbone (32-64-128 channels) and a top-2 sparse-MoE head of 8 experts, AdamW with a
/// cosine schedule, Switch load balancing 0.01; one epoch (minutes on 2 cores).
RunConfig default_run_config();

/// Sets the model's data-dependent fields from the data: a classifier's in_channels, image_size (or the flat
/// width for vectors) and num_classes; an LM's vocab_size and context. Fields the config gives must agree.
nlohmann::json fit_model_to_data(const nlohmann::json& model, const Dataset& data);

/// Time spent per part of a step, summed over the steps of this call (seconds).
struct StepTimes {
  double data = 0, forward = 0, regularisers = 0, backward = 0, optimiser = 0, eval = 0, checkpoint = 0;
  double total() const { return data + forward + regularisers + backward + optimiser + eval + checkpoint; }
};

struct TrainOptions {
  /// Continue from the run directory's latest complete checkpoint (its config must equal this one's,
  /// apart from out_dir).
  bool resume = false;
  /// Stop after this many steps in this call (0: no limit), after writing a checkpoint: simulates a killed run
  /// in tests and splits long runs.
  std::int64_t stop_after = 0;
  /// Called at every logged step (value: the batch loss), after each validation, for one-off notes (resuming,
  /// a skipped step) and once at the end (finished = true). May be empty.
  ProgressFn progress;
  /// Data already loaded for this config (skips reading it again), or nullptr.
  const Dataset* data = nullptr;
  /// Written into log.h5 (command line, threads); checkpoint and seed are filled in by the trainer.
  Provenance provenance;
};

struct TrainResult {
  std::string run_dir;
  std::int64_t first_step = 0;  ///< step this call started at (> 0 after a resume)
  std::int64_t steps = 0;       ///< steps done when this call returned
  std::int64_t total_steps = 0;
  bool finished = false;
  std::string last_checkpoint;  ///< step directory
  EvalResult valid, test;       ///< at the end (test only when finished)
  StepTimes times;
  std::int64_t samples = 0;     ///< training samples processed by this call
};

/// Trains (or resumes) a run. Throws InputError for bad configs or data, and when resuming a run whose config
/// differs.
TrainResult train_run(const RunConfig& config, const TrainOptions& options = {});

}  // namespace moescope
