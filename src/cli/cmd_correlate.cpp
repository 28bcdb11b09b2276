// moescope correlate R1.h5 R2.h5 ... --x PATH --y PATH [-o C.h5]: Pearson and Spearman correlation of two
// quantities read from reports: one scalar per report, or two equal-length datasets of one report.
#include <fmt/format.h>

#include <iostream>

#include "common.hpp"
#include "moescope/io/report.hpp"
#include "moescope/stats/correlation.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {
namespace {

struct CorrelateArgs {
  std::vector<std::string> reports;
  std::string x, y, output;
  std::int64_t bootstrap = 2000;
  std::uint64_t seed = 0;
  double level = 0.95;
};

void run(const CorrelateArgs& a, const Context& ctx) {
  std::vector<double> xs, ys;
  for (const auto& path : a.reports) {
    ReportReader r(path);
    for (const auto* p : {&a.x, &a.y})
      if (!r.exists(*p)) fail_input(path, "no dataset '" + *p + "'");
    const auto x = r.read(a.x), y = r.read(a.y);
    if (x.size() != y.size())
      fail_input(path, fmt::format("'{}' has {} values but '{}' has {}", a.x, x.size(), a.y, y.size()));
    if (a.reports.size() > 1 && x.size() != 1)
      fail_input(path, fmt::format("'{}' holds {} values; with several reports each must hold one", a.x, x.size()));
    xs.insert(xs.end(), x.begin(), x.end());
    ys.insert(ys.end(), y.begin(), y.end());
  }
  BootstrapOptions b;
  b.resamples = a.bootstrap;
  b.seed = a.seed;
  b.level = a.level;
  Correlation pr, sr;
  try {
    pr = pearson(xs, ys, b);
    sr = spearman(xs, ys, b);
  } catch (const std::invalid_argument& e) {
    throw InputError(e.what());
  }
  std::cout << fmt::format("n = {}\npearson  r   = {:+.6f}  p = {:.6g}  {:.0f}% CI [{:+.4f}, {:+.4f}]\n"
                           "spearman rho = {:+.6f}  p = {:.6g}  {:.0f}% CI [{:+.4f}, {:+.4f}]\n",
                           pr.n, pr.r, pr.p, 100 * a.level, pr.ci_low, pr.ci_high, sr.r, sr.p, 100 * a.level,
                           sr.ci_low, sr.ci_high);
  if (a.output.empty()) return;
  ReportWriter w(a.output);
  Provenance p = make_provenance(ctx, "", static_cast<std::int64_t>(a.seed));
  std::string inputs;
  for (const auto& r : a.reports) inputs += (inputs.empty() ? "" : " ") + r;
  p.checkpoint = inputs;
  w.write_provenance(p);
  const auto n = static_cast<std::size_t>(pr.n);
  w.write("/correlation/x", xs, {n});
  w.write("/correlation/y", ys, {n});
  w.write_scalar("/correlation/pearson_r", pr.r);
  w.write_scalar("/correlation/pearson_p", pr.p);
  w.write_scalar("/correlation/spearman_rho", sr.r);
  w.write_scalar("/correlation/spearman_p", sr.p);
  w.write_scalar("/correlation/ci_low", pr.ci_low);
  w.write_scalar("/correlation/ci_high", pr.ci_high);
  w.write_scalar("/correlation/spearman_ci_low", sr.ci_low);
  w.write_scalar("/correlation/spearman_ci_high", sr.ci_high);
  w.set_attr("/correlation", "x_path", a.x);
  w.set_attr("/correlation", "y_path", a.y);
  w.set_attr("/correlation", "p_value", std::string("two-sided, Student t with n-2 df (as scipy.stats)"));
  w.set_attr("/correlation", "ci", fmt::format("percentile bootstrap, {} resamples, level {}", a.bootstrap, a.level));
  w.commit();
}

}  // namespace

void add_correlate(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<CorrelateArgs>();
  auto* sub = app.add_subcommand("correlate", "Pearson/Spearman correlation of two quantities across reports");
  sub->add_option("reports", a->reports, "Reports (HDF5)")->required()->check(CLI::ExistingFile);
  sub->add_option("--x", a->x, "Dataset path of x, e.g. /geometry/layer_00/mso")->required();
  sub->add_option("--y", a->y, "Dataset path of y")->required();
  sub->add_option("-o,--output", a->output, "Write /correlation/... to this report");
  sub->add_option("--bootstrap", a->bootstrap, "Bootstrap resamples for the intervals (0: none)")->capture_default_str();
  sub->add_option("--level", a->level, "Interval level")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", a->seed, "Bootstrap seed")->capture_default_str();
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
