// Benchmark (not a test): the OMoE orthogonal optimiser on the vision study's gated head (8 experts 512-64-10).
// Prints, from one run:
//   - an orthogonal step (OMoE::orthogonal_step) and an accumulate() of one batch as ratios to a regular
//     AdamW step on the head's parameters, and both as ratios to a whole regular iteration (forward, backward,
//     AdamW step);
//   - the accumulation design: updating E recursive projectors per batch (Woodbury block, and the row-by-row
//     OWM recursion on a slice) as ratios to OMoE's Gram update;
//   - float32 drift: the recursive projector kept in float32 over many batches vs the float64 closed form, and the
//     orthogonality residual ||P X_other|| / ||X_other|| each gives (what decides float64).
//
// Usage: bench_optim [--batch 128] [--batches 32] [--reps 20] [--threads 1] [--alpha 1e-3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moescope/model/moe.hpp"
#include "moescope/train/optim.hpp"
#include "moescope/util/runtime.hpp"

using Clock = std::chrono::steady_clock;
using namespace moescope;

namespace {

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Median seconds of `reps` calls of f (after one warm-up call).
template <typename F>
double median_seconds(int reps, F&& f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(seconds_since(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  reexec_with_torch_environment(argv);
  std::printf("OpenMP wait policy: %s\n", std::getenv("OMP_WAIT_POLICY"));
  std::printf("allocator: %s\n", keep_freed_memory().c_str());
  std::int64_t batch = 128, batches = 32;
  int reps = 20, threads = 1;
  double alpha = 1e-3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--batch") batch = std::atoll(argv[i + 1]);
    else if (k == "--batches") batches = std::atoll(argv[i + 1]);
    else if (k == "--reps") reps = std::atoi(argv[i + 1]);
    else if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--alpha") alpha = std::atof(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  torch::set_num_threads(threads);
  torch::manual_seed(1);
  const std::int64_t d = 512, E = 8;
  GatedMixture head(GatedMixtureOptions(d, E).hidden(64).out_dim(10));
  OMoEOptions o;
  o.enabled = true;
  o.alpha = alpha;
  OMoE omoe({OMoE::expert_input_weights(head->experts)}, o);
  OptimConfig c;
  auto adam = make_optimizer(c, head->parameters());
  // ReLU features like a backbone's: non-negative, O(1) entries.
  const auto x = torch::relu(torch::randn({batch, d}));
  const auto y = torch::randint(10, {batch}, torch::kLong);

  const auto backward = [&] {
    adam->zero_grad();
    auto out = head->forward_moe(x);
    torch::nn::functional::cross_entropy(out.output, y).backward();
    return out.routing;
  };
  auto routing = backward();
  for (std::int64_t b = 0; b < batches; ++b) omoe.accumulate(0, torch::relu(torch::randn({batch, d})), routing);

  const double t_iter = median_seconds(reps, [&] {
    backward();
    adam->step();
  });
  backward();
  const double t_adam = median_seconds(reps, [&] { adam->step(); });
  const double t_acc = median_seconds(reps, [&] { omoe.accumulate(0, x, routing); });
  // Each orthogonal step resets the gradients it used: restore them (a clone per tensor, included in the time).
  std::vector<torch::Tensor> w, g;
  for (const auto& ws : OMoE::expert_input_weights(head->experts)) {
    w.push_back(ws[0]);
    g.push_back(ws[0].grad().clone());
  }
  const double t_orth = median_seconds(reps, [&] {
    for (std::size_t i = 0; i < w.size(); ++i) w[i].mutable_grad() = g[i].clone();
    omoe.orthogonal_step(1e-3);
  });

  std::printf("gated head: %lld experts, d = %lld, hidden 64, batch %lld, threads %d, alpha %g\n",
              static_cast<long long>(E), static_cast<long long>(d), static_cast<long long>(batch), threads, alpha);
  std::printf("regular iteration (fwd+bwd+AdamW): %.3f ms; AdamW step alone: %.3f ms\n", 1e3 * t_iter, 1e3 * t_adam);
  std::printf("orthogonal_step: %.3f ms = %.2fx an AdamW step, %.2fx a regular iteration\n", 1e3 * t_orth,
              t_orth / t_adam, t_orth / t_iter);
  std::printf("accumulate (one batch): %.3f ms = %.2fx an AdamW step, %.2fx a regular iteration\n", 1e3 * t_acc,
              t_acc / t_adam, t_acc / t_iter);

  // Alternative designs for the accumulation: E projectors updated per batch. Every token's row goes into the
  // projectors of the E-1 experts it did not go to (top-1 by argmax here, as accumulate does for a gated head).
  const auto argmax = routing.probs.argmax(1);
  std::vector<torch::Tensor> P(E, torch::eye(d, torch::kDouble));
  const auto xd = x.to(torch::kDouble);
  const double t_block = median_seconds(std::max(3, reps / 4), [&] {
    for (std::int64_t e = 0; e < E; ++e) {
      const auto others = (argmax != e).nonzero().squeeze(1);
      P[e] = owm_update_block(P[e], xd.index_select(0, others), alpha);
    }
  });
  const std::int64_t slice = std::min<std::int64_t>(16, batch);
  const double t_rows_slice = median_seconds(3, [&] {
    for (std::int64_t e = 0; e < E; ++e) {
      const auto others = (argmax.narrow(0, 0, slice) != e).nonzero().squeeze(1);
      P[e] = owm_update_rows(P[e], xd.index_select(0, others), alpha);
    }
  });
  const double t_rows = t_rows_slice * static_cast<double>(batch) / static_cast<double>(slice);
  std::printf("per-batch accumulation: Woodbury on %lld projectors %.3f ms = %.1fx the Gram update; "
              "row-by-row OWM (extrapolated from %lld rows) %.3f ms = %.1fx\n",
              static_cast<long long>(E), 1e3 * t_block, t_block / t_acc, static_cast<long long>(slice), 1e3 * t_rows,
              t_rows / t_acc);

  // float32 drift: one expert's projector of `batches` batches of other-expert rows, recursively in float32
  // and float64 (Woodbury per batch), vs the float64 closed form.
  auto P32 = torch::eye(d, torch::kFloat);
  auto P64 = torch::eye(d, torch::kDouble);
  auto gram = torch::zeros({d, d}, torch::kDouble);
  std::vector<torch::Tensor> seen;
  const std::int64_t rows_per_batch = batch * (E - 1) / E;
  for (std::int64_t b = 0; b < batches; ++b) {
    const auto xb = torch::relu(torch::randn({rows_per_batch, d}, torch::kDouble));
    P32 = owm_update_block(P32, xb.to(torch::kFloat), alpha);
    P64 = owm_update_block(P64, xb, alpha);
    gram += xb.t().mm(xb);
    seen.push_back(xb);
  }
  const auto closed = owm_projector(gram, alpha);
  const auto X = torch::cat(seen, 0).t();  // [d, n]
  const auto residual = [&](const torch::Tensor& Pm) {
    return (Pm.to(torch::kDouble).mm(X)).norm().item<double>() / X.norm().item<double>();
  };
  torch::Tensor closed32;  // float32 Cholesky of alpha I + Gram may fail outright (condition ~ s_max^2 / alpha)
  try {
    closed32 = owm_projector(gram.to(torch::kFloat), alpha);
  } catch (const std::exception&) {
  }
  const double lam_max = torch::linalg_eigvalsh(gram).max().item<double>();
  std::printf("after %lld rows: largest Gram eigenvalue %.3g, condition of alpha I + Gram %.3g\n",
              static_cast<long long>(X.size(1)), lam_max, (lam_max + alpha) / alpha);
  const auto rel = [&](const torch::Tensor& Pm) {
    return ((Pm.to(torch::kDouble) - closed).norm() / closed.norm()).item<double>();
  };
  std::printf("||P - P_closed|| / ||P_closed|| (float64 closed form as reference): float64 Woodbury %.2e, float32 "
              "Woodbury %.2e, float32 closed form %s\n",
              rel(P64), rel(P32), closed32.defined() ? sci(rel(closed32)).c_str() : "(Cholesky failed)");
  std::printf("||P X|| / ||X|| of the accumulated rows (smaller is more orthogonal): float64 closed %.2e, float64 "
              "Woodbury %.2e, float32 Woodbury %.2e, float32 closed %s\n",
              residual(closed), residual(P64), residual(P32),
              closed32.defined() ? sci(residual(closed32)).c_str() : "(Cholesky failed)");
  return 0;
}
