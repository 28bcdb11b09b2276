// moescope compare-spaces R.h5 [--geometry G.h5] -o C.h5
//   weight overlap vs activation overlap per layer and expert pair, with Pearson / Spearman correlations.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <iostream>
#include <memory>

#include "common.hpp"
#include "moescope/metrics/activations.hpp"

namespace moescope::cli {

void print_space_comparison(const std::vector<LayerOverlaps>& in, const SpaceComparison& c) {
  for (std::size_t i = 0; i < c.layers.size(); ++i) {
    const LayerSpaceComparison& l = c.layers[i];
    std::cout << fmt::format("{:<18} pairs {:>4}  weight mso {:>10.4g}  activation mso {:>8.4f}  pearson r {:+.3f} "
                             "(p {:.3g})  spearman rho {:+.3f}\n",
                             l.key, l.weight.size(), in[i].weight_mso, in[i].activation_mso, l.pearson_r, l.pearson_p,
                             l.spearman_rho);
  }
  // Across layers needs at least three layers for a correlation with a p-value; with fewer it is NaN in the
  // report, and the console says why rather than printing nan.
  const std::string across = std::isfinite(c.layer_mso_pearson_r)
                                 ? fmt::format("pearson r {:+.4f}", c.layer_mso_pearson_r)
                                 : fmt::format("undefined ({} layer{})", in.size(), in.size() == 1 ? "" : "s");
  std::cout << fmt::format("all pairs ({}): pearson r {:+.4f} (p {:.4g}), spearman rho {:+.4f} (p {:.4g}); across "
                           "layers (mso): {}\n",
                           c.pairs, c.pearson_r, c.pearson_p, c.spearman_rho, c.spearman_p, across);
}

namespace {

struct CompareArgs {
  std::string report, geometry, output;
};

void run_compare(const CompareArgs& a, const Context& ctx) {
  const std::string gpath = a.geometry.empty() ? a.report : a.geometry;
  const ReportReader act(a.report), geo(gpath);
  std::vector<std::string> unmatched;
  const std::vector<LayerOverlaps> in = read_overlaps(act, geo, a.report, gpath, &unmatched);
  for (const auto& k : unmatched) spdlog::warn("compare-spaces: {} has no weight geometry, left out", k);
  const SpaceComparison c = compare_spaces(in);
  print_space_comparison(in, c);
  ReportWriter w(a.output);
  Provenance p = make_provenance(ctx, "");
  p.checkpoint = a.report + (a.geometry.empty() ? "" : " " + a.geometry);
  w.write_provenance(p);
  write_space_comparison(w, in, c, gpath, a.report);
  w.commit();
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_compare_spaces(CLI::App& app, Context& ctx) {
  auto cargs = std::make_shared<CompareArgs>();
  auto* cmp = app.add_subcommand("compare-spaces",
                                 "Weight overlap vs activation overlap per layer and expert pair, with correlations");
  cmp->add_option("report", cargs->report, "Report with /activations (from `moescope activations`)")->required();
  cmp->add_option("--geometry", cargs->geometry, "Report with /geometry (default: the same report)");
  cmp->add_option("-o,--output", cargs->output, "Report to write (HDF5)")->required();
  cmp->callback([cargs, &ctx] { run_compare(*cargs, ctx); });
}

}  // namespace moescope::cli
