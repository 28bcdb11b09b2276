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
//    "with": {"model.head": {"dense": {"model.head_hidden": 512, "model.dropout": 0.1}}},
//                                                 settings that go with an axis value: every point whose model.head is
//                                                 "dense" also gets these keys (a value is matched by its folder-name
//                                                 text: strings as they are, numbers as JSON prints them); the point's
//                                                 name and the table stay those of the axes
//    An axis whose key is a single word that is not a run-config key (not seed, model, data, train) is a label:
//    it sets nothing itself, and each of its values needs a "with" entry, e.g.
//    "axes": {"optimizer": ["adamw", "omoe-2"]}, "with": {"optimizer": {"adamw": {"train.optim.name": "adamw"},
//                                                                       "omoe-2": {"train.optim.omoe.enabled": true}}}
//    "analyses": {"geometry": {}, "hessian": {"split": "train,test", "top-k": 3, "trace": "hutch++"},
//                 "hessian_router": {"command": "hessian", "params": "router"}, ...},
//                                                 flags as JSON: true -> --flag, false -> left out, a list -> a
//                                                 comma-separated value; a key's command is its name unless given;
//                 "activations": {"when": {"model.head": ["gated", "sparse"]}, ...}
//                                                 "when": run it only at points whose coordinates are among these
//                                                 (e.g. no activation analysis for a dense head, which has no experts)
//    "summary": {"columns": ["test_acc", "lambda_1_train", ...],      the page's table (default: headline metrics)
//                "pairs": [["mso_mean", "activation_overlap"], ...],   correlations to report
//                "reference": {"text": "what the paper reports", ...}},  shown next to our numbers
//    "threads": 0}                                 worker threads of the whole sweep (0: the --threads given)
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moescope {

/// One analysis run after training: `moescope COMMAND <run> -o <point>/<name>.h5 <flags>`.
struct AnalysisSpec {
  std::string name;      ///< the key in "analyses"; the report is NAME.h5
  std::string command;   ///< geometry, activations, hessian or landscape
  nlohmann::ordered_json flags;  ///< an object: flag name (without dashes) -> value, in the spec's order
  /// "when": axis key -> the values at which the analysis runs (every point when empty).
  std::map<std::string, std::vector<nlohmann::json>> when;
  /// The flags as command-line arguments ("--top-k", "3", "--keep-graph", ...), in key order ("command" and "when"
  /// are not flags).
  std::vector<std::string> arguments() const;
};

/// One axis of the grid.
struct SweepAxis {
  std::string key;                    ///< a dotted run-config key ("seed", "train.regularisers.weight_orth")
  std::vector<nlohmann::json> values; ///< numbers, strings, booleans or objects
  /// A label axis (a single-word key that is no run-config key): only its "with" settings reach the config.
  bool label = false;
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
  /// "with": axis key -> value text -> {dotted config key: value}; applied after the axes, in axis order.
  std::map<std::string, std::map<std::string, nlohmann::json>> with;
  std::vector<AnalysisSpec> analyses;
  std::vector<std::string> columns;  ///< summary.columns: the summary page's table, in order (empty: headline metrics)
  std::vector<std::pair<std::string, std::string>> pairs;  ///< summary correlations
  nlohmann::ordered_json reference; ///< summary.reference, printed beside our numbers (in the spec's order)
  int threads = 0;
  nlohmann::json json;              ///< the spec as read (stored in sweep.h5)
};

/// Parses and checks a spec's structure: unknown keys, a missing or empty axis, an axis value of another JSON type
/// than the axis's first value, an unknown analysis command, flags that are not an object, a strength that is not
/// a numeric axis, a "with" entry for a key that is no axis or a value the axis does not have, or one that sets an
/// axis key, a label axis with a value that has no "with" entry, an analysis's "when" naming no axis or a value the
/// axis does not have. Throws InputError naming `file` and the key (e.g. "spec.json: axes.seed: the axis is empty").
/// Whether the keys exist in the run config is checked by the runner against `moescope train --print-config`.
/// Axes and analyses keep the order the spec gives them (the first axis varies slowest; analyses run in order).
SweepSpec parse_sweep_spec(const nlohmann::ordered_json& j, const std::string& file);
/// Reads and parses a spec file.
SweepSpec read_sweep_spec(const std::string& path);

/// The value at a dotted key of a config, or nullptr when a component is missing.
const nlohmann::json* config_value(const nlohmann::json& config, const std::string& key);
/// Checks axis keys and value types against a resolved run config (what `train --print-config` prints for the base):
/// every key must exist and each value must have its value's JSON type (numbers of either kind count as one type);
/// the same for the keys "with" sets.
/// Throws InputError naming the file and the axis, with the closest existing key when one ends the same way.
void check_axes_against(const SweepSpec& spec, const nlohmann::json& resolved);

/// One grid point.
struct SweepPoint {
  std::string name;                     ///< folder name from the coordinates: "weight_orth=0.001_seed=1"
  std::vector<nlohmann::json> coords;   ///< one value per axis, in axis order
  nlohmann::json config;                ///< the base with the coordinates set
};
/// The text an axis value is known by in folder names and "with": strings as they are, anything else as JSON prints it.
std::string axis_value_text(const nlohmann::json& v);

/// Every point, the last axis varying fastest, with the "with" settings of its coordinates applied. Names use each
/// axis's short name, or its whole key where two axes share a short name; values as JSON prints them, with
/// characters outside [A-Za-z0-9.+-] replaced by '_'.
std::vector<SweepPoint> expand_grid(const SweepSpec& spec);

/// Whether an analysis runs at a point: every "when" axis's coordinate is among its listed values.
bool analysis_applies(const AnalysisSpec& a, const SweepSpec& spec, const SweepPoint& p);

}  // namespace moescope
