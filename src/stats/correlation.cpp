#include "moescope/stats/correlation.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include <unsupported/Eigen/SpecialFunctions>

#include "moescope/io/report.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"

namespace moescope {
namespace {

double pearson_r(const std::vector<double>& x, const std::vector<double>& y) {
  const auto n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

void check(const std::vector<double>& x, const std::vector<double>& y, const BootstrapOptions& b) {
  if (x.size() != y.size())
    invalid_argument("correlation", std::to_string(x.size()) + " x values but " + std::to_string(y.size()) + " y values");
  if (x.size() < 3) invalid_argument("correlation", "need at least 3 pairs, got " + std::to_string(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) invalid_argument("correlation", "x[" + std::to_string(i) + "] is " + to_text(x[i]));
    if (!std::isfinite(y[i])) invalid_argument("correlation", "y[" + std::to_string(i) + "] is " + to_text(y[i]));
  }
  if (b.resamples < 0) invalid_argument("correlation", "bootstrap resamples must be >= 0, got " + std::to_string(b.resamples));
  if (!(b.level > 0.0 && b.level < 1.0)) invalid_argument("correlation", "interval level must be in (0, 1), got " + to_text(b.level));
}

template <typename Stat>
Correlation correlate(const std::vector<double>& x, const std::vector<double>& y, const BootstrapOptions& b, Stat stat) {
  check(x, y, b);
  Correlation c;
  c.n = static_cast<std::int64_t>(x.size());
  c.r = stat(x, y);
  if (std::isnan(c.r)) invalid_argument("correlation", "a variable is constant (all its values are equal)");
  const double df = static_cast<double>(c.n - 2);
  c.p = std::abs(c.r) >= 1.0 ? 0.0 : student_t_two_sided_p(c.r * std::sqrt(df / (1.0 - c.r * c.r)), df);
  c.ci_low = c.ci_high = std::numeric_limits<double>::quiet_NaN();
  if (b.resamples > 0) {
    Rng rng(b.seed);
    std::vector<double> rs, xs(x.size()), ys(y.size());
    for (std::int64_t k = 0; k < b.resamples; ++k) {
      for (std::size_t i = 0; i < x.size(); ++i) {
        const auto j = static_cast<std::size_t>(rng.below(x.size()));
        xs[i] = x[j], ys[i] = y[j];
      }
      const double r = stat(xs, ys);
      if (!std::isnan(r)) rs.push_back(r);  // resamples with a constant variable have no r
    }
    if (!rs.empty()) {
      std::sort(rs.begin(), rs.end());
      auto quantile = [&](double q) {  // linear interpolation between order statistics (numpy's default)
        const double pos = q * static_cast<double>(rs.size() - 1);
        const auto lo = static_cast<std::size_t>(std::floor(pos));
        const std::size_t hi = std::min(lo + 1, rs.size() - 1);
        return rs[lo] + (pos - static_cast<double>(lo)) * (rs[hi] - rs[lo]);
      };
      c.ci_low = quantile((1.0 - b.level) / 2.0);
      c.ci_high = quantile(1.0 - (1.0 - b.level) / 2.0);
    }
  }
  return c;
}

}  // namespace

double student_t_two_sided_p(double t, double df) {
  if (!(df > 0)) invalid_argument("student_t_two_sided_p", "df must be positive, got " + to_text(df));
  const double x = df / (df + t * t);
  return Eigen::numext::betainc(df / 2.0, 0.5, x);
}

std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<std::size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  std::vector<double> rank(v.size());
  for (std::size_t i = 0; i < idx.size();) {
    std::size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    const double avg = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (std::size_t k = i; k <= j; ++k) rank[idx[k]] = avg;
    i = j + 1;
  }
  return rank;
}

Correlation pearson(const std::vector<double>& x, const std::vector<double>& y, const BootstrapOptions& b) {
  return correlate(x, y, b, pearson_r);
}

Correlation spearman(const std::vector<double>& x, const std::vector<double>& y, const BootstrapOptions& b) {
  return correlate(x, y, b, [](const std::vector<double>& a, const std::vector<double>& c) {
    return pearson_r(average_ranks(a), average_ranks(c));
  });
}

CorrelationReport correlate(std::vector<double> x, std::vector<double> y, std::string x_name, std::string y_name,
                            const BootstrapOptions& b) {
  CorrelationReport r;
  r.pearson = pearson(x, y, b);
  r.spearman = spearman(x, y, b);
  r.x = std::move(x);
  r.y = std::move(y);
  r.x_name = std::move(x_name);
  r.y_name = std::move(y_name);
  r.bootstrap = b;
  return r;
}

void write_coefficients(ReportWriter& w, const std::string& group, const Correlation& pearson,
                        const Correlation& spearman) {
  w.write_scalar(group + "/pearson_r", pearson.r);
  w.write_scalar(group + "/pearson_p", pearson.p);
  w.write_scalar(group + "/spearman_rho", spearman.r);
  w.write_scalar(group + "/spearman_p", spearman.p);
  w.write_scalar(group + "/ci_low", pearson.ci_low);
  w.write_scalar(group + "/ci_high", pearson.ci_high);
  w.write_scalar(group + "/spearman_ci_low", spearman.ci_low);
  w.write_scalar(group + "/spearman_ci_high", spearman.ci_high);
}

void write_correlation(ReportWriter& w, const CorrelationReport& c, const std::string& group) {
  const auto n = c.x.size();
  w.write(group + "/x", c.x, {n});
  w.write(group + "/y", c.y, {n});
  write_coefficients(w, group, c.pearson, c.spearman);
  w.set_attr(group, "x_path", c.x_name);
  w.set_attr(group, "y_path", c.y_name);
  w.set_attr(group, "n", static_cast<std::int64_t>(n));
  w.set_attr(group, "p_value", std::string("two-sided, Student t with n-2 df (as scipy.stats)"));
  w.set_attr(group, "ci", "percentile bootstrap, " + std::to_string(c.bootstrap.resamples) + " resamples, level " +
                              to_text(c.bootstrap.level) + ", seed " + std::to_string(c.bootstrap.seed));
}

}  // namespace moescope
