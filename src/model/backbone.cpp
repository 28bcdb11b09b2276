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
// other Conv2d through detail::conv2d_twice_differentiable (unless im2col_double_backward is false).
torch::Tensor run_sequential(torch::nn::SequentialImpl& seq, torch::Tensor h, bool im2col_double_backward) {
  for (std::size_t i = 0; i < seq.size(); ++i) {
    auto* conv = seq.ptr(i)->as<torch::nn::Conv2dImpl>();
    auto* bn = i + 1 < seq.size() ? seq.ptr(i + 1)->as<torch::nn::BatchNorm2dImpl>() : nullptr;
    std::vector<std::int64_t> padding;
    if (conv != nullptr && bn != nullptr) {
      h = detail::conv_bn(*conv, *bn, h, im2col_double_backward);
      ++i;
    } else if (conv != nullptr && im2col_double_backward && !conv->is_training() && conv->options.groups() == 1 &&
               c10::holds_alternative<torch::enumtype::kZeros>(conv->options.padding_mode()) &&
               explicit_padding(conv->options, &padding)) {
      // A convolution without batch norm, in eval mode: the same function with cheap second derivatives.
      h = detail::conv2d_twice_differentiable(h, conv->weight, conv->bias, as_vector(conv->options.stride()), padding,
                                              as_vector(conv->options.dilation()));
    } else {
      h = (seq.begin() + static_cast<std::ptrdiff_t>(i))->forward(h);
    }
  }
  return h;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// See detail::conv2d_twice_differentiable. Saved: x and weight; stride, padding, dilation and whether there is a
// bias. Without a bias `bias` is an empty tensor (LibTorch 1.13's custom functions take no undefined inputs).
struct TwiceDifferentiableConv2d : public torch::autograd::Function<TwiceDifferentiableConv2d> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, std::vector<std::int64_t> stride,
                               std::vector<std::int64_t> padding, std::vector<std::int64_t> dilation) {
    const bool has_bias = bias.numel() > 0;
    ctx->save_for_backward({x, weight});
    ctx->saved_data["bias"] = has_bias;
    const auto y = at::conv2d(x, weight, has_bias ? bias : torch::Tensor(), stride, padding, dilation, 1);
    ctx->saved_data["stride"] = std::move(stride);
    ctx->saved_data["padding"] = std::move(padding);
    ctx->saved_data["dilation"] = std::move(dilation);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& w = saved[1];
    const torch::Tensor& g_out = grads[0];
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto dilation = ctx->saved_data["dilation"].toIntVector();
    const bool has_bias = ctx->saved_data["bias"].toBool();
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool need_b = has_bias && ctx->needs_input_grad(2);
    torch::Tensor gx, gw, gb;
    if (!torch::GradMode::is_enabled()) {
      // First order only: the kernels the native convolution's backward calls, with the same arguments.
      const std::vector<std::int64_t> bias_sizes{w.size(0)};
      std::tie(gx, gw, gb) = at::convolution_backward(
          g_out, x, w, has_bias ? at::OptionalIntArrayRef(bias_sizes) : at::OptionalIntArrayRef(), stride, padding,
          dilation, /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1, {need_x, need_w, need_b});
    } else {
      // With L = Ho * Wo output pixels per image and K = C * kh * kw: y = W [O, K] x im2col(x) [K, L] per image.
      // In rows of output pixels, g [B*L, O]: dW = g^T im2col(x), d im2col(x) = g W, dx = col2im of that.
      const std::int64_t B = x.size(0), O = w.size(0), K = w.size(1) * w.size(2) * w.size(3);
      const std::int64_t L = g_out.size(2) * g_out.size(3);
      const std::vector<std::int64_t> kernel{w.size(2), w.size(3)};
      const auto g = g_out.permute({0, 2, 3, 1}).reshape({B * L, O});
      if (need_w) {
        const auto cols = at::im2col(x, kernel, dilation, padding, stride).transpose(1, 2).reshape({B * L, K});
        gw = g.t().mm(cols).view(w.sizes());
      }
      if (need_x) {
        const auto g_cols = g.mm(w.reshape({O, K})).view({B, L, K}).transpose(1, 2);
        gx = at::col2im(g_cols, {x.size(2), x.size(3)}, kernel, dilation, padding, stride);
      }
      if (need_b) gb = g_out.sum({0, 2, 3});
    }
    return {gx, gw, gb, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor detail::conv2d_twice_differentiable(const torch::Tensor& x, const torch::Tensor& weight,
                                                  const torch::Tensor& bias, std::vector<std::int64_t> stride,
                                                  std::vector<std::int64_t> padding,
                                                  std::vector<std::int64_t> dilation) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4 && x.size(1) == weight.size(1),
              "conv2d_twice_differentiable: expected x [B, C, H, W] and weight [O, C, kh, kw], got ", x.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
              "conv2d_twice_differentiable: bias ", bias.sizes(), " for ", weight.size(0), " output channels");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "conv2d_twice_differentiable: stride, padding and dilation need two entries each");
  return TwiceDifferentiableConv2d::apply(x, weight, bias.defined() ? bias : torch::empty({0}, weight.options()),
                                          std::move(stride), std::move(padding), std::move(dilation));
}

torch::Tensor detail::conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                              bool im2col_double_backward) {
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
  if (im2col_double_backward && c.groups() == 1 && explicit_padding(c, &padding)) {
    return conv2d_twice_differentiable(x, weight, shift, as_vector(c.stride()), padding, as_vector(c.dilation()));
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
    h = run_sequential(*block->as<torch::nn::SequentialImpl>(), h, options.im2col_double_backward());
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
  auto out = torch::relu(detail::conv_bn(*conv1, *bn1, x, im2col_double_backward));
  out = detail::conv_bn(*conv2, *bn2, out, im2col_double_backward);
  return torch::relu(out + (downsample ? run_sequential(*downsample, x, im2col_double_backward) : x));
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
    for (auto& block : **stage) block.ptr()->as<BasicBlockImpl>()->im2col_double_backward = options.im2col_double_backward();
  }
  auto h = torch::relu(detail::conv_bn(*conv1, *bn1, x, options.im2col_double_backward()));
  h = layer4->forward(layer3->forward(layer2->forward(layer1->forward(h))));
  return h.mean({2, 3});
}

}  // namespace moescope
