// model/backbone: the MLP, small CNN and CIFAR ResNet-18 backbones, and the eval-mode folded conv + batch norm.
#include "moescope/model/backbone.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>

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

}  // namespace
}  // namespace moescope
