#include "moescope/model/moe.hpp"

#include <cmath>
#include <utility>
#include <vector>

namespace moescope {
namespace {

FFNOptions make_expert_options(std::int64_t dim, std::int64_t hidden, std::int64_t out_dim, FFNKind kind,
                               Activation act, double dropout) {
  return FFNOptions(dim, hidden).out_dim(out_dim).kind(kind).activation(act).dropout(dropout);
}

void check_common(const char* layer, std::int64_t dim, std::int64_t experts) {
  TORCH_CHECK(dim > 0, layer, ": dim must be positive, got ", dim);
  TORCH_CHECK(experts > 0, layer, ": experts must be positive, got ", experts);
}

// Every expert on every token, [T, E, O]: batched, or one expert after another (the reference path).
torch::Tensor each_expert(const torch::nn::ModuleList& experts, const torch::Tensor& x, bool batched) {
  if (batched) return BatchedExperts(experts).all(x);
  std::vector<torch::Tensor> ys;
  ys.reserve(experts->size());
  for (std::size_t e = 0; e < experts->size(); ++e) {
    ys.push_back(detail::run_expert(experts, static_cast<std::int64_t>(e), x));
  }
  return torch::stack(ys, 1);
}

// Every expert on every token, [T, E, O], without autograd: what a probe asks for.
torch::Tensor all_expert_outputs(const torch::nn::ModuleList& experts, const torch::Tensor& x, bool batched) {
  torch::NoGradGuard no_grad;
  return each_expert(experts, x, batched);
}

// Appends what the probe asks for. `choices` (returning {indices, weights}) and `outputs` are called only
// when their records are on, so an attached probe costs only what it records.
template <typename Choices, typename AllOutputs>
void record(Probe& probe, const torch::Tensor& x, const RoutingInfo& r, Choices&& choices, AllOutputs&& outputs) {
  ++probe.calls;
  if (probe.record_inputs) probe.inputs.push_back(x.detach());
  if (probe.record_probs) probe.probs.push_back(r.probs.detach());
  if (probe.record_choices) {
    const std::pair<torch::Tensor, torch::Tensor> c = choices();
    probe.choices.push_back(c.first.detach());
    probe.choice_weights.push_back(c.second.detach());
  }
  if (probe.record_expert_outputs) probe.expert_outputs.push_back(outputs().detach());
}

// Top-1 expert and its probability, [T, 1] each: the "choice" of a layer where every expert contributes.
std::pair<torch::Tensor, torch::Tensor> argmax_choice(const torch::Tensor& probs) {
  const auto top = probs.max(-1, true);
  return {std::get<1>(top), std::get<0>(top)};
}

}  // namespace

std::int64_t expert_capacity(std::int64_t tokens, std::int64_t top_k, double capacity_factor, std::int64_t experts) {
  if (capacity_factor <= 0.0) return 0;
  TORCH_CHECK(experts > 0, "expert_capacity: experts must be positive, got ", experts);
  // The small slack keeps an exact quotient (e.g. 12 / 3) from rounding up by representation error.
  const double c = static_cast<double>(tokens) * static_cast<double>(top_k) * capacity_factor /
                   static_cast<double>(experts);
  return static_cast<std::int64_t>(std::ceil(c - 1e-9));
}

// ---------------------------------------------------------------------------------------------- GatedMixture

FFNOptions GatedMixtureOptions::expert_options() const {
  return make_expert_options(dim(), hidden(), out_dim(), kind(), activation(), dropout());
}

GatedMixtureImpl::GatedMixtureImpl(GatedMixtureOptions options_) : options(std::move(options_)) { reset(); }

void GatedMixtureImpl::reset() {
  check_common("GatedMixture", options.dim(), options.experts());
  TORCH_CHECK(options.temperature() > 0.0, "GatedMixture: temperature must be positive, got ",
              options.temperature());
  router = register_module(
      "router", torch::nn::Linear(torch::nn::LinearOptions(options.dim(), options.experts()).bias(options.router_bias())));
  experts = register_module("experts", make_experts(options.expert_options(), options.experts()));
}

MoEOutput GatedMixtureImpl::forward_moe(const torch::Tensor& x_in) {
  const auto x = detail::flatten_tokens(x_in, options.dim(), "GatedMixture");
  const std::int64_t T = x.size(0), E = options.experts();
  RoutingInfo r;
  r.logits = router(x);
  if (options.temperature() != 1.0) r.logits = r.logits / options.temperature();  // x / 1 is x: skip the pass
  r.probs = torch::softmax(r.logits, -1);
  // With the experts' outputs asked for (or on the reference path), form them [T, E, O] and weight them; else fold
  // the router weights into the hidden activations and never form them.
  torch::Tensor y, out;
  if (options.keep_expert_outputs() || (probe_ && probe_->record_expert_outputs) || !options.batched_experts()) {
    y = each_expert(experts, x, options.batched_experts());
    out = (r.probs.unsqueeze(-1) * y).sum(1);
  } else {
    out = BatchedExperts(experts).mix(x, r.probs);
  }
  r.expert_counts = torch::full({E}, T, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
  if (options.keep_expert_outputs()) r.expert_outputs = y;
  if (probe_) record(*probe_, x, r, [&] { return argmax_choice(r.probs); }, [&] { return y; });
  return {detail::restore_tokens(out, x_in), std::move(r)};
}

// --------------------------------------------------------------------------------------------------- SoftMoE

FFNOptions SoftMoEOptions::expert_options() const {
  return make_expert_options(dim(), hidden(), out_dim(), kind(), activation(), dropout());
}

SoftMoEImpl::SoftMoEImpl(SoftMoEOptions options_) : options(std::move(options_)) { reset(); }

void SoftMoEImpl::reset() {
  check_common("SoftMoE", options.dim(), options.experts());
  TORCH_CHECK(options.slots() > 0, "SoftMoE: slots per expert must be positive, got ", options.slots());
  const std::int64_t d = options.dim(), S = options.experts() * options.slots();
  // Phi's columns are normalised in the forward pass; this scale keeps un-normalised logits O(1) too.
  phi = register_parameter("phi", torch::randn({d, S}) / std::sqrt(static_cast<double>(d)));
  if (options.normalize()) scale = register_parameter("scale", torch::ones({}));
  experts = register_module("experts", make_experts(options.expert_options(), options.experts()));
}

MoEOutput SoftMoEImpl::forward_moe(const torch::Tensor& x_in) {
  TORCH_CHECK((x_in.dim() == 2 || x_in.dim() == 3) && x_in.size(-1) == options.dim(),
              "SoftMoE: expected input [B, m, ", options.dim(), "] or [T, ", options.dim(), "], got ", x_in.sizes());
  // [T, d] is T sequences of one token each: no token sees another example.
  const auto x = x_in.dim() == 3 ? x_in : x_in.unsqueeze(1);
  const std::int64_t B = x.size(0), m = x.size(1), d = options.dim();
  const std::int64_t E = options.experts(), p = options.slots(), S = E * p;
  torch::Tensor logits;
  if (options.normalize()) {
    namespace F = torch::nn::functional;
    const auto xn = F::normalize(x, F::NormalizeFuncOptions().p(2).dim(-1));
    const auto pn = F::normalize(phi, F::NormalizeFuncOptions().p(2).dim(0));
    logits = scale * torch::matmul(xn, pn);  // [B, m, S]
  } else {
    logits = torch::matmul(x, phi);
  }
  const auto dispatch = torch::softmax(logits, 1);  // over tokens, per slot
  const auto combine = torch::softmax(logits, 2);   // over slots, per token
  const auto slot_in = torch::matmul(dispatch.transpose(1, 2), x).view({B, E, p, d});
  // Expert e runs on the B*p slots of its own: one batched product over experts (or one call per expert).
  torch::Tensor slot_out;  // [B, S, O]
  if (options.batched_experts()) {
    const auto ys = BatchedExperts(experts).per_expert(slot_in.transpose(0, 1).reshape({E, B * p, d}));  // [E, B*p, O]
    slot_out = ys.view({E, B, p, -1}).transpose(0, 1).reshape({B, S, -1});
  } else {
    std::vector<torch::Tensor> ys;
    ys.reserve(static_cast<std::size_t>(E));
    for (std::int64_t e = 0; e < E; ++e) {
      const auto y = detail::run_expert(experts, e, slot_in.select(1, e).reshape({B * p, d}));
      ys.push_back(y.view({B, p, -1}));
    }
    slot_out = torch::stack(ys, 1).view({B, S, -1});
  }
  auto out = torch::matmul(combine, slot_out);                  // [B, m, O]

  RoutingInfo r;
  r.logits = logits.reshape({B * m, S});
  r.probs = combine.reshape({B * m, E, p}).sum(-1);
  r.dispatch = dispatch;
  r.combine = combine;
  r.expert_counts = torch::full({E}, B * p, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
  if (options.keep_expert_outputs()) r.expert_outputs = slot_out;
  if (probe_) {
    const auto tokens = x.reshape({B * m, d});
    record(*probe_, tokens, r, [&] { return argmax_choice(r.probs); },
           [&] { return all_expert_outputs(experts, tokens, options.batched_experts()); });
  }
  if (x_in.dim() == 2) out = out.squeeze(1);
  return {out, std::move(r)};
}

// ------------------------------------------------------------------------------------------------- SparseMoE

FFNOptions SparseMoEOptions::expert_options() const {
  return make_expert_options(dim(), hidden(), out_dim(), kind(), activation(), dropout());
}

SparseMoEImpl::SparseMoEImpl(SparseMoEOptions options_) : options(std::move(options_)) { reset(); }

void SparseMoEImpl::reset() {
  check_common("SparseMoE", options.dim(), options.experts());
  TORCH_CHECK(options.top_k() > 0 && options.top_k() <= options.experts(), "SparseMoE: need 0 < top_k <= experts, got top_k ",
              options.top_k(), ", experts ", options.experts());
  TORCH_CHECK(options.capacity_factor() >= 0.0, "SparseMoE: capacity_factor must be >= 0, got ",
              options.capacity_factor());
  router = register_module(
      "router", torch::nn::Linear(torch::nn::LinearOptions(options.dim(), options.experts()).bias(options.router_bias())));
  if (options.noisy()) {
    noise = register_module("noise",
                            torch::nn::Linear(torch::nn::LinearOptions(options.dim(), options.experts()).bias(false)));
  }
  experts = register_module("experts", make_experts(options.expert_options(), options.experts()));
}

MoEOutput SparseMoEImpl::forward_moe(const torch::Tensor& x_in) {
  const auto x = detail::flatten_tokens(x_in, options.dim(), "SparseMoE");
  const std::int64_t T = x.size(0), E = options.experts(), k = options.top_k();
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  RoutingInfo r;

  auto logits = router(x);
  if (options.noisy() && is_training()) {
    r.clean_logits = logits;
    r.noise_stddev = torch::softplus(noise(x));
    logits = logits + torch::randn_like(logits) * r.noise_stddev;
  }
  r.logits = logits;
  r.probs = torch::softmax(logits, -1);
  auto top = torch::topk(r.probs, k, -1);
  auto weights = std::get<0>(top);
  const auto indices = std::get<1>(top);
  if (options.renormalize()) weights = weights / weights.sum(-1, true);
  r.topk_indices = indices;
  r.topk_weights = weights;

  // Assignments (token t, slot j) sit at position t*k + j; a stable sort by expert keeps token order within
  // each expert, which is the capacity priority.
  const auto flat_expert = indices.reshape({-1});
  const auto sorted = torch::sort(flat_expert, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const auto& sorted_expert = std::get<0>(sorted);
  auto positions = std::get<1>(sorted);
  auto counts = torch::bincount(flat_expert, {}, E);
  r.capacity = expert_capacity(T, k, options.capacity_factor(), E);
  if (r.capacity > 0) {
    const auto starts = counts.cumsum(0) - counts;
    const auto rank = torch::arange(T * k, long_opts) - starts.index_select(0, sorted_expert);
    const auto keep = rank < r.capacity;
    r.dropped_mask = torch::zeros({T * k}, long_opts).scatter(0, positions, keep.logical_not().to(torch::kLong))
                         .to(torch::kBool)
                         .view({T, k});
    positions = positions.masked_select(keep);
    counts = counts.clamp_max(r.capacity);
  }
  r.expert_counts = counts;
  const auto counts_cpu = counts.to(torch::kCPU);
  const auto* cnt = counts_cpu.data_ptr<std::int64_t>();
  std::int64_t kept = 0;
  for (std::int64_t e = 0; e < E; ++e) kept += cnt[e];
  r.dropped = T * k - kept;

  const auto tokens = torch::arange(T, long_opts).repeat_interleave(k).index_select(0, positions);
  const std::int64_t O = options.expert_options().output_dim();
  auto out = torch::zeros({T, O}, x.options());
  torch::Tensor ys;
  if (kept > 0) {
    // Each expert on its own tokens (the sorted assignments are grouped by expert): [kept, O]; one expert after
    // another on the reference path.
    ys = BatchedExperts(experts).grouped(x, tokens, std::vector<std::int64_t>(cnt, cnt + E),
                                         /*allow_padding=*/options.batched_experts());
  }
  if (ys.defined()) {
    const auto w = weights.reshape({-1}).index_select(0, positions).unsqueeze(1);
    out.index_add_(0, tokens, ys * w);
  }
  if (options.keep_expert_outputs()) {
    auto eo = torch::zeros({T * k, O}, x.options());
    if (ys.defined()) eo = eo.index_copy(0, positions, ys);
    r.expert_outputs = eo.view({T, k, O});
  }
  if (probe_) {
    record(*probe_, x, r, [&] { return std::make_pair(indices, weights); },
           [&] { return all_expert_outputs(experts, x, options.batched_experts()); });
  }
  return {detail::restore_tokens(out, x_in), std::move(r)};
}

}  // namespace moescope
