// The Hessian analysis of a run: eigenpairs, trace and density per split and parameter subset.
#include "moescope/curvature/analysis.hpp"

#include <algorithm>
#include <cmath>
#include <memory>

#include "moescope/curvature/device_lanczos.hpp"
#include "moescope/io/report.hpp"
#include "moescope/model/params.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/memory.hpp"

namespace moescope {

EigenResult top_eigenpairs(const HessianOperator& op, const EigenRequest& r) {
  const double tol = r.effective_tol();
  if (r.solver == "spectra") {
    SpectraOptions o;
    o.k = r.k;
    o.target = r.target;
    o.tol = tol;
    o.seed = r.seed;
    return spectra_eigs(op, o);
  }
  if (r.solver == "power") {
    if (r.target == EigenTarget::SmallestAlge)
      invalid_argument("top_eigenpairs", "power iteration finds the largest-magnitude eigenvalues only");
    PowerOptions o;
    o.k = r.k;
    o.tol = tol;
    o.max_iter = r.max_steps;
    o.seed = r.seed;
    o.progress = r.progress;
    return power_eigs(op, o);
  }
  if (r.solver != "lanczos") invalid_argument("top_eigenpairs", "unknown solver '" + r.solver + "' (lanczos, spectra, power)");
  DeviceLanczosOptions o;
  o.k = r.k;
  o.target = r.target;
  o.tol = tol;
  o.max_steps = std::max(r.max_steps, r.k);
  o.seed = r.seed;
  o.progress = r.progress;
  return device_lanczos_eigs(op, o).to_eigen_result();
}

namespace {

TraceMethod parse_trace(const std::string& s) {
  if (s == "hutchinson") return TraceMethod::Hutchinson;
  if (s == "hutch++") return TraceMethod::HutchPlusPlus;
  if (s == "xtrace") return TraceMethod::XTrace;
  invalid_argument("analyse_hessian", "unknown trace estimator '" + s + "' (hutchinson, hutch++, xtrace)");
}

// One parameter subset: where it goes in the report and what selects it.
struct Subset {
  std::string subpath;
  std::string spec;
};

std::vector<Subset> subsets(const LoadedRun& run, const std::string& params) {
  std::vector<Subset> out;
  if (params == "each-expert") {
    const auto experts = list_experts(run.model.module());
    if (experts.empty()) fail_input(run.weights_file(), "each-expert: the model has no experts");
    for (const auto& [l, e] : experts)
      out.push_back({"expert_" + std::to_string(l) + "_" + std::to_string(e),
                     "expert:" + std::to_string(l) + "." + std::to_string(e)});
  } else {
    out.push_back({"", params});
  }
  return out;
}

HessianGroup analyse_group(const HessianOperator& op, const HessianRequest& r) {
  HessianGroup g;
  g.n = op.size();
  EigenRequest er = r.eigen;
  er.seed = r.seed;
  if (!er.progress) er.progress = r.progress;
  g.tol = er.effective_tol();
  op.reset_matvecs();
  g.eigen = top_eigenpairs(op, er);
  g.eigen_matvecs = g.eigen.matvecs;
  if (!r.eigenvectors) g.eigen.eigenvectors.resize(0, 0);
  g.matvecs = g.eigen_matvecs;
  if (!r.trace.empty()) {
    TraceOptions o;
    o.probes = r.probes;
    o.seed = r.seed;
    o.progress = r.progress;
    g.trace = estimate_trace(op, parse_trace(r.trace), o);
    g.matvecs += g.trace->matvecs;
  }
  if (r.density) {
    SlqOptions so = r.slq;
    so.seed = r.seed;
    so.progress = r.progress;
    DensityOptions dopt;
    dopt.bins = r.density_bins;
    g.density = spectral_density(op, so, dopt);
    g.matvecs += g.density->quadrature.matvecs;
  }
  return g;
}

}  // namespace

std::vector<MemoryItem> hessian_memory(std::int64_t n, const HessianRequest& r) {
  const double N = static_cast<double>(n), f64 = 8.0;
  const std::int64_t k = std::max<std::int64_t>(1, r.eigen.k);
  std::vector<MemoryItem> items;
  const auto count = [](std::int64_t a, std::int64_t b) { return std::to_string(a) + " x " + std::to_string(b); };
  if (r.eigen.solver == "spectra") {
    const std::int64_t ncv = std::min<std::int64_t>(n, std::max<std::int64_t>(2 * k + 1, 20));
    items.push_back({"Spectra's Krylov basis (" + count(ncv, n) + " float64, and its restart copy)", 2 * ncv * N * f64});
  } else if (r.eigen.solver == "power") {
    items.push_back({"power iteration vectors (" + count(k + 2, n) + " float64)", static_cast<double>(k + 2) * N * f64});
  } else {
    const std::int64_t steps = std::min<std::int64_t>(std::max(r.eigen.max_steps, k), n);
    items.push_back({"Lanczos basis (" + count(steps + 1, n) + " float64, and half as much again while it grows)",
                     1.5 * static_cast<double>(steps + 1) * N * f64});
  }
  items.push_back({"eigenvectors (" + count(k, n) + " float64, on the host and in the report)",
                   2.0 * static_cast<double>(k) * N * f64});
  if (r.trace == "hutch++" || r.trace == "xtrace")
    items.push_back({r.trace + " probe blocks (about 3 x " + count(r.probes, n) + " float64)",
                     3.0 * static_cast<double>(r.probes) * N * f64});
  else if (!r.trace.empty())
    items.push_back({"trace probes (2 x n float64)", 2 * N * f64});
  if (r.density) {
    const std::int64_t steps = std::min<std::int64_t>(r.slq.steps, n);
    items.push_back({"SLQ Lanczos basis (" + count(steps + 1, n) + " float64)", static_cast<double>(steps + 1) * N * f64});
  }
  items.push_back({"gradients and products (about 8 x n float64)", 8 * N * f64});
  return items;
}

HessianAnalysis analyse_hessian(LoadedRun& run, const HessianRequest& r) {
  if (r.device != "cpu" && r.device != "cuda") invalid_argument("analyse_hessian", "device must be cpu or cuda, got " + r.device);
  if (r.device == "cuda" && !torch::cuda::is_available())
    throw InputError("device cuda: CUDA is not available (this LibTorch has no CUDA support or no GPU is visible)");
  if (r.probes < 1) invalid_argument("analyse_hessian", "probes must be at least 1, got " + std::to_string(r.probes));
  const DataParallelGroup group(r.distributed);
  const EvalData data = load_eval_data(run, r.eval);
  const torch::Device device(r.device == "cuda" ? torch::kCUDA : torch::kCPU);
  run.model.to(device);
  run.model.module().eval();  // no dropout, frozen batch-norm statistics, deterministic routing
  const std::vector<Subset> chosen = subsets(run, r.params);
  if (r.device == "cpu") {
    // Refuse what cannot fit before any product: one subset at a time holds its solver's vectors. (On CUDA the
    // basis is in device memory, which this check does not see.)
    std::int64_t n_max = 0;
    std::string largest;
    for (const Subset& sub : chosen) {
      std::int64_t n = 0;
      for (const auto& p : select_parameters(run.model.module(), sub.spec)) n += p.second.numel();
      if (n > n_max) n_max = n, largest = sub.spec;
    }
    check_memory("hessian (--params " + largest + ": " + std::to_string(n_max) + " parameters)",
                 hessian_memory(n_max, r),
                 "lower --max-steps (the Lanczos basis grows by one vector per step), --top-k or --probes, or "
                 "choose fewer parameters with --params (router, expert:L.E, re:REGEX)");
  }

  HessianAnalysis a;
  a.rank = group.rank();
  a.world_size = group.world_size();
  for (std::size_t s = 0; s < data.splits.size(); ++s) {
    const TensorSplit& whole = data.splits[s];
    if (whole.size() < group.world_size())
      throw InputError("split " + data.names[s] + ": " + std::to_string(whole.size()) + " samples for " +
                       std::to_string(group.world_size()) + " processes");
    const auto [begin, end] = shard_range(whole.size(), group.rank(), group.world_size());
    const TensorSplit mine = whole.slice(begin, end);
    const torch::Tensor inputs = mine.inputs.to(device), targets = mine.targets.to(device);
    const std::int64_t count = mine.size(), bs = r.eval.batch_size;
    const std::int64_t batches = (count + bs - 1) / bs;
    const TaskModel model = run.model;
    const BatchLossFn loss = [inputs, targets, count, bs, model](std::int64_t b) {
      const std::int64_t lo = b * bs, hi = std::min(count, lo + bs);
      const BatchResult br = model.batch_loss(inputs.slice(0, lo, hi), targets.slice(0, lo, hi));
      return BatchLoss{br.loss, br.count};
    };
    HessianSplit out;
    out.name = data.names[s];
    out.samples = whole.size();
    out.loss = std::nan("");
    for (const Subset& sub : chosen) {
      const auto selected = select_parameters(run.model.module(), sub.spec);
      std::vector<torch::Tensor> params;
      for (const auto& p : selected) params.push_back(p.second);
      HvpOptions ho;
      ho.keep_graph = r.keep_graph;
      if (group.world_size() > 1) ho.all_reduce = group.hook();
      const HessianOperator op(params, loss, batches, ho);
      if (std::isnan(out.loss)) out.loss = op.loss();
      Progress note;
      note.stage = "hessian";
      note.note = "split " + out.name + " (" + std::to_string(whole.size()) + " samples), params " + sub.spec + " (" +
                  std::to_string(op.size()) + " values)";
      report(r.progress, note);
      HessianGroup g = analyse_group(op, r);
      g.subpath = sub.subpath;
      g.params = sub.spec;
      for (const auto& p : selected) g.param_names.push_back(p.first);
      out.groups.push_back(std::move(g));
    }
    a.splits.push_back(std::move(out));
  }
  return a;
}

void write_hessian(ReportWriter& w, const HessianAnalysis& a, const HessianRequest& r) {
  w.create_group("/hessian");
  w.set_attr("/hessian", "definition",
             std::string("Hessian of the mean cross-entropy over the first max_samples samples of each split "
                         "(model in eval mode, sample-weighted over batches); eigenpairs with Ritz residuals "
                         "||Hv - lambda v||"));
  w.set_attr("/hessian", "world_size", std::int64_t{a.world_size});
  for (const HessianSplit& s : a.splits) {
    const std::string split_base = "/hessian/" + s.name;
    for (const HessianGroup& g : s.groups) {
      const std::string base = g.subpath.empty() ? split_base : split_base + "/" + g.subpath;
      w.create_group(base);
      const EigenResult& e = g.eigen;
      w.write_vector(base + "/eigenvalues", e.eigenvalues);
      w.write_vector(base + "/residuals", e.residuals);
      w.write_vector(base + "/residual_estimates", e.residual_estimates);
      if (e.eigenvectors.size() > 0) w.write_matrix(base + "/eigenvectors", e.eigenvectors.transpose());  // row i: vector i
      w.write_int(base + "/matvecs", {g.matvecs}, {});
      w.write_strings(base + "/param_names", g.param_names);
      w.set_attr(base, "method", e.method);
      w.set_attr(base, "status", std::string(status_name(e.status)));
      w.set_attr(base, "which", std::string(target_name(r.eigen.target)));
      w.set_attr(base, "tol", g.tol);
      w.set_attr(base, "params", g.params);
      w.set_attr(base, "parameters", g.n);
      w.set_attr(base, "iterations", e.iterations);
      w.set_attr(base, "eigen_matvecs", g.eigen_matvecs);
      if (g.trace) {
        w.write_scalar(base + "/trace", g.trace->estimate);
        w.write_scalar(base + "/trace_stderr", g.trace->std_error);
        w.set_attr(base, "trace_method", std::string(trace_method_name(g.trace->method)));
        w.set_attr(base, "trace_status", std::string(status_name(g.trace->status)));
        w.set_attr(base, "probes", r.probes);
        w.set_attr(base, "trace_matvecs", g.trace->matvecs);
      }
      if (g.density && g.density->density.grid.size() > 0) {
        const SpectralDensity& d = g.density->density;
        w.write_vector(base + "/density/grid", d.grid);
        w.write_vector(base + "/density/values", d.values);
        w.set_attr(base + "/density", "variance", d.variance);
        w.set_attr(base + "/density", "mass", d.mass);
        w.set_attr(base + "/density", "runs", r.slq.runs);
        w.set_attr(base + "/density", "steps", r.slq.steps);
        w.set_attr(base + "/density", "status", std::string(status_name(g.density->quadrature.status)));
        w.set_attr(base + "/density", "matvecs", g.density->quadrature.matvecs);
      }
    }
    w.write_scalar(split_base + "/loss", s.loss);
    w.set_attr(split_base, "samples", s.samples);
    w.set_attr(split_base, "batch_size", r.eval.batch_size);
    w.set_attr(split_base, "keep_graph", std::int64_t{r.keep_graph ? 1 : 0});
    w.set_attr(split_base, "params", r.params);
    if (r.params == "each-expert") w.set_attr(split_base, "layout", std::string("expert_L_E per expert"));
  }
}

}  // namespace moescope
