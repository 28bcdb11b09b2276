#pragma once
// Collecting a sweep: one row per point with its coordinates and every scalar of its reports, as DIR/sweep.h5 and
// DIR/sweep.csv. What is collected (NaN where a report or value is missing):
//   training (run/log.h5):   train_loss (last logged batch loss), valid_loss, valid_acc, valid_ppl (last evaluation),
//                            test_loss, test_acc, test_ppl, steps, test_ms_per_sample (timing, see below),
//                            train_acc, train_eval_loss, train_ppl (with train.eval_train_samples > 0)
//   geometry report:         mso_mean, mso_layer_NN, param_variance, param_variance_normalized (means over layers)
//   activations report:      activation_overlap (mean per-token cosine, mean over layers), activation_mso,
//                            routed_overlap, routing_entropy, load_cv (coefficient of variation of the expert load),
//                            importance_cv, dropped_fraction, routing_variance (Guo et al.'s v); with --geometry
//                            also mso_mean and compare_pearson_r
//   hessian report, per split S: lambda_I_S (I = 1..k), lambda_1_S_residual, trace_S, trace_S_stderr, loss_S;
//                            each-expert groups: lambda_1_S_expert_mean, lambda_1_S_expert_max
//   landscape report:        sharpness_R and sharpness_R_stderr per radius R, landscape_center_loss
// An analysis not named after its command prefixes its columns with its name ("hessian_router.trace_train").
// Timing columns: a column whose name ends in "_ms_per_sample" or "_ms" is a wall-clock measurement (milliseconds),
// which differs between runs of the same point; everything else is a function of the spec, the seed and the thread
// count. Comparisons of tables bit for bit (a resumed sweep against an uninterrupted one) leave timing columns out.
//
// sweep.h5:  /sweep (attrs spec, axes, strength_axis, seed_axis), /sweep/point [N], /sweep/status [N],
//            /sweep/coords/<axis key> [N] (float64 or strings), /sweep/metrics/<name> [N] (attrs label, source)
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "moescope/study/runner.hpp"

namespace moescope {

class ReportReader;

/// The table of a sweep. Numeric columns hold NaN where a value is missing.
struct SweepTable {
  std::vector<std::string> points, status;
  std::vector<std::string> axes;                               ///< axis keys, in spec order
  std::map<std::string, std::vector<double>> numeric_coords;   ///< numeric axes
  std::map<std::string, std::vector<std::string>> text_coords; ///< categorical axes (strings, booleans, objects)
  std::vector<std::string> metric_names;                       ///< in first-seen order
  std::map<std::string, std::vector<double>> metrics;
  std::map<std::string, std::string> metric_source;            ///< report path inside a point folder
  std::string strength, seed;                                  ///< axis keys, "" when absent
  std::string spec_json;
  std::size_t rows() const { return points.size(); }
  /// A numeric column by name: a metric, a numeric axis by its key, or by the key's last component when that is
  /// unique ("weight_orth"). nullptr when there is none.
  const std::vector<double>* numeric(const std::string& name) const;
  /// The full name of a metric given by name or unique last dotted component ("surface_train_curvature" ->
  /// "landscape_1d.surface_train_curvature"); nullptr when there is none.
  const std::string* metric_name(const std::string& name) const;
  /// A categorical axis by key or unique last component, nullptr when none.
  const std::vector<std::string>* text(const std::string& name) const;
};

/// True for a timing column (a wall-clock measurement, not reproducible): the name ends in "_ms_per_sample" or "_ms".
bool is_timing_column(const std::string& name);

/// A number as a column value prints: integers without a fraction ("3"), others in the shortest form that reads
/// back exactly ("0.001"), "nan" for NaN.
std::string number_text(double v);

/// The scalars of one point's reports (the folder may be incomplete: what exists is read).
std::map<std::string, double> point_metrics(const PlannedPoint& p, const SweepSpec& spec,
                                            std::map<std::string, std::string>* sources = nullptr);

/// Every point of the plan, in grid order.
SweepTable collect_sweep(const SweepPlan& plan);

/// DIR/sweep.h5 and DIR/sweep.csv (atomic), with `provenance`-style root attributes written by the caller's writer
/// for the .h5: this writes the /sweep group into `w`.
class ReportWriter;
void write_sweep_table(ReportWriter& w, const SweepTable& t);
void write_sweep_csv(const std::string& path, const SweepTable& t);
/// Reads /sweep back (correlate, tests). Throws InputError naming the file when the group is missing or damaged.
SweepTable read_sweep_table(const ReportReader& r, const std::string& file);

}  // namespace moescope
