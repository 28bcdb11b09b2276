// Benchmark (not a test): cost of one loss-surface grid point (perturb in place, evaluate, journal the result)
// as a ratio to one plain evaluate() pass over the same data (target <= 1.1), both measured in this run as
// medians over interleaved repetitions. Also the in-place perturbation alone as a fraction of an evaluation.
//
// Usage: bench_landscape [--data fashion-mnist|clustered] [--samples 2000] [--grid 5] [--threads N]
// The default is Fashion-MNIST when /usr/share/datasets/fashion-mnist exists (MLP 784-256-256 backbone, top-2 of
// 8 experts head), else the synthetic clustered task (d = 32, 20000 samples).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "moescope/model/params.hpp"
#include "moescope/landscape/directions.hpp"
#include "moescope/landscape/surface.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/runtime.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace moescope;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  moescope::reexec_with_torch_environment(argv);
  std::printf("OpenMP wait policy: %s\n", std::getenv("OMP_WAIT_POLICY"));
  std::printf("allocator: %s\n", moescope::keep_freed_memory().c_str());
  std::string data = fs::exists("/usr/share/datasets/fashion-mnist") ? "fashion-mnist" : "clustered";
  std::int64_t samples = 2000, grid = 5;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_landscape: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--data") data = next();
    else if (a == "--samples") samples = std::stoll(next());
    else if (a == "--grid") grid = std::stoll(next());
    else if (a == "--threads") threads = std::stoi(next());
    else {
      std::fprintf(stderr, "usage: bench_landscape [--data fashion-mnist|clustered] [--samples N] [--grid G] [--threads N]\n");
      return 2;
    }
  }
  if (threads > 0) torch::set_num_threads(threads);

  DataSpec spec;
  spec.name = data;
  nlohmann::json model_cfg;
  if (data == "clustered") {
    spec.clustered.samples = std::max<std::int64_t>(samples * 2, 1000);
    spec.clustered.dim = 32;
    spec.clustered.classes = 10;
    model_cfg = {{"type", "classifier"}, {"backbone", "mlp"}, {"head", "sparse"}, {"in_channels", 32},
                 {"image_size", 1},      {"num_classes", 10}, {"backbone_widths", {256, 256}},
                 {"head_hidden", 64},    {"experts", 8},      {"top_k", 2}};
  } else {
    spec.max_train = samples;
    model_cfg = {{"type", "classifier"}, {"backbone", "mlp"}, {"head", "sparse"}, {"in_channels", 1},
                 {"image_size", 28},     {"num_classes", 10}, {"backbone_widths", {256, 256}},
                 {"head_hidden", 64},    {"experts", 8},      {"top_k", 2}};
  }
  const Dataset td = load_dataset(spec);
  const TensorSplit split = td.train.head(samples);
  torch::manual_seed(0);
  const TaskModel model = TaskModel::create(model_cfg);
  model.module().eval();
  const auto params = select_parameters(model.module(), "all");
  std::int64_t nparams = 0;
  for (const auto& p : params) nparams += p.second.numel();

  RandomDirectionOptions ro;
  ro.seed = 1;
  const Direction dx = random_direction(params, ro);
  ro.seed = 2;
  const Direction dy = random_direction(params, ro);

  const std::string tmp = (fs::temp_directory_path() / ("bench_landscape_" + std::to_string(::getpid()))).string();
  fs::create_directories(tmp);

  evaluate(model, split, 512);  // warm-up
  const std::int64_t points = grid * grid;
  std::vector<double> plain, per_point, perturb;
  // Interleave: one plain pass, then one grid row, so machine load drifts hit both alike.
  SurfaceOptions so;
  so.x = Axis{-1.0, 1.0, grid};
  so.y = Axis{-1.0, 1.0, grid};
  so.metrics = {"train_loss", "train_acc"};
  so.journal = tmp + "/bench.h5.partial";
  auto last = std::chrono::steady_clock::now();
  so.progress = [&](const Progress&) {
    const auto now = std::chrono::steady_clock::now();
    per_point.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
  };
  const PointEvaluator eval = [&] {
    const EvalResult r = evaluate(model, split, 512);
    return std::vector<double>{r.loss, r.accuracy};
  };
  {
    Perturbation pert(params, {dx, dy});
    for (std::int64_t row = 0; row < grid; ++row) {
      auto t0 = Clock::now();
      evaluate(model, split, 512);
      plain.push_back(seconds_since(t0));
      so.max_points = grid;  // one row per call, resumed from the journal
      so.resume = row > 0;
      last = std::chrono::steady_clock::now();
      compute_surface(pert, eval, so);
    }
    for (int k = 0; k < 20; ++k) {
      auto t0 = Clock::now();
      pert.set(0.3, -0.7);
      perturb.push_back(seconds_since(t0));
    }
  }
  fs::remove_all(tmp);
  if (static_cast<std::int64_t>(per_point.size()) != points) {
    std::fprintf(stderr, "bench_landscape: expected %lld points, timed %zu\n", static_cast<long long>(points),
                 per_point.size());
    return 1;
  }
  const double t_plain = median(plain), t_point = median(per_point), t_set = median(perturb);
  std::printf("data %s, %lld samples, %lld parameters, %lld grid points, %d threads\n", data.c_str(),
              static_cast<long long>(split.size()), static_cast<long long>(nparams), static_cast<long long>(points),
              torch::get_num_threads());
  std::printf("plain evaluate: median %.4f s; grid point: median %.4f s; perturbation alone: %.5f s\n", t_plain,
              t_point, t_set);
  std::printf("cost per grid point / plain evaluation: %.3f (target <= 1.1)\n", t_point / t_plain);
  std::printf("perturbation / plain evaluation: %.4f\n", t_set / t_plain);
  return 0;
}
