// The loss-surface analysis of a run: directions, the grid, sharpness, and the report group.
#include "moescope/landscape/analysis.hpp"

#include <algorithm>
#include <filesystem>

#include "moescope/io/report.hpp"
#include "moescope/model/params.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/memory.hpp"
#include "moescope/util/sha256.hpp"
#include "moescope/util/strings.hpp"

namespace moescope {

std::string loss_landscape_path(const std::string& out) {
  const std::string ext = ".h5";
  const bool has = out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0;
  return (has ? out.substr(0, out.size() - ext.size()) : out) + ".loss-landscape.h5";
}

namespace {

// Digest of the directions' values (float64 bytes in parameter order), for the journal's settings line.
std::string fingerprint(const std::vector<Direction>& dirs) {
  Sha256 h;
  for (const auto& d : dirs)
    for (const auto& [name, t] : d.parts) {
      h.update(name.data(), name.size());
      const auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
      h.update(c.data_ptr<double>(), static_cast<std::size_t>(c.numel()) * sizeof(double));
    }
  return h.hex_digest();
}

Direction random_dir(const std::vector<NamedParameter>& params, Normalization n, SmallTensorRule small,
                     std::uint64_t seed) {
  RandomDirectionOptions o;
  o.normalization = n;
  o.small = small;
  o.seed = seed;
  return random_direction(params, o);
}

// The top `k` Hessian eigenvectors of the loss on `split` over the selected parameters (unit vectors), found as
// the Hessian analysis finds them.
std::vector<Direction> eigen_dirs(const TaskModel& model, const std::vector<NamedParameter>& params,
                                  const TensorSplit& split, const std::string& split_name, std::int64_t batch_size,
                                  EigenRequest er, LandscapeAnalysis& a) {
  std::vector<torch::Tensor> ts;
  for (const auto& p : params) ts.push_back(p.second);
  const std::int64_t n = split.size();
  const std::int64_t batches = (n + batch_size - 1) / batch_size;
  auto loss = [&](std::int64_t b) {
    const TensorSplit s = split.slice(b * batch_size, std::min(n, (b + 1) * batch_size));
    const BatchResult r = model.batch_loss(s.inputs, s.targets);
    return BatchLoss{r.loss, r.count};
  };
  const HessianOperator op(ts, loss, batches);
  if (op.size() <= er.k)
    throw InputError("eigen directions: the selected parameters hold only " + std::to_string(op.size()) + " values");
  const EigenResult r = top_eigenpairs(op, er);
  a.eigen_status = status_name(r.status);
  if (r.eigenvalues.size() < er.k)
    throw InputError("eigen directions: the eigensolver found " + std::to_string(r.eigenvalues.size()) + " of " +
                     std::to_string(er.k) + " eigenpairs (status " + a.eigen_status +
                     "): the loss Hessian's products are not usable at these weights");
  std::vector<Direction> out;
  for (std::int64_t i = 0; i < er.k; ++i) {
    const Eigen::VectorXd v = r.eigenvectors.col(i);
    auto flat = torch::from_blob(const_cast<double*>(v.data()), {v.size()}, torch::kFloat64).clone();
    Direction d = direction_from_flat(params, flat, "eigen");
    d.source = "Hessian eigenvector " + std::to_string(i) + " of the " + split_name + " loss, eigenvalue " +
               to_text(r.eigenvalues[i]) + ", residual " + to_text(r.residuals[i]) + ", status " + a.eigen_status;
    a.eigenvalues.push_back(r.eigenvalues[i]);
    a.eigen_residuals.push_back(r.residuals[i]);
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

std::vector<MemoryItem> landscape_memory(std::int64_t parameters, std::size_t splits, bool text,
                                         const LandscapeRequest& r) {
  const double points = static_cast<double>(r.x.count) * static_cast<double>(r.y ? r.y->count : 1);
  const double metrics = static_cast<double>(splits) * (text ? 3.0 : 2.0);
  const double n = static_cast<double>(parameters);
  const double ndirs = r.y ? 2.0 : 1.0;
  const std::string grid = std::to_string(r.x.count) + (r.y ? " x " + std::to_string(r.y->count) : std::string());
  std::vector<MemoryItem> items;
  // values (float64) and a done flag per point, then one more copy per metric while the report is written
  items.push_back({"grid of " + grid + " points x " + std::to_string(static_cast<int>(metrics)) +
                       " metrics (float64, and a copy for the report)",
                   points * (2.0 * metrics * 8.0 + 1.0)});
  items.push_back({"directions and the saved weights (" + std::to_string(static_cast<int>(ndirs) + 1) + " x " +
                       std::to_string(parameters) + " values)",
                   (ndirs + 1.0) * n * 8.0});
  if (r.dirs == "eigen") {
    HessianRequest h;
    h.eigen = r.eigen;
    h.eigen.k = static_cast<std::int64_t>(ndirs);
    for (const MemoryItem& i : hessian_memory(parameters, h)) items.push_back(i);
  }
  return items;
}

LandscapeAnalysis compute_landscape(LoadedRun& run, const LandscapeRequest& r, const Provenance& provenance) {
  if (r.sharpness_dirs < 1) invalid_argument("compute_landscape", "sharpness_dirs must be at least 1");
  for (double radius : r.sharpness)
    if (!std::isfinite(radius) || radius <= 0) invalid_argument("compute_landscape", "sharpness radius " + to_text(radius) + " must be positive");
  LandscapeAnalysis a;
  const EvalData data = load_eval_data(run, r.eval);
  a.data = data.spec;
  const TaskModel& model = run.model;
  const auto params = select_parameters(model.module(), r.params);
  for (const auto& p : params) a.parameters += p.second.numel();
  const std::size_t ndirs = r.y ? 2 : 1;
  check_memory("landscape", landscape_memory(a.parameters, data.names.size(), data.data.is_text, r),
               "use fewer grid points (the COUNT of --x/--y), fewer --split, or fewer parameters with --params");

  // Directions.
  a.dirs_kind = r.dirs;
  if (r.dirs == "random" || r.dirs == "filter" || r.dirs == "layer") {
    const Normalization n = r.dirs == "random" ? Normalization::None : parse_normalization(r.dirs, "dirs");
    for (std::size_t k = 0; k < ndirs; ++k) a.dirs.push_back(random_dir(params, n, r.small, r.seed + k));
  } else if (r.dirs == "eigen") {
    EigenRequest er = r.eigen;
    er.k = static_cast<std::int64_t>(ndirs);
    er.seed = r.seed;
    if (!er.progress) er.progress = r.progress;
    a.dirs = eigen_dirs(model, params, data.splits[0], data.names[0], r.eval.batch_size, er, a);
  } else if (is_loadable_run(r.dirs)) {
    a.dirs_kind = "interpolation";
    const LoadedRun other = load_run(r.dirs, run.options);
    if (other.model.config() != model.config())
      fail_input(r.dirs, "the model differs from " + run.weights_file() + "'s (its config.json \"model\")");
    a.dirs.push_back(difference_direction(params, select_parameters(other.model.module(), r.params), r.dirs));
    // A 2-D interpolation plot: the second axis is a filter-normalised random direction.
    if (r.y) a.dirs.push_back(random_dir(params, Normalization::Filter, r.small, r.seed + 1));
  } else if (std::filesystem::is_regular_file(r.dirs)) {
    a.dirs_kind = "file";
    std::vector<std::string> labels;
    a.dirs = load_directions(r.dirs, params, &labels);
    if (a.dirs.size() < ndirs)
      fail_input(r.dirs, "holds " + std::to_string(a.dirs.size()) + " direction(s), a " + std::to_string(ndirs) +
                             "-D grid needs " + std::to_string(ndirs));
    a.dirs.resize(ndirs);
  } else {
    fail_input(r.dirs, "not a direction kind (random, filter, layer, eigen), a run, or a directions .h5 file");
  }
  a.fingerprint = fingerprint(a.dirs);
  if (!r.save_dirs.empty()) {
    std::vector<std::string> labels{"x", "y"};
    labels.resize(a.dirs.size());
    save_directions(r.save_dirs, a.dirs, labels, provenance);
  }

  // Metrics and the evaluator: batches are views of the tensors loaded once.
  std::vector<std::string> metrics;
  for (const auto& s : data.names) {
    metrics.push_back(s + "_loss");
    metrics.push_back(s + "_acc");
    if (data.data.is_text) metrics.push_back(s + "_ppl");
  }
  const PointEvaluator evaluate_point = [&] {
    std::vector<double> v;
    for (const auto& s : data.splits) {
      const EvalResult e = evaluate(model, s, r.eval.batch_size);
      v.push_back(e.loss);
      v.push_back(e.accuracy);
      if (data.data.is_text) v.push_back(e.perplexity);
    }
    return v;
  };
  SurfaceOptions so;
  so.x = r.x;
  so.y = r.y;
  so.metrics = metrics;
  so.journal = r.journal;
  so.resume = r.resume;
  so.max_points = r.max_points;
  so.progress = r.progress;
  so.settings = nlohmann::json{{"weights", run.weights_file()},   {"data", data.spec},     {"splits", data.names},
                               {"max_samples", r.eval.max_samples}, {"params", r.params}, {"dirs", r.dirs},
                               {"directions_sha256", a.fingerprint}}
                    .dump();
  {
    Perturbation pert(params, a.dirs);
    a.surface = compute_surface(pert, evaluate_point, so);
  }
  if (!a.surface.complete() || r.sharpness.empty()) return a;

  SharpnessOptions sh;
  sh.radii = r.sharpness;
  sh.directions = r.sharpness_dirs;
  sh.seed = r.seed + 1000;
  sh.small = r.small;
  a.sharpness = sharpness(params, [&] { return evaluate(model, data.splits[0], r.eval.batch_size).loss; }, sh);
  return a;
}

void write_landscape(ReportWriter& report, const LandscapeAnalysis& a, const LandscapeRequest& r) {
  write_surface(report, a.surface, "/landscape");
  report.set_attr("/landscape", "dirs", a.dirs_kind);
  report.set_attr("/landscape", "dirs_arg", r.dirs);
  report.set_attr("/landscape", "params", r.params);
  report.set_attr("/landscape", "parameter_count", a.parameters);
  report.set_attr("/landscape", "ignore", std::string(small_tensor_rule_name(r.small)));
  report.set_attr("/landscape", "splits", join(r.eval.splits));
  report.set_attr("/landscape", "max_samples", r.eval.max_samples);
  report.set_attr("/landscape", "data", nlohmann::json(a.data).dump());
  report.set_attr("/landscape", "seed", static_cast<std::int64_t>(r.seed));
  report.set_attr("/landscape", "directions_sha256", a.fingerprint);
  report.set_attr("/landscape", "accuracy", std::string("fraction of argmax hits in [0, 1]"));
  const char* label[2] = {"x", "y"};
  for (std::size_t k = 0; k < a.dirs.size() && k < 2; ++k) {
    const std::string p = std::string(label[k]) + "_direction_";
    report.set_attr("/landscape", p + "kind", a.dirs[k].kind);
    report.set_attr("/landscape", p + "normalization", std::string(normalization_name(a.dirs[k].normalization)));
    report.set_attr("/landscape", p + "norm", a.dirs[k].norm());
    report.set_attr("/landscape", p + "source", a.dirs[k].source);
  }
  if (!a.eigenvalues.empty()) {
    report.write("/landscape/eigenvalues", a.eigenvalues, {a.eigenvalues.size()});
    report.write("/landscape/eigen_residuals", a.eigen_residuals, {a.eigen_residuals.size()});
    report.set_attr("/landscape", "eigen_status", a.eigen_status);
  }
  if (a.sharpness) {
    const SharpnessResult& s = *a.sharpness;
    const std::size_t R = s.radii.size(), M = static_cast<std::size_t>(r.sharpness_dirs);
    std::vector<double> inc;
    for (const auto& row : s.increases) inc.insert(inc.end(), row.begin(), row.end());
    report.write("/landscape/sharpness/radius", s.radii, {R});
    report.write("/landscape/sharpness/mean_increase", s.mean_increase, {R});
    report.write("/landscape/sharpness/stderr_increase", s.stderr_increase, {R});
    report.write("/landscape/sharpness/max_increase", s.max_increase, {R});
    report.write("/landscape/sharpness/increases", inc, {R, M});
    report.write_scalar("/landscape/sharpness/base_loss", s.base_loss);
    report.set_attr("/landscape/sharpness", "definition",
                    "increases[r, m] = L(w0 + radius[r] d_m) - L(w0), d_m random filter-normalised (seed + 1000 + m), "
                    "L the " + r.eval.splits.front() + " loss");
  }
}

}  // namespace moescope
