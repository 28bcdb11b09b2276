// moescope landscape RUN --dirs random|filter|layer|eigen|RUN2|FILE.h5 --x -1:1:51 [--y -1:1:51] [eval options]
// [--params SPEC] [--ignore biasbn] [--seed S] [--resume] [--format moescope|loss-landscape] [--save-dirs F.h5]
// [--sharpness R,..] -o R.h5
// Loss and accuracy on a 1-D or 2-D grid around a trained run's weights (Li et al. 2018), resumable.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>

#include "torch_common.hpp"
#include "moescope/landscape/analysis.hpp"

namespace moescope::cli {
namespace {

struct LandscapeArgs {
  std::string run, output, x, y, ignore = "biasbn", format = "moescope";
  LandscapeRequest request;
};

void run(LandscapeArgs& a, const Context& ctx) {
  LandscapeRequest& r = a.request;
  validate_eval(r.eval);
  r.x = parse_axis(a.x, "--x");
  if (!a.y.empty()) r.y = parse_axis(a.y, "--y");
  r.small = parse_small_tensor_rule(a.ignore, "--ignore");
  if (r.sharpness_dirs < 1) throw InputError("--sharpness-dirs: must be at least 1");
  for (double radius : r.sharpness)
    if (!std::isfinite(radius) || radius <= 0) throw InputError(fmt::format("--sharpness: radius {} must be positive", radius));
  const bool kind = r.dirs == "random" || r.dirs == "filter" || r.dirs == "layer" || r.dirs == "eigen";
  if (!kind && !Run::is_run(r.dirs) && !std::filesystem::is_regular_file(r.dirs))
    throw InputError("--dirs " + r.dirs + ": expected random, filter, layer, eigen, a run folder or a directions .h5 file");
  r.journal = a.output + ".partial";
  if (!r.resume && std::filesystem::exists(r.journal))
    fail_input(r.journal, "holds the points of an unfinished run: add --resume to continue it, or delete it to start over");
  if (r.resume && !std::filesystem::exists(r.journal)) spdlog::info("landscape: no {} to resume; starting", r.journal);
  start_torch_work(ctx);
  r.progress = progress_renderer(ctx);
  LoadedRun loaded = load_run(a.run);
  print_notes(loaded.notes);
  const Provenance prov = make_provenance(ctx, loaded.weights_file(), static_cast<std::int64_t>(r.seed));
  const LandscapeAnalysis result = with_flags("--dirs " + r.dirs, [&] { return compute_landscape(loaded, r, prov); });
  if (!r.save_dirs.empty()) spdlog::info("landscape: wrote directions to {}", r.save_dirs);
  if (!result.eigen_status.empty() && result.eigen_status != "converged")
    spdlog::warn("landscape: the eigensolver stopped with status {}; see the residuals in the report", result.eigen_status);
  if (result.surface.resumed > 0) spdlog::info("landscape: {} points resumed from {}", result.surface.resumed, r.journal);
  if (!result.complete()) {
    std::int64_t done = 0;
    for (auto c : result.surface.computed) done += c;
    std::cout << fmt::format("stopped after {} points ({} of {} done); run again with --resume to continue\n",
                             result.surface.evaluated, done, result.surface.computed.size());
    return;
  }
  ReportWriter w(a.output);
  w.write_provenance(prov);
  write_landscape(w, result, r);
  w.commit();
  if (a.format == "loss-landscape") {
    write_loss_landscape_surface(loss_landscape_path(a.output), result.surface, prov);
    spdlog::info("wrote {}", loss_landscape_path(a.output));
  }
  std::error_code ec;
  std::filesystem::remove(r.journal, ec);

  const auto& first = result.surface.values[0];
  const auto [lo, hi] = std::minmax_element(first.begin(), first.end());
  std::cout << fmt::format("{}: {} points, {} evaluated, min {:.6g}, max {:.6g}\n", result.surface.metrics[0],
                           first.size(), result.surface.evaluated, *lo, *hi);
  if (result.sharpness) {
    const SharpnessResult& s = *result.sharpness;
    for (std::size_t k = 0; k < s.radii.size(); ++k)
      std::cout << fmt::format("sharpness r={:.4g}: mean increase {:.6g} +- {:.2g}, max {:.6g}\n", s.radii[k],
                               s.mean_increase[k], s.stderr_increase[k], s.max_increase[k]);
  }
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_landscape(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<LandscapeArgs>();
  LandscapeRequest& r = a->request;
  auto* sub = app.add_subcommand("landscape", torch_command_description("landscape"));
  sub->add_option("run", a->run, "Run folder, step folder or its model.safetensors")->required();
  sub->add_option("-o,--output", a->output, "Report to write (HDF5)")->required();
  sub->add_option("--dirs", r.dirs,
                  "random (Gaussian), filter, layer (normalised Gaussian), eigen (top Hessian eigenvectors, found as "
                  "`hessian` finds them), a second run (interpolation), or a directions .h5 (--save-dirs)")
      ->required();
  sub->add_option("--x", a->x, "x axis MIN:MAX:COUNT, e.g. -1:1:51")->required();
  sub->add_option("--y", a->y, "y axis MIN:MAX:COUNT for a 2-D surface");
  add_eval_options(sub, r.eval);
  add_params_option(sub, r.params, " (the parameters that move)");
  sub->add_option("--ignore", a->ignore,
                  "Random directions on dim <= 1 tensors: biasbn (zero, default), weights (copy the weights), none");
  add_seed_option(sub, r.seed, "random directions (x: S, y: S+1) and eigen start vectors");
  sub->add_flag("--resume", r.resume, "Continue from OUTPUT.partial, skipping finished points");
  sub->add_option("--format", a->format,
                  "moescope, or loss-landscape: also write OUTPUT-stem.loss-landscape.h5 for its plot scripts")
      ->check(CLI::IsMember({"moescope", "loss-landscape"}));
  sub->add_option("--save-dirs", r.save_dirs, "Write the directions to this HDF5 file (reusable with --dirs)");
  sub->add_option("--max-points", r.max_points, "Evaluate at most N points now, then stop (resume later)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--sharpness", r.sharpness, "Also: mean loss increase at these radii, e.g. 0.05,0.1")->delimiter(',');
  sub->add_option("--sharpness-dirs", r.sharpness_dirs, "Random filter-normalised directions for --sharpness (default 10)");
  sub->add_option("--eigen-tol", r.eigen.tol, "--dirs eigen: relative tolerance (default 1e-6, as hessian)");
  sub->add_option("--eigen-max-steps", r.eigen.max_steps, "--dirs eigen: Lanczos steps (default 300, as hessian)");
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
