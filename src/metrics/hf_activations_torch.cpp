// Activation overlap of a Hugging Face model's routed experts on its own hidden states, shared experts apart.
#include "moescope/metrics/hf_activations_torch.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>

#include "moescope/io/layout.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/numbers.hpp"

namespace moescope {
namespace {

constexpr std::int64_t kHFActChunkValues = std::int64_t{1} << 24;  // expert outputs per chunk: 64 MiB in float32

std::string hf_block_prefix(const HFConfig& c, std::int64_t layer) {
  std::string p = c.moe_prefix(layer);
  if (!p.empty() && p.back() == '.') p.pop_back();
  return p;
}

// Router scores as probabilities: DeepSeek-V3's independent sigmoid scores divided by their sum per token.
torch::Tensor hf_router_probabilities(const HFConfig& c, const torch::Tensor& scores) {
  if (c.scoring_func != "sigmoid") return scores;
  return scores / scores.sum(-1, /*keepdim=*/true);
}

// Every routed expert of `block` on x [n, H]: [n, E, H] in the model's dtype.
torch::Tensor hf_all_expert_outputs(HFSparseMoEImpl& block, const torch::Tensor& x) {
  std::vector<torch::Tensor> ys;
  ys.reserve(static_cast<std::size_t>(block.num_experts()));
  for (std::int64_t e = 0; e < block.num_experts(); ++e) ys.push_back(block.expert_forward(e, x));
  return torch::stack(ys, 1);
}

// Cosine rows a.b / (|a| |b|) with NaN where either norm is zero. a [n, ..., H], b broadcastable.
torch::Tensor hf_row_cosines(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& na, const torch::Tensor& nb) {
  const auto den = na * nb;
  return ((a * b).sum(-1) / den).masked_fill(den == 0, kNaN);
}

struct HFLayerState {
  HFLayerKey key;
  std::shared_ptr<HFSparseMoEImpl> block;
  std::size_t trace = 0;  // position of the layer among the model's MoE layers (HFOutput::moe)
  ActivationOverlapAccumulator overlap;
  RoutingAccumulator routing;
  std::optional<SharedExpertAccumulator> shared;
  std::int64_t seen = 0;
  HFLayerState(HFLayerKey k, std::shared_ptr<HFSparseMoEImpl> b, std::size_t t)
      : key(std::move(k)),
        block(std::move(b)),
        trace(t),
        overlap(static_cast<int>(block->num_experts())),
        routing(static_cast<int>(block->num_experts())) {}
};

// Tokens [c0, c0 + n) of one layer's trace into its statistics.
void hf_add_token_chunk(HFLayerState& st, const HFConfig& c, const HFMoETrace& t, std::int64_t c0, std::int64_t n, bool f64) {
  const auto x = t.inputs.narrow(0, c0, n);
  const auto wide = f64 ? torch::kDouble : torch::kFloat;
  const auto y = hf_all_expert_outputs(*st.block, x).to(torch::kCPU, wide).contiguous();
  const std::int64_t H = y.size(2), k = t.topk_experts.size(1);
  const auto chosen = t.topk_experts.narrow(0, c0, n).to(torch::kCPU, torch::kLong).contiguous();
  const auto probs = hf_router_probabilities(c, t.router_probs.narrow(0, c0, n).to(torch::kCPU, wide)).contiguous();
  if (f64) {
    st.overlap.add(y.data_ptr<double>(), n, H, chosen.data_ptr<std::int64_t>(), k);
    st.routing.add(probs.data_ptr<double>(), chosen.data_ptr<std::int64_t>(), nullptr, n, k);
  } else {
    st.overlap.add(y.data_ptr<float>(), n, H, chosen.data_ptr<std::int64_t>(), k);
    st.routing.add(probs.data_ptr<float>(), chosen.data_ptr<std::int64_t>(), nullptr, n, k);
  }
  if (!st.shared) return;
  torch::Tensor gate;
  const auto s = st.block->shared_forward(x, &gate).to(torch::kCPU, torch::kDouble);
  const auto y64 = y.to(torch::kDouble);
  const auto w = t.topk_weights.narrow(0, c0, n).to(torch::kCPU, torch::kDouble);
  const auto mix = (y64.gather(1, chosen.unsqueeze(-1).expand({n, k, H})) * w.unsqueeze(-1)).sum(1);  // [n, H]
  const auto ns = s.norm(2, -1).contiguous(), ny = y64.norm(2, -1), nm = mix.norm(2, -1).contiguous();
  const auto cos_e = hf_row_cosines(y64, s.unsqueeze(1), ny, ns.unsqueeze(1)).contiguous();  // [n, E]
  const auto cos_m = hf_row_cosines(mix, s, nm, ns).contiguous();
  const auto g = gate.defined() ? gate.reshape({-1}).to(torch::kCPU, torch::kDouble).contiguous() : torch::Tensor();
  const double *ce = cos_e.data_ptr<double>(), *cm = cos_m.data_ptr<double>(), *pns = ns.data_ptr<double>(),
               *pnm = nm.data_ptr<double>(), *pg = g.defined() ? g.data_ptr<double>() : nullptr;
  const std::int64_t E = cos_e.size(1);
  for (std::int64_t i = 0; i < n; ++i) st.shared->add_token(ce + i * E, cm[i], pns[i], pnm[i], pg ? pg[i] : kNaN);
}

}  // namespace

std::vector<HFLayerKey> hf_layer_keys(const HFCausalLMImpl& model, const Layout& layout) {
  std::vector<HFLayerKey> out;
  for (const std::int64_t l : model.moe_layers()) {
    HFLayerKey k{l, layer_key(static_cast<int>(l))};
    const std::string p = hf_block_prefix(model.config(), l);
    for (const auto& ll : layout.layers)
      if (ll.prefix == p) k.key = ll.key;
    out.push_back(std::move(k));
  }
  return out;
}

ExpertBank hf_expert_bank(const HFCausalLMImpl& model, const HFLayerKey& layer) {
  const std::shared_ptr<HFSparseMoEImpl> block = model.moe_block(layer.layer).ptr();
  const HFConfig& c = model.config();
  ExpertBank b;
  b.key = layer.key;
  b.layer = static_cast<int>(layer.layer);
  b.prefix = hf_block_prefix(c, layer.layer);
  b.experts = block->num_experts();
  b.dim = c.hidden_size;
  b.out_dim = c.hidden_size;
  b.kind = "swiglu";
  b.top_k = c.num_experts_per_tok;
  const auto dtype = block->gate->weight.scalar_type();
  b.expert = [block, dtype](std::int64_t e, const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    return block->expert_forward(e, x.to(dtype));
  };
  b.route = [block, dtype, c](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    const HFRouting r = block->gate->forward(x.to(dtype));
    TokenRouting t;
    t.probs = hf_router_probabilities(c, r.scores);
    t.chosen = r.experts;
    return t;
  };
  return b;
}

HFActivations hf_activations(const TaskModel& model, const TensorSplit& split, const std::vector<HFLayerKey>& layers,
                             const ActivationsOptions& opts) {
  if (!model.is_hf()) invalid_argument("hf_activations", "not a Hugging Face model");
  if (layers.empty()) invalid_argument("hf_activations", "no layers chosen");
  if (split.size() == 0) throw InputError("the data split is empty");
  HFCausalLMImpl& m = model.hf();
  const HFConfig& c = m.config();
  const std::vector<std::int64_t> moe = m.moe_layers();
  std::vector<HFLayerState> states;
  states.reserve(layers.size());
  for (const HFLayerKey& k : layers) {
    const auto at = std::find(moe.begin(), moe.end(), k.layer);
    if (at == moe.end()) invalid_argument("hf_activations", "layer " + std::to_string(k.layer) + " is not an MoE layer");
    auto block = m.moe_block(k.layer).ptr();
    if (block->num_experts() < 2)
      throw InputError(k.key + ": activation overlap needs at least 2 experts, the layer has " +
                       std::to_string(block->num_experts()));
    states.emplace_back(k, block, static_cast<std::size_t>(at - moe.begin()));
    if (block->shared_expert || block->shared_experts)
      states.back().shared.emplace(k.key, block->shared_expert ? "gated" : "ungated", block->num_experts());
  }

  struct Restore {
    torch::nn::Module& module;
    bool was_training;
    ~Restore() { module.train(was_training); }
  } restore{m, m.is_training()};
  m.eval();
  torch::NoGradGuard no_grad;
  const torch::Device device = model.device();
  const bool f64 = m.dtype() == torch::kDouble;
  const std::int64_t N = split.size(), S = split.inputs.size(1);
  const std::int64_t bs = std::max<std::int64_t>(1, opts.batch_size);
  const std::int64_t E = c.num_experts, H = c.hidden_size;
  const std::int64_t chunk = std::max<std::int64_t>(1, kHFActChunkValues / std::max<std::int64_t>(1, E * H));
  // Sequences needed: all, or enough for max_tokens.
  const std::int64_t wanted = opts.max_tokens > 0 ? std::min(N, (opts.max_tokens + S - 1) / S) : N;

  HFActivations out;
  out.result.inputs = "data";
  HFForwardOptions fo;
  fo.moe_trace = true;
  for (std::int64_t begin = 0; begin < wanted; begin += bs) {
    const std::int64_t end = std::min(wanted, begin + bs);
    const HFOutput o = m.forward_with(split.inputs.slice(0, begin, end).to(device), fo);
    out.result.samples += end - begin;
    for (HFLayerState& st : states) {
      const HFMoETrace& t = o.moe.at(st.trace);
      std::int64_t rows = t.inputs.size(0);
      if (opts.max_tokens > 0) rows = std::min(rows, opts.max_tokens - st.seen);
      for (std::int64_t c0 = 0; c0 < rows; c0 += chunk) hf_add_token_chunk(st, c, t, c0, std::min(chunk, rows - c0), f64);
      st.seen += std::max<std::int64_t>(rows, 0);
    }
    report(opts.progress, make_progress("activations", out.result.samples, wanted, "sequences", kNaN, "", "",
                                        out.result.samples == wanted));
  }
  for (const HFLayerState& st : states) {
    LayerActivations l;
    l.key = st.key.key;
    l.layer = static_cast<int>(st.key.layer);
    l.prefix = hf_block_prefix(c, st.key.layer);
    l.experts = st.block->num_experts();
    l.dim = H;
    l.out_dim = H;
    l.overlap = st.overlap.result();
    l.routing = st.routing.result();
    l.routing_source = "model";
    out.result.layers.push_back(std::move(l));
    out.top_k[st.key.key] = c.num_experts_per_tok;
    if (st.shared) out.shared.push_back(st.shared->result());
  }
  out.result.description =
      "Hugging Face model forward (no gradients, " + std::string(c10::toString(m.dtype())) + ") over " +
      std::to_string(out.result.samples) + " sequences of " + std::to_string(S) +
      " tokens; each MoE layer's input tokens (after post_attention_layernorm) given to every routed expert; routing: "
      "the router's own top-k choices and probabilities" +
      (c.scoring_func == "sigmoid" ? std::string(" (sigmoid scores normalised to sum 1)") : std::string()) +
      "; shared experts reported apart (shared_expert)";
  return out;
}

}  // namespace moescope
