// moescope geometry CKPT -o R.h5 [--matrices gate,up,down] [--layers 0,3-5]: MSO, overlap matrices and
// parameter variance per MoE layer, streamed layer by layer from the checkpoint.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "common.hpp"
#include "moescope/io/checkpoint.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/metrics/geometry.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {
namespace {

struct GeometryArgs {
  std::string checkpoint;
  std::string output;
  std::vector<std::string> matrices;
  std::string layers;
  std::string expert_pattern;
};

void run(const GeometryArgs& a, const Context& ctx) {
  const int threads = apply_threads(ctx);
  const auto src = open_checkpoint(a.checkpoint);
  LayoutOptions lo;
  lo.expert_pattern = a.expert_pattern;
  const Layout layout = detect_layout(src->tensors(), lo);
  if (layout.layers.empty())
    fail_input(a.checkpoint, "no MoE layers found (family '" + layout.family +
                                 "'); see `moescope inspect`, or give --expert-pattern");
  std::vector<const MoELayerLayout*> chosen;
  if (a.layers.empty()) {
    for (const auto& l : layout.layers) chosen.push_back(&l);
  } else {
    for (int want : parse_index_list(a.layers, "--layers")) {
      bool found = false;
      for (const auto& l : layout.layers)
        if (l.layer == want) chosen.push_back(&l), found = true;
      if (!found) fail_input(a.checkpoint, fmt::format("--layers: layer {} has no experts", want));
    }
  }

  ReportWriter report(a.output);
  report.write_provenance(make_provenance(ctx, a.checkpoint));
  write_geometry_group(report, layout.family);

  GeometryOptions go;
  go.roles = a.matrices;
  go.threads = threads;
  std::cout << fmt::format("{:<18} {:>7} {:>12} {:>12} {:>14} {:>14} {:>11}\n", "layer", "experts", "dim", "mso",
                           "param_var", "param_var_u", "mean_norm");
  for (const MoELayerLayout* l : chosen) {
    spdlog::info("geometry: {} ({} experts)", l->key, l->experts.size());
    const LayerGeometry g = expert_geometry(*src, *l, go);
    write_layer_geometry(report, g, l->prefix);
    std::cout << fmt::format("{:<18} {:>7} {:>12} {:>12.6g} {:>14.6g} {:>14.6g} {:>11.5g}\n", g.key, g.experts, g.dim,
                             g.mso, g.param_variance, g.param_variance_normalized, g.mean_norm);
  }
  report.commit();
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_geometry(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<GeometryArgs>();
  auto* sub = app.add_subcommand("geometry", "Weight geometry of the experts: MSO, overlap matrices, parameter variance");
  sub->add_option("checkpoint", args->checkpoint, "safetensors file, shard index, folder, or .pt state dict")->required();
  sub->add_option("-o,--output", args->output, "Report to write (HDF5)")->required();
  sub->add_option("--matrices", args->matrices, "Expert matrices to concatenate: gate,up,down (w1/w3/w2, fc1/fc2 too)")
      ->delimiter(',');
  sub->add_option("--layers", args->layers, "Model layer numbers, e.g. 0,3-5 (default: all MoE layers)");
  sub->add_option("--expert-pattern", args->expert_pattern,
                  "Regex with named groups (?<layer>..)(?<expert>..)(?<matrix>..) for unknown layouts");
  sub->add_option("--hash", ctx.hash, "Checkpoint digest for the report: auto (full up to 2 GiB), full, header, none")
      ->check(CLI::IsMember({"auto", "full", "header", "none"}));
  sub->callback([args, &ctx] { run(*args, ctx); });
}

}  // namespace moescope::cli
