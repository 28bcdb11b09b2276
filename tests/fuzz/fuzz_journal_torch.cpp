// libFuzzer target for the landscape journal (R.h5.partial, landscape/surface.cpp): the input is the journal of a
// 4 x 3 grid with two metrics, resumed by compute_surface over a two-parameter model whose "metrics" are its two
// weights. Whatever the journal holds, the resumed surface must be complete, every point must be resumed or
// evaluated exactly once, evaluated points must hold the evaluator's values, and a second resume (of the journal
// as the first one left it) must reproduce the first surface bit for bit. The first byte sets how many points the
// first call evaluates (--max-points). Links moescope_core (torch). Built with -DMOESCOPE_FUZZ=ON.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <torch/torch.h>

#include "fuzz_support.hpp"
#include "moescope/landscape/surface.hpp"
#include "moescope/util/error.hpp"

namespace {

bool same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  if (size < 1) return 0;
  static const bool init = (torch::set_num_threads(1), true);
  (void)init;
  const std::int64_t max_points = data[0] % 16;
  const std::string journal = fuzz::write_scratch("R.h5.partial", data + 1, size - 1);
  auto w = torch::zeros({2}, torch::kFloat64);
  std::vector<NamedParameter> params{{"w", w}};
  Direction dx, dy;
  dx.parts = {{"w", torch::tensor({1.0, 0.0}, torch::kFloat64)}};
  dy.parts = {{"w", torch::tensor({0.0, 1.0}, torch::kFloat64)}};
  Perturbation p(params, {dx, dy});
  const PointEvaluator eval = [&] { return std::vector<double>{w[0].item<double>(), w[1].item<double>()}; };
  SurfaceOptions o;
  o.x = Axis{-1.0, 1.0, 4};
  o.y = Axis{-1.0, 1.0, 3};
  o.metrics = {"train_loss", "train_acc"};
  o.journal = journal;
  o.resume = true;
  o.settings = "dirs=fuzz";
  o.max_points = max_points;
  Surface first;
  try {
    first = compute_surface(p, eval, o);
  } catch (const InputError& e) {
    fuzz::refused(e);
    return 0;
  }
  const std::int64_t total = 12;
  if (first.resumed + first.evaluated > total) __builtin_trap();
  if (max_points == 0 && !first.complete()) __builtin_trap();
  const auto xs = o.x.values(), ys = o.y->values();
  o.max_points = 0;
  const Surface second = compute_surface(p, eval, o);  // the journal is now this program's own: must not throw
  if (!second.complete() || second.resumed + second.evaluated != total) __builtin_trap();
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 3; ++j) {
      const std::size_t idx = i * 3 + j;
      if (first.computed[idx])
        for (std::size_t m = 0; m < 2; ++m)
          if (!same(first.values[m][idx], second.values[m][idx])) __builtin_trap();
    }
  // After the second call w must be back at w0 = 0 exactly.
  if (w[0].item<double>() != 0.0 || w[1].item<double>() != 0.0) __builtin_trap();
  (void)xs;
  (void)ys;
  return 0;
}
