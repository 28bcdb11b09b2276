#pragma once
// The summary of a sweep: for each setting (the coordinates but the seed) the mean and standard deviation over seeds
// of every metric; the change of each metric against strength 0 (or the smallest strength) along the strength axis;
// correlations between pairs of columns (the spec's "summary.pairs", else the seed papers' pairs: weight MSO vs
// activation overlap, strength vs MSO, strength vs activation overlap, strength vs validation loss / test accuracy /
// perplexity), over the settings' means (one value per strength, as the papers report them) and over all points,
// within each series (the settings at the same non-strength coordinates; all settings when there is no strength axis),
// with Pearson r, Spearman rho, two-sided p-values and 95% percentile bootstrap intervals; and the settings side by
// side for each categorical axis (e.g. head type vs lambda_1 and trace). Written as DIR/summary.md (a page to read
// first) and DIR/summary.h5.
#include <cstdint>
#include <string>
#include <vector>

#include "moescope/stats/correlation.hpp"
#include "moescope/study/collect.hpp"

namespace moescope {

/// One setting: the rows that differ only by seed.
struct SweepSetting {
  std::vector<std::string> labels;   ///< per non-seed axis, "key=value"
  std::vector<std::size_t> rows;     ///< table rows
  double strength = 0.0;             ///< NaN without a strength axis
  std::string series;                ///< the non-seed, non-strength coordinates ("" when none)
  std::map<std::string, double> mean, sd;  ///< per metric, over the rows with a finite value (sd: n - 1)
  std::map<std::string, std::int64_t> n;
  /// The values of a table column at this setting's rows.
  std::vector<double> values(const std::vector<double>& column) const {
    std::vector<double> v;
    v.reserve(rows.size());
    for (const std::size_t row : rows) v.push_back(column[row]);
    return v;
  }
};

/// A correlation between two columns.
struct SweepCorrelation {
  std::string x, y, over, series;    ///< over: "settings" (means) or "points"
  std::int64_t n = 0;
  Correlation pearson, spearman;
  std::string note;                  ///< why it is undefined ("" when defined)
};

struct SweepSummary {
  std::string name, description;
  std::vector<SweepSetting> settings;
  std::vector<std::string> metrics;                      ///< the metrics summarised, headline ones first
  /// The columns of summary.md's table, in order (the spec's summary.columns); empty: the first ten headline
  /// metrics a setting has a value of.
  std::vector<std::string> columns;
  /// Per series and metric: relative change in percent against the strength-0 (or smallest-strength) setting, one
  /// value per setting of the series in ascending strength.
  std::map<std::string, std::map<std::string, std::vector<double>>> change_percent;
  std::map<std::string, std::vector<double>> strengths;  ///< per series, ascending
  std::vector<SweepCorrelation> correlations;
  std::int64_t complete = 0, failed = 0, partial = 0;
};

/// Summarises a table. `pairs` as in the spec ("strength" stands for the strength axis); empty: the default pairs.
SweepSummary summarise_sweep(const SweepTable& t, const std::vector<std::pair<std::string, std::string>>& pairs,
                             const BootstrapOptions& bootstrap = {2000, 0.95, 0});

class ReportWriter;
/// /summary/settings/..., /summary/correlations/NNN/... (x, y, over, series, n, pearson_r, pearson_p, ...).
void write_summary(ReportWriter& w, const SweepSummary& s);
/// The page: title, points done, the commands (given by the caller), tables, correlations, the spec's reference
/// claims, figure links (the PNGs found in `figures_dir`, relative to the page). Atomic.
void write_summary_markdown(const std::string& path, const SweepSummary& s, const SweepTable& t,
                            const std::vector<std::string>& commands, const nlohmann::ordered_json& reference,
                            const std::string& figures_dir);

}  // namespace moescope
