#include "moescope/metrics/activations_torch.hpp"

#include <cmath>
#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "moescope/io/layout.hpp"
#include "moescope/model/expert.hpp"
#include "moescope/model/moe.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/numbers.hpp"
#include "moescope/util/random.hpp"

namespace moescope {
namespace {

void say(const ActivationsOptions& o, const std::string& line) {
  Progress p;
  p.stage = "activations";
  p.note = line;
  report(o.progress, p);
}

void tokens_done(const ActivationsOptions& o, const std::string& key, std::int64_t done, std::int64_t total) {
  report(o.progress, make_progress("activations", done, total, "tokens", kNaN, "", key, done == total));
}

// A checkpoint matrix view as a float32 tensor [rows, cols] (or [numel] for a bias).
torch::Tensor read_matrix(const TensorSource& src, const MatrixView& v, bool vector) {
  std::vector<double> buf(static_cast<std::size_t>(v.numel()));
  read_view_f64(src, v, 0, v.numel(), buf.data());
  // Experts with a NaN or infinite weight give NaN outputs for every token: refuse them, naming the element.
  for (std::size_t i = 0; i < buf.size(); ++i)
    if (!std::isfinite(buf[i]))
      fail_input(src.file_of(v.tensor), "tensor '" + v.tensor + "' (" + v.role + "): " +
                                            matrix_element(static_cast<std::int64_t>(i), v.cols) + " is " +
                                            nonfinite_name(buf[i]) + "; activations need finite weights");
  auto t = torch::from_blob(buf.data(), {v.numel()}, torch::kFloat64).to(torch::kFloat32);
  return vector ? t : t.view({v.rows, v.cols});
}

// Recorded values with a NaN or an infinity (a diverged recording) would make every statistic of the layer NaN.
void require_finite_rows(const std::vector<float>& v, std::int64_t width, std::int64_t first_row,
                         const std::string& file, const std::string& tensor) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      fail_input(file, "tensor '" + tensor + "': " +
                           matrix_element(first_row * width + static_cast<std::int64_t>(i), width) + " is " +
                           nonfinite_name(v[i]) + "; recorded activations must be finite");
}

TokenRouting top_k_of(const torch::Tensor& probs, std::int64_t k) {
  TokenRouting t;
  t.probs = probs;
  t.chosen = std::get<1>(torch::topk(probs, std::min<std::int64_t>(k, probs.size(1)), -1));
  return t;
}

}  // namespace

TokenRouting token_routing(const RoutingInfo& r) {
  TokenRouting t;
  t.probs = r.probs;
  if (r.topk_indices.defined()) {
    t.chosen = r.topk_indices;
    t.dropped = r.dropped_mask;
    t.capacity = r.capacity;
  } else if (r.probs.defined()) {
    t.chosen = r.probs.argmax(-1, /*keepdim=*/true);
  }
  return t;
}

LayerActivationAccumulator::LayerActivationAccumulator(const ExpertBank& bank, std::string routing_source)
    : bank_(&bank),
      overlap_(static_cast<int>(bank.experts)),
      routing_(static_cast<int>(bank.experts)),
      routing_source_(std::move(routing_source)) {
  if (bank.experts < 2)
    throw InputError(bank.key + ": activation overlap needs at least 2 experts, the layer has " +
                     std::to_string(bank.experts));
}

void LayerActivationAccumulator::add(const torch::Tensor& x, const TokenRouting& r, std::int64_t rows) {
  const auto xs = x.narrow(0, 0, rows);
  const torch::Tensor y = run_all_experts(*bank_, xs).to(torch::kCPU, torch::kFloat32).contiguous();
  const std::int64_t O = y.size(2);
  if (!r.chosen.defined()) {
    overlap_.add(y.data_ptr<float>(), rows, O);
    torch::Tensor probs;
    if (r.probs.defined()) probs = r.probs.narrow(0, 0, rows).to(torch::kCPU, torch::kFloat32).contiguous();
    routing_.add(probs.defined() ? probs.data_ptr<float>() : static_cast<const float*>(nullptr), nullptr, nullptr,
                 rows, 0);
    return;
  }
  const auto chosen = r.chosen.narrow(0, 0, rows).to(torch::kCPU, torch::kLong).contiguous();
  const std::int64_t k = chosen.size(1);
  torch::Tensor kept = chosen, dropped;
  if (r.dropped.defined()) {
    const auto mask = r.dropped.narrow(0, 0, rows).to(torch::kCPU, torch::kBool).contiguous();
    kept = chosen.masked_fill(mask, -1).contiguous();
    dropped = mask.to(torch::kUInt8).contiguous();
  }
  overlap_.add(y.data_ptr<float>(), rows, O, kept.data_ptr<std::int64_t>(), k);
  torch::Tensor probs;
  if (r.probs.defined()) probs = r.probs.narrow(0, 0, rows).to(torch::kCPU, torch::kFloat32).contiguous();
  routing_.add(probs.defined() ? probs.data_ptr<float>() : static_cast<const float*>(nullptr),
               chosen.data_ptr<std::int64_t>(), dropped.defined() ? dropped.data_ptr<std::uint8_t>() : nullptr, rows, k);
  capacity_ = std::max(capacity_, r.capacity);
}

LayerActivations LayerActivationAccumulator::finish() const {
  LayerActivations l;
  l.key = bank_->key;
  l.layer = bank_->layer;
  l.prefix = bank_->prefix;
  l.experts = bank_->experts;
  l.dim = bank_->dim;
  l.out_dim = bank_->out_dim;
  l.overlap = overlap_.result();
  l.routing = routing_.result();
  l.capacity = capacity_;
  l.routing_source = routing_source_;
  return l;
}

torch::Tensor run_all_experts(const ExpertBank& bank, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  if (bank.all) return bank.all(x);
  std::vector<torch::Tensor> ys;
  ys.reserve(static_cast<std::size_t>(bank.experts));
  for (std::int64_t e = 0; e < bank.experts; ++e) ys.push_back(bank.expert(e, x));
  return torch::stack(ys, 1);
}

ExpertBank checkpoint_expert_bank(const TensorSource& src, const Layout& layout, const MoELayerLayout& layer,
                                  std::int64_t top_k) {
  const std::string where = src.path() + ": " + layer.key;
  if (layout.family == "gpt-oss")
    throw InputError(where + ": gpt-oss experts (clamped SwiGLU on [in, out] matrices) cannot be run yet");
  if (layer.activation != "swiglu" && layer.activation != "relu")
    throw InputError(where + ": experts with matrices other than gate/up/down cannot be run (activation '" +
                     layer.activation + "')");
  if (layer.experts.size() < 2) throw InputError(where + ": fewer than 2 experts");
  for (const auto& m : layer.experts.front().matrices) {
    const bool known = m.role == "gate" || m.role == "up" || m.role == "down" || m.role == "gate_bias" ||
                       m.role == "up_bias" || m.role == "down_bias";
    if (!known) throw InputError(where + ": expert matrix role '" + m.role + "' cannot be run");
  }
  struct Weights {
    torch::Tensor gate, up, down, gate_b, up_b, down_b;
  };
  auto ws = std::make_shared<std::vector<Weights>>();
  const bool swiglu = layer.activation == "swiglu";
  std::int64_t dim = 0, out = 0;
  for (const ExpertLayout& ex : layer.experts) {
    Weights w;
    const auto get = [&](const char* role, bool vec) -> torch::Tensor {
      const MatrixView* v = ex.find(role);
      return v ? read_matrix(src, *v, vec) : torch::Tensor();
    };
    w.up = get("up", false);
    w.down = get("down", false);
    if (swiglu) w.gate = get("gate", false);
    w.up_b = get("up_bias", true);
    w.down_b = get("down_bias", true);
    if (swiglu) w.gate_b = get("gate_bias", true);
    if (!w.up.defined() || !w.down.defined() || (swiglu && !w.gate.defined()))
      throw InputError(where + ": expert " + std::to_string(ex.index) + " lacks a matrix");
    // Linear orientation [out, in]: up [I, d], down [O, I].
    if (w.down.size(1) != w.up.size(0) || (swiglu && !w.gate.sizes().equals(w.up.sizes())))
      throw InputError(where + ": expert " + std::to_string(ex.index) + " matrices do not chain: up " +
                       shape_string(w.up.sizes().vec()) + ", down " + shape_string(w.down.sizes().vec()));
    dim = w.up.size(1);
    out = w.down.size(0);
    ws->push_back(std::move(w));
  }
  ExpertBank b;
  b.key = layer.key;
  b.layer = layer.layer;
  b.prefix = layer.prefix;
  b.experts = static_cast<std::int64_t>(ws->size());
  b.dim = dim;
  b.out_dim = out;
  b.kind = layer.activation;
  b.top_k = std::max<std::int64_t>(1, std::min<std::int64_t>(top_k, b.experts));
  b.expert = [ws, swiglu](std::int64_t e, const torch::Tensor& x) {
    const Weights& w = (*ws)[static_cast<std::size_t>(e)];
    namespace F = torch::nn::functional;
    auto h = F::linear(x, w.up, w.up_b);
    if (swiglu) h = torch::silu(F::linear(x, w.gate, w.gate_b)) * h;
    else h = torch::relu(h);
    return F::linear(h, w.down, w.down_b);
  };
  if (!layer.router.empty()) {
    const TensorInfo& ri = src.at(layer.router);
    if (ri.shape.size() != 2 || ri.shape[0] != b.experts || ri.shape[1] != dim)
      throw InputError(where + ": router " + layer.router + " has shape " + shape_string(ri.shape) + ", expected [" +
                       std::to_string(b.experts) + ", " + std::to_string(dim) + "]");
    MatrixView rv{"router", layer.router, ri.shape[0], ri.shape[1], 0, ri.shape[1], 1};
    auto R = read_matrix(src, rv, false);
    torch::Tensor rb;
    // DeepSeek's e_score_correction_bias only biases the selection of its sigmoid router, not the logits.
    const bool logit_bias = !layer.router_bias.empty() &&
                            layer.router_bias.find("e_score_correction_bias") == std::string::npos;
    if (logit_bias) {
      const TensorInfo& bi = src.at(layer.router_bias);
      MatrixView bv{"router_bias", layer.router_bias, 1, bi.numel(), 0, bi.numel(), 1};
      rb = read_matrix(src, bv, true);
    }
    const std::int64_t k = b.top_k;
    b.route = [R, rb, k](const torch::Tensor& x) {
      torch::NoGradGuard no_grad;
      return top_k_of(torch::softmax(torch::nn::functional::linear(x, R, rb), -1), k);
    };
  }
  return b;
}

ExpertBank layer_expert_bank(const MoELayerRef& ref) {
  ExpertBank b;
  b.key = layer_key(ref.index);
  b.layer = ref.index;
  b.prefix = ref.prefix;
  b.experts = ref.layer->num_experts();
  b.kind = "model";
  b.top_k = 1;
  bool batched = true;
  if (auto* s = dynamic_cast<SparseMoEImpl*>(ref.layer)) {
    b.dim = s->options.dim();
    b.out_dim = s->options.expert_options().output_dim();
    b.top_k = s->options.top_k();
    batched = s->options.batched_experts();
  } else if (auto* g = dynamic_cast<GatedMixtureImpl*>(ref.layer)) {
    b.dim = g->options.dim();
    b.out_dim = g->options.expert_options().output_dim();
    batched = g->options.batched_experts();
  } else if (auto* so = dynamic_cast<SoftMoEImpl*>(ref.layer)) {
    b.dim = so->options.dim();
    b.out_dim = so->options.expert_options().output_dim();
    batched = so->options.batched_experts();
  } else {
    throw std::invalid_argument(ref.prefix + ": unknown MoE layer type");
  }
  const torch::nn::ModuleList experts = ref.experts;
  b.expert = [experts](std::int64_t e, const torch::Tensor& x) { return detail::run_expert(experts, e, x); };
  if (batched) b.all = [experts](const torch::Tensor& x) { return BatchedExperts(experts).all(x); };
  MoELayer* layer = ref.layer;
  b.route = [layer](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    return token_routing(layer->forward_moe(x).routing);
  };
  return b;
}

void check_recorded_names(const TensorSource& recorded, const std::vector<std::string>& keys) {
  std::set<std::string> known;
  for (const auto& k : keys) known.insert(k + ".inputs"), known.insert(k + ".router_probs");
  for (const TensorInfo& t : recorded.tensors())
    if (!known.count(t.name))
      throw InputError(recorded.path() + ": tensor '" + t.name + "' is not <key>.inputs or <key>.router_probs of a "
                       "layer of the checkpoint (keys as `moescope inspect` prints them)");
}

std::optional<LayerActivations> recorded_layer(const ExpertBank& b, const TensorSource& recorded,
                                               const ActivationsOptions& opts) {
  const std::string& file = recorded.path();
  const TensorInfo* in = recorded.find(b.key + ".inputs");
  if (!in) return std::nullopt;
  if (!dtype_is_float(in->dtype) || in->shape.size() != 2 || in->shape[1] != b.dim)
    throw InputError(file + ": " + in->name + " is " + std::string(dtype_name(in->dtype)) + " " +
                     shape_string(in->shape) + ", expected a float [tokens, " + std::to_string(b.dim) + "] tensor");
  if (in->shape[0] == 0) throw InputError(file + ": " + in->name + " holds no tokens (shape " + shape_string(in->shape) + ")");
  const std::int64_t T = opts.max_tokens > 0 ? std::min(opts.max_tokens, in->shape[0]) : in->shape[0];
  const TensorInfo* pr = recorded.find(b.key + ".router_probs");
  if (pr && (!dtype_is_float(pr->dtype) || pr->shape.size() != 2 || pr->shape[0] != in->shape[0] ||
             pr->shape[1] != b.experts))
    throw InputError(file + ": " + pr->name + " is " + std::string(dtype_name(pr->dtype)) + " " +
                     shape_string(pr->shape) + ", expected a float [" + std::to_string(in->shape[0]) + ", " +
                     std::to_string(b.experts) + "] tensor");
  LayerActivationAccumulator st(b, pr ? "recorded" : (b.route ? "router" : "none"));
  say(opts, b.key + " on " + std::to_string(T) + " recorded tokens");
  const std::int64_t bs = std::max<std::int64_t>(1, opts.batch_size);
  std::vector<float> xb, pb;
  for (std::int64_t at = 0; at < T; at += bs) {
    const std::int64_t n = std::min(bs, T - at);
    xb.resize(static_cast<std::size_t>(n * b.dim));
    recorded.read_f32(in->name, at * b.dim, n * b.dim, xb.data());
    require_finite_rows(xb, b.dim, at, file, in->name);
    const auto x = torch::from_blob(xb.data(), {n, b.dim}, torch::kFloat32);
    TokenRouting r;
    if (pr) {
      pb.resize(static_cast<std::size_t>(n * b.experts));
      recorded.read_f32(pr->name, at * b.experts, n * b.experts, pb.data());
      require_finite_rows(pb, b.experts, at, file, pr->name);
      r = top_k_of(torch::from_blob(pb.data(), {n, b.experts}, torch::kFloat32), b.top_k);
    } else if (b.route) {
      r = b.route(x);
    }
    st.add(x, r, n);
    tokens_done(opts, b.key, at + n, T);
  }
  return st.finish();
}

ActivationsResult recorded_activations(const std::vector<ExpertBank>& banks, const TensorSource& recorded,
                                       const ActivationsOptions& opts) {
  std::vector<std::string> keys;
  for (const auto& b : banks) keys.push_back(b.key);
  check_recorded_names(recorded, keys);
  ActivationsResult res;
  res.inputs = "recorded";
  for (const auto& b : banks) {
    auto l = recorded_layer(b, recorded, opts);
    if (l) res.layers.push_back(std::move(*l));
    else say(opts, b.key + " has no recorded inputs, skipped");
  }
  if (res.layers.empty())
    throw InputError(recorded.path() + ": no tensor <key>.inputs for any MoE layer of the checkpoint");
  res.description = recorded_description(recorded.path());
  return res;
}

std::string recorded_description(const std::string& file) { return "recorded layer inputs from " + file; }

std::string random_description(const ActivationsOptions& opts) {
  const std::int64_t T = opts.max_tokens > 0 ? opts.max_tokens : opts.random_tokens;
  return "random probe: " + std::to_string(T) + " tokens of standard Gaussian inputs N(0, I_d) of each layer's width d "
         "(seed " + std::to_string(opts.seed) + "), not data";
}

LayerActivations random_layer(const ExpertBank& b, const ActivationsOptions& opts) {
  const std::int64_t bs = std::max<std::int64_t>(1, opts.batch_size);
  const std::int64_t T = opts.max_tokens > 0 ? opts.max_tokens : opts.random_tokens;
  if (T < 1) throw InputError("max_tokens: the random probe needs at least one token");
  LayerActivationAccumulator st(b, b.route ? (b.kind == "model" ? "model" : "router") : "none");
  Rng rng(opts.seed);  // the same stream for every layer: results do not depend on which layers are chosen
  std::vector<double> buf;
  say(opts, b.key + " on " + std::to_string(T) + " Gaussian tokens");
  for (std::int64_t at = 0; at < T; at += bs) {
    const std::int64_t n = std::min(bs, T - at);
    buf.resize(static_cast<std::size_t>(n * b.dim));
    rng.fill_gaussian(buf.data(), n * b.dim);
    const auto x = torch::from_blob(buf.data(), {n, b.dim}, torch::kFloat64).to(torch::kFloat32);
    TokenRouting r;
    if (b.route) r = b.route(x);
    st.add(x, r, n);
    tokens_done(opts, b.key, at + n, T);
  }
  return st.finish();
}

ActivationsResult random_activations(const std::vector<ExpertBank>& banks, const ActivationsOptions& opts) {
  ActivationsResult res;
  res.inputs = "random";
  for (const auto& b : banks) res.layers.push_back(random_layer(b, opts));
  res.description = random_description(opts);
  return res;
}

}  // namespace moescope
