// moescope hessian RUN [eval options] [--params SPEC|each-expert] [--top-k K] [--which LA|LM]
//   [--solver lanczos|spectra|power] [--trace METHOD --probes M] [--density] [--device cpu|cuda] -o R.h5
// Top eigenpairs (with Ritz residuals), trace and spectral density of the loss Hessian of a trained run.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <iostream>
#include <memory>

#include "torch_common.hpp"
#include "moescope/curvature/analysis.hpp"

namespace moescope::cli {
namespace {

struct HessianArgs {
  std::string run, output, which = "LA";
  HessianRequest request;
};

void run(HessianArgs& a, const Context& ctx) {
  HessianRequest& r = a.request;
  validate_eval(r.eval);
  if (r.eigen.k < 1) throw InputError("--top-k: must be at least 1, got " + std::to_string(r.eigen.k));
  if (r.eigen.tol < 0 || !std::isfinite(r.eigen.tol)) throw InputError("--tol: must be positive");
  if (r.eigen.max_steps < 1) throw InputError("--max-steps: must be at least 1");
  if (r.probes < 1) throw InputError("--probes: must be at least 1, got " + std::to_string(r.probes));
  if (r.slq.runs < 1 || r.slq.steps < 1 || r.density_bins < 2)
    throw InputError("--density-runs/--density-steps must be >= 1 and --density-bins >= 2");
  if (r.eigen.solver == "power" && a.which != "LA" && a.which != "LM")
    throw InputError("--which: power iteration finds the largest-magnitude eigenvalues");
  r.eigen.target = a.which == "LM" ? EigenTarget::LargestMagn : EigenTarget::LargestAlge;
  const DistributedOptions& d = r.distributed;
  if (d.world_size < 1) throw InputError("--world-size: must be at least 1, got " + std::to_string(d.world_size));
  if (d.rank < 0 || d.rank >= d.world_size)
    throw InputError("--rank: " + std::to_string(d.rank) + " is outside [0, " + std::to_string(d.world_size) + ")");
  if (d.world_size > 1 && d.init.empty()) throw InputError("--init: required when --world-size > 1");
  if (r.device == "cuda" && !torch::cuda::is_available())
    throw InputError("--device cuda: CUDA is not available (this LibTorch has no CUDA support or no GPU is visible)");
  start_torch_work(ctx);
  r.progress = progress_renderer(ctx);
  LoadedRun loaded = load_run(a.run);
  print_notes(loaded.notes);
  const std::string flags = fmt::format("--solver {} --top-k {} --trace {} --probes {}", r.eigen.solver, r.eigen.k,
                                        r.trace.empty() ? "none" : r.trace, r.probes);
  const HessianAnalysis result = with_flags(flags, [&] { return analyse_hessian(loaded, r); });

  std::cout << fmt::format("{:<6} {:<14} {:>10} {:>14} {:>14} {:>9} {:>15}\n", "split", "params", "n", "lambda_1",
                           "trace", "matvecs", "status");
  for (const auto& s : result.splits)
    for (const auto& g : s.groups)
      std::cout << fmt::format("{:<6} {:<14} {:>10} {:>14.6g} {:>14.6g} {:>9} {:>15}\n", s.name,
                               g.subpath.empty() ? g.params : g.subpath, g.n,
                               g.eigen.eigenvalues.size() > 0 ? g.eigen.eigenvalues(0) : std::nan(""),
                               g.trace ? g.trace->estimate : std::nan(""), g.matvecs, status_name(g.eigen.status));
  for (const auto& s : result.splits)
    for (const auto& g : s.groups)
      if (g.eigen.status != SolverStatus::Converged)
        spdlog::warn("{} {}: eigensolver {} ({} pairs); see the residuals in the report", s.name, g.params,
                     status_name(g.eigen.status), g.eigen.eigenvalues.size());
  if (result.rank != 0) return;
  ReportWriter w(a.output);
  Provenance p = make_provenance(ctx, loaded.weights_file(), static_cast<std::int64_t>(r.seed));
  p.device = r.device;
  w.write_provenance(p);
  write_hessian(w, result, r);
  w.commit();
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_hessian(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<HessianArgs>();
  HessianRequest& r = a->request;
  auto* sub = app.add_subcommand("hessian", torch_command_description("hessian"));
  sub->add_option("run", a->run, "Run folder, step folder or its model.safetensors")->required();
  sub->add_option("-o,--output", a->output, "Report to write (HDF5)")->required();
  add_eval_options(sub, r.eval);
  add_params_option(sub, r.params, ", or each-expert (one group per expert)");
  sub->add_option("--top-k", r.eigen.k, "Eigenpairs to compute (default 1)");
  sub->add_option("--which", a->which, "LA: largest algebraic (default), LM: largest magnitude")
      ->check(CLI::IsMember({"LA", "LM"}));
  sub->add_option("--solver", r.eigen.solver,
                  "lanczos: Lanczos on the model's device (default); spectra: Spectra's restarted Lanczos; power: "
                  "PyHessian's power iteration")
      ->check(CLI::IsMember({"lanczos", "spectra", "power"}));
  sub->add_option("--tol", r.eigen.tol,
                  "Relative tolerance (default 1e-6; power: 1e-3 on the relative eigenvalue change, as PyHessian)");
  sub->add_option("--max-steps", r.eigen.max_steps, "Lanczos steps, or power iterations per pair (default 300)");
  sub->add_option("--trace", r.trace, "Trace estimator: hutchinson, hutch++, xtrace")
      ->check(CLI::IsMember({"hutchinson", "hutch++", "xtrace"}));
  sub->add_option("--probes", r.probes, "Trace probe budget (matvecs, default 30)");
  sub->add_flag("--density", r.density, "Spectral density by stochastic Lanczos quadrature");
  sub->add_option("--density-runs", r.slq.runs, "SLQ start vectors (default 1, as PyHessian)");
  sub->add_option("--density-steps", r.slq.steps, "SLQ Lanczos steps per run (default 100)");
  sub->add_option("--density-bins", r.density_bins, "Density grid points (default 10000)");
  sub->add_flag("--keep-graph", r.keep_graph, "Keep each batch's first-order graph between products (faster, more memory)");
  sub->add_flag("--eigenvectors", r.eigenvectors, "Also save the eigenvectors [K, n]");
  sub->add_option("--device", r.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  add_seed_option(sub, r.seed, "start vectors and probes");
  sub->add_option("--world-size", r.distributed.world_size, "Data-parallel processes (c10d Gloo; default 1)");
  sub->add_option("--rank", r.distributed.rank, "This process's rank in [0, world-size); rank 0 writes the report");
  sub->add_option("--init", r.distributed.init, "Rendezvous: tcp://HOST:PORT (rank 0 listens) or file://PATH (fresh file)");
  add_hash_option(sub, ctx);
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
