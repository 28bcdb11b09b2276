#include "moescope/model/expert.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace moescope {

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::SiLU: return "silu";
  }
  return "?";
}

Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::ReLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "silu") return Activation::SiLU;
  throw std::invalid_argument("unknown activation '" + name + "' (expected relu, gelu or silu)");
}

const char* ffn_kind_name(FFNKind k) { return k == FFNKind::MLP ? "mlp" : "swiglu"; }

FFNKind parse_ffn_kind(const std::string& name) {
  if (name == "mlp") return FFNKind::MLP;
  if (name == "swiglu") return FFNKind::SwiGLU;
  throw std::invalid_argument("unknown FFN kind '" + name + "' (expected mlp or swiglu)");
}

namespace detail {
torch::Tensor activate(const torch::Tensor& x, Activation a) {
  switch (a) {
    case Activation::ReLU: return torch::relu(x);
    case Activation::GELU: return torch::gelu(x);
    case Activation::SiLU: return torch::silu(x);
  }
  return x;
}
}  // namespace detail

FFNImpl::FFNImpl(FFNOptions options_) : options(std::move(options_)) { reset(); }

void FFNImpl::reset() {
  TORCH_CHECK(options.dim() > 0 && options.hidden() > 0, "FFN: dim and hidden must be positive, got dim ",
              options.dim(), ", hidden ", options.hidden());
  TORCH_CHECK(options.out_dim() >= 0, "FFN: out_dim must be >= 0, got ", options.out_dim());
  TORCH_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0, "FFN: dropout must be in [0, 1), got ",
              options.dropout());
  const auto lin = [&](std::int64_t in, std::int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(options.bias()));
  };
  if (options.kind() == FFNKind::MLP) {
    fc1 = register_module("fc1", lin(options.dim(), options.hidden()));
    fc2 = register_module("fc2", lin(options.hidden(), options.output_dim()));
  } else {
    w_gate = register_module("w_gate", lin(options.dim(), options.hidden()));
    w_up = register_module("w_up", lin(options.dim(), options.hidden()));
    w_down = register_module("w_down", lin(options.hidden(), options.output_dim()));
  }
}

torch::Tensor FFNImpl::forward(const torch::Tensor& x) {
  if (options.kind() == FFNKind::SwiGLU) return w_down(torch::silu(w_gate(x)) * w_up(x));
  auto h = detail::activate(fc1(x), options.activation());
  if (options.dropout() > 0.0) h = torch::dropout(h, options.dropout(), is_training());
  return fc2(h);
}

torch::nn::ModuleList make_experts(const FFNOptions& options, std::int64_t n) {
  TORCH_CHECK(n > 0, "make_experts: need at least one expert, got ", n);
  torch::nn::ModuleList list;
  for (std::int64_t e = 0; e < n; ++e) list->push_back(FFN(options));
  return list;
}

std::int64_t ffn_params(const FFNOptions& o) {
  const std::int64_t d = o.dim(), h = o.hidden(), out = o.output_dim(), b = o.bias() ? 1 : 0;
  if (o.kind() == FFNKind::MLP) return d * h + b * h + h * out + b * out;
  return 2 * (d * h + b * h) + h * out + b * out;
}

std::int64_t moe_total_params(const FFNOptions& expert, std::int64_t experts, bool router_bias, bool noisy) {
  TORCH_CHECK(experts > 0, "moe_total_params: experts must be positive, got ", experts);
  const std::int64_t router = experts * expert.dim() + (router_bias ? experts : 0);
  const std::int64_t noise = noisy ? experts * expert.dim() : 0;
  return experts * ffn_params(expert) + router + noise;
}

std::int64_t moe_active_params(const FFNOptions& expert, std::int64_t experts, std::int64_t top_k,
                               bool router_bias) {
  TORCH_CHECK(top_k > 0 && top_k <= experts, "moe_active_params: need 0 < top_k <= experts, got top_k ", top_k,
              ", experts ", experts);
  return top_k * ffn_params(expert) + experts * expert.dim() + (router_bias ? experts : 0);
}

std::int64_t dense_hidden_for_params(std::int64_t target, const FFNOptions& dense) {
  TORCH_CHECK(target > 0, "dense_hidden_for_params: target must be positive, got ", target);
  // The count is affine in the hidden width: params(h) = base + h * slope.
  FFNOptions one = dense, two = dense;
  one.hidden(1);
  two.hidden(2);
  const std::int64_t slope = ffn_params(two) - ffn_params(one);
  const std::int64_t base = ffn_params(one) - slope;
  const std::int64_t lo = std::max<std::int64_t>(1, (target - base) / slope);
  const std::int64_t hi = lo + 1;
  const auto miss = [&](std::int64_t h) { return std::llabs(base + h * slope - target); };
  return miss(lo) <= miss(hi) ? lo : hi;
}

}  // namespace moescope
