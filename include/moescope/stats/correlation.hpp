#pragma once
// Correlation of two measured quantities, as scipy.stats computes it: Pearson r and Spearman rho with two-sided
// p-values from Student's t with n - 2 degrees of freedom, and percentile bootstrap intervals.
#include <cstdint>
#include <string>
#include <vector>

namespace moescope {

struct Correlation {
  std::int64_t n = 0;
  double r = 0;        // the coefficient
  double p = 1;        // two-sided p-value (t = r sqrt((n-2)/(1-r^2)), df = n-2), as scipy.stats.pearsonr/spearmanr
  double ci_low = 0;   // percentile bootstrap interval (NaN when not computed)
  double ci_high = 0;
};

struct BootstrapOptions {
  std::int64_t resamples = 0;  // 0: no interval
  double level = 0.95;
  std::uint64_t seed = 0;
};

/// Pearson correlation. Throws std::invalid_argument when the sizes differ, n < 3, a value is not finite, a
/// variable is constant, resamples < 0 or the level is outside (0, 1).
Correlation pearson(const std::vector<double>& x, const std::vector<double>& y, const BootstrapOptions& b = {});
/// Spearman rank correlation (average ranks for ties).
Correlation spearman(const std::vector<double>& x, const std::vector<double>& y, const BootstrapOptions& b = {});

/// Ranks 1..n with ties given their average rank.
std::vector<double> average_ranks(const std::vector<double>& v);
/// Pearson and Spearman on one sample, with where x and y came from: what `correlate` prints and writes.
struct CorrelationReport {
  std::vector<double> x, y;
  std::string x_name, y_name;
  Correlation pearson, spearman;
  BootstrapOptions bootstrap;
};
/// Throws as pearson() does.
CorrelationReport correlate(std::vector<double> x, std::vector<double> y, std::string x_name, std::string y_name,
                            const BootstrapOptions& b = {});

class ReportWriter;
/// `group`/{pearson_r, pearson_p, spearman_rho, spearman_p, ci_low, ci_high, spearman_ci_low, spearman_ci_high}: the
/// coefficients of a correlation, as every report that holds one writes them.
void write_coefficients(ReportWriter& w, const std::string& group, const Correlation& pearson,
                        const Correlation& spearman);
/// `group`/{x, y, pearson_r, pearson_p, spearman_rho, spearman_p, ci_low, ci_high, spearman_ci_low,
/// spearman_ci_high} with attributes x_path, y_path, n, p_value, ci.
void write_correlation(ReportWriter& w, const CorrelationReport& c, const std::string& group = "/correlation");

/// Two-sided p-value of Student's t statistic with df degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2).
double student_t_two_sided_p(double t, double df);

}  // namespace moescope
