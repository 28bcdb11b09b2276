// Benchmark (not a test): training throughput of the default run (Fashion-MNIST, small CNN, top-2 of 8 experts,
// AdamW, load balancing), and the time of a step split into data, forward, regularisers, backward and optimiser.
// Prints samples/s and each part as a fraction of the step, from one run. Add --omoe / --weight-orth / --guo-orth
// to see what each costs (printed as a ratio to the plain run measured in the same process).
//
// Usage: bench_train [--steps 100] [--threads N] [--data fashion-mnist|clustered] [--out DIR]
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "moescope/data/image.hpp"
#include "moescope/train/trainer.hpp"
#include "moescope/util/runtime.hpp"

namespace fs = std::filesystem;
using namespace moescope;

namespace {

TrainResult timed(RunConfig c, const Dataset& data, const std::string& name) {
  c.name = name;
  fs::remove_all(fs::path(c.out_dir) / name);
  TrainOptions o;
  o.data = &data;
  return train_run(c, o);
}

double per_sample(const TrainResult& r) {
  const StepTimes& t = r.times;
  return (t.data + t.forward + t.regularisers + t.backward + t.optimiser) / static_cast<double>(r.samples);
}

void print(const char* label, const TrainResult& r) {
  const StepTimes& t = r.times;
  const double step = t.data + t.forward + t.regularisers + t.backward + t.optimiser;
  std::printf("%-26s %9.0f samples/s | data %4.1f%%  forward %4.1f%%  regularisers %4.1f%%  backward %4.1f%%  "
              "optimiser %4.1f%% | %.2f ms/step\n",
              label, static_cast<double>(r.samples) / step, 100 * t.data / step, 100 * t.forward / step,
              100 * t.regularisers / step, 100 * t.backward / step, 100 * t.optimiser / step,
              1e3 * step / static_cast<double>(r.steps - r.first_step));
}

}  // namespace

int main(int argc, char** argv) {
  reexec_with_passive_openmp(argv);
  std::printf("OpenMP wait policy: %s\n", std::getenv("OMP_WAIT_POLICY"));
  std::printf("allocator: %s\n", keep_freed_memory().c_str());
  std::int64_t steps = 100;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string data_name = fs::exists(std::string(kFashionMnistDir)) ? "fashion-mnist" : "clustered";
  std::string out = (fs::temp_directory_path() / "moescope-bench-train").string();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::stoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--data")) data_name = argv[i + 1];
    else if (!std::strcmp(argv[i], "--out")) out = argv[i + 1];
  }
  at::set_num_threads(threads);
  RunConfig c = default_run_config();
  c.out_dir = out;
  c.train.steps = steps;
  c.train.epochs = 0;
  c.train.eval_every = 0;
  c.data.name = data_name;
  if (data_name == "clustered") {
    c.model = {{"type", "classifier"}, {"backbone", "mlp"}, {"backbone_widths", {256}}, {"head", "sparse"},
               {"head_hidden", 64},    {"experts", 8},      {"top_k", 2}};
  }
  const Dataset data = load_dataset(c.data);
  std::printf("bench_train: %s, %lld steps of batch %lld, %d threads (default run config)\n", data_name.c_str(),
              static_cast<long long>(steps), static_cast<long long>(c.train.batch_size), threads);
  const TrainResult base = timed(c, data, "plain");
  print("default (load balance)", base);

  RunConfig w = c;
  w.train.regularisers.weight_orth = 1e-2;
  w.train.regularisers.guo_orth = 1e-4;
  w.train.regularisers.z_loss = 1e-3;
  const TrainResult reg = timed(w, data, "regularised");
  print("+ weight/guo orth, z-loss", reg);
  RunConfig o = c;
  o.train.optim.omoe.enabled = true;
  const TrainResult om = timed(o, data, "omoe");
  print("+ OMoE (skip 2)", om);
  std::printf("cost per sample relative to the default run: regularisers %.2fx, OMoE %.2fx\n",
              per_sample(reg) / per_sample(base), per_sample(om) / per_sample(base));
  std::printf("checkpoint writes: %.3f s for %s\n", base.times.checkpoint, base.last_checkpoint.c_str());
  fs::remove_all(out);
  return 0;
}
