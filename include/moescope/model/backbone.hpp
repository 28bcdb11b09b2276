#pragma once
// Feature extractors for the image classifier: an MLP, a small CNN, and ResNet-18 adapted to 32x32 inputs
// (3x3 stride-1 stem, no max-pool) as in the vision study. Each maps images [B, C, H, W] to features [B, F].
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "moescope/model/expert.hpp"

namespace moescope {

namespace detail {
/// A convolution followed by batch norm, as the backbones apply the pair. In training mode (or without running
/// statistics) this is the two modules' own forwards. In eval mode batch norm is a per-channel affine map, folded
/// into the convolution: conv(x, W * s) + (beta - mean * s [+ b * s]), s = gamma / sqrt(var + eps). The same
/// function (to float rounding), with the same parameters; its double backward (every Hessian-vector product
/// through a CNN) has no elementwise pass over the activations for batch norm, where native batch norm's eval-mode
/// double backward runs the training-mode formula over the whole activation tensor.
/// In eval mode the folded convolution runs as conv2d_twice_differentiable unless `fast_double_backward` is false
/// (then LibTorch's conv2d, whose double backward is the native one).
torch::Tensor conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                      bool fast_double_backward = true);

/// conv2d(x, weight, bias) with zero padding, as an autograd function whose value and first derivatives are the
/// native ones (LibTorch's convolution and convolution_backward kernels, bit for bit), and whose backward, when it
/// is itself recorded for differentiation (create_graph: a Hessian-vector product follows), is made of two autograd
/// functions, the input gradient conv^T(g; W) and the weight gradient, each bilinear, whose derivatives are
/// first-order kernels again: a forward convolution and one of convolution_backward's two gradients, with the roles
/// of input, weight and output gradient exchanged. LibTorch 1.13's own double backward instead runs a transposed
/// convolution (slow_conv_transpose2d on CPU) and a convolution over the batch with the output as its kernel. Only
/// the tensors a first-order backward keeps are kept (no im2col buffers). x [B, C, H, W], weight
/// [O, C / groups, kh, kw], bias [O] or undefined; stride, padding and dilation have two entries. Throws c10::Error
/// on mismatched shapes.
torch::Tensor conv2d_twice_differentiable(const torch::Tensor& x, const torch::Tensor& weight,
                                          const torch::Tensor& bias, std::vector<std::int64_t> stride,
                                          std::vector<std::int64_t> padding, std::vector<std::int64_t> dilation,
                                          std::int64_t groups = 1);
}  // namespace detail

/// Flatten -> (Linear -> activation -> dropout?) per hidden width. Parameters layers.<i>.weight.
struct MLPBackboneOptions {
  MLPBackboneOptions(std::int64_t input_dim, std::vector<std::int64_t> hidden)
      : input_dim_(input_dim), hidden_(std::move(hidden)) {}
  TORCH_ARG(std::int64_t, input_dim);
  TORCH_ARG(std::vector<std::int64_t>, hidden);
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(double, dropout) = 0.0;
};

class MLPBackboneImpl : public torch::nn::Cloneable<MLPBackboneImpl> {
 public:
  explicit MLPBackboneImpl(MLPBackboneOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  std::int64_t feature_dim() const;

  MLPBackboneOptions options;
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(MLPBackbone);

/// Conv blocks (3x3 conv -> batch norm? -> ReLU -> 2x2 max-pool), then global average pooling.
/// Parameters blocks.<i>.conv.weight, blocks.<i>.bn.weight.
struct SmallCNNOptions {
  SmallCNNOptions(std::int64_t in_channels, std::vector<std::int64_t> channels)
      : in_channels_(in_channels), channels_(std::move(channels)) {}
  TORCH_ARG(std::int64_t, in_channels);
  TORCH_ARG(std::vector<std::int64_t>, channels);
  TORCH_ARG(bool, batch_norm) = true;
  /// In eval mode, run the convolutions as detail::conv2d_twice_differentiable: the same values and gradients, and
  /// Hessian-vector products without LibTorch's slow convolution double backward. false: LibTorch's convolution
  /// throughout (the reference for tests and benchmarks). Training mode always runs the native modules (one
  /// backward per step, whose kernels are the same either way; batch norm on batch statistics is not folded).
  TORCH_ARG(bool, fast_double_backward) = true;
};

class SmallCNNImpl : public torch::nn::Cloneable<SmallCNNImpl> {
 public:
  explicit SmallCNNImpl(SmallCNNOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  std::int64_t feature_dim() const { return options.channels().back(); }

  SmallCNNOptions options;
  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(SmallCNN);

/// ResNet basic block (two 3x3 convs with batch norm, identity or 1x1-conv shortcut). Names follow
/// torchvision: conv1, bn1, conv2, bn2, downsample.0 (conv), downsample.1 (bn).
class BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl> {
 public:
  BasicBlockImpl(std::int64_t in_planes, std::int64_t planes, std::int64_t stride);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  std::int64_t in_planes, planes, stride;
  /// As ResNet18Options::fast_double_backward (ResNet18's forward sets it from its options).
  bool fast_double_backward = true;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

/// ResNet-18 for small images: conv1 (3x3, stride 1) -> bn1 -> ReLU -> layer1..layer4 (2 blocks each,
/// 64/128/256/512 channels, strides 1/2/2/2) -> global average pool -> [B, 512]. No max-pool.
struct ResNet18Options {
  explicit ResNet18Options(std::int64_t in_channels = 3) : in_channels_(in_channels) {}
  TORCH_ARG(std::int64_t, in_channels);
  /// Channels of layer1 (doubled per stage): 64 is the standard network; smaller values make tests fast.
  TORCH_ARG(std::int64_t, width) = 64;
  /// In eval mode, run the convolutions as detail::conv2d_twice_differentiable: the same values and gradients, and
  /// Hessian-vector products without LibTorch's slow convolution double backward. false: LibTorch's convolution
  /// throughout (the reference for tests and benchmarks). Training mode always runs the native modules (one
  /// backward per step, whose kernels are the same either way; batch norm on batch statistics is not folded).
  TORCH_ARG(bool, fast_double_backward) = true;
};

class ResNet18Impl : public torch::nn::Cloneable<ResNet18Impl> {
 public:
  explicit ResNet18Impl(ResNet18Options options = ResNet18Options());
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  std::int64_t feature_dim() const { return 8 * options.width(); }

  ResNet18Options options;
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
};
TORCH_MODULE(ResNet18);

}  // namespace moescope
