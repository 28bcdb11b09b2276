// moescope correlate R1.h5 R2.h5 ... --x PATH --y PATH [-o C.h5]: Pearson and Spearman correlation of two
// quantities read from reports: one scalar per report, or two equal-length datasets of one report.
// moescope correlate DIR/sweep.h5 --x COLUMN --y COLUMN [--by COLUMN] [-o C.h5]: two columns of a sweep's table
// (a metric, or an axis by its key or last component, e.g. weight_orth), per group of --by values when given.
#include <fmt/format.h>

#include <cmath>
#include <iostream>
#include <map>
#include <memory>

#include "common.hpp"
#include "moescope/io/report.hpp"
#include "moescope/stats/correlation.hpp"
#include "moescope/study/collect.hpp"

namespace moescope::cli {
namespace {

struct CorrelateArgs {
  std::vector<std::string> reports;
  std::string x, y, by, output;
  BootstrapOptions bootstrap{2000, 0.95, 0};
};

void print(const CorrelationReport& c, double level, const std::string& label) {
  if (!label.empty()) std::cout << label << "\n";
  std::cout << fmt::format("n = {}\npearson  r   = {:+.6f}  p = {:.6g}  {:.0f}% CI [{:+.4f}, {:+.4f}]\n"
                           "spearman rho = {:+.6f}  p = {:.6g}  {:.0f}% CI [{:+.4f}, {:+.4f}]\n",
                           c.pearson.n, c.pearson.r, c.pearson.p, 100 * level, c.pearson.ci_low, c.pearson.ci_high,
                           c.spearman.r, c.spearman.p, 100 * level, c.spearman.ci_low, c.spearman.ci_high);
}

// Groups of (x, y) pairs: one group "" for report datasets, or per --by value for a sweep table.
std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> read_pairs(const CorrelateArgs& a) {
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> groups;
  const ReportReader first(a.reports.front());
  if (a.reports.size() == 1 && first.exists("/sweep/point")) {
    const std::string& file = a.reports.front();
    const SweepTable t = read_sweep_table(first, file);
    const std::vector<double>* xs = t.numeric(a.x);
    const std::vector<double>* ys = t.numeric(a.y);
    if (!xs) fail_input(file, "--x " + a.x + ": no numeric column of that name (or a key ending so) in /sweep");
    if (!ys) fail_input(file, "--y " + a.y + ": no numeric column of that name (or a key ending so) in /sweep");
    const std::vector<std::string>* by_text = a.by.empty() ? nullptr : t.text(a.by);
    const std::vector<double>* by_num = a.by.empty() || by_text ? nullptr : t.numeric(a.by);
    if (!a.by.empty() && !by_text && !by_num) fail_input(file, "--by " + a.by + ": no column of that name in /sweep");
    std::size_t dropped = 0;
    for (std::size_t i = 0; i < t.rows(); ++i) {
      if (!std::isfinite((*xs)[i]) || !std::isfinite((*ys)[i])) {
        ++dropped;
        continue;
      }
      const std::string g = by_text ? a.by + "=" + (*by_text)[i] : by_num ? a.by + "=" + number_text((*by_num)[i]) : "";
      groups[g].first.push_back((*xs)[i]);
      groups[g].second.push_back((*ys)[i]);
    }
    if (dropped > 0) std::cout << fmt::format("{} of {} points left out (no value for x or y)\n", dropped, t.rows());
    return groups;
  }
  auto& [xs, ys] = groups[""];
  if (!a.by.empty()) throw InputError("--by: groups columns of a sweep's table (sweep.h5), not report datasets");
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
  return groups;
}

void run(const CorrelateArgs& a, const Context& ctx) {
  if (!(a.bootstrap.level > 0.0 && a.bootstrap.level < 1.0))
    throw InputError(fmt::format("--level: must be in (0, 1), got {}", a.bootstrap.level));
  if (a.bootstrap.resamples < 0) throw InputError("--bootstrap: must be >= 0 (0: no intervals)");
  std::vector<std::pair<std::string, CorrelationReport>> results;
  const auto groups = read_pairs(a);
  for (auto& [group, xy] : groups) {
    const std::string flags = "--x " + a.x + " --y " + a.y + (group.empty() ? "" : " (" + group + ")");
    if (groups.size() > 1) {  // with --by, a group too small or constant is reported and left out
      try {
        results.emplace_back(group, correlate(xy.first, xy.second, a.x, a.y, a.bootstrap));
      } catch (const std::invalid_argument& e) {
        std::cout << group << ": undefined (" << first_line(e) << ")\n";
        continue;
      }
    } else {
      results.emplace_back(group, with_flags(flags, [&] { return correlate(xy.first, xy.second, a.x, a.y, a.bootstrap); }));
    }
    print(results.back().second, a.bootstrap.level, group);
  }
  if (results.empty()) throw InputError("--by " + a.by + ": no group has a defined correlation");
  if (a.output.empty()) return;
  ReportWriter w(a.output);
  Provenance p = make_provenance(ctx, "", static_cast<std::int64_t>(a.bootstrap.seed));
  std::string inputs;
  for (const auto& r : a.reports) inputs += (inputs.empty() ? "" : " ") + r;
  p.checkpoint = inputs;
  w.write_provenance(p);
  for (const auto& [group, c] : results) {
    std::string name = group;
    for (char& ch : name) ch = ch == '/' ? '_' : ch;
    write_correlation(w, c, group.empty() ? "/correlation" : "/correlation/" + name);
  }
  if (!a.by.empty()) w.set_attr("/correlation", "by", a.by);
  w.commit();
}

}  // namespace

void add_correlate(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<CorrelateArgs>();
  auto* sub = app.add_subcommand("correlate", "Pearson/Spearman correlation of two quantities across reports, or of "
                                              "two columns of a sweep's table");
  sub->add_option("reports", a->reports, "Reports (HDF5), or one sweep.h5")->required()->check(CLI::ExistingFile);
  sub->add_option("--x", a->x, "Dataset path of x (e.g. /geometry/layer_00/mso), or a sweep column (e.g. weight_orth)")
      ->required();
  sub->add_option("--y", a->y, "Dataset path or sweep column of y")->required();
  sub->add_option("--by", a->by, "Sweep tables: one correlation per value of this column (e.g. model.head)");
  sub->add_option("-o,--output", a->output, "Write /correlation/... (with --by: /correlation/<column=value>/...)");
  sub->add_option("--bootstrap", a->bootstrap.resamples, "Bootstrap resamples for the intervals (0: none)")
      ->capture_default_str();
  sub->add_option("--level", a->bootstrap.level, "Interval level in (0, 1)")->capture_default_str();
  sub->add_option("--seed", a->bootstrap.seed, "Bootstrap seed")->capture_default_str();
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
