#include "moescope/train/regularisers.hpp"

#include <cmath>
#include <limits>

namespace moescope {

namespace {

// [..., N] -> [T, N]
torch::Tensor rows_of(const torch::Tensor& x, const char* what) {
  TORCH_CHECK(x.defined(), what, ": tensor is undefined");
  TORCH_CHECK(x.dim() >= 1, what, ": expected [..., N], got a scalar");
  TORCH_CHECK(x.is_floating_point(), what, ": expected a floating tensor, got ", x.scalar_type());
  auto r = x.reshape({-1, x.size(-1)});
  TORCH_CHECK(r.size(0) > 0 && r.size(1) > 0, what, ": empty input of shape ", x.sizes());
  return r;
}

}  // namespace

torch::Tensor switch_load_balancing_loss(const torch::Tensor& probs, const torch::Tensor& topk_indices,
                                         std::int64_t num_experts) {
  TORCH_CHECK(num_experts > 0, "switch_load_balancing_loss: num_experts must be positive, got ", num_experts);
  const auto p = rows_of(probs, "switch_load_balancing_loss (probs)");
  TORCH_CHECK(p.size(1) == num_experts, "switch_load_balancing_loss: probs has ", p.size(1),
              " experts, expected ", num_experts);
  TORCH_CHECK(topk_indices.defined(), "switch_load_balancing_loss: topk_indices is undefined");
  TORCH_CHECK(!topk_indices.is_floating_point() && !topk_indices.is_complex(),
              "switch_load_balancing_loss: topk_indices must be integral, got ", topk_indices.scalar_type());
  const auto idx = topk_indices.reshape({p.size(0), -1}).to(torch::kLong);
  TORCH_CHECK(idx.size(1) > 0, "switch_load_balancing_loss: no top-k slots in indices of shape ",
              topk_indices.sizes());
  const auto lo = idx.min().item<std::int64_t>();
  const auto hi = idx.max().item<std::int64_t>();
  TORCH_CHECK(lo >= 0 && hi < num_experts, "switch_load_balancing_loss: expert indices span [", lo, ", ", hi,
              "], expected [0, ", num_experts, ")");

  const auto slots = static_cast<double>(idx.numel());
  torch::Tensor f;
  {
    torch::NoGradGuard no_grad;
    // integer counts, so half-precision probs cannot round them
    f = torch::bincount(idx.reshape({-1}).to(p.device()), /*weights=*/{}, num_experts).to(p.scalar_type()) / slots;
  }
  const auto P = p.mean(0);
  return static_cast<double>(num_experts) * (f * P).sum();
}

torch::Tensor switch_load_balancing_loss(const RoutingInfo& routing, std::int64_t num_experts) {
  TORCH_CHECK(routing.probs.defined(), "switch_load_balancing_loss: routing.probs is undefined");
  if (routing.topk_indices.defined()) {
    return switch_load_balancing_loss(routing.probs, routing.topk_indices, num_experts);
  }
  const auto p = rows_of(routing.probs, "switch_load_balancing_loss (probs)");
  return switch_load_balancing_loss(p, p.detach().argmax(1, /*keepdim=*/true), num_experts);
}

torch::Tensor router_z_loss(const torch::Tensor& router_logits) {
  const auto x = rows_of(router_logits, "router_z_loss");
  return x.logsumexp(1).pow(2).mean();
}

torch::Tensor weight_orthogonality_loss(const std::vector<torch::Tensor>& expert_weights) {
  TORCH_CHECK(!expert_weights.empty(), "weight_orthogonality_loss: no expert weights");
  const auto E = static_cast<std::int64_t>(expert_weights.size());
  const auto n = expert_weights[0].defined() ? expert_weights[0].numel() : 0;
  std::vector<torch::Tensor> flat;
  flat.reserve(expert_weights.size());
  for (std::int64_t e = 0; e < E; ++e) {
    const auto& w = expert_weights[static_cast<std::size_t>(e)];
    TORCH_CHECK(w.defined(), "weight_orthogonality_loss: expert ", e, "'s weight is undefined");
    TORCH_CHECK(w.is_floating_point(), "weight_orthogonality_loss: expert ", e, "'s weight is ", w.scalar_type());
    TORCH_CHECK(w.numel() == n && n > 0, "weight_orthogonality_loss: expert ", e, " has ", w.numel(),
                " elements, expert 0 has ", n);
    flat.push_back(w.reshape({-1}));
  }
  const auto v = torch::stack(flat);  // [E, D]
  // Same convention as F.normalize: divide by max(||v||, tiny), so a zero row stays 0 with a finite gradient.
  const auto u = v / v.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
  const auto gram = u.matmul(u.t());
  return gram.triu(1).pow(2).sum() / static_cast<double>(E * E);
}

std::vector<torch::Tensor> expert_parameters(const torch::nn::ModuleList& experts, const std::string& name) {
  TORCH_CHECK(!experts.is_empty(), "expert_parameters: the expert list is null");
  std::vector<torch::Tensor> out;
  out.reserve(experts->size());
  std::size_t e = 0;
  for (const auto& module : *experts) {
    const auto params = module->named_parameters(/*recurse=*/true);
    const auto* p = params.find(name);
    TORCH_CHECK(p != nullptr, "expert_parameters: expert ", e, " has no parameter \"", name, "\"");
    out.push_back(*p);
    ++e;
  }
  return out;
}

torch::Tensor guo_orthogonality_loss(const torch::Tensor& expert_outputs, double eps) {
  const auto& x = expert_outputs;
  TORCH_CHECK(x.defined(), "guo_orthogonality_loss: expert_outputs is undefined");
  TORCH_CHECK(x.dim() == 3, "guo_orthogonality_loss: expected [T, k, d], got ", x.sizes());
  TORCH_CHECK(x.is_floating_point(), "guo_orthogonality_loss: expected a floating tensor, got ", x.scalar_type());
  TORCH_CHECK(eps >= 0.0, "guo_orthogonality_loss: eps must be non-negative, got ", eps);
  const auto T = x.size(0);
  const auto k = x.size(1);
  TORCH_CHECK(T > 0 && k > 0 && x.size(2) > 0, "guo_orthogonality_loss: empty input of shape ", x.sizes());

  auto total = torch::zeros({}, x.options());
  for (std::int64_t i = 0; i < k; ++i) {
    const auto xi = x.select(1, i);  // [T, d]
    std::vector<torch::Tensor> basis;
    for (std::int64_t j = 0; j < k; ++j) {
      if (j == i) continue;
      auto r = x.select(1, j);
      for (const auto& u : basis) r = r - (r * u).sum(1, /*keepdim=*/true) * u;
      const auto norm = r.norm(2, {1}, /*keepdim=*/true);
      // A (near-)dependent residual adds no direction; the mask also keeps its gradient at 0.
      const auto keep = (norm > eps).to(x.scalar_type());
      basis.push_back(r / norm.clamp_min(eps > 0.0 ? eps : 1e-30) * keep);
    }
    for (const auto& u : basis) total = total + (u * xi).sum(1).pow(2).sum();
  }
  return total / static_cast<double>(k * T);
}

torch::Tensor guo_variance(const torch::Tensor& router_logits) {
  const auto x = rows_of(router_logits, "guo_variance");
  const auto N = x.size(1);
  TORCH_CHECK(N >= 2, "guo_variance: the unbiased variance needs N >= 2 experts, got ", N);
  const auto s = torch::softmax(x, 1);
  // Written out rather than Tensor::var, whose overloads differ between LibTorch 1.13 and 2.x.
  const auto var = (s - s.mean(1, /*keepdim=*/true)).pow(2).sum(1) / static_cast<double>(N - 1);
  return var.mean();
}

RegulariserTerms regulariser_terms(const RoutingInfo& routing, std::int64_t num_experts,
                                   const RegulariserWeights& weights,
                                   const std::vector<torch::Tensor>& expert_weights) {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  RegulariserTerms out;
  out.load_balance = out.z_loss = out.weight_orth = out.guo_orth = out.guo_var = out.cv_importance = nan;

  const torch::Tensor& like = routing.logits.defined() ? routing.logits : routing.probs;
  TORCH_CHECK(like.defined(), "regulariser_terms: routing has neither logits nor probs");
  out.total = torch::zeros({}, like.options());

  auto add = [&](double w, const torch::Tensor& term, double& value) {
    value = term.item<double>();
    out.total = out.total + w * term;
  };
  if (weights.load_balance != 0.0) {
    add(weights.load_balance, switch_load_balancing_loss(routing, num_experts), out.load_balance);
  }
  if (weights.z_loss != 0.0) {
    TORCH_CHECK(routing.logits.defined(), "regulariser_terms: z_loss weight ", weights.z_loss,
                " needs routing.logits");
    add(weights.z_loss, router_z_loss(routing.logits), out.z_loss);
  }
  if (weights.weight_orth != 0.0) {
    TORCH_CHECK(!expert_weights.empty(), "regulariser_terms: weight_orth weight ", weights.weight_orth,
                " needs the experts' weight matrices");
    add(weights.weight_orth, weight_orthogonality_loss(expert_weights), out.weight_orth);
  }
  if (weights.guo_orth != 0.0) {
    TORCH_CHECK(routing.expert_outputs.defined(), "regulariser_terms: guo_orth weight ", weights.guo_orth,
                " needs routing.expert_outputs (build the layer with keep_expert_outputs(true))");
    add(weights.guo_orth, guo_orthogonality_loss(routing.expert_outputs), out.guo_orth);
  }
  if (weights.guo_var != 0.0) {
    TORCH_CHECK(routing.logits.defined(), "regulariser_terms: guo_var weight ", weights.guo_var,
                " needs routing.logits");
    add(-weights.guo_var, guo_variance(routing.logits), out.guo_var);
  }
  if (weights.cv_importance != 0.0) {
    TORCH_CHECK(routing.probs.defined(), "regulariser_terms: cv_importance weight ", weights.cv_importance,
                " needs routing.probs");
    add(weights.cv_importance, importance_cv_squared(routing.probs), out.cv_importance);
  }
  return out;
}

torch::Tensor importance_cv_squared(const torch::Tensor& probs) {
  TORCH_CHECK(probs.dim() >= 1 && probs.size(-1) >= 2, "importance_cv_squared: need [..., N >= 2] probabilities");
  const auto importance = probs.reshape({-1, probs.size(-1)}).sum(0);
  return importance.var(/*unbiased=*/true) / importance.mean().pow(2);
}

}  // namespace moescope
