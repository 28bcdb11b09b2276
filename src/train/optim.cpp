#include "moescope/train/optim.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <ATen/Parallel.h>
#include <Eigen/Cholesky>
#include <Eigen/Core>

#include "moescope/util/json.hpp"
#include "moescope/model/expert.hpp"
#include "moescope/train/fused_kernels.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/files.hpp"

namespace moescope {

namespace {

constexpr const char* kOptimWhat = "optim config";
constexpr const char* kOMoEWhat = "omoe config";

[[noreturn]] void bad_config(const char* what, const std::string& msg) {
  throw InputError(std::string(what) + ": " + msg);
}

void check_finite_nonneg(const char* what, const char* key, double v) {
  if (!std::isfinite(v) || v < 0.0) {
    bad_config(what, std::string("field '") + key + "' must be finite and >= 0, got " + std::to_string(v));
  }
}

void validate_omoe(const OMoEOptions& o) {
  if (o.skip < 1) bad_config(kOMoEWhat, "field 'skip' must be >= 1, got " + std::to_string(o.skip));
  if (!std::isfinite(o.alpha) || o.alpha <= 0.0) {
    bad_config(kOMoEWhat, "field 'alpha' must be finite and > 0, got " + std::to_string(o.alpha));
  }
}

// First line of a torch error, without the C++ backtrace.
std::string short_what(const std::exception& e) {
  const auto* c10e = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10e != nullptr ? c10e->what_without_backtrace() : e.what();
  const auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

}  // namespace

// ---- config ---------------------------------------------------------------------------------------------

void to_json(nlohmann::json& j, const OMoEOptions& o) {
  j = nlohmann::json{{"enabled", o.enabled}, {"skip", o.skip}, {"alpha", o.alpha}};
}

void from_json(const nlohmann::json& j, OMoEOptions& o) {
  json_fields::check(j, kOMoEWhat, "omoe", {"enabled", "skip", "alpha"});
  json_fields::read(j, kOMoEWhat, "enabled", o.enabled);
  json_fields::read(j, kOMoEWhat, "skip", o.skip);
  json_fields::read(j, kOMoEWhat, "alpha", o.alpha);
  validate_omoe(o);
}

void to_json(nlohmann::json& j, const OptimConfig& c) {
  j = nlohmann::json{{"name", c.name},
                     {"lr", c.lr},
                     {"weight_decay", c.weight_decay},
                     {"momentum", c.momentum},
                     {"nesterov", c.nesterov},
                     {"beta1", c.beta1},
                     {"beta2", c.beta2},
                     {"eps", c.eps},
                     {"schedule", c.schedule},
                     {"warmup_steps", c.warmup_steps},
                     {"min_lr", c.min_lr},
                     {"milestones", c.milestones},
                     {"gamma", c.gamma},
                     {"clip_norm", c.clip_norm},
                     {"omoe", c.omoe}};
}

void from_json(const nlohmann::json& j, OptimConfig& c) {
  json_fields::check(j, kOptimWhat, "optim",
                       {"name", "lr", "weight_decay", "momentum", "nesterov", "beta1", "beta2", "eps", "schedule",
                        "warmup_steps", "min_lr", "milestones", "gamma", "clip_norm", "omoe"});
  json_fields::read(j, kOptimWhat, "name", c.name);
  json_fields::read(j, kOptimWhat, "lr", c.lr);
  json_fields::read(j, kOptimWhat, "weight_decay", c.weight_decay);
  json_fields::read(j, kOptimWhat, "momentum", c.momentum);
  json_fields::read(j, kOptimWhat, "nesterov", c.nesterov);
  json_fields::read(j, kOptimWhat, "beta1", c.beta1);
  json_fields::read(j, kOptimWhat, "beta2", c.beta2);
  json_fields::read(j, kOptimWhat, "eps", c.eps);
  json_fields::read(j, kOptimWhat, "schedule", c.schedule);
  json_fields::read(j, kOptimWhat, "warmup_steps", c.warmup_steps);
  json_fields::read(j, kOptimWhat, "min_lr", c.min_lr);
  json_fields::read(j, kOptimWhat, "milestones", c.milestones);
  json_fields::read(j, kOptimWhat, "gamma", c.gamma);
  json_fields::read(j, kOptimWhat, "clip_norm", c.clip_norm);
  json_fields::read(j, kOptimWhat, "omoe", c.omoe);  // its from_json throws InputError itself
  validate(c);
}

void validate(const OptimConfig& c) {
  if (c.name != "adamw" && c.name != "sgd") {
    bad_config(kOptimWhat, "field 'name' is \"" + c.name + "\", expected \"adamw\" or \"sgd\"");
  }
  if (c.schedule != "constant" && c.schedule != "cosine" && c.schedule != "step") {
    bad_config(kOptimWhat, "field 'schedule' is \"" + c.schedule + "\", expected \"constant\", \"cosine\" or \"step\"");
  }
  check_finite_nonneg(kOptimWhat, "lr", c.lr);
  check_finite_nonneg(kOptimWhat, "weight_decay", c.weight_decay);
  check_finite_nonneg(kOptimWhat, "momentum", c.momentum);
  check_finite_nonneg(kOptimWhat, "min_lr", c.min_lr);
  check_finite_nonneg(kOptimWhat, "clip_norm", c.clip_norm);
  if (c.name == "sgd" && c.nesterov && c.momentum <= 0.0) {
    bad_config(kOptimWhat, "'nesterov' needs 'momentum' > 0");
  }
  for (const auto& [key, v] : {std::pair<const char*, double>{"beta1", c.beta1}, {"beta2", c.beta2}}) {
    if (!(v >= 0.0 && v < 1.0)) bad_config(kOptimWhat, std::string("field '") + key + "' must be in [0, 1), got " +
                                                           std::to_string(v));
  }
  if (!std::isfinite(c.eps) || c.eps <= 0.0) {
    bad_config(kOptimWhat, "field 'eps' must be finite and > 0, got " + std::to_string(c.eps));
  }
  if (c.warmup_steps < 0) bad_config(kOptimWhat, "field 'warmup_steps' must be >= 0");
  if (!std::isfinite(c.gamma) || c.gamma <= 0.0) {
    bad_config(kOptimWhat, "field 'gamma' must be finite and > 0, got " + std::to_string(c.gamma));
  }
  for (std::size_t i = 0; i < c.milestones.size(); ++i) {
    if (c.milestones[i] < 0 || (i > 0 && c.milestones[i] <= c.milestones[i - 1])) {
      bad_config(kOptimWhat, "field 'milestones' must be non-negative and strictly increasing");
    }
  }
  validate_omoe(c.omoe);
}

// ---- optimisers and schedules --------------------------------------------------------------------------

namespace {

// A slice of one tensor's elements for the fused loops: parallel regions run over slices of all parameters at
// once (one wake-up of the worker threads per step, not one per parameter).
struct Slice {
  std::size_t item;  // which tensor
  std::int64_t begin, end;
};

template <class T>
void scale_elements(T* x, std::int64_t n, double coef) {
  const T c = static_cast<T>(coef);
  for (std::int64_t i = 0; i < n; ++i) x[i] *= c;
}

// Runs f(slice, data pointer at its first element) for every slice of `tensors` (float32 or float64), all in one
// parallel region.
template <class F>
void for_each_slice(const std::vector<Slice>& work, const std::vector<torch::Tensor>& tensors, F&& f) {
  at::parallel_for(0, static_cast<std::int64_t>(work.size()), 1, [&](std::int64_t w0, std::int64_t w1) {
    for (std::int64_t w = w0; w < w1; ++w) {
      const Slice& sl = work[static_cast<std::size_t>(w)];
      const torch::Tensor& t = tensors[sl.item];
      if (t.scalar_type() == torch::kFloat32) f(static_cast<std::size_t>(w), sl, t.data_ptr<float>() + sl.begin);
      else f(static_cast<std::size_t>(w), sl, t.data_ptr<double>() + sl.begin);
    }
  });
}

template <class Size>
std::vector<Slice> slices(std::size_t items, Size&& size_of, std::int64_t length) {
  std::vector<Slice> out;
  for (std::size_t k = 0; k < items; ++k) {
    const std::int64_t n = size_of(k);
    for (std::int64_t b = 0; b < n; b += length) out.push_back({k, b, std::min(n, b + length)});
  }
  return out;
}

// Whether the fused loops below (AdamW's update, the clipping's sum of squares) can run over `t`'s elements: a
// dense, contiguous float32 or float64 CPU tensor.
bool flat_cpu_floating(const torch::Tensor& t) {
  return t.device().is_cpu() && !t.is_sparse() && t.is_contiguous() &&
         (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64);
}

// The state map's key for a parameter: LibTorch 1.13 keys by the text of the TensorImpl address
// (c10::guts::to_string), 2.x by the address itself.
template <class Key>
Key state_key(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << p.unsafeGetTensorImpl();
    return s.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

// torch::optim::AdamW (the same options, state objects and archive, so a state saved by either loads into the
// other) whose step updates each contiguous float32/float64 CPU parameter in one fused pass; any other parameter
// (CUDA, other dtypes, non-contiguous) takes torch's own step. Parameters without a gradient are skipped, as torch
// skips them (OMoE's orthogonal step leaves its weights so).
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    torch::Tensor loss;
    if (closure) {
      at::AutoGradMode enable_grad(true);
      loss = closure();
    }
    using Key = typename std::decay_t<decltype(state_)>::key_type;
    std::vector<std::pair<torch::Tensor, torch::Tensor>> fused;  // (parameter, gradient) updated here
    struct Update {
      torch::Tensor p, g, m, v;
      AdamWScalars scalars;
    };
    std::vector<Update> updates;
    bool rest = false;  // parameters left to torch's step
    for (auto& group : param_groups_) {
      const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        const torch::Tensor& g = p.grad();
        if (!fused_pass_updates(o, p)) {
          rest = true;
          continue;
        }
        auto& slot = state_[state_key<Key>(p)];
        if (!slot) {
          auto fresh = std::make_unique<torch::optim::AdamWParamState>();
          fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
          fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
          slot = std::move(fresh);
        }
        auto& s = static_cast<torch::optim::AdamWParamState&>(*slot);
        if (!s.exp_avg().is_contiguous()) s.exp_avg(s.exp_avg().contiguous());  // e.g. a loaded state
        if (!s.exp_avg_sq().is_contiguous()) s.exp_avg_sq(s.exp_avg_sq().contiguous());
        s.step(s.step() + 1);
        AdamWScalars a;
        a.lr = o.lr();
        a.weight_decay = o.weight_decay();
        a.beta1 = std::get<0>(o.betas());
        a.beta2 = std::get<1>(o.betas());
        a.eps = o.eps();
        a.bias_correction1 = 1.0 - std::pow(a.beta1, static_cast<double>(s.step()));
        a.bias_correction2 = 1.0 - std::pow(a.beta2, static_cast<double>(s.step()));
        a.grad_scale = grad_scale_;
        updates.push_back({p, g, s.exp_avg(), s.exp_avg_sq(), a});
        fused.emplace_back(p, g);
      }
    }
    // All parameters in one parallel region, in slices of 16k elements (elementwise: the same bits however the
    // slices fall on threads).
    const std::vector<Slice> work =
        slices(updates.size(), [&](std::size_t k) { return updates[k].p.numel(); }, std::int64_t{1} << 14);
    at::parallel_for(0, static_cast<std::int64_t>(work.size()), 1, [&](std::int64_t w0, std::int64_t w1) {
      for (std::int64_t w = w0; w < w1; ++w) {
        const Slice& sl = work[static_cast<std::size_t>(w)];
        Update& u = updates[sl.item];
        const std::int64_t b = sl.begin, n = sl.end - sl.begin;
        if (u.p.scalar_type() == torch::kFloat32)
          adamw_update(u.p.data_ptr<float>() + b, u.g.data_ptr<float>() + b, u.m.data_ptr<float>() + b,
                       u.v.data_ptr<float>() + b, n, u.scalars);
        else
          adamw_update(u.p.data_ptr<double>() + b, u.g.data_ptr<double>() + b, u.m.data_ptr<double>() + b,
                       u.v.data_ptr<double>() + b, n, u.scalars);
      }
    });
    for (Update& u : updates) u.p.unsafeGetTensorImpl()->bump_version();  // as torch's in-place ops do
    grad_scale_ = 1.0;
    fused_updates_ += static_cast<std::int64_t>(fused.size());
    if (rest) {  // torch's step for the others, with the gradients of those done here hidden from it
      for (auto& [p, g] : fused) p.mutable_grad() = torch::Tensor();
      torch::optim::AdamW::step();
      for (auto& [p, g] : fused) p.mutable_grad() = g;
    }
    return loss;
  }

  std::int64_t fused_updates() const { return fused_updates_; }

  // Whether the fused pass updates parameter p (with a gradient), the others taking torch's step.
  static bool fused_pass_updates(const torch::optim::AdamWOptions& o, const torch::Tensor& p) {
    const torch::Tensor& g = p.grad();
    return !o.amsgrad() && flat_cpu_floating(p) && flat_cpu_floating(g) && g.scalar_type() == p.scalar_type();
  }

  // Whether the next step updates every parameter with a gradient in the fused pass, and those are exactly the
  // ones of `params` with a gradient (so that their clipping coefficient can be applied there).
  bool fuses_exactly(const std::vector<torch::Tensor>& params) const {
    std::vector<const void*> mine, theirs;
    for (const auto& group : param_groups_) {
      const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
      for (const auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        if (!fused_pass_updates(o, p)) return false;
        mine.push_back(p.unsafeGetTensorImpl());
      }
    }
    for (const auto& p : params)
      if (p.defined() && p.grad().defined()) theirs.push_back(p.unsafeGetTensorImpl());
    std::sort(mine.begin(), mine.end());
    std::sort(theirs.begin(), theirs.end());
    return mine == theirs;
  }

  // The next step reads each gradient times `scale` (then forgets it).
  void defer_gradient_scale(double scale) { grad_scale_ = scale; }

 private:
  std::int64_t fused_updates_ = 0;
  double grad_scale_ = 1.0;
};

}  // namespace

std::int64_t fused_adamw_updates(const torch::optim::Optimizer& optimizer) {
  const auto* f = dynamic_cast<const FusedAdamW*>(&optimizer);
  return f ? f->fused_updates() : 0;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& config, std::vector<torch::Tensor> params) {
  validate(config);
  if (config.name == "adamw") {
    auto o = torch::optim::AdamWOptions(config.lr)
                 .betas({config.beta1, config.beta2})
                 .eps(config.eps)
                 .weight_decay(config.weight_decay)
                 .amsgrad(false);
    return std::make_unique<FusedAdamW>(std::move(params), o);
  }
  auto o = torch::optim::SGDOptions(config.lr)
               .momentum(config.momentum)
               .dampening(0.0)
               .weight_decay(config.weight_decay)
               .nesterov(config.nesterov);
  return std::make_unique<torch::optim::SGD>(std::move(params), o);
}

double learning_rate(const OptimConfig& config, std::int64_t step, std::int64_t total_steps) {
  if (step < 0) throw std::invalid_argument("learning_rate: step must be >= 0, got " + std::to_string(step));
  const auto W = config.warmup_steps;
  double base = config.lr;
  if (config.schedule == "cosine") {
    const auto T = total_steps - W;
    if (T > 0) {
      const auto t = std::clamp<std::int64_t>(step - W, 0, T);
      const double pi = std::acos(-1.0);
      base = config.min_lr + 0.5 * (config.lr - config.min_lr) *
                                 (1.0 + std::cos(pi * static_cast<double>(t) / static_cast<double>(T)));
    }
  } else if (config.schedule == "step") {
    for (const auto m : config.milestones) {
      if (m <= step) base *= config.gamma;
    }
  } else if (config.schedule != "constant") {
    throw std::invalid_argument("learning_rate: unknown schedule \"" + config.schedule + "\"");
  }
  if (step < W) base *= static_cast<double>(step) / static_cast<double>(W);
  return base;
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

void compute_gradients(const torch::Tensor& loss, const std::vector<torch::Tensor>& params) {
  for (const auto& p : params)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  loss.backward();
  torch::NoGradGuard no_grad;
  for (const auto& p : params)
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p, torch::MemoryFormat::Preserve);
}

double clip_gradients(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return 0.0;
  const auto device = grads.front().device();
  std::vector<torch::Tensor> flat, norms;  // norms: the rest, on their device
  for (const auto& g : grads) {
    if (flat_cpu_floating(g)) flat.push_back(g);
    else norms.push_back(torch::linalg_vector_norm(g, 2, c10::nullopt, false, torch::kDouble).to(device));
  }
  // Float64 sums of squares of fixed slices of 2^16 elements (fused_kernels: eight lanes each), added in slice
  // order: one pass over the float32 gradients (torch's float64 norm converts them first: 1.4 ms of a 15 ms step
  // on the vision study's gated head), the same bits at any thread count, one parallel region for all.
  const std::vector<Slice> work = slices(flat.size(), [&](std::size_t k) { return flat[k].numel(); }, 1 << 16);
  std::vector<double> partial(work.size(), 0.0);
  for_each_slice(work, flat, [&](std::size_t w, const Slice& sl, const auto* x) {
    partial[w] = sum_of_squares(x, sl.end - sl.begin);
  });
  double squares = 0.0;
  for (const double v : partial) squares += v;
  if (!norms.empty()) squares += torch::stack(norms).pow(2).sum().item<double>();
  const double total = std::sqrt(squares);
  if (max_norm > 0.0 && std::isfinite(total) && total > max_norm) {
    const double coef = max_norm / (total + 1e-6);
    // The flat gradients scaled in one parallel region (g *= coef in g's dtype, as torch's mul_ by a double
    // rounds it; 34 mul_ calls were 0.3 ms of a 5 ms step on the vision study's gated head), the rest by torch.
    for_each_slice(work, flat,
                   [&](std::size_t, const Slice& sl, auto* x) { scale_elements(x, sl.end - sl.begin, coef); });
    torch::NoGradGuard no_grad;
    for (auto& g : grads) {
      if (flat_cpu_floating(g)) g.unsafeGetTensorImpl()->bump_version();
      else g.mul_(coef);
    }
  }
  return total;
}

double clip_gradients_into_step(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& params,
                                double max_norm) {
  auto* fused = dynamic_cast<FusedAdamW*>(&optimizer);
  if (fused == nullptr || !fused->fuses_exactly(params)) return clip_gradients(params, max_norm);
  const double total = clip_gradients(params, 0.0);  // the norm only
  if (max_norm > 0.0 && std::isfinite(total) && total > max_norm) fused->defer_gradient_scale(max_norm / (total + 1e-6));
  return total;
}

void save_optimizer(torch::optim::Optimizer& optimizer, const std::string& path) {
  // Serialised in memory, then written by write_file_atomic: LibTorch's file writer throws from its destructor
  // when a write fails (disk full, `ulimit -f`), which terminates the process instead of reporting it.
  std::ostringstream bytes;
  try {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    archive.save_to(bytes);
  } catch (const std::exception& e) {
    fail_input(path, "cannot write optimizer state: " + short_what(e));
  }
  write_file_atomic(path, bytes.str());
}

void load_optimizer(torch::optim::Optimizer& optimizer, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail_input(path, "optimizer state file not found");
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    optimizer.load(archive);
  } catch (const std::exception& e) {
    fail_input(path, "cannot read optimizer state: " + short_what(e));
  }
}

// ---- OWM projectors ------------------------------------------------------------------------------------

namespace {

torch::Tensor check_rows(const torch::Tensor& P, const torch::Tensor& rows, double alpha, const char* what) {
  TORCH_CHECK(P.defined() && P.dim() == 2 && P.size(0) == P.size(1), what, ": P must be square, got ",
              P.defined() ? P.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(P.is_floating_point(), what, ": P must be floating, got ", P.scalar_type());
  TORCH_CHECK(rows.defined() && rows.dim() == 2 && rows.size(1) == P.size(0), what, ": rows must be [n, ",
              P.size(0), "], got ", rows.defined() ? rows.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(alpha > 0.0 && std::isfinite(alpha), what, ": alpha must be finite and > 0, got ", alpha);
  return rows.detach().to(P.device(), P.scalar_type());
}

// Lower Cholesky factor of an SPD matrix; a failure names the caller and suggests a larger alpha.
torch::Tensor cholesky_factor(const torch::Tensor& M, const std::string& what) {
  auto [L, info] = torch::linalg_cholesky_ex(M);
  const auto bad = info.item<std::int64_t>();
  if (bad != 0) {
    throw std::runtime_error(what + ": alpha I + Gram is not positive definite in " +
                             std::string(c10::toString(M.scalar_type())) + " (leading minor " +
                             std::to_string(bad) + "); alpha is too small for the inputs' scale");
  }
  return L;
}

// X = M^{-1} B for a symmetric positive definite M [d, d] and B [d, m], both float64 on one device. On the CPU
// through Eigen's blocked LLT (bench_optim: about 4x faster than torch 1.13's LAPACK cholesky + cholesky_solve
// at d = 512); elsewhere through torch.
torch::Tensor solve_spd(const torch::Tensor& M, const torch::Tensor& B, const std::string& what) {
  if (!M.is_cuda()) {
    using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto Mc = M.contiguous();
    const auto Bc = B.contiguous();
    const auto d = M.size(0), m = B.size(1);
    // M is symmetric: reading its row-major storage as column-major gives the same matrix.
    const Eigen::Map<const Eigen::MatrixXd> Me(Mc.data_ptr<double>(), d, d);
    const Eigen::LLT<Eigen::MatrixXd> llt(Me);
    if (llt.info() != Eigen::Success) {
      throw std::runtime_error(what + ": alpha I + Gram is not positive definite in float64; alpha is too small "
                                      "for the inputs' scale");
    }
    auto X = torch::empty({d, m}, Bc.options());
    Eigen::Map<RowMajor>(X.data_ptr<double>(), d, m) =
        llt.solve(Eigen::Map<const RowMajor>(Bc.data_ptr<double>(), d, m));
    return X;
  }
  return torch::cholesky_solve(B, cholesky_factor(M, what));
}

}  // namespace

torch::Tensor owm_update_rows(const torch::Tensor& P0, const torch::Tensor& rows, double alpha) {
  const auto X = check_rows(P0, rows, alpha, "owm_update_rows");
  torch::NoGradGuard no_grad;
  auto P = P0.detach().clone();
  for (std::int64_t i = 0; i < X.size(0); ++i) {
    const auto x = X[i];
    const auto k = P.mv(x);
    P.sub_(torch::outer(k, k) / (alpha + x.dot(k)));
  }
  return P;
}

torch::Tensor owm_update_block(const torch::Tensor& P0, const torch::Tensor& rows, double alpha) {
  const auto X = check_rows(P0, rows, alpha, "owm_update_block");
  torch::NoGradGuard no_grad;
  const auto P = P0.detach();
  const auto n = X.size(0);
  if (n == 0) return P.clone();
  const auto PA = P.mm(X.t());                                                        // [d, n]
  const auto S = X.mm(PA) + alpha * torch::eye(n, P.options());                       // alpha I + A^T P A
  const auto Y = torch::linalg_solve(S, PA.t());                                      // S^{-1} A^T P  [n, d]
  return P - PA.mm(Y);
}

torch::Tensor owm_projector(const torch::Tensor& gram, double alpha) {
  TORCH_CHECK(gram.defined() && gram.dim() == 2 && gram.size(0) == gram.size(1), "owm_projector: gram must be square");
  TORCH_CHECK(gram.is_floating_point(), "owm_projector: gram must be floating, got ", gram.scalar_type());
  TORCH_CHECK(alpha > 0.0 && std::isfinite(alpha), "owm_projector: alpha must be finite and > 0, got ", alpha);
  torch::NoGradGuard no_grad;
  const auto M = gram.detach() + alpha * torch::eye(gram.size(0), gram.options());
  return alpha * torch::cholesky_inverse(cholesky_factor(M, "owm_projector"));
}

// ---- OMoE ----------------------------------------------------------------------------------------------

OMoE::OMoE(std::vector<std::vector<std::vector<torch::Tensor>>> input_weights, OMoEOptions options)
    : options_(options) {
  if (options.skip < 1) throw std::invalid_argument("OMoE: skip must be >= 1, got " + std::to_string(options.skip));
  if (!(options.alpha > 0.0 && std::isfinite(options.alpha))) {
    throw std::invalid_argument("OMoE: alpha must be finite and > 0, got " + std::to_string(options.alpha));
  }
  for (std::size_t l = 0; l < input_weights.size(); ++l) {
    auto& experts = input_weights[l];
    const std::string where = "OMoE: layer " + std::to_string(l);
    if (experts.empty()) throw std::invalid_argument(where + " has no experts");
    Layer L;
    torch::Device device(torch::kCPU);
    for (std::size_t e = 0; e < experts.size(); ++e) {
      if (experts[e].empty()) throw std::invalid_argument(where + " expert " + std::to_string(e) + " has no weights");
      for (const auto& w : experts[e]) {
        if (!w.defined() || w.dim() != 2 || !w.is_floating_point()) {
          throw std::invalid_argument(where + " expert " + std::to_string(e) +
                                      ": input weights must be floating [out, d] tensors");
        }
        if (L.dim == 0) {
          L.dim = w.size(1);
          device = w.device();
        }
        if (w.size(1) != L.dim || w.device() != device) {
          throw std::invalid_argument(where + " expert " + std::to_string(e) + ": weight [" +
                                      std::to_string(w.size(0)) + ", " + std::to_string(w.size(1)) +
                                      "] does not match the layer's input width " + std::to_string(L.dim) +
                                      " or device");
        }
      }
    }
    const auto opts = torch::TensorOptions().dtype(torch::kDouble).device(device);
    for (std::size_t e = 0; e < experts.size(); ++e) L.grams.push_back(torch::zeros({L.dim, L.dim}, opts));
    L.counts.assign(experts.size(), 0);
    L.projectors.resize(experts.size());
    L.experts = std::move(experts);
    weights_.push_back(std::move(L));
  }
}

std::vector<std::vector<torch::Tensor>> OMoE::expert_input_weights(const torch::nn::ModuleList& experts) {
  if (experts.is_empty()) throw std::invalid_argument("OMoE::expert_input_weights: the expert list is null");
  std::vector<std::vector<torch::Tensor>> out;
  for (std::size_t e = 0; e < experts->size(); ++e) {
    const auto* ffn = experts->ptr(e)->as<FFNImpl>();
    if (ffn == nullptr) {
      throw std::invalid_argument("OMoE::expert_input_weights: expert " + std::to_string(e) + " is not an FFN");
    }
    if (ffn->options.kind() == FFNKind::SwiGLU) {
      out.push_back({ffn->w_gate->weight, ffn->w_up->weight});
    } else {
      out.push_back({ffn->fc1->weight});
    }
  }
  return out;
}

bool OMoE::is_orthogonal_step(std::int64_t step) const {
  return options_.enabled && step >= 0 && (step + 1) % options_.skip == 0;
}

const OMoE::Layer& OMoE::layer_at(int layer) const {
  if (layer < 0 || layer >= num_layers()) {
    throw std::out_of_range("OMoE: layer " + std::to_string(layer) + " out of range [0, " +
                            std::to_string(num_layers()) + ")");
  }
  return weights_[static_cast<std::size_t>(layer)];
}

OMoE::Layer& OMoE::layer_at(int layer) {
  return const_cast<Layer&>(static_cast<const OMoE*>(this)->layer_at(layer));
}

int OMoE::num_experts(int layer) const { return static_cast<int>(layer_at(layer).grams.size()); }

std::int64_t OMoE::dim(int layer) const { return layer_at(layer).dim; }

std::int64_t OMoE::accumulated(int layer, int expert) const {
  const auto& L = layer_at(layer);
  if (expert < 0 || expert >= static_cast<int>(L.counts.size())) {
    throw std::out_of_range("OMoE: expert " + std::to_string(expert) + " out of range in layer " +
                            std::to_string(layer));
  }
  return L.counts[static_cast<std::size_t>(expert)];
}

void OMoE::accumulate_expert(int layer, int expert, const torch::Tensor& inputs) {
  auto& L = layer_at(layer);
  const auto E = static_cast<int>(L.grams.size());
  if (expert < 0 || expert >= E) {
    throw std::out_of_range("OMoE: expert " + std::to_string(expert) + " out of range in layer " +
                            std::to_string(layer));
  }
  TORCH_CHECK(inputs.defined() && inputs.dim() >= 1 && inputs.size(-1) == L.dim, "OMoE::accumulate_expert: layer ",
              layer, " expects inputs [n, ", L.dim, "], got ", inputs.defined() ? inputs.sizes() : torch::IntArrayRef{});
  torch::NoGradGuard no_grad;
  auto& gram = L.grams[static_cast<std::size_t>(expert)];
  const auto X = inputs.detach().reshape({-1, L.dim}).to(gram.device(), torch::kDouble);
  if (X.size(0) == 0) return;
  gram.addmm_(X.t(), X);
  L.counts[static_cast<std::size_t>(expert)] += X.size(0);
  // P_e depends on the other experts' Grams only: every projector but the expert's own is stale now.
  for (int j = 0; j < E; ++j) {
    if (j != expert) L.projectors[static_cast<std::size_t>(j)] = torch::Tensor();
  }
}

void OMoE::accumulate(int layer, const torch::Tensor& inputs, const RoutingInfo& routing) {
  const auto& L = layer_at(layer);
  const auto E = static_cast<std::int64_t>(L.grams.size());
  TORCH_CHECK(inputs.defined() && inputs.dim() >= 1 && inputs.size(-1) == L.dim, "OMoE::accumulate: layer ", layer,
              " expects inputs [..., ", L.dim, "], got ", inputs.defined() ? inputs.sizes() : torch::IntArrayRef{});
  torch::NoGradGuard no_grad;
  const auto X = inputs.detach().reshape({-1, L.dim});
  const auto T = X.size(0);
  if (T == 0) return;
  torch::Tensor assign;  // [T, E] bool, on the inputs' device
  if (routing.topk_indices.defined()) {
    const auto& ti = routing.topk_indices;
    TORCH_CHECK(ti.numel() > 0 && ti.numel() % T == 0, "OMoE::accumulate: topk_indices ",
                ti.sizes(), " do not match ", T, " tokens");
    const auto idx = ti.reshape({T, -1}).to(X.device(), torch::kLong);
    TORCH_CHECK(idx.min().item<std::int64_t>() >= 0 && idx.max().item<std::int64_t>() < E,
                "OMoE::accumulate: expert indices outside [0, ", E, ")");
    torch::Tensor keep;
    if (routing.dropped_mask.defined()) {
      TORCH_CHECK(routing.dropped_mask.numel() == idx.numel(), "OMoE::accumulate: dropped_mask ",
                  routing.dropped_mask.sizes(), " does not match topk_indices ", ti.sizes());
      keep = routing.dropped_mask.reshape({T, -1}).to(X.device()).logical_not();
    }
    assign = torch::zeros({T, E}, torch::TensorOptions().dtype(torch::kBool).device(X.device()));
    for (std::int64_t j = 0; j < idx.size(1); ++j) {
      auto hit = torch::one_hot(idx.select(1, j), E).to(torch::kBool);
      if (keep.defined()) hit = hit.logical_and(keep.select(1, j).unsqueeze(1));
      assign.logical_or_(hit);
    }
  } else if (routing.probs.defined()) {
    const auto& p = routing.probs;
    TORCH_CHECK(p.dim() >= 1 && p.size(-1) == E && p.numel() == T * E, "OMoE::accumulate: probs ", p.sizes(),
                " do not match ", T, " tokens and ", E, " experts");
    assign = torch::one_hot(p.detach().reshape({T, E}).argmax(1), E).to(torch::kBool).to(X.device());
  } else {
    throw std::invalid_argument("OMoE::accumulate: routing has neither topk_indices nor probs");
  }
  for (std::int64_t e = 0; e < E; ++e) {
    const auto rows = assign.select(1, e).nonzero().squeeze(1);
    if (rows.numel() == 0) continue;
    accumulate_expert(layer, static_cast<int>(e), X.index_select(0, rows));
  }
}

torch::Tensor OMoE::regularised_other_gram(const Layer& L, std::size_t e) const {
  auto M = options_.alpha * torch::eye(L.dim, L.grams[e].options());
  for (std::size_t j = 0; j < L.grams.size(); ++j) {
    if (j != e) M.add_(L.grams[j]);
  }
  return M;
}

const torch::Tensor& OMoE::projector(int layer, int expert) const {
  const auto& L = layer_at(layer);
  if (expert < 0 || expert >= static_cast<int>(L.grams.size())) {
    throw std::out_of_range("OMoE: expert " + std::to_string(expert) + " out of range in layer " +
                            std::to_string(layer));
  }
  auto& P = L.projectors[static_cast<std::size_t>(expert)];
  if (!P.defined()) {
    torch::NoGradGuard no_grad;
    const auto M = regularised_other_gram(L, static_cast<std::size_t>(expert));
    const auto where = "OMoE layer " + std::to_string(layer) + " expert " + std::to_string(expert);
    P = options_.alpha * solve_spd(M, torch::eye(L.dim, M.options()), where);
    P = 0.5 * (P + P.t());  // exactly symmetric, as P_e is
  }
  return P;
}

std::int64_t OMoE::orthogonal_step(double lr) {
  TORCH_CHECK(std::isfinite(lr), "OMoE::orthogonal_step: lr must be finite, got ", lr);
  torch::NoGradGuard no_grad;
  std::int64_t updated = 0;
  for (std::size_t l = 0; l < weights_.size(); ++l) {
    auto& L = weights_[l];
    for (std::size_t e = 0; e < L.experts.size(); ++e) {
      std::vector<torch::Tensor> ws, gs;
      for (auto& w : L.experts[e]) {
        if (w.grad().defined()) {
          ws.push_back(w);
          gs.push_back(w.grad().to(L.grams[e].device(), torch::kDouble));
        }
      }
      if (ws.empty()) continue;
      // dW = G P_e = alpha G M^{-1} with M = alpha I + sum_{j != e} C_j symmetric: dW^T = alpha M^{-1} G^T,
      // one Cholesky factorisation and a triangular solve for all of the expert's tensors at once.
      const auto G = torch::cat(gs, 0);  // [sum out, d]
      torch::Tensor dW;
      if (L.projectors[e].defined()) {
        dW = G.mm(L.projectors[e]);
      } else {
        const auto where = "OMoE layer " + std::to_string(l) + " expert " + std::to_string(e);
        dW = (options_.alpha * solve_spd(regularised_other_gram(L, e), G.t(), where)).t();
      }
      std::int64_t row = 0;
      for (auto& w : ws) {
        const auto n = w.size(0);
        w.sub_((lr * dW.narrow(0, row, n)).to(w.device(), w.scalar_type()));
        w.mutable_grad() = torch::Tensor();
        row += n;
        ++updated;
      }
    }
  }
  return updated;
}

std::map<std::string, torch::Tensor> OMoE::state() const {
  std::map<std::string, torch::Tensor> out;
  for (std::size_t l = 0; l < weights_.size(); ++l) {
    const auto& L = weights_[l];
    for (std::size_t e = 0; e < L.grams.size(); ++e) {
      const auto key = "layer_" + std::to_string(l) + ".expert_" + std::to_string(e);
      out[key + ".gram"] = L.grams[e].clone();
      out[key + ".count"] = torch::tensor(L.counts[e], torch::kLong);
    }
  }
  return out;
}

void OMoE::load_state(const std::map<std::string, torch::Tensor>& state) {
  const auto fail = [](const std::string& msg) { throw InputError("OMoE state: " + msg); };
  std::vector<std::vector<torch::Tensor>> grams(weights_.size());
  std::vector<std::vector<std::int64_t>> counts(weights_.size());
  std::size_t expected = 0;
  for (std::size_t l = 0; l < weights_.size(); ++l) {
    const auto& L = weights_[l];
    for (std::size_t e = 0; e < L.grams.size(); ++e) {
      const auto key = "layer_" + std::to_string(l) + ".expert_" + std::to_string(e);
      const auto g = state.find(key + ".gram");
      const auto c = state.find(key + ".count");
      if (g == state.end()) fail("missing '" + key + ".gram'");
      if (c == state.end()) fail("missing '" + key + ".count'");
      const auto& G = g->second;
      if (!G.defined() || !G.is_floating_point() || G.dim() != 2 || G.size(0) != L.dim || G.size(1) != L.dim) {
        fail("'" + key + ".gram' must be a floating [" + std::to_string(L.dim) + ", " + std::to_string(L.dim) +
             "] tensor");
      }
      const auto& C = c->second;
      if (!C.defined() || C.numel() != 1 || C.is_floating_point() || C.is_complex()) {
        fail("'" + key + ".count' must be an integer scalar");
      }
      const auto n = C.item<std::int64_t>();
      if (n < 0) fail("'" + key + ".count' is negative");
      grams[l].push_back(G.detach().to(L.grams[e].device(), torch::kDouble).clone());
      counts[l].push_back(n);
      expected += 2;
    }
  }
  if (state.size() != expected) {
    for (const auto& item : state) {
      bool known = false;
      const auto& k = item.first;
      for (std::size_t l = 0; l < weights_.size() && !known; ++l) {
        for (std::size_t e = 0; e < weights_[l].grams.size() && !known; ++e) {
          const auto key = "layer_" + std::to_string(l) + ".expert_" + std::to_string(e);
          known = k == key + ".gram" || k == key + ".count";
        }
      }
      if (!known) fail("unexpected entry '" + k + "'");
    }
  }
  for (std::size_t l = 0; l < weights_.size(); ++l) {
    auto& L = weights_[l];
    L.grams = std::move(grams[l]);
    L.counts = std::move(counts[l]);
    for (auto& P : L.projectors) P = torch::Tensor();
  }
}

}  // namespace moescope
