#include "moescope/curvature/hvp.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

namespace moescope {

torch::Tensor flatten_tensors(const std::vector<torch::Tensor>& ts) {
  std::vector<torch::Tensor> flat;
  flat.reserve(ts.size());
  for (const auto& t : ts) flat.push_back(t.reshape({-1}));
  return torch::cat(flat);
}

std::vector<torch::Tensor> unflatten_like(const torch::Tensor& flat, const std::vector<torch::Tensor>& like) {
  std::vector<torch::Tensor> out;
  std::int64_t at = 0;
  for (const auto& t : like) {
    out.push_back(flat.narrow(0, at, t.numel()).view(t.sizes()));
    at += t.numel();
  }
  TORCH_CHECK(at == flat.numel(), "unflatten_like: ", flat.numel(), " elements for tensors of ", at);
  return out;
}

HessianOperator::HessianOperator(std::vector<torch::Tensor> params, BatchLossFn loss, std::int64_t batches,
                                 HvpOptions opts)
    : params_(std::move(params)), loss_(std::move(loss)), batches_(batches), opts_(opts) {
  if (params_.empty()) throw std::invalid_argument("HessianOperator: no parameters");
  if (batches_ < 1) throw std::invalid_argument("HessianOperator: batches = " + std::to_string(batches_));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].requires_grad())
      throw std::invalid_argument("HessianOperator: parameter " + std::to_string(i) + " does not require grad");
    size_ += params_[i].numel();
  }
}

std::vector<torch::Tensor> HessianOperator::grads_of(std::int64_t batch, bool create_graph, std::int64_t* samples) const {
  const BatchLoss b = loss_(batch);
  TORCH_CHECK(b.loss.numel() == 1, "HessianOperator: batch ", batch, " loss is not a scalar");
  TORCH_CHECK(b.samples > 0, "HessianOperator: batch ", batch, " has ", b.samples, " samples");
  *samples = b.samples;
  // A parameter the batch's loss does not reach (a top-k expert that received no token, a noisy gate's noise
  // weights in eval mode) has gradient zero: allow_unused, and zeros in its place.
  std::vector<torch::Tensor> g = torch::autograd::grad({b.loss}, params_, {}, /*retain_graph=*/create_graph,
                                                       create_graph, /*allow_unused=*/true);
  for (std::size_t i = 0; i < g.size(); ++i)
    if (!g[i].defined()) g[i] = torch::zeros_like(params_[i]);
  return g;
}

torch::Tensor HessianOperator::hvp(const torch::Tensor& v) const {
  TORCH_CHECK(v.numel() == size_, "HessianOperator: vector of ", v.numel(), " elements for ", size_, " parameters");
  const auto vs = unflatten_like(v.to(params_[0].options()).detach(), params_);
  if (opts_.keep_graph && kept_.empty()) {
    kept_.resize(static_cast<std::size_t>(batches_));
    kept_samples_.resize(static_cast<std::size_t>(batches_));
    for (std::int64_t b = 0; b < batches_; ++b)
      kept_[static_cast<std::size_t>(b)] = grads_of(b, true, &kept_samples_[static_cast<std::size_t>(b)]);
  }
  torch::Tensor total;
  std::int64_t n = 0;
  for (std::int64_t b = 0; b < batches_; ++b) {
    std::int64_t samples = 0;
    std::vector<torch::Tensor> g;
    if (opts_.keep_graph) {
      g = kept_[static_cast<std::size_t>(b)];
      samples = kept_samples_[static_cast<std::size_t>(b)];
    } else {
      g = grads_of(b, true, &samples);
    }
    torch::Tensor gv = torch::zeros({}, params_[0].options());
    for (std::size_t i = 0; i < g.size(); ++i)
      if (g[i].requires_grad()) gv = gv + (g[i] * vs[i]).sum();
    std::vector<torch::Tensor> hv(params_.size());
    if (gv.requires_grad())  // else the gradient does not depend on the parameters here: H v = 0
      hv = torch::autograd::grad({gv}, params_, {}, /*retain_graph=*/opts_.keep_graph, false, /*allow_unused=*/true);
    std::vector<torch::Tensor> parts;
    for (std::size_t i = 0; i < hv.size(); ++i)
      parts.push_back(hv[i].defined() ? hv[i].reshape({-1}) : torch::zeros({params_[i].numel()}, params_[i].options()));
    const torch::Tensor flat = torch::cat(parts) * static_cast<double>(samples);
    total = total.defined() ? total + flat : flat;
    n += samples;
  }
  return finish(total, n);
}

torch::Tensor HessianOperator::finish(const torch::Tensor& total, std::int64_t n) const {
  if (!opts_.all_reduce) return total / static_cast<double>(n);
  // One collective per product: the sum and the count travel together (the count is exact in float32 up to
  // 2^24 samples, and in float64 beyond any evaluation set).
  torch::Tensor packed = torch::cat({total, torch::full({1}, static_cast<double>(n), total.options())});
  opts_.all_reduce(packed);
  const double global_n = packed[size_].item<double>();
  TORCH_CHECK(global_n >= 1, "HessianOperator: no samples over all processes");
  return packed.narrow(0, 0, size_) / global_n;
}

torch::Tensor HessianOperator::gradient() const {
  torch::Tensor total;
  std::int64_t n = 0;
  for (std::int64_t b = 0; b < batches_; ++b) {
    std::int64_t samples = 0;
    const std::vector<torch::Tensor> g = grads_of(b, false, &samples);  // sets samples: sequence before use
    const torch::Tensor flat = flatten_tensors(g) * static_cast<double>(samples);
    total = total.defined() ? total + flat : flat;
    n += samples;
  }
  return finish(total.detach(), n);
}

double HessianOperator::loss() const {
  torch::NoGradGuard guard;
  double total = 0;
  std::int64_t n = 0;
  for (std::int64_t b = 0; b < batches_; ++b) {
    const BatchLoss l = loss_(b);
    total += l.loss.item<double>() * static_cast<double>(l.samples);
    n += l.samples;
  }
  if (opts_.all_reduce) {
    torch::Tensor packed = torch::tensor({total, static_cast<double>(n)}, torch::kFloat64);
    opts_.all_reduce(packed);
    return packed[0].item<double>() / packed[1].item<double>();
  }
  return total / static_cast<double>(n);
}

void HessianOperator::apply_impl(const double* x, double* y) const {
  const torch::Tensor v = torch::from_blob(const_cast<double*>(x), {size_}, torch::kFloat64);
  const torch::Tensor hv = hvp(v).to(torch::kCPU, torch::kFloat64).contiguous();
  std::memcpy(y, hv.data_ptr<double>(), static_cast<std::size_t>(size_) * sizeof(double));
}

}  // namespace moescope
