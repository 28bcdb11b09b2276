#include "moescope/model/backbone.hpp"

#include <cstddef>
#include <tuple>
#include <vector>

namespace moescope {
namespace {

torch::nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride,
                       std::int64_t padding, bool bias) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(bias));
}

// Explicit two-entry padding of a Conv2d, or false for "same" / "valid" strings.
bool explicit_padding(const torch::nn::detail::ConvNdOptions<2>& c, std::vector<std::int64_t>* padding) {
  const auto* p = c10::get_if<torch::ExpandingArray<2>>(&c.padding());
  if (p == nullptr) return false;
  *padding = std::vector<std::int64_t>((*p)->begin(), (*p)->end());
  return true;
}

std::vector<std::int64_t> as_vector(const torch::ExpandingArray<2>& a) { return {a->begin(), a->end()}; }

// A Sequential's forward with each (Conv2d, BatchNorm2d) pair run through detail::conv_bn, and in eval mode each
// other Conv2d through detail::conv2d_twice_differentiable (unless fast_double_backward is false).
torch::Tensor run_sequential(torch::nn::SequentialImpl& seq, torch::Tensor h, bool fast_double_backward) {
  for (std::size_t i = 0; i < seq.size(); ++i) {
    auto* conv = seq.ptr(i)->as<torch::nn::Conv2dImpl>();
    auto* bn = i + 1 < seq.size() ? seq.ptr(i + 1)->as<torch::nn::BatchNorm2dImpl>() : nullptr;
    std::vector<std::int64_t> padding;
    if (conv != nullptr && bn != nullptr) {
      h = detail::conv_bn(*conv, *bn, h, fast_double_backward);
      ++i;
    } else if (conv != nullptr && fast_double_backward && !conv->is_training() &&
               c10::holds_alternative<torch::enumtype::kZeros>(conv->options.padding_mode()) &&
               explicit_padding(conv->options, &padding)) {
      // A convolution without batch norm, in eval mode: the same function with cheap second derivatives.
      h = detail::conv2d_twice_differentiable(h, conv->weight, conv->bias, as_vector(conv->options.stride()), padding,
                                              as_vector(conv->options.dilation()), conv->options.groups());
    } else {
      h = (seq.begin() + static_cast<std::ptrdiff_t>(i))->forward(h);
    }
  }
  return h;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A convolution's stride, padding, dilation and groups, carried through the autograd functions below, with the
// three first-order kernels they are built from (LibTorch's convolution and convolution_backward: mkldnn on CPU
// for float32).
struct ConvGeometry {
  std::vector<std::int64_t> stride, padding, dilation;
  std::int64_t groups = 1;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
  }
  static ConvGeometry load(AutogradContext* ctx) {
    return {ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
            ctx->saved_data["dilation"].toIntVector(), ctx->saved_data["groups"].toInt()};
  }
  // conv(x, w), no bias.
  torch::Tensor conv(const torch::Tensor& x, const torch::Tensor& w) const {
    return at::conv2d(x, w, {}, stride, padding, dilation, groups);
  }
  // The gradients of <g, conv(x, w)> with respect to x (conv^T(g; w): x only gives the shape) and to w.
  torch::Tensor input_grad(const torch::Tensor& g, const torch::Tensor& x, const torch::Tensor& w) const {
    return std::get<0>(at::convolution_backward(g, x, w, c10::nullopt, stride, padding, dilation, false, {0, 0}, groups,
                                                {true, false, false}));
  }
  torch::Tensor weight_grad(const torch::Tensor& g, const torch::Tensor& x, const torch::Tensor& w) const {
    return std::get<1>(at::convolution_backward(g, x, w, c10::nullopt, stride, padding, dilation, false, {0, 0}, groups,
                                                {false, true, false}));
  }
};

// gx = conv^T(g; w), bilinear in (g, w); `x` gives only the shape. Its derivatives, for an incoming ggx:
// d/dg = conv(ggx, w) and d/dw = the weight gradient of <g, conv(ggx, w)>.
struct ConvInputGrad : public torch::autograd::Function<ConvInputGrad> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& g, const torch::Tensor& w,
                               const torch::Tensor& x, const ConvGeometry& geo) {
    ctx->save_for_backward({g, w});
    geo.save(ctx);
    return geo.input_grad(g, x, w);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const ConvGeometry geo = ConvGeometry::load(ctx);
    const torch::Tensor& ggx = grads[0];
    torch::Tensor dg, dw;
    if (ctx->needs_input_grad(0)) dg = geo.conv(ggx, saved[1]);
    if (ctx->needs_input_grad(1)) dw = geo.weight_grad(saved[0], ggx, saved[1]);
    return {dg, dw, torch::Tensor(), torch::Tensor()};
  }
};

// gw = the weight gradient of <g, conv(x, w)>, bilinear in (g, x); `w` gives only the shape. Its derivatives, for
// an incoming ggw: d/dg = conv(x, ggw) and d/dx = conv^T(g; ggw).
struct ConvWeightGrad : public torch::autograd::Function<ConvWeightGrad> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& g, const torch::Tensor& x,
                               const torch::Tensor& w, const ConvGeometry& geo) {
    ctx->save_for_backward({g, x});
    geo.save(ctx);
    return geo.weight_grad(g, x, w);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const ConvGeometry geo = ConvGeometry::load(ctx);
    const torch::Tensor& ggw = grads[0];
    torch::Tensor dg, dx;
    if (ctx->needs_input_grad(0)) dg = geo.conv(saved[1], ggw);
    if (ctx->needs_input_grad(1)) dx = geo.input_grad(saved[0], saved[1], ggw);
    return {dg, dx, torch::Tensor(), torch::Tensor()};
  }
};

// See detail::conv2d_twice_differentiable. Without a bias `bias` is an empty tensor (LibTorch 1.13's custom
// functions take no undefined inputs).
struct TwiceDifferentiableConv2d : public torch::autograd::Function<TwiceDifferentiableConv2d> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const ConvGeometry& geo) {
    const bool has_bias = bias.numel() > 0;
    ctx->save_for_backward({x, weight});
    ctx->saved_data["bias"] = has_bias;
    geo.save(ctx);
    return at::conv2d(x, weight, has_bias ? bias : torch::Tensor(), geo.stride, geo.padding, geo.dilation, geo.groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& w = saved[1];
    const torch::Tensor& g = grads[0];
    const ConvGeometry geo = ConvGeometry::load(ctx);
    const bool has_bias = ctx->saved_data["bias"].toBool();
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool need_b = has_bias && ctx->needs_input_grad(2);
    torch::Tensor gx, gw, gb;
    if (!torch::GradMode::is_enabled()) {
      // First order only: the kernels the native convolution's backward calls, with the same arguments.
      const std::vector<std::int64_t> bias_sizes{w.size(0)};
      std::tie(gx, gw, gb) = at::convolution_backward(
          g, x, w, has_bias ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(), geo.stride,
          geo.padding, geo.dilation, /*transposed=*/false, /*output_padding=*/{0, 0}, geo.groups,
          {need_x, need_w, need_b});
    } else {
      // The backward is being recorded: the same gradients as functions whose own derivatives are first-order
      // kernels again.
      if (need_x) gx = ConvInputGrad::apply(g, w, x, geo);
      if (need_w) gw = ConvWeightGrad::apply(g, x, w, geo);
      if (need_b) gb = g.sum({0, 2, 3});
    }
    return {gx, gw, gb, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor detail::conv2d_twice_differentiable(const torch::Tensor& x, const torch::Tensor& weight,
                                                  const torch::Tensor& bias, std::vector<std::int64_t> stride,
                                                  std::vector<std::int64_t> padding,
                                                  std::vector<std::int64_t> dilation, std::int64_t groups) {
  TORCH_CHECK(groups >= 1 && x.dim() == 4 && weight.dim() == 4 && x.size(1) == weight.size(1) * groups &&
                  weight.size(0) % groups == 0,
              "conv2d_twice_differentiable: expected x [B, C, H, W] and weight [O, C / groups, kh, kw], got ",
              x.sizes(), " and ", weight.sizes(), " with ", groups, " groups");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
              "conv2d_twice_differentiable: bias ", bias.sizes(), " for ", weight.size(0), " output channels");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "conv2d_twice_differentiable: stride, padding and dilation need two entries each");
  const ConvGeometry geo{std::move(stride), std::move(padding), std::move(dilation), groups};
  return TwiceDifferentiableConv2d::apply(x, weight, bias.defined() ? bias : torch::empty({0}, weight.options()), geo);
}

torch::Tensor detail::conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                              bool fast_double_backward) {
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
  std::vector<std::int64_t> padding;
  if (fast_double_backward && explicit_padding(c, &padding)) {
    return conv2d_twice_differentiable(x, weight, shift, as_vector(c.stride()), padding, as_vector(c.dilation()),
                                       c.groups());
  }
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
  for (const auto& block : *blocks) {
    h = run_sequential(*block->as<torch::nn::SequentialImpl>(), h, options.fast_double_backward());
  }
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
  auto out = torch::relu(detail::conv_bn(*conv1, *bn1, x, fast_double_backward));
  out = detail::conv_bn(*conv2, *bn2, out, fast_double_backward);
  return torch::relu(out + (downsample ? run_sequential(*downsample, x, fast_double_backward) : x));
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
  for (auto* stage : {&layer1, &layer2, &layer3, &layer4}) {
    for (auto& block : **stage) {
      block.ptr()->as<BasicBlockImpl>()->fast_double_backward = options.fast_double_backward();
    }
  }
  auto h = torch::relu(detail::conv_bn(*conv1, *bn1, x, options.fast_double_backward()));
  h = layer4->forward(layer3->forward(layer2->forward(layer1->forward(h))));
  return h.mean({2, 3});
}

}  // namespace moescope
