#include "moescope/model/backbone.hpp"

#include <cstddef>

namespace moescope {
namespace {

torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride,
                       std::int64_t padding, bool bias) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(bias));
}

// A Sequential's forward with each (Conv2d, BatchNorm2d) pair run through detail::conv_bn.
torch::Tensor run_sequential(torch::nn::SequentialImpl& seq, torch::Tensor h) {
  for (std::size_t i = 0; i < seq.size(); ++i) {
    auto* conv = seq.ptr(i)->as<torch::nn::Conv2dImpl>();
    auto* bn = i + 1 < seq.size() ? seq.ptr(i + 1)->as<torch::nn::BatchNorm2dImpl>() : nullptr;
    if (conv != nullptr && bn != nullptr) {
      h = detail::conv_bn(*conv, *bn, h);
      ++i;
    } else {
      h = (seq.begin() + static_cast<std::ptrdiff_t>(i))->forward(h);
    }
  }
  return h;
}

}  // namespace

torch::Tensor detail::conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x) {
  const auto& b = bn.options;
  const auto& c = conv.options;
  if (bn.is_training() || !b.track_running_stats() || !bn.running_mean.defined() ||
      !c10::holds_alternative<torch::enumtype::kZeros>(c.padding_mode()))
    return bn.forward(conv.forward(x));
  torch::Tensor scale = torch::rsqrt(bn.running_var + b.eps());
  if (b.affine()) scale = scale * bn.weight;
  torch::Tensor shift = -bn.running_mean * scale;
  if (b.affine()) shift = shift + bn.bias;
  if (conv.bias.defined()) shift = shift + conv.bias * scale;
  const torch::Tensor weight = conv.weight * scale.view({-1, 1, 1, 1});
  namespace F = torch::nn::functional;
  return F::conv2d(x, weight,
                   F::Conv2dFuncOptions().bias(shift).stride(c.stride()).padding(c.padding()).dilation(c.dilation())
                       .groups(c.groups()));
}

// ---------------------------------------------------------------------------------------------------- MLP

MLPBackboneImpl::MLPBackboneImpl(MLPBackboneOptions options_) : options(std::move(options_)) { reset(); }

void MLPBackboneImpl::reset() {
  TORCH_CHECK(options.input_dim() > 0, "MLPBackbone: input_dim must be positive, got ", options.input_dim());
  layers = torch::nn::ModuleList();
  std::int64_t in = options.input_dim();
  for (const auto h : options.hidden()) {
    TORCH_CHECK(h > 0, "MLPBackbone: hidden widths must be positive, got ", h);
    layers->push_back(torch::nn::Linear(in, h));
    in = h;
  }
  register_module("layers", layers);
}

std::int64_t MLPBackboneImpl::feature_dim() const {
  return options.hidden().empty() ? options.input_dim() : options.hidden().back();
}

torch::Tensor MLPBackboneImpl::forward(const torch::Tensor& x) {
  auto h = x.reshape({x.size(0), -1});
  TORCH_CHECK(h.size(1) == options.input_dim(), "MLPBackbone: expected ", options.input_dim(),
              " input features per example, got ", h.size(1), " (input ", x.sizes(), ")");
  for (const auto& layer : *layers) {
    h = detail::activate(layer->as<torch::nn::LinearImpl>()->forward(h), options.activation());
    if (options.dropout() > 0.0) h = torch::dropout(h, options.dropout(), is_training());
  }
  return h;
}

// ----------------------------------------------------------------------------------------------- SmallCNN

SmallCNNImpl::SmallCNNImpl(SmallCNNOptions options_) : options(std::move(options_)) { reset(); }

void SmallCNNImpl::reset() {
  TORCH_CHECK(!options.channels().empty(), "SmallCNN: need at least one conv block");
  TORCH_CHECK(options.in_channels() > 0, "SmallCNN: in_channels must be positive, got ", options.in_channels());
  blocks = torch::nn::ModuleList();
  std::int64_t in = options.in_channels();
  for (const auto c : options.channels()) {
    TORCH_CHECK(c > 0, "SmallCNN: channel counts must be positive, got ", c);
    torch::nn::Sequential block;
    // A conv followed by batch norm needs no bias of its own.
    block->push_back("conv", conv(in, c, 3, 1, 1, !options.batch_norm()));
    if (options.batch_norm()) block->push_back("bn", torch::nn::BatchNorm2d(c));
    block->push_back("relu", torch::nn::ReLU());
    block->push_back("pool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)));
    blocks->push_back(block);
    in = c;
  }
  register_module("blocks", blocks);
}

torch::Tensor SmallCNNImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), "SmallCNN: expected input [B, ",
              options.in_channels(), ", H, W], got ", x.sizes());
  auto h = x;
  for (const auto& block : *blocks) h = run_sequential(*block->as<torch::nn::SequentialImpl>(), h);
  return h.mean({2, 3});
}

// ---------------------------------------------------------------------------------------------- ResNet-18

BasicBlockImpl::BasicBlockImpl(std::int64_t in_planes_, std::int64_t planes_, std::int64_t stride_)
    : in_planes(in_planes_), planes(planes_), stride(stride_) {
  reset();
}

void BasicBlockImpl::reset() {
  conv1 = register_module("conv1", conv(in_planes, planes, 3, stride, 1, false));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3, 1, 1, false));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
  if (stride != 1 || in_planes != planes) {
    downsample = register_module(
        "downsample", torch::nn::Sequential(conv(in_planes, planes, 1, stride, 0, false), torch::nn::BatchNorm2d(planes)));
  }
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  auto out = torch::relu(detail::conv_bn(*conv1, *bn1, x));
  out = detail::conv_bn(*conv2, *bn2, out);
  return torch::relu(out + (downsample ? run_sequential(*downsample, x) : x));
}

ResNet18Impl::ResNet18Impl(ResNet18Options options_) : options(std::move(options_)) { reset(); }

void ResNet18Impl::reset() {
  TORCH_CHECK(options.in_channels() > 0 && options.width() > 0, "ResNet18: in_channels and width must be positive, got ",
              options.in_channels(), ", ", options.width());
  const std::int64_t w = options.width();
  conv1 = register_module("conv1", conv(options.in_channels(), w, 3, 1, 1, false));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(w));
  std::int64_t in = w;
  const auto stage = [&](std::int64_t planes, std::int64_t stride) {
    torch::nn::Sequential s(BasicBlock(in, planes, stride), BasicBlock(planes, planes, 1));
    in = planes;
    return s;
  };
  layer1 = register_module("layer1", stage(w, 1));
  layer2 = register_module("layer2", stage(2 * w, 2));
  layer3 = register_module("layer3", stage(4 * w, 2));
  layer4 = register_module("layer4", stage(8 * w, 2));
}

torch::Tensor ResNet18Impl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), "ResNet18: expected input [B, ",
              options.in_channels(), ", H, W], got ", x.sizes());
  auto h = torch::relu(detail::conv_bn(*conv1, *bn1, x));
  h = layer4->forward(layer3->forward(layer2->forward(layer1->forward(h))));
  return h.mean({2, 3});
}

}  // namespace moescope
