#pragma once
// Image classifier = backbone ("backbone") + head ("head"). ClassifierOptions describes a model fully and
// round-trips through JSON, so a checkpoint's config.json rebuilds it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "moescope/model/backbone.hpp"
#include "moescope/model/expert.hpp"
#include "moescope/model/moe.hpp"
#include "moescope/model/routing.hpp"

namespace moescope {

enum class BackboneKind { MLP, CNN, ResNet18 };
/// dense: FFN; gated: GatedMixture (softmax-gated, every expert runs); soft: SoftMoE; sparse: SparseMoE.
enum class HeadKind { Dense, Gated, Soft, Sparse };
const char* backbone_kind_name(BackboneKind k);  ///< "mlp", "cnn", "resnet18"
const char* head_kind_name(HeadKind k);          ///< "dense", "gated", "soft", "sparse"
BackboneKind parse_backbone_kind(const std::string& name);
HeadKind parse_head_kind(const std::string& name);

/// Everything that determines a classifier's architecture.
struct ClassifierOptions {
  TORCH_ARG(BackboneKind, backbone) = BackboneKind::ResNet18;
  TORCH_ARG(HeadKind, head) = HeadKind::Dense;
  TORCH_ARG(std::int64_t, in_channels) = 3;
  /// Input height = width (the MLP backbone's input is in_channels * image_size^2).
  TORCH_ARG(std::int64_t, image_size) = 32;
  TORCH_ARG(std::int64_t, num_classes) = 10;
  /// MLP hidden widths or CNN channels; empty: {256, 256} (MLP), {32, 64, 128} (CNN). Unused by ResNet-18.
  TORCH_ARG(std::vector<std::int64_t>, backbone_widths) = {};
  /// ResNet-18 layer1 channels (64: the standard network, 512-d features).
  TORCH_ARG(std::int64_t, resnet_width) = 64;
  TORCH_ARG(bool, batch_norm) = true;
  /// Dense head hidden width, or each expert's hidden width.
  TORCH_ARG(std::int64_t, head_hidden) = 512;
  TORCH_ARG(std::int64_t, experts) = 8;
  TORCH_ARG(std::int64_t, top_k) = 2;
  /// Soft MoE slots per expert.
  TORCH_ARG(std::int64_t, slots) = 1;
  TORCH_ARG(bool, noisy) = false;
  TORCH_ARG(double, capacity_factor) = 0.0;
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(bool, renormalize) = true;
  /// Dropout after the head's hidden activation (dense head and experts).
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(FFNKind, expert_kind) = FFNKind::MLP;
  /// Per-channel input standardisation (x - input_mean[c]) / input_std[c] before the backbone, for images
  /// [B, C, H, W]; empty: none. Training fits them to the run's train split (data/dataset_torch.hpp's
  /// channel_statistics), so they are stored in the run's config and, as buffers "input_mean" / "input_std"
  /// [1, C, 1, 1], in its weights: a run is analysed with the statistics it was trained with, whatever data is loaded.
  TORCH_ARG(std::vector<double>, input_mean) = {};
  TORCH_ARG(std::vector<double>, input_std) = {};

 public:
  /// The vision study's models (arXiv:2601.15021): ResNet-18 on 3x32x32, 10 classes, and
  /// dense 512-512-ReLU-dropout 0.1-10 | gated E=8 experts 512-64-ReLU-10 | noisy top-2 of those 8 experts.
  /// (Soft: Soft MoE with the gated head's experts, one slot each.)
  static ClassifierOptions vision_study(HeadKind head);
};

/// JSON with every field (enums as names) and "type": "classifier".
void to_json(nlohmann::json& j, const ClassifierOptions& o);
/// Missing fields keep their defaults; unknown fields, wrong types or values the model cannot be built with
/// (e.g. top_k > experts) throw InputError naming the field.
void from_json(const nlohmann::json& j, ClassifierOptions& o);

/// Logits [B, num_classes] and, for MoE heads, the head's routing.
struct ClassifierOutput {
  torch::Tensor logits;
  RoutingInfo routing;
  bool has_routing = false;
};

class ClassifierImpl : public torch::nn::Cloneable<ClassifierImpl> {
 public:
  explicit ClassifierImpl(ClassifierOptions options = ClassifierOptions());
  void reset() override;
  /// Logits [B, num_classes] for images [B, C, H, W].
  torch::Tensor forward(const torch::Tensor& x) { return forward_with_routing(x).logits; }
  ClassifierOutput forward_with_routing(const torch::Tensor& x);
  /// Backbone features [B, F].
  torch::Tensor features(const torch::Tensor& x);
  std::int64_t feature_dim() const { return feature_dim_; }
  /// The MoE head (set_probe, num_experts), or nullptr for a dense head.
  MoELayer* moe_head() const { return moe_head_.get(); }

  ClassifierOptions options;
  torch::nn::AnyModule backbone;
  FFN dense_head{nullptr};
  GatedMixture gated_head{nullptr};
  SoftMoE soft_head{nullptr};
  SparseMoE sparse_head{nullptr};
  /// The standardisation buffers (undefined when input_mean is empty).
  torch::Tensor input_mean, input_std;

 private:
  std::shared_ptr<MoELayer> moe_head_;
  std::int64_t feature_dim_ = 0;
};
TORCH_MODULE(Classifier);

}  // namespace moescope
