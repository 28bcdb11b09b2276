#pragma once
// A DataSpec loaded into CPU tensors: the train, valid and test splits of images, vectors or token windows.
// Images come as pixels / 255 in [0, 1]; their standardisation belongs to the model (ClassifierOptions' input_mean
// and input_std, fitted to the train split when a run is trained and stored in its config), so that a run is
// always analysed with the statistics it was trained with, whatever data is loaded later.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moescope/data/spec.hpp"
#include "moescope/data/text.hpp"

namespace moescope {

/// One split as CPU tensors. Images: inputs float32 [N, C, H, W] in [0, 1]; clustered: float32 [N, d];
/// targets int64 [N]. Text: inputs and targets int64 [N, S], targets the next tokens. `groups` is the clustered
/// task's true cluster per sample (else undefined).
struct TensorSplit {
  torch::Tensor inputs;
  torch::Tensor targets;
  torch::Tensor groups;
  std::int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
  /// Samples [begin, end) (views, no copy).
  TensorSplit slice(std::int64_t begin, std::int64_t end) const;
  /// The first min(n, size()) samples (n <= 0: all).
  TensorSplit head(std::int64_t n) const { return slice(0, n > 0 && n < size() ? n : size()); }
};

struct Dataset {
  DataSpec spec;
  TensorSplit train, valid, test;
  bool is_text = false;
  /// Classes, or the vocabulary size for text.
  std::int64_t num_classes = 0;
  /// One sample's input shape: {C, H, W}, {d} or {S}.
  std::vector<std::int64_t> input_shape;
  /// Text only (nullptr otherwise).
  std::shared_ptr<Vocabulary> vocab;
  /// The split named "train", "valid" or "test"; throws InputError naming `what` otherwise.
  const TensorSplit& split(const std::string& name, const std::string& what = "split") const;
};

/// Reads and tensorises the data. Throws InputError naming the file on any format problem.
Dataset load_dataset(const DataSpec& spec);

/// Per-channel mean and population standard deviation (clamped below at 1e-12) of images [N, C, H, W], in float64.
struct ChannelStatistics {
  std::vector<double> mean, stddev;
};
ChannelStatistics channel_statistics(const torch::Tensor& images);

}  // namespace moescope
