// moescope hessian RUN --data D [--split train,test] [--params SPEC|each-expert] [--top-k K] [--which LA|LM]
//   [--solver torch|spectra|power] [--trace METHOD --probes M] [--density] [--device cpu|cuda] -o R.h5
// Top eigenpairs (with Ritz residuals), trace and spectral density of the loss Hessian of a trained run over a
// fixed evaluation set, for all parameters or a subset (router, one expert, every expert in turn).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "common.hpp"
#include "moescope/curvature/density.hpp"
#include "moescope/curvature/distributed.hpp"
#include "moescope/curvature/eigen.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/curvature/lanczos_torch.hpp"
#include "moescope/curvature/params.hpp"
#include "moescope/curvature/trace.hpp"
#include "moescope/train/task.hpp"
#include "moescope/util/error.hpp"

namespace moescope::cli {
namespace {

struct HessianArgs {
  std::string run;
  std::string data;
  std::string output;
  std::vector<std::string> splits{"train"};
  std::string params = "all";
  std::int64_t top_k = 1;
  std::string which = "LA";
  std::string solver = "torch";
  double tol = 0.0;
  std::int64_t max_steps = 300;
  std::string trace;
  std::int64_t probes = 30;
  bool density = false;
  std::int64_t density_runs = 1;
  std::int64_t density_steps = 100;
  std::int64_t density_bins = 10000;
  std::int64_t max_samples = 1000;
  std::int64_t batch_size = 256;
  bool keep_graph = false;
  bool eigenvectors = false;
  std::string device = "cpu";
  std::int64_t seed = 0;
  int world_size = 1;
  int rank = 0;
  std::string init;
};

// One parameter subset: where it goes in the report and what selects it.
struct Group {
  std::string subpath;  // "" or "expert_L_E"
  std::string spec;
};

std::vector<double> to_vector(const Eigen::VectorXd& v) { return std::vector<double>(v.data(), v.data() + v.size()); }

// A library argument check (std::invalid_argument) becomes bad input naming the flags that set it.
template <class F>
auto checked(const std::string& flags, F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw InputError(flags + ": " + e.what());
  }
}

void validate(const HessianArgs& a) {
  if (a.top_k < 1) throw InputError("--top-k: must be at least 1, got " + std::to_string(a.top_k));
  if (a.tol < 0 || !std::isfinite(a.tol)) throw InputError("--tol: must be positive, got " + std::to_string(a.tol));
  if (a.max_steps < 1) throw InputError("--max-steps: must be at least 1");
  if (a.probes < 1) throw InputError("--probes: must be at least 1, got " + std::to_string(a.probes));
  if (a.max_samples < 0) throw InputError("--max-samples: must be >= 0 (0 = the whole split)");
  if (a.batch_size < 1) throw InputError("--batch-size: must be at least 1, got " + std::to_string(a.batch_size));
  if (a.density_runs < 1 || a.density_steps < 1 || a.density_bins < 2)
    throw InputError("--density-runs/--density-steps must be >= 1 and --density-bins >= 2");
  if (a.splits.empty()) throw InputError("--split: give at least one of train, valid, test");
  for (const auto& s : a.splits)
    if (s != "train" && s != "valid" && s != "test")
      throw InputError("--split: unknown split '" + s + "' (train, valid, test)");
  if (a.device == "cuda" && !torch::cuda::is_available())
    throw InputError("--device cuda: CUDA is not available (this LibTorch has no CUDA support or no GPU is visible)");
}

TraceMethod parse_trace(const std::string& s) {
  if (s == "hutchinson") return TraceMethod::Hutchinson;
  if (s == "hutch++") return TraceMethod::HutchPlusPlus;
  return TraceMethod::XTrace;
}

struct GroupResult {
  std::int64_t n = 0;
  Eigen::VectorXd eigenvalues;
  std::string status = "skipped";
  double trace = std::nan("");
  std::int64_t matvecs = 0;
};

GroupResult analyse(const HessianArgs& a, const HessianOperator& op, ReportWriter* report, const std::string& base,
                    const std::vector<NamedParameter>& chosen) {
  GroupResult g;
  g.n = op.size();
  const EigenTarget target = a.which == "LM" ? EigenTarget::LargestMagn : EigenTarget::LargestAlge;
  const double tol = a.tol > 0 ? a.tol : (a.solver == "power" ? 1e-3 : 1e-6);
  const std::string eig_flags = fmt::format("--solver {} --top-k {} (n = {})", a.solver, a.top_k, op.size());

  // Eigenpairs.
  op.reset_matvecs();
  EigenResult eig;
  torch::Tensor device_vectors;
  if (a.solver == "spectra") {
    SpectraOptions o;
    o.k = a.top_k;
    o.target = target;
    o.tol = tol;
    o.seed = static_cast<std::uint64_t>(a.seed);
    eig = checked(eig_flags, [&] { return spectra_eigs(op, o); });
  } else if (a.solver == "power") {
    if (target != EigenTarget::LargestAlge && target != EigenTarget::LargestMagn)
      throw InputError("--which: power iteration finds the largest-magnitude eigenvalues");
    PowerOptions o;
    o.k = a.top_k;
    o.tol = tol;
    o.max_iter = a.max_steps;
    o.seed = static_cast<std::uint64_t>(a.seed);
    eig = checked(eig_flags, [&] { return power_eigs(op, o); });
  } else {
    TorchLanczosOptions o;
    o.k = a.top_k;
    o.target = target;
    o.tol = tol;
    o.max_steps = std::max(a.max_steps, a.top_k);
    o.seed = static_cast<std::uint64_t>(a.seed);
    o.progress = [](const Progress& p) {
      spdlog::debug("lanczos step {}: max relative Ritz bound {:.3g}", p.step, p.value);
    };
    const TorchEigenResult r = checked(eig_flags, [&] { return torch_lanczos_eigs(op, o); });
    device_vectors = r.eigenvectors;
    eig = r.to_eigen_result();
  }
  const std::int64_t eig_matvecs = eig.matvecs;
  g.eigenvalues = eig.eigenvalues;
  g.status = status_name(eig.status);
  if (eig.status != SolverStatus::Converged)
    spdlog::warn("{}: eigensolver {} ({} pairs, residuals {})", base, g.status, eig.eigenvalues.size(),
                 fmt::join(to_vector(eig.residuals), ", "));

  // Trace.
  TraceResult tr;
  const bool want_trace = !a.trace.empty();
  if (want_trace) {
    TraceOptions o;
    o.probes = a.probes;
    o.seed = static_cast<std::uint64_t>(a.seed);
    tr = checked("--trace " + a.trace + " --probes " + std::to_string(a.probes),
                 [&] { return estimate_trace(op, parse_trace(a.trace), o); });
    g.trace = tr.estimate;
  }

  // Density.
  DensityResult dens;
  if (a.density) {
    SlqOptions so;
    so.runs = a.density_runs;
    so.steps = a.density_steps;
    so.seed = static_cast<std::uint64_t>(a.seed);
    DensityOptions dopt;
    dopt.bins = a.density_bins;
    dens = checked("--density", [&] { return spectral_density(op, so, dopt); });
  }
  g.matvecs = eig_matvecs + (want_trace ? tr.matvecs : 0) + (a.density ? dens.quadrature.matvecs : 0);
  if (report == nullptr) return g;

  // Report.
  const auto k = static_cast<std::size_t>(eig.eigenvalues.size());
  report->write(base + "/eigenvalues", to_vector(eig.eigenvalues), {k});
  report->write(base + "/residuals", to_vector(eig.residuals), {k});
  report->write(base + "/residual_estimates", to_vector(eig.residual_estimates), {k});
  if (a.eigenvectors && k > 0) {
    // Row i is eigenvector i over the chosen parameters, flattened in param_names order.
    const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rows = eig.eigenvectors.transpose();
    report->write(base + "/eigenvectors", std::vector<double>(rows.data(), rows.data() + rows.size()),
                  {k, static_cast<std::size_t>(op.size())});
  }
  report->write_int(base + "/matvecs", {g.matvecs}, {});
  std::vector<std::string> names;
  for (const auto& p : chosen) names.push_back(p.first);
  report->write_strings(base + "/param_names", names);
  report->set_attr(base, "method", eig.method);
  report->set_attr(base, "status", g.status);
  report->set_attr(base, "which", std::string(target_name(target)));
  report->set_attr(base, "tol", tol);
  report->set_attr(base, "params", a.params);
  report->set_attr(base, "parameters", op.size());
  report->set_attr(base, "iterations", eig.iterations);
  report->set_attr(base, "eigen_matvecs", eig_matvecs);
  if (want_trace) {
    report->write_scalar(base + "/trace", tr.estimate);
    report->write_scalar(base + "/trace_stderr", tr.std_error);
    report->set_attr(base, "trace_method", std::string(trace_method_name(tr.method)));
    report->set_attr(base, "trace_status", std::string(status_name(tr.status)));
    report->set_attr(base, "probes", a.probes);
    report->set_attr(base, "trace_matvecs", tr.matvecs);
  }
  if (a.density && dens.density.grid.size() > 0) {
    const auto bins = static_cast<std::size_t>(dens.density.grid.size());
    report->write(base + "/density/grid", to_vector(dens.density.grid), {bins});
    report->write(base + "/density/values", to_vector(dens.density.values), {bins});
    report->set_attr(base + "/density", "variance", dens.density.variance);
    report->set_attr(base + "/density", "mass", dens.density.mass);
    report->set_attr(base + "/density", "runs", a.density_runs);
    report->set_attr(base + "/density", "steps", a.density_steps);
    report->set_attr(base + "/density", "status", std::string(status_name(dens.quadrature.status)));
    report->set_attr(base + "/density", "matvecs", dens.quadrature.matvecs);
  }
  return g;
}

void run(const HessianArgs& a, const Context& ctx) {
  validate(a);
  start_torch_work(ctx);
  DistributedOptions dopts;
  dopts.world_size = a.world_size;
  dopts.rank = a.rank;
  dopts.init = a.init;
  const DataParallelGroup group(dopts);
  const bool writer = group.rank() == 0;

  LoadedRun run = load_run(a.run);
  const DataSpec spec = parse_data_arg(a.data, run.data);
  const TaskData data = load_task_data(spec);
  const torch::Device device(a.device == "cuda" ? torch::kCUDA : torch::kCPU);
  run.model.to(device);
  run.model.module().eval();  // no dropout, frozen batch-norm statistics, deterministic routing

  std::vector<Group> groups;
  if (a.params == "each-expert") {
    const auto experts = list_experts(run.model.module());
    if (experts.empty()) throw InputError("--params each-expert: the model in " + run.weights_file + " has no experts");
    for (const auto& [l, e] : experts) groups.push_back({fmt::format("expert_{}_{}", l, e), fmt::format("expert:{}.{}", l, e)});
  } else {
    groups.push_back({"", a.params});
  }

  std::unique_ptr<ReportWriter> report;
  if (writer) {
    report = std::make_unique<ReportWriter>(a.output);
    Provenance p = make_provenance(ctx, run.weights_file, a.seed);
    p.device = a.device;
    report->write_provenance(p);
    report->create_group("/hessian");
    report->set_attr("/hessian", "definition",
                     std::string("Hessian of the mean cross-entropy over the first max_samples samples of each split "
                                 "(model in eval mode, sample-weighted over batches); eigenpairs with Ritz residuals "
                                 "||Hv - lambda v||"));
    report->set_attr("/hessian", "world_size", std::int64_t{group.world_size()});
  }

  std::cout << fmt::format("{:<6} {:<14} {:>10} {:>14} {:>14} {:>9} {:>15}\n", "split", "params", "n", "lambda_1",
                           "trace", "matvecs", "status");
  for (const auto& split_name : a.splits) {
    const TensorSplit whole = data.split(split_name).head(a.max_samples);
    if (whole.size() < group.world_size())
      throw InputError(fmt::format("--split {}: {} samples for {} processes", split_name, whole.size(), group.world_size()));
    const auto [begin, end] = shard_range(whole.size(), group.rank(), group.world_size());
    const TensorSplit mine = whole.slice(begin, end);
    const torch::Tensor inputs = mine.inputs.to(device), targets = mine.targets.to(device);
    const std::int64_t count = mine.size(), bs = a.batch_size;
    const std::int64_t batches = (count + bs - 1) / bs;
    const TaskModel model = run.model;
    const BatchLossFn loss = [inputs, targets, count, bs, model](std::int64_t b) {
      const std::int64_t lo = b * bs, hi = std::min(count, lo + bs);
      const BatchResult r = model.batch_loss(inputs.slice(0, lo, hi), targets.slice(0, lo, hi));
      return BatchLoss{r.loss, r.count};
    };
    const std::string split_base = "/hessian/" + split_name;
    double split_loss = std::nan("");
    for (const auto& g : groups) {
      const auto chosen = select_parameters(run.model.module(), g.spec);
      std::vector<torch::Tensor> params;
      for (const auto& p : chosen) params.push_back(p.second);
      HvpOptions ho;
      ho.keep_graph = a.keep_graph;
      if (group.world_size() > 1) ho.all_reduce = group.hook();
      const HessianOperator op(params, loss, batches, ho);
      if (std::isnan(split_loss)) split_loss = op.loss();
      const std::string base = g.subpath.empty() ? split_base : split_base + "/" + g.subpath;
      spdlog::info("hessian: split {} ({} samples), params {} ({} values)", split_name, whole.size(), g.spec, op.size());
      if (report) report->create_group(base);
      const GroupResult r = analyse(a, op, report.get(), base, chosen);
      std::cout << fmt::format("{:<6} {:<14} {:>10} {:>14.6g} {:>14.6g} {:>9} {:>15}\n", split_name,
                               g.subpath.empty() ? a.params : g.subpath, r.n,
                               r.eigenvalues.size() > 0 ? r.eigenvalues(0) : std::nan(""), r.trace, r.matvecs,
                               r.status);
    }
    if (report) {
      report->write_scalar(split_base + "/loss", split_loss);
      report->set_attr(split_base, "samples", whole.size());
      report->set_attr(split_base, "batch_size", a.batch_size);
      report->set_attr(split_base, "keep_graph", std::int64_t{a.keep_graph ? 1 : 0});
      report->set_attr(split_base, "params", a.params);
      if (a.params == "each-expert") report->set_attr(split_base, "layout", std::string("expert_L_E per expert"));
    }
  }
  if (report) {
    report->commit();
    spdlog::info("wrote {}", a.output);
  }
}

}  // namespace

void add_hessian(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<HessianArgs>();
  auto* sub = app.add_subcommand("hessian", "Loss-Hessian spectrum of a trained run: top eigenpairs, trace, density");
  sub->add_option("run", a->run, "Run directory, step directory or its model.safetensors")->required();
  sub->add_option("-o,--output", a->output, "Report to write (HDF5)")->required();
  sub->add_option("--data", a->data, "Data: NAME, NAME:PATH or a DataSpec .json (default: the run's own data)");
  sub->add_option("--split", a->splits, "Splits to analyse: train, valid, test (default train)")->delimiter(',');
  sub->add_option("--params", a->params,
                  "Parameter subset: all, router, expert:L.E, re:REGEX, or each-expert (one group per expert)");
  sub->add_option("--top-k", a->top_k, "Eigenpairs to compute (default 1)");
  sub->add_option("--which", a->which, "LA: largest algebraic (default), LM: largest magnitude")
      ->check(CLI::IsMember({"LA", "LM"}));
  sub->add_option("--solver", a->solver,
                  "torch: device-resident Lanczos (default); spectra: Spectra's restarted Lanczos; power: PyHessian's "
                  "power iteration")
      ->check(CLI::IsMember({"torch", "spectra", "power"}));
  sub->add_option("--tol", a->tol,
                  "Relative tolerance (default 1e-6; power: 1e-3 on the relative eigenvalue change, as PyHessian)");
  sub->add_option("--max-steps", a->max_steps, "Lanczos steps, or power iterations per pair (default 300)");
  sub->add_option("--trace", a->trace, "Trace estimator: hutchinson, hutch++, xtrace")
      ->check(CLI::IsMember({"hutchinson", "hutch++", "xtrace"}));
  sub->add_option("--probes", a->probes, "Trace probe budget (matvecs, default 30)");
  sub->add_flag("--density", a->density, "Spectral density by stochastic Lanczos quadrature");
  sub->add_option("--density-runs", a->density_runs, "SLQ start vectors (default 1, as PyHessian)");
  sub->add_option("--density-steps", a->density_steps, "SLQ Lanczos steps per run (default 100)");
  sub->add_option("--density-bins", a->density_bins, "Density grid points (default 10000)");
  sub->add_option("--max-samples", a->max_samples, "First N samples of each split (default 1000; 0 = all)");
  sub->add_option("--batch-size", a->batch_size, "Samples per forward pass (memory only: results do not depend on it)");
  sub->add_flag("--keep-graph", a->keep_graph, "Keep each batch's first-order graph between products (faster, more memory)");
  sub->add_flag("--eigenvectors", a->eigenvectors, "Also save the eigenvectors [K, n]");
  sub->add_option("--device", a->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--seed", a->seed, "Seed of start vectors and probes (default 0)");
  sub->add_option("--world-size", a->world_size, "Data-parallel processes (c10d Gloo; default 1)");
  sub->add_option("--rank", a->rank, "This process's rank in [0, world-size); rank 0 writes the report");
  sub->add_option("--init", a->init, "Rendezvous: tcp://HOST:PORT (rank 0 listens) or file://PATH (fresh file)");
  sub->callback([a, &ctx] { run(*a, ctx); });
}

}  // namespace moescope::cli
