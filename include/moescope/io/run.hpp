#pragma once
// A moescope run on disk, as `moescope train` writes it (torch-free: opening a run reads JSON and paths only):
//   NAME/config.json                          the whole run config (name, seed, model, data, train)
//   NAME/step_N/model.safetensors             float32 weights (state_dict names)
//   NAME/step_N/{config.json, state.json, optimizer.pt[, omoe.safetensors]}   a step folder stands alone
//   NAME/log.h5                               the training log
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moescope {

/// What a run is, for error messages ("... is not a moescope run: " + kRunDescription).
inline constexpr const char* kRunDescription =
    "a run is the folder `moescope train` writes (config.json and step_N/model.safetensors); give the run folder "
    "(its latest step), a step folder, or a step's model.safetensors";

/// The layout version of the run folders this moescope writes: each step's state.json records it as "run_format"
/// beside "moescope_version". A later moescope that changes what a run folder holds raises it; this one refuses
/// runs of a higher format instead of misreading them.
inline constexpr std::int64_t kRunFormat = 1;

/// Checks a step's state.json (parsed) against this moescope: refuses (InputError naming `file`) a run_format
/// above kRunFormat, or, for state files without one, a moescope_version of a higher major version than this
/// one's. A state.json of the right format passes; one that records neither passes (runs written before both).
void check_run_format(const nlohmann::json& state, const std::string& file);

/// One step of a run, opened for reading.
class Run {
 public:
  /// Opens `path`: a run folder (its latest step holding model.safetensors), a step folder, or a step's
  /// model.safetensors. config.json is looked for in the step folder, then its parent. Throws InputError naming
  /// `path` and saying what a run is when it is none of these, or naming config.json when it is not a run config,
  /// or naming the step's state.json when a newer moescope wrote the run (check_run_format).
  static Run open(const std::string& path);
  /// Whether open(path) would find a run (never throws): a folder or a `.safetensors` file as above with a
  /// config.json holding a "model" object. Any other file (e.g. a directions .h5 saved inside a run folder) is not.
  static bool is_run(const std::string& path);

  /// The run folder (the step folder's parent when the step folder is named step_N, else the step folder).
  const std::string& directory() const { return directory_; }
  const std::string& step_directory() const { return step_directory_; }
  /// N of the step folder step_N; -1 when it is not named so.
  std::int64_t step() const { return step_; }
  const std::string& weights_file() const { return weights_file_; }
  const std::string& config_file() const { return config_file_; }
  /// The whole run config, and its "model" object.
  const nlohmann::json& config() const { return config_; }
  const nlohmann::json& model_config() const { return config_.at("model"); }
  /// The steps of the run folder holding model.safetensors, ascending.
  std::vector<std::int64_t> steps() const;

 private:
  std::string directory_, step_directory_, weights_file_, config_file_;
  std::int64_t step_ = -1;
  nlohmann::json config_;
};

/// N for a folder named step_N, else -1.
std::int64_t step_number(const std::string& dir);
/// The step_N folder of `run_dir` with the highest N that holds `file`, or "" when there is none.
std::string latest_step_dir(const std::string& run_dir, const std::string& file);

}  // namespace moescope
