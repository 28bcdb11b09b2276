// Benchmark (not a test): activation statistics (every token to every expert, float64 overlap accumulation) on
// the vision study's models against a plain evaluate() pass over the same data in the same process.
// Prints, per model: tokens/s of model_activations and the ratio of its time to evaluate()'s (target <= E + 1:
// the backbone runs once and each of the E experts sees every token, where evaluate runs k of them), with the
// experts run one after another (the path batched experts replaced: "before") and batched ("after").
//
// Usage: bench_activations [--samples 1024] [--batch 256] [--threads N] [--repeats 3] [--mlp-only]
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_paths.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/model/classifier.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/runtime.hpp"

using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <typename F>
double min_seconds(int repeats, F&& f) {
  double best = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    best = i == 0 ? seconds_since(t0) : std::min(best, seconds_since(t0));
  }
  return best;
}

void bench(const char* name, const nlohmann::json& config, const moescope::TensorSplit& data, std::int64_t batch,
           int repeats) {
  using namespace moescope;
  torch::manual_seed(0);
  const TaskModel model = TaskModel::create(config);
  model.module().eval();
  const std::int64_t E = model.moe_layers().at(0).layer->num_experts();
  ActivationsOptions o;
  o.batch_size = batch;
  // Repetitions interleave the two paths (before, after, before, after, ...) and each time is the minimum over
  // them, so that a shared machine's load falls on both alike.
  double ev[2] = {0, 0}, act[2] = {0, 0};
  evaluate(model, data, batch);  // warm-up (allocator, thread pool)
  for (int rep = 0; rep < repeats; ++rep) {
    for (const int b : {0, 1}) {
      bench_switch::set_batched_experts(model, b == 1);
      const double te = min_seconds(1, [&] { evaluate(model, data, batch); });
      const double ta = min_seconds(1, [&] { model_activations(model, data, o); });
      ev[b] = rep == 0 ? te : std::min(ev[b], te);
      act[b] = rep == 0 ? ta : std::min(act[b], ta);
    }
  }
  for (const int b : {0, 1}) {
    const double ratio = act[b] / ev[b];
    std::printf("%-28s %-7s E=%-2lld samples=%-6lld evaluate %8.3f s  activations %8.3f s  %10.0f tokens/s  "
                "ratio %.2f (target <= %lld: %s)\n",
                name, b == 1 ? "after" : "before", static_cast<long long>(E), static_cast<long long>(data.size()),
                ev[b], act[b], static_cast<double>(data.size()) / act[b], ratio, static_cast<long long>(E + 1),
                ratio <= static_cast<double>(E + 1) ? "met" : "NOT met");
  }
  std::printf("%-28s activations with batched experts: %.2fx the throughput of one expert after another\n", name,
              act[0] / act[1]);
}

}  // namespace

int main(int argc, char** argv) {
  moescope::reexec_with_torch_environment(argv);
  std::printf("OpenMP wait policy: %s\n", std::getenv("OMP_WAIT_POLICY"));
  std::printf("allocator: %s\n", moescope::keep_freed_memory().c_str());
  std::int64_t samples = 1024, batch = 256;
  int threads = 0, repeats = 3;
  bool mlp_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--samples") samples = std::atoll(next());
    else if (a == "--batch") batch = std::atoll(next());
    else if (a == "--threads") threads = std::atoi(next());
    else if (a == "--repeats") repeats = std::max(1, std::atoi(next()));
    else if (a == "--mlp-only") mlp_only = true;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // one line per model as it finishes
  if (threads > 0) at::set_num_threads(threads);
  std::printf("threads %d, minimum of %d interleaved runs\n", at::get_num_threads(), repeats);
  using namespace moescope;
  torch::manual_seed(1);

  if (!mlp_only) {
    // The vision study's default models: ResNet-18 on 3x32x32 (CIFAR-shaped inputs) with the E = 8 heads.
    TensorSplit images;
    images.inputs = torch::randn({samples, 3, 32, 32});
    images.targets = torch::randint(0, 10, {samples}, torch::kLong);
    for (const auto head : {HeadKind::Gated, HeadKind::Sparse}) {
      nlohmann::json j = ClassifierOptions::vision_study(head);
      j["type"] = "classifier";
      bench(head == HeadKind::Gated ? "resnet18 + gated head" : "resnet18 + top-2 sparse head", j, images, batch,
            repeats);
    }
  }
  // The vision study's gated head on a 784-512 MLP (the model bench_train and bench_hvp use), on Fashion-MNIST-shaped
  // inputs.
  TensorSplit images28;
  images28.inputs = torch::randn({samples * 4, 1, 28, 28});
  images28.targets = torch::randint(0, 10, {samples * 4}, torch::kLong);
  const nlohmann::json gated_mlp = {{"type", "classifier"}, {"backbone", "mlp"},   {"in_channels", 1},
                                    {"image_size", 28},     {"num_classes", 10},   {"backbone_widths", {512}},
                                    {"head", "gated"},      {"experts", 8},        {"head_hidden", 64},
                                    {"dropout", 0.0}};
  bench("mlp 784-512 + gated head", gated_mlp, images28, batch, repeats);
  // A small MLP backbone on clustered-task-shaped inputs, where the head is most of the cost.
  TensorSplit vecs;
  vecs.inputs = torch::randn({samples * 16, 16});
  vecs.targets = torch::randint(0, 10, {samples * 16}, torch::kLong);
  nlohmann::json mlp = {{"type", "classifier"}, {"backbone", "mlp"}, {"head", "sparse"}, {"in_channels", 16},
                        {"image_size", 1}, {"num_classes", 10}, {"backbone_widths", {64}}, {"head_hidden", 64},
                        {"experts", 8}, {"top_k", 2}};
  bench("mlp + top-2 sparse head", mlp, vecs, batch, repeats);
  return 0;
}
