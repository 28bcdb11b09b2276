// moescope landscape RUN --data D --dirs random|filter|layer|eigen|RUN2|FILE.h5 --x -1:1:51 [--y -1:1:51]
// [--split train,test] [--params SPEC] [--ignore biasbn] [--max-samples N] [--batch-size B] [--seed S] [--resume]
// [--format moescope|loss-landscape] [--save-dirs FILE.h5] [--sharpness R,..] -o R.h5
// Loss and accuracy on a 1-D or 2-D grid around a trained run's weights (Li et al. 2018), resumable.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <optional>
#include <iostream>

#include "common.hpp"
#include "moescope/curvature/eigen.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/curvature/params.hpp"
#include "moescope/landscape/directions.hpp"
#include "moescope/landscape/surface.hpp"
#include "moescope/train/task.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/sha256.hpp"

namespace moescope::cli {
namespace {

struct LandscapeArgs {
  std::string run;
  std::string output;
  std::string data;
  std::string dirs;
  std::string x;
  std::string y;
  std::vector<std::string> splits{"train", "test"};
  std::string params = "all";
  std::string ignore = "biasbn";
  std::int64_t max_samples = 0;
  std::int64_t batch_size = 512;
  std::uint64_t seed = 0;
  bool resume = false;
  std::string format = "moescope";
  std::string save_dirs;
  std::int64_t max_points = 0;
  std::vector<double> sharpness;
  std::int64_t sharpness_dirs = 10;
  bool perplexity = false;
};

std::string join(const std::vector<std::string>& v, const char* sep = ",") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

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

// "R.h5" -> "R.loss-landscape.h5".
std::string loss_landscape_path(const std::string& out) {
  const std::string ext = ".h5";
  const bool has = out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0;
  return (has ? out.substr(0, out.size() - ext.size()) : out) + ".loss-landscape.h5";
}

Direction random_dir(const std::vector<NamedParameter>& params, Normalization n, SmallTensorRule small,
                     std::uint64_t seed) {
  RandomDirectionOptions o;
  o.normalization = n;
  o.small = small;
  o.seed = seed;
  return random_direction(params, o);
}

// The top `k` Hessian eigenvectors of the loss on `split` over the selected parameters (unit vectors).
std::vector<Direction> eigen_dirs(const TaskModel& model, const std::vector<NamedParameter>& params,
                                  const TensorSplit& split, const std::string& split_name, std::int64_t batch_size,
                                  std::int64_t k, std::uint64_t seed, std::vector<double>* eigenvalues,
                                  std::vector<double>* residuals) {
  std::vector<torch::Tensor> ts;
  for (const auto& p : params) ts.push_back(p.second);
  const std::int64_t n = split.size();
  const std::int64_t batches = (n + batch_size - 1) / batch_size;
  auto loss = [&](std::int64_t b) {
    const TensorSplit s = split.slice(b * batch_size, std::min(n, (b + 1) * batch_size));
    const BatchResult r = model.batch_loss(s.inputs, s.targets);
    return BatchLoss{r.loss, r.count};
  };
  HessianOperator op(ts, loss, batches);
  if (op.size() <= k) fail_input("--dirs eigen", fmt::format("the selected parameters hold only {} values", op.size()));
  LanczosOptions lo;
  lo.k = k;
  lo.seed = seed;
  lo.max_steps = std::min<std::int64_t>(op.size(), 100);
  lo.tol = 1e-6;
  const EigenResult r = lanczos_eigs(op, lo);
  if (r.status != SolverStatus::Converged)
    spdlog::warn("landscape: Lanczos stopped with status {} after {} steps; see the residuals in the report",
                 status_name(r.status), r.iterations);
  if (r.eigenvalues.size() < k) throw std::runtime_error("--dirs eigen: Lanczos found fewer than k eigenpairs");
  std::vector<Direction> out;
  for (std::int64_t i = 0; i < k; ++i) {
    const Eigen::VectorXd v = r.eigenvectors.col(i);
    auto flat = torch::from_blob(const_cast<double*>(v.data()), {v.size()}, torch::kFloat64).clone();
    Direction d = direction_from_flat(params, flat, "eigen");
    d.source = fmt::format("Hessian eigenvector {} of the {} loss, eigenvalue {:.9g}, residual {:.3g}", i,
                           split_name, r.eigenvalues[i], r.residuals[i]);
    eigenvalues->push_back(r.eigenvalues[i]);
    residuals->push_back(r.residuals[i]);
    spdlog::info("landscape: eigen direction {}: eigenvalue {:.6g} (residual {:.2g})", i, r.eigenvalues[i],
                 r.residuals[i]);
    out.push_back(std::move(d));
  }
  return out;
}

void run(const LandscapeArgs& a, const Context& ctx) {
  start_torch_work(ctx);
  const Axis ax = parse_axis(a.x, "--x");
  std::optional<Axis> ay;
  if (!a.y.empty()) ay = parse_axis(a.y, "--y");
  if (a.batch_size < 1) throw InputError("--batch-size must be at least 1");
  if (a.max_samples < 0) throw InputError("--max-samples must not be negative");
  if (a.splits.empty()) throw InputError("--split: name at least one of train, valid, test");
  if (a.sharpness_dirs < 1) throw InputError("--sharpness-dirs must be at least 1");
  for (double r : a.sharpness)
    if (!std::isfinite(r) || r <= 0) throw InputError(fmt::format("--sharpness: radius {} must be positive", r));
  const SmallTensorRule small = parse_small_tensor_rule(a.ignore, "--ignore");

  const std::string journal = a.output + ".partial";
  if (!a.resume && std::filesystem::exists(journal))
    fail_input(journal, "holds the points of an unfinished run: add --resume to continue it, or delete it to start over");

  const LoadedRun loaded = load_run(a.run);
  const DataSpec spec = parse_data_arg(a.data, loaded.data);
  spdlog::info("landscape: loading data '{}'", spec.name);
  const TaskData data = load_task_data(spec);
  std::vector<TensorSplit> splits;
  for (const auto& name : a.splits) {
    splits.push_back(data.split(name).head(a.max_samples));
    if (splits.back().size() == 0) fail_input("--split " + name, "the split is empty");
  }
  const TaskModel& model = loaded.model;
  const auto params = select_parameters(model.module(), a.params);
  std::int64_t nparams = 0;
  for (const auto& p : params) nparams += p.second.numel();
  const std::size_t ndirs = ay ? 2 : 1;

  // Directions.
  std::vector<Direction> dirs;
  std::vector<double> eigenvalues, eigen_residuals;
  std::string dirs_kind = a.dirs;
  if (a.dirs == "random" || a.dirs == "filter" || a.dirs == "layer") {
    const Normalization n = a.dirs == "random" ? Normalization::None : parse_normalization(a.dirs, "--dirs");
    for (std::size_t k = 0; k < ndirs; ++k) dirs.push_back(random_dir(params, n, small, a.seed + k));
  } else if (a.dirs == "eigen") {
    spdlog::info("landscape: top {} Hessian eigenvector(s) of the {} loss over {} parameters", ndirs, a.splits[0],
                 nparams);
    dirs = eigen_dirs(model, params, splits[0], a.splits[0], a.batch_size, static_cast<std::int64_t>(ndirs), a.seed,
                      &eigenvalues, &eigen_residuals);
  } else if (is_run_path(a.dirs)) {
    dirs_kind = "interpolation";
    const LoadedRun other = load_run(a.dirs);
    if (other.model.config() != model.config())
      fail_input(a.dirs, "the model differs from " + a.run + "'s (its config.json \"model\")");
    dirs.push_back(difference_direction(params, select_parameters(other.model.module(), a.params), a.dirs));
    // A 2-D interpolation plot: the second axis is a filter-normalised random direction.
    if (ay) dirs.push_back(random_dir(params, Normalization::Filter, small, a.seed + 1));
  } else if (std::filesystem::is_regular_file(a.dirs)) {
    dirs_kind = "file";
    std::vector<std::string> labels;
    dirs = load_directions(a.dirs, params, &labels);
    if (dirs.size() < ndirs)
      fail_input(a.dirs, fmt::format("holds {} direction(s), a {}-D grid needs {}", dirs.size(), ndirs, ndirs));
    dirs.resize(ndirs);
  } else {
    fail_input("--dirs " + a.dirs, "expected random, filter, layer, eigen, a run directory or a directions .h5 file");
  }
  if (!a.save_dirs.empty()) {
    std::vector<std::string> labels{"x", "y"};
    labels.resize(dirs.size());
    save_directions(a.save_dirs, dirs, labels, make_provenance(ctx, loaded.weights_file, static_cast<std::int64_t>(a.seed)));
    spdlog::info("landscape: wrote directions to {}", a.save_dirs);
  }

  // Metrics and the evaluator: batches are views of the tensors loaded once.
  std::vector<std::string> metrics;
  for (const auto& s : a.splits) {
    metrics.push_back(s + "_loss");
    metrics.push_back(s + "_acc");
    if (data.is_text) metrics.push_back(s + "_ppl");
  }
  const PointEvaluator evaluate_point = [&] {
    std::vector<double> v;
    for (const auto& s : splits) {
      const EvalResult r = evaluate(model, s, a.batch_size);
      v.push_back(r.loss);
      v.push_back(r.accuracy);
      if (data.is_text) v.push_back(r.perplexity);
    }
    return v;
  };

  SurfaceOptions so;
  so.x = ax;
  so.y = ay;
  so.metrics = metrics;
  so.journal = journal;
  so.resume = a.resume;
  so.max_points = a.max_points;
  nlohmann::json settings = {{"weights", loaded.weights_file},     {"data", spec},          {"splits", a.splits},
                             {"max_samples", a.max_samples},    {"params", a.params},     {"dirs", a.dirs},
                             {"directions_sha256", fingerprint(dirs)}};
  so.settings = settings.dump();
  const bool tty = ::isatty(2) != 0;
  const std::int64_t total = static_cast<std::int64_t>(ax.count * (ay ? ay->count : 1));
  const std::int64_t every = std::max<std::int64_t>(1, total / 10);
  so.progress = [&](const SurfaceProgress& p) {
    const double rate = p.evaluated / std::max(p.seconds, 1e-9);
    const double eta = (p.total - p.done) / std::max(rate, 1e-9);
    if (tty) {
      std::fprintf(stderr, "\rlandscape: %lld/%lld points, %.2f points/s, ETA %.0f s   ", static_cast<long long>(p.done),
                   static_cast<long long>(p.total), rate, eta);
      if (p.done == p.total) std::fprintf(stderr, "\n");
    } else if (p.done % every == 0 || p.done == p.total) {
      spdlog::info("landscape: {}/{} points, {:.2f} points/s, ETA {:.0f} s", p.done, p.total, rate, eta);
    }
  };
  if (a.resume && !std::filesystem::exists(journal)) spdlog::info("landscape: no {} to resume; starting", journal);
  spdlog::info("landscape: {} grid of {} points over {} parameters ({}), splits {}", ay ? "2-D" : "1-D", total,
               nparams, a.params, join(a.splits));

  Surface surface;
  {
    Perturbation pert(params, dirs);
    surface = compute_surface(pert, evaluate_point, so);
  }
  if (tty && !surface.complete()) std::fprintf(stderr, "\n");
  if (surface.resumed > 0) spdlog::info("landscape: {} points resumed from {}", surface.resumed, journal);
  if (!surface.complete()) {
    std::int64_t done = 0;
    for (auto c : surface.computed) done += c;
    std::cout << fmt::format("stopped after {} points ({} of {} done); run again with --resume to continue\n",
                             surface.evaluated, done, total);
    return;
  }

  std::optional<SharpnessResult> sharp;
  if (!a.sharpness.empty()) {
    SharpnessOptions sh;
    sh.radii = a.sharpness;
    sh.directions = a.sharpness_dirs;
    sh.seed = a.seed + 1000;
    sh.small = small;
    spdlog::info("landscape: sharpness at {} radii over {} directions on the {} loss", a.sharpness.size(),
                 a.sharpness_dirs, a.splits[0]);
    sharp = sharpness(params, [&] { return evaluate(model, splits[0], a.batch_size).loss; }, sh);
  }

  const Provenance prov = make_provenance(ctx, loaded.weights_file, static_cast<std::int64_t>(a.seed));
  ReportWriter report(a.output);
  report.write_provenance(prov);
  write_surface(report, surface, "/landscape");
  report.set_attr("/landscape", "dirs", dirs_kind);
  report.set_attr("/landscape", "dirs_arg", a.dirs);
  report.set_attr("/landscape", "params", a.params);
  report.set_attr("/landscape", "parameter_count", nparams);
  report.set_attr("/landscape", "ignore", a.ignore);
  report.set_attr("/landscape", "splits", join(a.splits));
  report.set_attr("/landscape", "max_samples", a.max_samples);
  report.set_attr("/landscape", "data", nlohmann::json(spec).dump());
  report.set_attr("/landscape", "seed", static_cast<std::int64_t>(a.seed));
  report.set_attr("/landscape", "directions_sha256", fingerprint(dirs));
  report.set_attr("/landscape", "accuracy", std::string("fraction of argmax hits in [0, 1]"));
  const char* label[2] = {"x", "y"};
  for (std::size_t k = 0; k < dirs.size(); ++k) {
    const std::string p = std::string(label[k]) + "_direction_";
    report.set_attr("/landscape", p + "kind", dirs[k].kind);
    report.set_attr("/landscape", p + "normalization", std::string(normalization_name(dirs[k].normalization)));
    report.set_attr("/landscape", p + "norm", dirs[k].norm());
    report.set_attr("/landscape", p + "source", dirs[k].source);
  }
  if (!eigenvalues.empty()) {
    report.write("/landscape/eigenvalues", eigenvalues, {eigenvalues.size()});
    report.write("/landscape/eigen_residuals", eigen_residuals, {eigen_residuals.size()});
  }
  if (sharp) {
    const std::size_t R = sharp->radii.size(), M = static_cast<std::size_t>(a.sharpness_dirs);
    std::vector<double> inc;
    for (const auto& row : sharp->increases) inc.insert(inc.end(), row.begin(), row.end());
    report.write("/landscape/sharpness/radius", sharp->radii, {R});
    report.write("/landscape/sharpness/mean_increase", sharp->mean_increase, {R});
    report.write("/landscape/sharpness/stderr_increase", sharp->stderr_increase, {R});
    report.write("/landscape/sharpness/max_increase", sharp->max_increase, {R});
    report.write("/landscape/sharpness/increases", inc, {R, M});
    report.write_scalar("/landscape/sharpness/base_loss", sharp->base_loss);
    report.set_attr("/landscape/sharpness", "definition",
                    "increases[r, m] = L(w0 + radius[r] d_m) - L(w0), d_m random filter-normalised (seed + 1000 + m), "
                    "L the " + a.splits[0] + " loss");
  }
  report.commit();
  if (a.format == "loss-landscape") {
    write_loss_landscape_surface(loss_landscape_path(a.output), surface, prov);
    spdlog::info("wrote {}", loss_landscape_path(a.output));
  }
  std::error_code ec;
  std::filesystem::remove(journal, ec);

  // Summary: the centre-most point and the extremes of the first metric.
  const auto& first = surface.values[0];
  const auto [lo, hi] = std::minmax_element(first.begin(), first.end());
  std::cout << fmt::format("{}: {} points, {} evaluated, min {:.6g}, max {:.6g}\n", metrics[0], first.size(),
                           surface.evaluated, *lo, *hi);
  if (sharp)
    for (std::size_t k = 0; k < sharp->radii.size(); ++k)
      std::cout << fmt::format("sharpness r={:.4g}: mean increase {:.6g} +- {:.2g}, max {:.6g}\n", sharp->radii[k],
                               sharp->mean_increase[k], sharp->stderr_increase[k], sharp->max_increase[k]);
  spdlog::info("wrote {}", a.output);
}

}  // namespace

void add_landscape(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<LandscapeArgs>();
  auto* sub = app.add_subcommand("landscape", "Loss surface around a run's weights on a 1-D or 2-D grid (resumable)");
  sub->add_option("run", args->run, "Run directory, step directory or its model.safetensors")->required();
  sub->add_option("-o,--output", args->output, "Report to write (HDF5)")->required();
  sub->add_option("--data", args->data, "Data: NAME, NAME:PATH or a DataSpec .json (default: the run's)");
  sub->add_option("--dirs", args->dirs,
                  "random (Gaussian), filter, layer (normalised Gaussian), eigen (top Hessian eigenvectors), a second "
                  "run (interpolation), or a directions .h5 (--save-dirs)")
      ->required();
  sub->add_option("--x", args->x, "x axis MIN:MAX:COUNT, e.g. -1:1:51")->required();
  sub->add_option("--y", args->y, "y axis MIN:MAX:COUNT for a 2-D surface");
  sub->add_option("--split", args->splits, "Splits to evaluate: train,valid,test")
      ->delimiter(',')
      ->check(CLI::IsMember({"train", "valid", "test"}));
  sub->add_option("--params", args->params, "Parameters to move: all, router, expert:L.E, re:REGEX");
  sub->add_option("--ignore", args->ignore,
                  "Random directions on dim <= 1 tensors: biasbn (zero), weights (copy the weights), none (normalise)");
  sub->add_option("--max-samples", args->max_samples, "Evaluate on the first N samples of each split (0: all)");
  sub->add_option("--batch-size", args->batch_size, "Evaluation batch size");
  sub->add_option("--seed", args->seed, "Seed of random directions (x: S, y: S+1)");
  sub->add_flag("--resume", args->resume, "Continue from OUTPUT.partial, skipping finished points");
  sub->add_option("--format", args->format,
                  "moescope, or loss-landscape: also write OUTPUT-stem.loss-landscape.h5 for its plot scripts")
      ->check(CLI::IsMember({"moescope", "loss-landscape"}));
  sub->add_option("--save-dirs", args->save_dirs, "Write the directions to this HDF5 file (reusable with --dirs)");
  sub->add_option("--max-points", args->max_points, "Evaluate at most N points now, then stop (resume later)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--sharpness", args->sharpness, "Also: mean loss increase at these radii, e.g. 0.05,0.1")
      ->delimiter(',');
  sub->add_option("--sharpness-dirs", args->sharpness_dirs, "Random filter-normalised directions for --sharpness");
  sub->callback([args, &ctx] { run(*args, ctx); });
}

}  // namespace moescope::cli
