// Benchmark (not a test): the curvature module on a trained model with the Hessian over --max-samples evaluation
// samples (1000, as the vision study). The model is the run that `--run PATH` names (the main job's default run:
// out/demo/runs/fmnist-sparse, a CNN with a top-2-of-8 head), or, without --run, the vision study's gated-MoE head
// (8 experts 512-64-ReLU-10 and a softmax router) on a 784-512 MLP backbone, trained here for --train-steps
// steps on Fashion-MNIST. Prints, from one run:
//   1. HVP time / gradient time: a fresh double backward per product, and with each batch's first-order graph
//      kept (the first product pays for the graphs), amortised over the Lanczos run of 2 (target <= 2.0);
//   2. HVPs Lanczos needs for the top eigenvalue at 1e-4 relative residual vs HVPs of power iteration at
//      PyHessian's rule (relative eigenvalue change < 1e-3; target: >= 3x fewer for Lanczos);
//   3. Hutch++ and XTrace error vs Hutchinson at the same budget, over seeds, on the router block's Hessian
//      (small enough for its exact trace from one HVP per coordinate);
//   4. before/after on the same weights and data: gradient and HVP times (fresh and kept) and HVP/gradient ratios
//      with the paths this build replaced (LibTorch's native convolution double backward in eval mode, experts run
//      one after another) and with the current ones (the double backward by first-order kernels, batched experts),
//      one at a time, and how far the loss, gradient and HVP move between them (relative to the largest entry;
//      target <= 1e-6).
//
// Usage: bench_hvp [--run PATH] [--data DIR] [--max-samples 1000] [--batch-size 250] [--train-steps 300] [--budget 60]
//                  [--trials 20] [--threads N (all cores)] [--device cpu|cuda] [--parts 1234] [--path-reps 3]
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_paths.hpp"
#include "moescope/curvature/eigensolvers.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/curvature/device_lanczos.hpp"
#include "moescope/model/params.hpp"
#include "moescope/curvature/trace.hpp"
#include "moescope/data/image.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/runtime.hpp"

using Clock = std::chrono::steady_clock;
using namespace moescope;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Args {
  std::string run;
  std::string data = kFashionMnistDir;
  std::int64_t max_samples = 1000;
  std::int64_t batch_size = 250;
  std::int64_t train_steps = 300;
  std::int64_t budget = 60;
  std::int64_t trials = 20;
  int threads = 0;
  std::string device = "cpu";
  std::string parts = "1234";  ///< which numbered sections to run
  std::int64_t path_reps = 3;  ///< interleaved repetitions of section 4
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_hvp: %s needs a value\n", f.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (f == "--run") a.run = next();
    else if (f == "--data") a.data = next();
    else if (f == "--max-samples") a.max_samples = std::stoll(next());
    else if (f == "--batch-size") a.batch_size = std::stoll(next());
    else if (f == "--train-steps") a.train_steps = std::stoll(next());
    else if (f == "--budget") a.budget = std::stoll(next());
    else if (f == "--trials") a.trials = std::stoll(next());
    else if (f == "--threads") a.threads = std::stoi(next());
    else if (f == "--device") a.device = next();
    else if (f == "--parts") a.parts = next();
    else if (f == "--path-reps") a.path_reps = std::max<std::int64_t>(1, std::stoll(next()));
    else {
      std::fprintf(stderr, "bench_hvp: unknown flag %s\n", f.c_str());
      std::exit(2);
    }
  }
  return a;
}

// The first three fields of /proc/loadavg ("?" when unreadable): the machine's load while this ran.
std::string load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  double l[3] = {0, 0, 0};
  const int n = std::fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]);
  std::fclose(f);
  if (n != 3) return "?";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return buf;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Section 4: one variant of the model's paths, timed and evaluated.
struct PathRun {
  std::string name;
  double grad_s = 0, fresh_s = 0, kept_s = 0, loss = 0;
  torch::Tensor gradient, hvp;
};

// Largest |a - b| relative to the largest |b|.
double relative(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>() /
         b.to(torch::kFloat64).abs().max().item<double>();
}

void paths_section(const TaskModel& model, const std::vector<torch::Tensor>& params, const BatchLossFn& loss,
                   std::int64_t batches, const torch::Tensor& v, std::int64_t amortise, int path_reps,
                   const std::function<void()>& sync) {
  const bool has_conv = bench_switch::set_fast_double_backward(model, true);
  const bool has_moe = bench_switch::set_batched_experts(model, true) > 0;
  struct Variant {
    std::string name;
    bool fast_conv, batched;
  };
  const std::string before_name = std::string("before: ") + (has_conv ? "native conv double backward" : "") +
                                  (has_conv && has_moe ? ", " : "") + (has_moe ? "experts one by one" : "");
  std::vector<Variant> variants{{before_name, false, false}};
  if (has_moe && has_conv) variants.push_back({"batched experts only", false, true});
  if (has_conv && !has_moe) variants.push_back({"after: conv double backward by first-order kernels", true, false});
  if (has_moe) variants.push_back({std::string("after: ") + (has_conv ? "conv double backward by first-order kernels, " : "") +
                                       "batched experts", true, true});
  if (variants.size() < 2) {
    std::printf("\n4. before/after: the model has neither a CNN backbone nor an MoE head\n");
    return;
  }
  // Repetitions interleave the variants (variant 1, 2, 3, then 1, 2, 3 again, ...) and each time is the minimum
  // over them, so that the load of a shared machine falls on every variant alike and the ratios come from one run.
  std::vector<PathRun> runs(variants.size());
  for (int rep = 0; rep < path_reps; ++rep) {
    for (std::size_t i = 0; i < variants.size(); ++i) {
      bench_switch::set_fast_double_backward(model, variants[i].fast_conv);
      bench_switch::set_batched_experts(model, variants[i].batched);
      PathRun& r = runs[i];
      r.name = variants[i].name;
      const HessianOperator fresh(params, loss, batches);
      if (rep == 0) {
        r.loss = fresh.loss();
        r.gradient = fresh.gradient();  // also a warm-up
        r.hvp = fresh.hvp(v);
      }
      sync();
      auto t0 = Clock::now();
      fresh.gradient();
      sync();
      r.grad_s = rep == 0 ? seconds_since(t0) : std::min(r.grad_s, seconds_since(t0));
      t0 = Clock::now();
      fresh.hvp(v);
      sync();
      r.fresh_s = rep == 0 ? seconds_since(t0) : std::min(r.fresh_s, seconds_since(t0));
      HvpOptions keep;
      keep.keep_graph = true;
      const HessianOperator kept(params, loss, batches, keep);  // one kept graph alive at a time
      sync();
      t0 = Clock::now();
      for (std::int64_t k = 0; k < amortise; ++k) kept.hvp(v);
      sync();
      const double kept_s = seconds_since(t0) / static_cast<double>(amortise);
      r.kept_s = rep == 0 ? kept_s : std::min(r.kept_s, kept_s);
    }
  }
  bench_switch::set_fast_double_backward(model, true);
  bench_switch::set_batched_experts(model, true);
  std::printf("\n4. Before/after on the same weights and data (minimum of %d interleaved repetitions; kept: the "
              "graphs built by the first product, amortised over %lld products; load average %s)\n",
              path_reps, static_cast<long long>(amortise), load_average().c_str());
  for (const auto& r : runs) {
    std::printf("   %-62s gradient %.4f s | HVP fresh %.4f s, ratio %.2f | kept %.4f s, ratio %.2f\n", r.name.c_str(),
                r.grad_s, r.fresh_s, r.fresh_s / r.grad_s, r.kept_s, r.kept_s / r.grad_s);
  }
  const PathRun& before = runs.front();
  const PathRun& after = runs.back();
  std::printf("   after / before: gradient time %.2f, fresh HVP time %.2f, kept HVP time %.2f; kept ratio %.2f -> %.2f "
              "(target <= 2.0: %s)\n",
              after.grad_s / before.grad_s, after.fresh_s / before.fresh_s, after.kept_s / before.kept_s,
              before.kept_s / before.grad_s, after.kept_s / after.grad_s,
              after.kept_s / after.grad_s <= 2.0 ? "met" : "NOT met");
  for (std::size_t i = 1; i < runs.size(); ++i) {
    const PathRun& a = runs[i];
    const PathRun& b = runs[i - 1];
    std::printf("   %s vs the line above: loss %.1e, gradient %.1e, HVP %.1e relative (float32; target <= 1e-6)\n",
                a.name.c_str(), std::abs(a.loss - b.loss) / std::abs(b.loss), relative(a.gradient, b.gradient),
                relative(a.hvp, b.hvp));
  }
}

}  // namespace

int main(int argc, char** argv) {
  reexec_with_torch_environment(argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each line as it is printed, also into a file
  std::printf("OpenMP wait policy: %s\n", std::getenv("OMP_WAIT_POLICY"));
  std::printf("allocator: %s\n", keep_freed_memory().c_str());
  const Args a = parse(argc, argv);
  at::set_num_threads(a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  if (a.device == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "bench_hvp: --device cuda: CUDA is not available\n");
    return 2;
  }
  const torch::Device device(a.device == "cuda" ? torch::kCUDA : torch::kCPU);
  torch::manual_seed(0);

  // The model: a trained run as it was saved, or the gated head trained briefly here, so that the Hessian is that
  // of a model near a (local) fit, not of random weights.
  auto make = [&]() -> std::pair<TaskModel, Dataset> {
    if (!a.run.empty()) {
      LoadedRun lr = load_run(a.run);
      Dataset d = load_dataset(lr.data);
      std::printf("model: run %s (step %lld): %s\n", lr.run.directory().c_str(), static_cast<long long>(lr.run.step()),
                  lr.run.model_config().dump().c_str());
      return {lr.model, std::move(d)};
    }
    DataSpec spec;
    spec.name = "fashion-mnist";
    spec.path = a.data;
    Dataset d = load_dataset(spec);
    const nlohmann::json model_cfg{{"type", "classifier"}, {"backbone", "mlp"},   {"in_channels", 1},
                                   {"image_size", 28},     {"num_classes", 10},   {"backbone_widths", {512}},
                                   {"head", "gated"},      {"experts", 8},        {"head_hidden", 64},
                                   {"dropout", 0.0}};
    TaskModel m = TaskModel::create(model_cfg);
    m.to(device);
    m.module().train();
    torch::optim::Adam opt(m.module().parameters(), torch::optim::AdamOptions(1e-3));
    const std::int64_t n = d.train.size(), bs = 128;
    const auto t0 = Clock::now();
    double last = 0;
    for (std::int64_t s = 0; s < a.train_steps; ++s) {
      const std::int64_t lo = (s * bs) % (n - bs);
      const BatchResult r =
          m.batch_loss(d.train.inputs.slice(0, lo, lo + bs).to(device), d.train.targets.slice(0, lo, lo + bs).to(device));
      opt.zero_grad();
      r.loss.backward();
      opt.step();
      last = r.loss.item<double>();
    }
    std::printf("model: %s\n", model_cfg.dump().c_str());
    std::printf("trained %lld steps in %.1f s: last batch loss %.4f\n", static_cast<long long>(a.train_steps),
                seconds_since(t0), last);
    return {m, std::move(d)};
  };
  auto made = make();  // (not a structured binding: C++17 lambdas below cannot capture one)
  TaskModel model = made.first;
  Dataset data = std::move(made.second);
  model.to(device);
  model.module().eval();
  {
    const EvalResult ev = evaluate(model, data.test.head(2000));
    std::printf("test accuracy %.4f (2000 samples)\n", ev.accuracy);
  }

  const TensorSplit eval = data.train.head(a.max_samples);
  const torch::Tensor xs = eval.inputs.to(device), ys = eval.targets.to(device);
  const std::int64_t count = eval.size(), bs = a.batch_size, batches = (count + bs - 1) / bs;
  const BatchLossFn loss = [&](std::int64_t b) {
    const std::int64_t lo = b * bs, hi = std::min(count, lo + bs);
    const BatchResult r = model.batch_loss(xs.slice(0, lo, hi), ys.slice(0, lo, hi));
    return BatchLoss{r.loss, r.count};
  };
  std::vector<torch::Tensor> params;
  for (const auto& p : select_parameters(model.module(), "all")) params.push_back(p.second);
  const HessianOperator fresh(params, loss, batches);
  std::printf("parameters: %lld, evaluation samples: %lld in %lld batches, threads: %d, device: %s\n",
              static_cast<long long>(fresh.size()), static_cast<long long>(count), static_cast<long long>(batches),
              at::get_num_threads(), a.device.c_str());
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };

  const bool part1 = a.parts.find('1') != std::string::npos, part2 = a.parts.find('2') != std::string::npos;
  const bool part3 = a.parts.find('3') != std::string::npos, part4 = a.parts.find('4') != std::string::npos;
  const torch::Tensor v = torch::randn({fresh.size()}, fresh.options());
  HvpOptions keep;
  keep.keep_graph = true;
  std::int64_t amortise = 8;  // products a kept-graph time is averaged over: the Lanczos run's, when there is one
  if (part1 || part2) {
    // 2 (first, it tells 1 how many products to amortise over). Lanczos on the fresh operator.
    DeviceLanczosOptions lo;
    lo.k = 1;
    lo.tol = 1e-4;
    lo.dtype = torch::kFloat64;
    auto t0 = Clock::now();
    const DeviceEigenResult lz = device_lanczos_eigs(fresh, lo);
    const double lanczos_s = seconds_since(t0);
    amortise = std::max<std::int64_t>(1, lz.matvecs);
    if (part1) {
      // 1. Gradient vs HVP timings.
      const int reps = 5;
      std::vector<double> tg, th;
      for (int r = 0; r < reps; ++r) {
        sync();
        t0 = Clock::now();
        const torch::Tensor g = fresh.gradient();
        sync();
        tg.push_back(seconds_since(t0));
        t0 = Clock::now();
        const torch::Tensor h = fresh.hvp(v);
        sync();
        th.push_back(seconds_since(t0));
      }
      const double grad_s = median(tg), hvp_fresh_s = median(th);
      const HessianOperator kept(params, loss, batches, keep);
      sync();
      t0 = Clock::now();
      for (std::int64_t i = 0; i < amortise; ++i) kept.hvp(v);
      sync();
      const double hvp_kept_s = seconds_since(t0) / static_cast<double>(amortise);

      std::printf("\n1. HVP time / gradient time (median of %d; gradient %.4f s)\n", reps, grad_s);
      std::printf("   fresh double backward per product: %.4f s  ratio %.2f\n", hvp_fresh_s, hvp_fresh_s / grad_s);
      std::printf("   kept first-order graphs, amortised over the %lld products of the Lanczos run: %.4f s  ratio %.2f "
                  "(target <= 2.0)\n",
                  static_cast<long long>(amortise), hvp_kept_s, hvp_kept_s / grad_s);
    }
    if (part2) {
      // Power iteration, PyHessian's rule and the same accuracy as Lanczos.
      PowerOptions po;  // PyHessian's defaults: tol 1e-3 on the relative eigenvalue change, maxIter 100
      t0 = Clock::now();
      const EigenResult pw = power_eigs(fresh, po);
      const double power_s = seconds_since(t0);
      PowerOptions po_res = po;  // the same accuracy as Lanczos: relative residual 1e-4
      po_res.rule = PowerStopRule::Residual;
      po_res.tol = 1e-4;
      po_res.max_iter = 1000;
      const EigenResult pw_res = power_eigs(fresh, po_res);

      std::printf("\n2. Top eigenvalue: HVPs\n");
      std::printf("   torch Lanczos (tol 1e-4): lambda_1 = %.6g, relative residual %.2e, %lld HVPs (%lld steps + 1 residual "
                  "check), %.2f s, %s\n",
                  lz.eigenvalues(0), lz.residuals(0) / std::abs(lz.eigenvalues(0)), static_cast<long long>(lz.matvecs),
                  static_cast<long long>(lz.iterations), lanczos_s, status_name(lz.status));
      std::printf("   power iteration (PyHessian: tol 1e-3 on the eigenvalue change): lambda_1 = %.6g, relative residual "
                  "%.2e, %lld HVPs, %.2f s, %s\n",
                  pw.eigenvalues(0), pw.residuals(0) / std::abs(pw.eigenvalues(0)), static_cast<long long>(pw.matvecs),
                  power_s, status_name(pw.status));
      std::printf("   power iteration to relative residual 1e-4: %lld HVPs, %s\n", static_cast<long long>(pw_res.matvecs),
                  status_name(pw_res.status));
      std::printf("   ratio power (PyHessian rule) / Lanczos: %.2f (target >= 3); power (residual 1e-4) / Lanczos: %.2f\n",
                  static_cast<double>(pw.matvecs) / static_cast<double>(lz.matvecs),
                  static_cast<double>(pw_res.matvecs) / static_cast<double>(lz.matvecs));
    }
  }
  if (part3) {
    // 3. Trace estimators on the router block, whose exact trace is n_r HVPs away.
    std::vector<torch::Tensor> router;
    for (const auto& p : select_parameters(model.module(), "router")) router.push_back(p.second);
    const HessianOperator rop(router, loss, batches, keep);
    const std::int64_t nr = rop.size();
    const auto t0 = Clock::now();
    Eigen::MatrixXd hr(nr, nr);
    for (std::int64_t j = 0; j < nr; ++j) hr.col(j) = rop.apply(Eigen::VectorXd::Unit(nr, j));
    hr = (0.5 * (hr + hr.transpose())).eval();  // eval: the transpose aliases hr
    const double exact = hr.trace();
    const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(hr, Eigen::EigenvaluesOnly).eigenvalues();
    const Eigen::VectorXd evd = ev.reverse().cwiseAbs();
    std::printf("\n3. Trace of the router block's Hessian (n = %lld; exact %.6g from %lld HVPs in %.1f s; "
                "|lambda| top 1/10/50: %.3g %.3g %.3g, sum of the top 10 = %.0f%% of sum |lambda|)\n",
                static_cast<long long>(nr), exact, static_cast<long long>(nr), seconds_since(t0), evd(0),
                evd(std::min<Eigen::Index>(9, nr - 1)), evd(std::min<Eigen::Index>(49, nr - 1)),
                100.0 * evd.head(std::min<Eigen::Index>(10, nr)).sum() / evd.sum());
    // The estimators only see a LinearOperator: the dense block stands in for the HVPs (same matrix, no cost).
    const DenseOperator dense(hr);
    double rms[3] = {0, 0, 0};
    for (std::int64_t t = 0; t < a.trials; ++t) {
      TraceOptions o;
      o.probes = a.budget;
      o.seed = static_cast<std::uint64_t>(t);
      const double e[3] = {hutchinson_trace(dense, o).estimate, hutchpp_trace(dense, o).estimate,
                           xtrace_trace(dense, o).estimate};
      for (int m = 0; m < 3; ++m) rms[m] += (e[m] - exact) * (e[m] - exact);
    }
    for (double& r : rms) r = std::sqrt(r / static_cast<double>(a.trials));
    std::printf("   relative RMS error over %lld seeds at %lld matvecs each: Hutchinson %.3e, Hutch++ %.3e (%.2fx "
                "smaller), XTrace %.3e (%.2fx smaller)\n",
                static_cast<long long>(a.trials), static_cast<long long>(a.budget), rms[0] / std::abs(exact),
                rms[1] / std::abs(exact), rms[0] / rms[1], rms[2] / std::abs(exact), rms[0] / rms[2]);
    // One run through the real HVPs too, to show the same numbers come out of the operator itself.
    TraceOptions o1;
    o1.probes = a.budget;
    const TraceResult hx = xtrace_trace(rop, o1), hpp = hutchpp_trace(rop, o1), hh = hutchinson_trace(rop, o1);
    std::printf("   through the HVP operator (seed 0): Hutchinson %.6g +- %.2g, Hutch++ %.6g +- %.2g, XTrace %.6g +- %.2g\n",
                hh.estimate, hh.std_error, hpp.estimate, hpp.std_error, hx.estimate, hx.std_error);
  }
  if (part4) paths_section(model, params, loss, batches, v, amortise, static_cast<int>(a.path_reps), sync);
  return 0;
}
