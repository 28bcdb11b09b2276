// model/backbone: the MLP, small CNN and CIFAR ResNet-18 backbones, and the eval-mode folded conv + batch norm.
#include "moescope/model/backbone.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moescope/model/classifier.hpp"
#include "support/seeded.hpp"

namespace moescope {
namespace {

using testing::max_abs_diff;

class ResNet18Test : public testing::SeededTest {};
class BatchNormTest : public testing::SeededTest {};

std::int64_t count_params(const torch::nn::Module& m) {
  std::int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// ResNet-18 (CIFAR) parameters from the architecture: conv weights k*k*in*out, batch norm 2*channels.
std::int64_t resnet18_params_by_hand(std::int64_t in_channels, std::int64_t w) {
  const auto conv = [](std::int64_t k, std::int64_t in, std::int64_t out) { return k * k * in * out; };
  const auto bn = [](std::int64_t c) { return 2 * c; };
  std::int64_t n = conv(3, in_channels, w) + bn(w);
  std::int64_t in = w;
  for (const std::int64_t planes : {w, 2 * w, 4 * w, 8 * w}) {
    // first block: maybe strided, with a 1x1 projection when the shape changes
    n += conv(3, in, planes) + bn(planes) + conv(3, planes, planes) + bn(planes);
    if (in != planes) n += conv(1, in, planes) + bn(planes);
    // second block
    n += 2 * (conv(3, planes, planes) + bn(planes));
    in = planes;
  }
  return n;
}

TEST_F(ResNet18Test, ForwardShapeAndParameterCount) {
  // The classic figure: ResNet-18 for CIFAR with a 512 -> 10 linear layer has 11,173,962 parameters.
  EXPECT_EQ(resnet18_params_by_hand(3, 64) + 512 * 10 + 10, 11173962);
  Classifier model(ClassifierOptions::vision_study(HeadKind::Dense));
  EXPECT_EQ(model->feature_dim(), 512);
  const std::int64_t head = 512 * 512 + 512 + 512 * 10 + 10;  // 512-512-10 with biases
  EXPECT_EQ(count_params(*model), resnet18_params_by_hand(3, 64) + head);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto y = model(torch::randn({2, 3, 32, 32}));
  EXPECT_EQ(y.sizes(), (std::vector<std::int64_t>{2, 10}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  // No max-pool and a stride-1 stem: a 32x32 input reaches layer4 at 4x4.
  ResNet18 net;
  auto h = torch::relu(net->bn1(net->conv1(torch::randn({1, 3, 32, 32}))));
  EXPECT_EQ(h.size(2), 32);
  h = net->layer4->forward(net->layer3->forward(net->layer2->forward(net->layer1->forward(h))));
  EXPECT_EQ(h.sizes(), (std::vector<std::int64_t>{1, 512, 4, 4}));
}

// The eval-mode conv + batch norm the backbones use (batch norm folded into the convolution) is the modules' own
// function: same values, same first derivatives (input, conv weight and bias, bn weight and bias) and same second
// derivatives (a Hessian-vector product through the double backward), with running statistics and affine
// parameters away from their initial 0/1, a strided padded convolution with a bias. Tolerance: float64 throughout,
// so only the order of the roundings differs (1e-12 relative).
TEST_F(BatchNormTest, EvalModeFoldedConvBatchNormMatchesTheModules) {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(2, 3, 3).stride(2).padding(1).bias(true));
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(3).eps(1e-3));
  conv->to(torch::kFloat64);
  bn->to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    bn->running_mean.copy_(torch::tensor({0.5, -1.0, 2.0}, torch::kFloat64));
    bn->running_var.copy_(torch::tensor({0.25, 4.0, 1.5}, torch::kFloat64));
    bn->weight.copy_(torch::tensor({1.5, -0.5, 0.75}, torch::kFloat64));
    bn->bias.copy_(torch::tensor({0.1, 0.2, -0.3}, torch::kFloat64));
  }
  conv->eval();
  bn->eval();
  const torch::Tensor x0 = torch::randn({4, 2, 7, 7}, torch::kFloat64);
  const torch::Tensor w = torch::randn({4, 3, 4, 4}, torch::kFloat64);  // a fixed readout; tanh: not linear
  const auto loss = [&](const torch::Tensor& y) { return (torch::tanh(y) * w).sum(); };
  const std::vector<torch::Tensor> wrt = {conv->weight, conv->bias, bn->weight, bn->bias};

  std::vector<torch::Tensor> results[2];
  for (int variant = 0; variant < 2; ++variant) {
    const torch::Tensor x = x0.clone().requires_grad_(true);
    const torch::Tensor y = variant == 0 ? bn->forward(conv->forward(x)) : detail::conv_bn(*conv, *bn, x);
    std::vector<torch::Tensor> inputs = wrt;
    inputs.push_back(x);
    const auto g = torch::autograd::grad({loss(y)}, inputs, {}, true, true);
    // H v for v = (1, ..., 1) on every input in one product.
    torch::Tensor gv = torch::zeros({}, torch::kFloat64);
    for (const auto& gi : g) gv = gv + gi.sum();
    const auto hv = torch::autograd::grad({gv}, inputs);
    results[variant] = {y.detach()};
    for (const auto& gi : g) results[variant].push_back(gi.detach());
    for (const auto& hi : hv) results[variant].push_back(hi);
  }
  ASSERT_EQ(results[0].size(), 11u);
  for (std::size_t i = 0; i < results[0].size(); ++i) {
    const double scale = std::max(1.0, results[0][i].abs().max().item<double>());
    EXPECT_LT(max_abs_diff(results[0][i], results[1][i]), 1e-12 * scale) << "result " << i;
  }
  // In training mode the modules' own forwards run (batch statistics: per-channel mean equals the bn bias).
  bn->train();
  const torch::Tensor yt = detail::conv_bn(*conv, *bn, x0);
  EXPECT_LT(yt.mean({0, 2, 3}).sub(bn->bias).abs().max().item<double>(), 1e-12);
}

// ------------------------------------------------------------------ conv2d_twice_differentiable

class TwiceDifferentiableConvTest : public testing::SeededTest {};

struct ConvCase {
  std::vector<std::int64_t> kernel, stride, padding, dilation;
  bool bias;
  bool input_grad;  // false: the first layer of a network (images need no gradient)
  std::int64_t groups = 1;
};

std::vector<ConvCase> conv_cases() {
  return {{{3, 3}, {1, 1}, {1, 1}, {1, 1}, true, true},      {{3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true},
          {{1, 1}, {2, 2}, {0, 0}, {1, 1}, false, true},     {{3, 2}, {2, 1}, {1, 0}, {2, 1}, true, true},
          {{3, 3}, {1, 1}, {2, 2}, {1, 1}, true, false},     {{3, 3}, {1, 1}, {1, 1}, {1, 1}, true, true, 2}};
}

// Largest difference relative to the larger of 1 and the reference's largest magnitude.
double rel_diff(const torch::Tensor& a, const torch::Tensor& ref) {
  return max_abs_diff(a, ref) / std::max(1.0, ref.abs().max().item<double>());
}

// Value, gradient and Hessian-vector product (all inputs at once) of sum(tanh(conv(x, w, b)) * r).
std::vector<torch::Tensor> derivatives(bool twice, const ConvCase& c, const torch::Tensor& x0, const torch::Tensor& w0,
                                       const torch::Tensor& b0, const torch::Tensor& r) {
  const auto x = x0.clone().requires_grad_(c.input_grad);
  const auto w = w0.clone().requires_grad_(true);
  const auto b = c.bias ? b0.clone().requires_grad_(true) : torch::Tensor();
  const auto y = twice ? detail::conv2d_twice_differentiable(x, w, b, c.stride, c.padding, c.dilation, c.groups)
                       : at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
  std::vector<torch::Tensor> inputs{w};
  if (c.bias) inputs.push_back(b);
  if (c.input_grad) inputs.push_back(x);
  const auto g = torch::autograd::grad({(torch::tanh(y) * r).sum()}, inputs, {}, true, true);
  torch::Tensor gv = torch::zeros({}, x0.options());
  for (std::size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * torch::cos(torch::arange(g[i].numel(), x0.options()))
                                                               .view(g[i].sizes())).sum();
  const auto hv = torch::autograd::grad({gv}, inputs);
  std::vector<torch::Tensor> out{y.detach()};
  for (const auto& t : g) out.push_back(t.detach());
  for (const auto& t : hv) out.push_back(t);
  return out;
}

// Against LibTorch's own convolution, float64: the first derivatives come from the same kernels and the second
// from the same kernels with exchanged roles, where LibTorch's own double backward runs transposed convolutions:
// only the order of roundings differs (1e-12 relative). Strides, padding, dilation, a non-square kernel, no bias,
// no input gradient, two groups.
TEST_F(TwiceDifferentiableConvTest, ValuesGradientsAndHvpEqualNativeConvolution) {
  for (const auto& c : conv_cases()) {
    const auto x = torch::randn({3, 2, 9, 8}, torch::kFloat64);
    const auto w = torch::randn({4, 2 / c.groups, c.kernel[0], c.kernel[1]}, torch::kFloat64);
    const auto b = torch::randn({4}, torch::kFloat64);
    const auto y = at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
    const auto r = torch::randn_like(y);
    const auto native = derivatives(false, c, x, w, b, r);
    const auto twice = derivatives(true, c, x, w, b, r);
    ASSERT_EQ(native.size(), twice.size());
    for (std::size_t i = 0; i < native.size(); ++i) {
      EXPECT_LT(rel_diff(twice[i], native[i]), 1e-12) << "kernel " << c.kernel[0] << "x" << c.kernel[1] << " stride "
                                                       << c.stride[0] << " groups " << c.groups << " result " << i;
    }
  }
}

// Without create_graph the backward is the native kernel's, called with the native autograd's arguments: the
// float32 values and gradients are the same bits.
TEST_F(TwiceDifferentiableConvTest, FirstDerivativesAreTheNativeKernels) {
  const auto x0 = torch::randn({8, 3, 12, 12});
  const auto w0 = torch::randn({16, 3, 3, 3});
  const auto b0 = torch::randn({16});
  std::vector<torch::Tensor> res[2];
  for (int twice = 0; twice < 2; ++twice) {
    const auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    const auto y = twice ? detail::conv2d_twice_differentiable(x, w, b, {1, 1}, {1, 1}, {1, 1})
                         : at::conv2d(x, w, b, {1, 1}, {1, 1}, {1, 1}, 1);
    const auto g = torch::autograd::grad({(y * y).sum()}, {x, w, b});
    res[twice] = {y.detach(), g[0], g[1], g[2]};
  }
  for (std::size_t i = 0; i < 4; ++i) EXPECT_TRUE(torch::equal(res[0][i], res[1][i])) << "result " << i;
}

TEST_F(TwiceDifferentiableConvTest, RejectsMismatchedShapes) {
  const auto x = torch::randn({1, 2, 5, 5});
  EXPECT_THROW(detail::conv2d_twice_differentiable(x, torch::randn({3, 4, 3, 3}), {}, {1, 1}, {1, 1}, {1, 1}),
               c10::Error);
  EXPECT_THROW(detail::conv2d_twice_differentiable(x, torch::randn({3, 2, 3, 3}), torch::randn({2}), {1, 1}, {1, 1},
                                                   {1, 1}),
               c10::Error);
  EXPECT_THROW(detail::conv2d_twice_differentiable(x, torch::randn({3, 2, 3, 3}), {}, {1}, {1, 1}, {1, 1}), c10::Error);
  EXPECT_THROW(detail::conv2d_twice_differentiable(x, torch::randn({3, 1, 3, 3}), {}, {1, 1}, {1, 1}, {1, 1}, 2),
               c10::Error);  // 3 output channels do not split into 2 groups
}

// Loss value, gradient and a Hessian-vector product over every parameter of a backbone in eval mode.
std::vector<torch::Tensor> backbone_derivatives(torch::nn::Module& net, const std::function<torch::Tensor()>& forward) {
  const auto params = net.parameters();
  const auto y = forward();
  const auto loss = (torch::tanh(y) * torch::cos(torch::arange(y.numel(), y.options()).view(y.sizes()))).sum();
  const auto g = torch::autograd::grad({loss}, params, {}, true, true);
  torch::Tensor gv = torch::zeros({}, y.options());
  for (std::size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * torch::sin(torch::arange(g[i].numel(), y.options()).view(g[i].sizes()))).sum();
  const auto hv = torch::autograd::grad({gv}, params, {}, false, false, /*allow_unused=*/true);
  std::vector<torch::Tensor> out{loss.detach()};
  for (const auto& t : g) out.push_back(t.detach());
  for (std::size_t i = 0; i < hv.size(); ++i) out.push_back(hv[i].defined() ? hv[i] : torch::zeros_like(params[i]));
  return out;
}

// Batch norm statistics and affine parameters away from 0 / 1: a few training-mode passes and a random affine map.
void settle_batch_norm(torch::nn::Module& net, const std::function<torch::Tensor()>& forward) {
  net.train();
  {
    torch::NoGradGuard ng;
    for (int i = 0; i < 3; ++i) forward();
    for (auto& p : net.named_parameters()) {
      if (p.key().find("bn") != std::string::npos || p.key().find("downsample.1") != std::string::npos) {
        p.value().copy_(torch::randn_like(p.value()) * 0.5 + (p.key().find("weight") != std::string::npos ? 1.0 : 0.0));
      }
    }
  }
  net.eval();
}

// Whole backbones in eval mode: this double backward against LibTorch's own (the same module with
// fast_double_backward off), float64, 1e-12 relative.
TEST_F(TwiceDifferentiableConvTest, EvalModeBackbonesKeepTheirHessianVectorProducts) {
  for (const bool bn : {true, false}) {
    SmallCNN net(SmallCNNOptions(2, {4, 6}).batch_norm(bn));
    net->to(torch::kFloat64);
    const auto x = torch::randn({5, 2, 12, 12}, torch::kFloat64);
    const std::function<torch::Tensor()> fwd = [&] { return net->forward(x); };
    settle_batch_norm(*net, fwd);
    net->options.fast_double_backward(false);
    const auto native = backbone_derivatives(*net, fwd);
    net->options.fast_double_backward(true);
    const auto twice = backbone_derivatives(*net, fwd);
    ASSERT_EQ(native.size(), twice.size());
    for (std::size_t i = 0; i < native.size(); ++i) {
      EXPECT_LT(rel_diff(twice[i], native[i]), 1e-12) << "SmallCNN batch_norm " << bn << " result " << i;
    }
  }
  ResNet18 net(ResNet18Options(3).width(2));
  net->to(torch::kFloat64);
  const auto x = torch::randn({3, 3, 8, 8}, torch::kFloat64);
  const std::function<torch::Tensor()> fwd = [&] { return net->forward(x); };
  settle_batch_norm(*net, fwd);
  net->options.fast_double_backward(false);
  const auto native = backbone_derivatives(*net, fwd);
  net->options.fast_double_backward(true);
  const auto twice = backbone_derivatives(*net, fwd);
  ASSERT_EQ(native.size(), twice.size());
  for (std::size_t i = 0; i < native.size(); ++i) EXPECT_LT(rel_diff(twice[i], native[i]), 1e-12) << "ResNet-18 result " << i;
}

}  // namespace
}  // namespace moescope
