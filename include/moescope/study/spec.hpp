#pragma once
// A sweep: a base run config, axes over any of its keys, and the analyses to run after each training. Torch-free:
// every grid point becomes a folder with its run config and the exact `moescope` commands that train and analyse
// it; the runner (study/runner.hpp) executes them, collect (study/collect.hpp) gathers the reports.
//
// Spec (JSON):
//   {"name": "weight-orth",                       a name for the summary
//    "description": "...",                        optional
//    "base": {...run config...} | "run.json",     model / data / train / seed, as `moescope train --config` reads
//    "axes": {"train.regularisers.weight_orth": [0, 1e-3, 0.1], "seed": [0, 1, 2], "model.head": ["dense", "soft"]},
//    "strength": "train.regularisers.weight_orth", the numeric axis the summary puts on x (default: the first
//                                                 numeric axis that is not "seed")
//    "analyses": {"geometry": {}, "hessian": {"split": "train,test", "top-k": 3, "trace": "hutch++"},
//                 "hessian_router": {"command": "hessian", "params": "router"}, ...},
//                                                 flags as JSON: true -> --flag, false -> left out, a list -> a
//                                                 comma-separated value; a key's command is its name unless given
//    "summary": {"pairs": [["mso_mean", "activation_overlap"], ...],   correlations to report
//                "reference": {"text": "what the paper reports", ...}},  shown next to our numbers
//    "threads": 0}                                 worker threads of the whole sweep (0: the --threads given)
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moescope {

/// One analysis run after training: `moescope COMMAND <run> -o <point>/<name>.h5 <flags>`.
struct AnalysisSpec {
  std::string name;      ///< the key in "analyses"; the report is NAME.h5
  std::string command;   ///< geometry, activations, hessian or landscape
  nlohmann::ordered_json flags;  ///< an object: flag name (without dashes) -> value, in the spec's order
  /// The flags as command-line arguments ("--top-k", "3", "--keep-graph", ...), in key order.
  std::vector<std::string> arguments() const;
};

/// One axis of the grid.
struct SweepAxis {
  std::string key;                    ///< a dotted run-config key ("seed", "train.regularisers.weight_orth")
  std::vector<nlohmann::json> values; ///< numbers, strings, booleans or objects
  bool numeric() const;
  /// The last component of the key ("weight_orth").
  std::string short_name() const;
};

struct SweepSpec {
  std::string name, description;
  std::string file;                 ///< where the spec came from ("" when built in code)
  nlohmann::json base;              ///< the base run config (a "base" file is read relative to the spec)
  std::vector<SweepAxis> axes;
  std::string strength;             ///< "" when there is no numeric axis besides the seed
  std::vector<AnalysisSpec> analyses;
  std::vector<std::pair<std::string, std::string>> pairs;  ///< summary correlations
  nlohmann::ordered_json reference; ///< summary.reference, printed beside our numbers (in the spec's order)
  int threads = 0;
  nlohmann::json json;              ///< the spec as read (stored in sweep.h5)
};

/// Parses and checks a spec's structure: unknown keys, a missing or empty axis, an axis value of another JSON type
/// than the axis's first value, an unknown analysis command, flags that are not an object, a strength that is not
/// a numeric axis. Throws InputError naming `file` and the key (e.g. "spec.json: axes.seed: the axis is empty").
/// Whether the keys exist in the run config is checked by the runner against `moescope train --print-config`.
/// Axes and analyses keep the order the spec gives them (the first axis varies slowest; analyses run in order).
SweepSpec parse_sweep_spec(const nlohmann::ordered_json& j, const std::string& file);
/// Reads and parses a spec file.
SweepSpec read_sweep_spec(const std::string& path);

/// The value at a dotted key of a config, or nullptr when a component is missing.
const nlohmann::json* config_value(const nlohmann::json& config, const std::string& key);
/// Checks axis keys and value types against a resolved run config (what `train --print-config` prints for the base):
/// every key must exist and each value must have its value's JSON type (numbers of either kind count as one type).
/// Throws InputError naming the file and the axis, with the closest existing key when one ends the same way.
void check_axes_against(const SweepSpec& spec, const nlohmann::json& resolved);

/// One grid point.
struct SweepPoint {
  std::string name;                     ///< folder name from the coordinates: "weight_orth=0.001_seed=1"
  std::vector<nlohmann::json> coords;   ///< one value per axis, in axis order
  nlohmann::json config;                ///< the base with the coordinates set
};
/// Every point, the last axis varying fastest. Names use each axis's short name, or its whole key where two axes
/// share a short name; values as JSON prints them, with characters outside [A-Za-z0-9.+-] replaced by '_'.
std::vector<SweepPoint> expand_grid(const SweepSpec& spec);

}  // namespace moescope
