// libFuzzer target for recorded-activations files (`activations --activations FILE`): the input written as a
// safetensors file and run through recorded_activations with two small expert banks ("layer_00": 3 ReLU experts
// of width 4 with a router, "layer_01": 2 experts without one, top-2), in batches of 5 tokens. Every accepted
// layer must count the tokens the file holds. Links moescope_core (torch). Only InputError may refuse an input.
// Built with -DMOESCOPE_FUZZ=ON (tools/fuzz.sh).
#include <cstddef>
#include <cstdint>

#include <torch/torch.h>

#include "fuzz_support.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/util/error.hpp"

namespace {

moescope::ExpertBank bank(const std::string& key, std::int64_t experts, bool router) {
  moescope::ExpertBank b;
  b.key = key;
  b.experts = experts;
  b.dim = 4;
  b.out_dim = 3;
  b.kind = "relu";
  b.top_k = 2;
  const auto w = torch::arange(experts * 3 * 4, torch::kFloat32).reshape({experts, 3, 4}).sin();
  b.expert = [w](std::int64_t e, const torch::Tensor& x) { return torch::relu(x.matmul(w[e].t())); };
  if (router) {
    const auto r = torch::arange(experts * 4, torch::kFloat32).reshape({experts, 4}).cos();
    b.route = [r](const torch::Tensor& x) {
      moescope::TokenRouting t;
      t.probs = torch::softmax(x.matmul(r.t()), 1);
      t.chosen = std::get<1>(t.probs.topk(2, 1));
      return t;
    };
  }
  return b;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moescope;
  static const std::vector<ExpertBank> banks = [] {
    torch::set_num_threads(1);
    return std::vector<ExpertBank>{bank("layer_00", 3, true), bank("layer_01", 2, false)};
  }();
  const std::string path = fuzz::write_scratch("recorded.safetensors", data, size);
  try {
    const SafetensorsFile f(path);
    ActivationsOptions o;
    o.batch_size = 5;
    const ActivationsResult r = recorded_activations(banks, f, o);
    for (const LayerActivations& l : r.layers) {
      const TensorInfo& in = f.at(l.key + ".inputs");
      if (l.overlap.tokens != in.shape[0]) __builtin_trap();
    }
  } catch (const InputError& e) {
    fuzz::refused(e);
  }
  return 0;
}
