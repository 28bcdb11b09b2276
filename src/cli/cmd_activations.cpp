// moescope activations CKPT [--data D] [--split S] [--max-tokens N] [--activations FILE | --probe random]
//                          [--batch-size B] [--top-k K] [--layers L] [--geometry] -o R.h5
//   activation overlap of the experts (every token to every expert) and routing statistics per MoE layer; with
//   --geometry also the weight geometry and the weight-vs-activation comparison in the same report.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <iostream>
#include <memory>

#include "torch_common.hpp"
#include "moescope/metrics/activations_torch.hpp"

namespace moescope::cli {
namespace {

struct ActivationsArgs {
  EvalSpec eval;
  std::string layers, probe, output;
  ActivationsRequest request;
};

void run(ActivationsArgs& a, const Context& ctx) {
  ActivationsRequest& r = a.request;
  validate_eval(a.eval);
  r.data = a.eval.data;
  r.split = a.eval.splits.front();
  r.options.batch_size = a.eval.batch_size;
  r.random_probe = a.probe == "random";
  r.expert_pattern_source = "--expert-pattern";
  if (!a.layers.empty()) r.layers = parse_index_list(a.layers, "--layers");
  if (r.random_probe && !r.activations_file.empty()) throw InputError("give --activations or --probe, not both");
  if (!Run::is_run(r.checkpoint)) {
    if (!r.data.empty())
      throw InputError(r.checkpoint + ": --data needs one of moescope's runs; for other checkpoints give --activations "
                       "FILE or --probe random");
    if (r.activations_file.empty() && !r.random_probe)
      throw InputError(r.checkpoint + ": not one of moescope's runs: give --activations FILE (recorded layer inputs) or "
                       "--probe random");
  }
  r.geometry_options.threads = start_torch_work(ctx);
  r.options.progress = progress_renderer(ctx);
  const ActivationsAnalysis result = with_flags(r.checkpoint, [&] { return analyse_activations(r); });
  print_notes(result.notes);

  std::cout << result.result.description << "\n";
  std::cout << fmt::format("{:<18} {:>7} {:>9} {:>12} {:>10} {:>12} {:>10} {:>9}\n", "layer", "experts", "tokens",
                           "mean_overlap", "mso", "routed_mean", "entropy", "dropped");
  for (const auto& l : result.result.layers)
    std::cout << fmt::format("{:<18} {:>7} {:>9} {:>12.5f} {:>10.5f} {:>12.5f} {:>10.4f} {:>9.4f}\n", l.key, l.experts,
                             l.overlap.tokens, l.overlap.mean_overlap, l.overlap.mso, l.overlap.routed_mean_overlap,
                             l.routing.router_entropy, l.routing.dropped_fraction);
  if (result.comparison) print_space_comparison(result.overlaps, *result.comparison);
  ReportWriter w(a.output);
  w.write_provenance(make_provenance(ctx, result.weights_file, static_cast<std::int64_t>(r.options.seed)));
  write_activations_analysis(w, result);
  w.commit();
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_activations(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<ActivationsArgs>();
  ActivationsRequest& r = a->request;
  auto* sub = app.add_subcommand("activations", torch_command_description("activations"));
  sub->add_option("checkpoint", r.checkpoint,
                  "A moescope run (runs/NAME or a step folder), or any checkpoint the readers support")
      ->required();
  sub->add_option("-o,--output", a->output, "Report to write (HDF5)")->required();
  add_eval_options(sub, a->eval, EvalFlags{/*one_split=*/true, /*no_max_samples=*/true});
  sub->add_option("--max-tokens", r.options.max_tokens, "Tokens per layer (0: the whole split / file; random probe: 4096)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--activations", r.activations_file,
                  "Recorded layer inputs: safetensors with <key>.inputs [T, d] (and optional <key>.router_probs [T, E])");
  sub->add_option("--probe", a->probe, "random: standard Gaussian inputs of each layer's width")
      ->check(CLI::IsMember({"random"}));
  sub->add_option("--top-k", r.top_k,
                  "Other checkpoints: experts per token (default: config.json's num_experts_per_tok; Switch 1, else 2)")
      ->check(CLI::NonNegativeNumber);
  add_seed_option(sub, r.options.seed, "the random probe");
  sub->add_option("--layers", a->layers, "Model layer numbers, e.g. 0,3-5 (default: every MoE layer)");
  sub->add_flag("--geometry", r.geometry, "Also write the weight geometry and /compare_spaces to the report");
  sub->add_option("--matrices", r.geometry_options.roles, "With --geometry: expert matrices to concatenate (gate,up,down)")
      ->delimiter(',');
  sub->add_option("--expert-pattern", r.expert_pattern, "Regex for unknown layouts (as in geometry)");
  add_hash_option(sub, ctx);
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
