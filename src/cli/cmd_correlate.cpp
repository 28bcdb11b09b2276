// moescope correlate R1.h5 R2.h5 ... --x PATH --y PATH [-o C.h5]: Pearson and Spearman correlation of two
// quantities read from reports: one scalar per report, or two equal-length datasets of one report.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "common.hpp"
#include "moescope/io/report.hpp"
#include "moescope/stats/correlation.hpp"

namespace moescope::cli {
namespace {

struct CorrelateArgs {
  std::vector<std::string> reports;
  std::string x, y, output;
  BootstrapOptions bootstrap{2000, 0.95, 0};
};

void run(const CorrelateArgs& a, const Context& ctx) {
  if (!(a.bootstrap.level > 0.0 && a.bootstrap.level < 1.0))
    throw InputError(fmt::format("--level: must be in (0, 1), got {}", a.bootstrap.level));
  if (a.bootstrap.resamples < 0) throw InputError("--bootstrap: must be >= 0 (0: no intervals)");
  std::vector<double> xs, ys;
  for (const auto& path : a.reports) {
    const ReportReader r(path);
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
  const CorrelationReport c =
      with_flags("--x " + a.x + " --y " + a.y, [&] { return correlate(xs, ys, a.x, a.y, a.bootstrap); });
  const double level = 100 * a.bootstrap.level;
  std::cout << fmt::format("n = {}\npearson  r   = {:+.6f}  p = {:.6g}  {:.0f}% CI [{:+.4f}, {:+.4f}]\n"
                           "spearman rho = {:+.6f}  p = {:.6g}  {:.0f}% CI [{:+.4f}, {:+.4f}]\n",
                           c.pearson.n, c.pearson.r, c.pearson.p, level, c.pearson.ci_low, c.pearson.ci_high,
                           c.spearman.r, c.spearman.p, level, c.spearman.ci_low, c.spearman.ci_high);
  if (a.output.empty()) return;
  ReportWriter w(a.output);
  Provenance p = make_provenance(ctx, "", static_cast<std::int64_t>(a.bootstrap.seed));
  std::string inputs;
  for (const auto& r : a.reports) inputs += (inputs.empty() ? "" : " ") + r;
  p.checkpoint = inputs;
  w.write_provenance(p);
  write_correlation(w, c);
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
  sub->add_option("--bootstrap", a->bootstrap.resamples, "Bootstrap resamples for the intervals (0: none)")
      ->capture_default_str();
  sub->add_option("--level", a->bootstrap.level, "Interval level in (0, 1)")->capture_default_str();
  sub->add_option("--seed", a->bootstrap.seed, "Bootstrap seed")->capture_default_str();
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
