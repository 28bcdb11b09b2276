// moescope geometry CKPT -o R.h5 [--matrices gate,up,down] [--layers 0,3-5]: MSO, overlap matrices and
// parameter variance per MoE layer, streamed layer by layer from the checkpoint.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iostream>
#include <memory>

#include "common.hpp"
#include "moescope/io/checkpoint.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/metrics/geometry.hpp"

namespace moescope::cli {
namespace {

struct GeometryArgs {
  std::string checkpoint, output, layers, expert_pattern;
  GeometryOptions options;
};

void run(GeometryArgs& a, const Context& ctx) {
  a.options.threads = thread_count(ctx);
  const std::vector<int> wanted = a.layers.empty() ? std::vector<int>{} : parse_index_list(a.layers, "--layers");
  const auto src = open_checkpoint(a.checkpoint);
  LayoutOptions lo;
  lo.expert_pattern = a.expert_pattern;
  lo.pattern_source = "--expert-pattern";
  const Layout layout = detect_layout(*src, lo);
  const auto chosen = select_layers(layout, wanted, a.checkpoint);
  const CheckpointGeometry g = checkpoint_geometry(*src, layout.family, chosen, a.options, progress_renderer(ctx));
  print_notes(g.notes);

  std::cout << fmt::format("{:<18} {:>7} {:>12} {:>12} {:>14} {:>14} {:>11}\n", "layer", "experts", "dim", "mso",
                           "param_var", "param_var_u", "mean_norm");
  for (const LayerGeometry& l : g.layers)
    std::cout << fmt::format("{:<18} {:>7} {:>12} {:>12.6g} {:>14.6g} {:>14.6g} {:>11.5g}\n", l.key, l.experts, l.dim,
                             l.mso, l.param_variance, l.param_variance_normalized, l.mean_norm);
  ReportWriter report(a.output);
  report.write_provenance(make_provenance(ctx, a.checkpoint));
  write_geometry(report, g);
  report.commit();
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_geometry(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<GeometryArgs>();
  auto* sub = app.add_subcommand("geometry", "Weight geometry of the experts: MSO, overlap matrices, parameter variance");
  sub->add_option("checkpoint", a->checkpoint, "safetensors file, shard index, folder, or .pt state dict")->required();
  sub->add_option("-o,--output", a->output, "Report to write (HDF5)")->required();
  sub->add_option("--matrices", a->options.roles, "Expert matrices to concatenate: gate,up,down (w1/w3/w2, fc1/fc2 too)")
      ->delimiter(',');
  sub->add_option("--layers", a->layers, "Model layer numbers, e.g. 0,3-5 (default: all MoE layers)");
  sub->add_option("--expert-pattern", a->expert_pattern,
                  "Regex with named groups (?<layer>..)(?<expert>..)(?<matrix>..) for unknown layouts");
  add_hash_option(sub, ctx);
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
