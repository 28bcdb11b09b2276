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
    case Activation::GELU:
      // LibTorch 1.13's CPU float32 GELU gives a wrong second derivative (zeros, inf or garbage, changing with the
      // batch size) on tensors of more than two dimensions coming from bmm (the batched experts' [E, N, H]); on
      // the same memory viewed as a matrix it is right. The batched experts' HVP test in float32 catches it.
      if (x.dim() > 2) return torch::gelu(x.reshape({-1, x.size(-1)})).view(x.sizes());
      return torch::gelu(x);
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

namespace {

// The experts' parameters in the order BatchedExperts stacks them, one list per stacked tensor: the input weights
// (MLP fc1; SwiGLU gate and up of each expert side by side: g0, u0, g1, u1, ...), the output weights (fc2,
// w_down), and with biases the input biases and output biases likewise.
std::vector<std::vector<torch::Tensor>> stack_groups(const std::vector<FFNImpl*>& experts, const FFNOptions& o) {
  std::vector<std::vector<torch::Tensor>> g(o.bias() ? 4 : 2);
  for (auto* f : experts) {
    if (o.kind() == FFNKind::MLP) {
      g[0].push_back(f->fc1->weight);
      g[1].push_back(f->fc2->weight);
      if (o.bias()) {
        g[2].push_back(f->fc1->bias);
        g[3].push_back(f->fc2->bias);
      }
    } else {
      g[0].insert(g[0].end(), {f->w_gate->weight, f->w_up->weight});
      g[1].push_back(f->w_down->weight);
      if (o.bias()) {
        g[2].insert(g[2].end(), {f->w_gate->bias, f->w_up->bias});
        g[3].push_back(f->w_down->bias);
      }
    }
  }
  return g;
}

// Whether ts are equally shaped contiguous tensors lying one after another in one storage, in order.
bool consecutive(const std::vector<torch::Tensor>& ts) {
  const torch::Tensor& t0 = ts.front();
  if (!t0.is_contiguous()) return false;
  for (std::size_t i = 1; i < ts.size(); ++i) {
    const torch::Tensor& t = ts[i];
    if (!t.is_contiguous() || t.sizes() != t0.sizes() || t.scalar_type() != t0.scalar_type() ||
        t.device() != t0.device() || !t.storage().is_alias_of(t0.storage()) ||
        t.storage_offset() != t0.storage_offset() + static_cast<std::int64_t>(i) * t0.numel())
      return false;
  }
  return true;
}

// torch::stack of consecutive tensors without the copy: the stacked tensor is their storage, and the backward
// pass hands each its slice of the gradient (which autograd then keeps as that parameter's gradient, uncopied).
struct AliasedStack : torch::autograd::Function<AliasedStack> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, torch::TensorList ts) {
    const torch::Tensor& t0 = ts[0];
    std::vector<std::int64_t> sizes{static_cast<std::int64_t>(ts.size())}, strides{t0.numel()};
    for (std::int64_t d = 0; d < t0.dim(); ++d) {
      sizes.push_back(t0.size(d));
      strides.push_back(t0.stride(d));
    }
    return torch::empty({0}, t0.options()).set_(t0.storage(), t0.storage_offset(), sizes, strides);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grads) {
    return grads[0].unbind(0);
  }
};

torch::Tensor stack_parameters(const std::vector<torch::Tensor>& ts) {
  return consecutive(ts) ? AliasedStack::apply(torch::TensorList(ts)) : torch::stack(ts);
}

}  // namespace

torch::nn::ModuleList make_experts(const FFNOptions& options, std::int64_t n) {
  TORCH_CHECK(n > 0, "make_experts: need at least one expert, got ", n);
  torch::nn::ModuleList list;
  for (std::int64_t e = 0; e < n; ++e) list->push_back(FFN(options));
  pack_expert_parameters(list);
  return list;
}

void pack_expert_parameters(const torch::nn::ModuleList& experts) {
  const BatchedExperts bank(experts);  // checks the list
  std::vector<FFNImpl*> ffns;
  for (std::size_t e = 0; e < experts->size(); ++e) ffns.push_back(experts->ptr(e)->as<FFNImpl>());
  torch::NoGradGuard no_grad;
  for (const auto& group : stack_groups(ffns, bank.options())) {
    if (consecutive(group)) continue;
    const torch::Tensor stacked = torch::stack(group);
    for (std::size_t i = 0; i < group.size(); ++i) {
      torch::Tensor p = group[i];
      p.set_data(stacked[static_cast<std::int64_t>(i)]);
    }
  }
}

// -------------------------------------------------------------------------------------------- BatchedExperts

BatchedExperts::BatchedExperts(const torch::nn::ModuleList& experts) : options_(1, 1) {
  if (experts.is_empty() || experts->size() == 0) {
    throw std::invalid_argument("BatchedExperts: the expert list is null or empty");
  }
  for (std::size_t e = 0; e < experts->size(); ++e) {
    auto* ffn = experts->ptr(e)->as<FFNImpl>();
    if (ffn == nullptr) throw std::invalid_argument("BatchedExperts: expert " + std::to_string(e) + " is not an FFN");
    const FFNOptions& o = ffn->options;
    if (e == 0) {
      options_ = o;
      training_ = ffn->is_training();
    } else if (o.dim() != options_.dim() || o.hidden() != options_.hidden() ||
               o.output_dim() != options_.output_dim() || o.kind() != options_.kind() ||
               o.activation() != options_.activation() || o.dropout() != options_.dropout() ||
               o.bias() != options_.bias()) {
      throw std::invalid_argument("BatchedExperts: expert " + std::to_string(e) + "'s options differ from expert 0's");
    }
    experts_.push_back(ffn);
  }
}

void BatchedExperts::stack() const {
  if (w_in_.defined()) return;
  const auto groups = stack_groups(experts_, options_);
  const std::int64_t E = size();
  w_in_ = stack_parameters(groups[0]).view({E, -1, options_.dim()});
  w_out_ = stack_parameters(groups[1]);
  if (options_.bias()) {
    b_in_ = stack_parameters(groups[2]).view({E, -1});
    b_out_ = stack_parameters(groups[3]);
  }
}

torch::Tensor BatchedExperts::hidden(const torch::Tensor& pre) const {
  if (options_.kind() == FFNKind::SwiGLU) {
    const std::int64_t H = options_.hidden();
    return torch::silu(pre.narrow(-1, 0, H)) * pre.narrow(-1, H, H);
  }
  auto h = detail::activate(pre, options_.activation());
  if (options_.dropout() > 0.0) h = torch::dropout(h, options_.dropout(), training_);
  return h;
}

torch::Tensor BatchedExperts::first_shared(const torch::Tensor& x) const {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options_.dim(), "BatchedExperts: expected tokens [T, ", options_.dim(),
              "], got ", x.sizes());
  stack();
  const std::int64_t E = size(), rows = w_in_.size(1);
  const auto pre = torch::linear(x, w_in_.view({E * rows, options_.dim()}),
                                 b_in_.defined() ? b_in_.view({E * rows}) : torch::Tensor());
  return hidden(pre.view({x.size(0), E, rows}));
}

torch::Tensor BatchedExperts::second(const torch::Tensor& h) const {
  const auto w = w_out_.transpose(1, 2);  // [E, H, O]
  return b_out_.defined() ? torch::baddbmm(b_out_.unsqueeze(1), h, w) : torch::bmm(h, w);
}

torch::Tensor BatchedExperts::all(const torch::Tensor& x) const {
  const auto h = first_shared(x);              // [T, E, H]
  return second(h.transpose(0, 1)).transpose(0, 1);  // [T, E, O]
}

torch::Tensor BatchedExperts::mix(const torch::Tensor& x, const torch::Tensor& weights) const {
  const std::int64_t T = x.size(0), E = size(), H = options_.hidden(), O = options_.output_dim();
  TORCH_CHECK(weights.dim() == 2 && weights.size(0) == T && weights.size(1) == E,
              "BatchedExperts::mix: expected weights [", T, ", ", E, "], got ", weights.sizes());
  const auto h = first_shared(x);                                        // [T, E, H]
  const auto g = (h * weights.unsqueeze(-1)).view({T, E * H});           // the weights folded into the activations
  const auto w = w_out_.permute({1, 0, 2}).reshape({O, E * H});          // [O, E*H]: the experts' fc2 side by side
  return b_out_.defined() ? torch::addmm(weights.mm(b_out_), g, w.t()) : g.mm(w.t());
}

torch::Tensor BatchedExperts::per_expert(const torch::Tensor& xs) const {
  TORCH_CHECK(xs.dim() == 3 && xs.size(0) == size() && xs.size(2) == options_.dim(),
              "BatchedExperts: expected rows [", size(), ", N, ", options_.dim(), "], got ", xs.sizes());
  stack();
  const auto w = w_in_.transpose(1, 2);  // [E, D, H]
  const auto pre = b_in_.defined() ? torch::baddbmm(b_in_.unsqueeze(1), xs, w) : torch::bmm(xs, w);
  return second(hidden(pre));
}

bool BatchedExperts::grouped_uses_padding(const std::vector<std::int64_t>& counts) {
  std::int64_t n = 0, most = 0;
  for (const auto c : counts) {
    n += c;
    most = std::max(most, c);
  }
  return n > 0 && static_cast<std::int64_t>(counts.size()) * most <= 2 * n;
}

torch::Tensor BatchedExperts::grouped(const torch::Tensor& x, const torch::Tensor& tokens,
                                      const std::vector<std::int64_t>& counts, bool allow_padding) const {
  TORCH_CHECK(static_cast<std::int64_t>(counts.size()) == size(), "BatchedExperts::grouped: ", counts.size(),
              " counts for ", size(), " experts");
  std::int64_t n = 0, most = 0;
  for (const auto c : counts) {
    TORCH_CHECK(c >= 0, "BatchedExperts::grouped: negative count ", c);
    n += c;
    most = std::max(most, c);
  }
  TORCH_CHECK(tokens.dim() == 1 && tokens.size(0) == n, "BatchedExperts::grouped: ", tokens.sizes(),
              " token ids for counts summing to ", n);
  const std::int64_t O = options_.output_dim();
  if (n == 0) return torch::zeros({0, O}, x.options());
  const auto xs = x.index_select(0, tokens);  // [N, D], grouped by expert
  if (!allow_padding || !grouped_uses_padding(counts)) {
    std::vector<torch::Tensor> pieces;
    std::int64_t start = 0;
    for (std::size_t e = 0; e < counts.size(); ++e) {
      if (counts[e] == 0) continue;
      pieces.push_back(experts_[e]->forward(xs.narrow(0, start, counts[e])));
      start += counts[e];
    }
    return torch::cat(pieces, 0);
  }
  // Row r of expert e's group goes to padded row e * most + r.
  const std::int64_t E = size();
  std::vector<std::int64_t> slot;
  slot.reserve(static_cast<std::size_t>(n));
  for (std::int64_t e = 0; e < E; ++e) {
    for (std::int64_t r = 0; r < counts[static_cast<std::size_t>(e)]; ++r) slot.push_back(e * most + r);
  }
  const auto idx = torch::tensor(slot, torch::kLong).to(x.device());
  const auto padded = torch::zeros({E * most, options_.dim()}, x.options()).index_copy(0, idx, xs);
  return per_expert(padded.view({E, most, options_.dim()})).view({E * most, O}).index_select(0, idx);
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
