// The own-model path of activations_torch.hpp (needs train/task's TaskModel; kept apart so that the checkpoint and
// recorded-activation paths do not depend on it).
#include <algorithm>

#include "moescope/metrics/activations_torch.hpp"
#include "moescope/util/error.hpp"

namespace moescope {

std::vector<ExpertBank> model_expert_banks(const TaskModel& model) {
  std::vector<ExpertBank> banks;
  for (const MoELayerRef& ref : model.moe_layers()) banks.push_back(layer_expert_bank(ref));
  return banks;
}

ActivationsResult model_activations(const TaskModel& model, const TensorSplit& split, const ActivationsOptions& opts,
                                    const std::vector<std::pair<std::string, int>>& keys) {
  std::vector<MoELayerRef> refs = model.moe_layers();
  if (refs.empty()) throw InputError("the model has no MoE layers");
  std::vector<ExpertBank> banks;
  for (const auto& r : refs) banks.push_back(layer_expert_bank(r));
  if (!keys.empty()) {
    if (keys.size() != banks.size())
      throw std::invalid_argument("model_activations: " + std::to_string(keys.size()) + " keys for " +
                                  std::to_string(banks.size()) + " MoE layers");
    for (std::size_t i = 0; i < banks.size(); ++i) banks[i].key = keys[i].first, banks[i].layer = keys[i].second;
  }
  if (split.size() == 0) throw InputError("the data split is empty");
  const std::int64_t bs = std::max<std::int64_t>(1, opts.batch_size);

  std::vector<LayerActivationAccumulator> states;
  states.reserve(banks.size());
  for (const auto& b : banks) states.emplace_back(b, "model");

  // The probes and the training flag are put back whatever happens.
  struct Restore {
    std::vector<MoELayerRef>& refs;
    torch::nn::Module& module;
    bool was_training;
    ~Restore() {
      for (auto& r : refs) r.layer->set_probe(nullptr);
      module.train(was_training);
    }
  } restore{refs, model.module(), model.module().is_training()};
  std::vector<std::shared_ptr<Probe>> probes;
  for (auto& r : refs) {
    auto p = std::make_shared<Probe>();
    p->record_inputs = true;
    r.layer->set_probe(p);
    probes.push_back(p);
  }
  model.module().eval();
  torch::NoGradGuard no_grad;
  const torch::Device device = model.device();

  ActivationsResult res;
  res.inputs = "data";
  std::vector<std::int64_t> seen(banks.size(), 0);
  std::int64_t batches = 0;
  for (std::int64_t begin = 0; begin < split.size(); begin += bs) {
    const TensorSplit b = split.slice(begin, std::min(split.size(), begin + bs));
    const TaskForward f = model.forward(b.inputs.to(device));
    res.samples += b.size();
    bool all_full = opts.max_tokens > 0;
    for (std::size_t l = 0; l < states.size(); ++l) {
      Probe& p = *probes[l];
      if (p.inputs.size() != 1 || f.routing.size() != states.size())
        throw std::logic_error(banks[l].key + ": expected one recorded forward call and routing per layer and batch");
      const torch::Tensor x = p.inputs.front();
      std::int64_t rows = x.size(0);
      if (opts.max_tokens > 0) rows = std::min(rows, opts.max_tokens - seen[l]);
      if (rows > 0) {
        states[l].add(x, token_routing(f.routing[l]), rows);
        seen[l] += rows;
      }
      if (opts.max_tokens > 0 && seen[l] < opts.max_tokens) all_full = false;
      p.clear();
    }
    if (++batches % 20 == 0 && opts.log) opts.log("activations: " + std::to_string(res.samples) + " samples");
    if (all_full) break;
  }
  for (const auto& s : states) res.layers.push_back(s.finish());
  res.description = "model forward (eval mode) over " + std::to_string(res.samples) +
                    " samples of the data; each MoE layer's input tokens given to every expert";
  return res;
}

}  // namespace moescope
