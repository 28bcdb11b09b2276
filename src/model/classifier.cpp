#include "moescope/model/classifier.hpp"

#include <stdexcept>

#include "json_fields.hpp"

namespace moescope {

const char* backbone_kind_name(BackboneKind k) {
  switch (k) {
    case BackboneKind::MLP: return "mlp";
    case BackboneKind::CNN: return "cnn";
    case BackboneKind::ResNet18: return "resnet18";
  }
  return "?";
}

const char* head_kind_name(HeadKind k) {
  switch (k) {
    case HeadKind::Dense: return "dense";
    case HeadKind::Gated: return "gated";
    case HeadKind::Soft: return "soft";
    case HeadKind::Sparse: return "sparse";
  }
  return "?";
}

BackboneKind parse_backbone_kind(const std::string& name) {
  if (name == "mlp") return BackboneKind::MLP;
  if (name == "cnn") return BackboneKind::CNN;
  if (name == "resnet18") return BackboneKind::ResNet18;
  throw std::invalid_argument("unknown backbone '" + name + "' (expected mlp, cnn or resnet18)");
}

HeadKind parse_head_kind(const std::string& name) {
  if (name == "dense") return HeadKind::Dense;
  if (name == "gated") return HeadKind::Gated;
  if (name == "soft") return HeadKind::Soft;
  if (name == "sparse") return HeadKind::Sparse;
  throw std::invalid_argument("unknown head '" + name + "' (expected dense, gated, soft or sparse)");
}

ClassifierOptions ClassifierOptions::vision_study(HeadKind head) {
  ClassifierOptions o;
  o.backbone(BackboneKind::ResNet18).in_channels(3).image_size(32).num_classes(10).head(head);
  if (head == HeadKind::Dense) {
    o.head_hidden(512).dropout(0.1);
  } else {
    o.head_hidden(64).experts(8).dropout(0.0);
    if (head == HeadKind::Sparse) o.top_k(2).noisy(true);
  }
  return o;
}

void to_json(nlohmann::json& j, const ClassifierOptions& o) {
  j = nlohmann::json{{"type", "classifier"},
                     {"backbone", backbone_kind_name(o.backbone())},
                     {"head", head_kind_name(o.head())},
                     {"in_channels", o.in_channels()},
                     {"image_size", o.image_size()},
                     {"num_classes", o.num_classes()},
                     {"backbone_widths", o.backbone_widths()},
                     {"resnet_width", o.resnet_width()},
                     {"batch_norm", o.batch_norm()},
                     {"head_hidden", o.head_hidden()},
                     {"experts", o.experts()},
                     {"top_k", o.top_k()},
                     {"slots", o.slots()},
                     {"noisy", o.noisy()},
                     {"capacity_factor", o.capacity_factor()},
                     {"temperature", o.temperature()},
                     {"renormalize", o.renormalize()},
                     {"dropout", o.dropout()},
                     {"activation", activation_name(o.activation())},
                     {"expert_kind", ffn_kind_name(o.expert_kind())}};
}

void from_json(const nlohmann::json& j, ClassifierOptions& o) {
  const char* what = "classifier config";
  detail::check_fields(j, what, "classifier",
                       {"backbone", "head", "in_channels", "image_size", "num_classes", "backbone_widths",
                        "resnet_width", "batch_norm", "head_hidden", "experts", "top_k", "slots", "noisy",
                        "capacity_factor", "temperature", "renormalize", "dropout", "activation", "expert_kind"});
  detail::read_enum(j, what, "backbone", o.backbone(), parse_backbone_kind);
  detail::read_enum(j, what, "head", o.head(), parse_head_kind);
  detail::read_field(j, what, "in_channels", o.in_channels());
  detail::read_field(j, what, "image_size", o.image_size());
  detail::read_field(j, what, "num_classes", o.num_classes());
  detail::read_field(j, what, "backbone_widths", o.backbone_widths());
  detail::read_field(j, what, "resnet_width", o.resnet_width());
  detail::read_field(j, what, "batch_norm", o.batch_norm());
  detail::read_field(j, what, "head_hidden", o.head_hidden());
  detail::read_field(j, what, "experts", o.experts());
  detail::read_field(j, what, "top_k", o.top_k());
  detail::read_field(j, what, "slots", o.slots());
  detail::read_field(j, what, "noisy", o.noisy());
  detail::read_field(j, what, "capacity_factor", o.capacity_factor());
  detail::read_field(j, what, "temperature", o.temperature());
  detail::read_field(j, what, "renormalize", o.renormalize());
  detail::read_field(j, what, "dropout", o.dropout());
  detail::read_enum(j, what, "activation", o.activation(), parse_activation);
  detail::read_enum(j, what, "expert_kind", o.expert_kind(), parse_ffn_kind);
}

ClassifierImpl::ClassifierImpl(ClassifierOptions options_) : options(std::move(options_)) { reset(); }

void ClassifierImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.in_channels() > 0 && o.image_size() > 0 && o.num_classes() > 0,
              "Classifier: in_channels, image_size and num_classes must be positive, got ", o.in_channels(), ", ",
              o.image_size(), ", ", o.num_classes());
  switch (o.backbone()) {
    case BackboneKind::MLP: {
      auto widths = o.backbone_widths().empty() ? std::vector<std::int64_t>{256, 256} : o.backbone_widths();
      MLPBackbone net(MLPBackboneOptions(o.in_channels() * o.image_size() * o.image_size(), widths)
                          .activation(o.activation()));
      feature_dim_ = net->feature_dim();
      backbone = torch::nn::AnyModule(net);
      break;
    }
    case BackboneKind::CNN: {
      auto channels = o.backbone_widths().empty() ? std::vector<std::int64_t>{32, 64, 128} : o.backbone_widths();
      SmallCNN net(SmallCNNOptions(o.in_channels(), channels).batch_norm(o.batch_norm()));
      feature_dim_ = net->feature_dim();
      backbone = torch::nn::AnyModule(net);
      break;
    }
    case BackboneKind::ResNet18: {
      ResNet18 net(ResNet18Options(o.in_channels()).width(o.resnet_width()));
      feature_dim_ = net->feature_dim();
      backbone = torch::nn::AnyModule(net);
      break;
    }
  }
  register_module("backbone", backbone.ptr());

  const std::int64_t F = feature_dim_, C = o.num_classes();
  dense_head = nullptr;
  gated_head = nullptr;
  soft_head = nullptr;
  sparse_head = nullptr;
  moe_head_.reset();
  switch (o.head()) {
    case HeadKind::Dense:
      dense_head = register_module("head", FFN(FFNOptions(F, o.head_hidden())
                                                   .out_dim(C)
                                                   .kind(o.expert_kind())
                                                   .activation(o.activation())
                                                   .dropout(o.dropout())));
      break;
    case HeadKind::Gated:
      gated_head = register_module("head", GatedMixture(GatedMixtureOptions(F, o.experts())
                                                            .hidden(o.head_hidden())
                                                            .out_dim(C)
                                                            .kind(o.expert_kind())
                                                            .activation(o.activation())
                                                            .dropout(o.dropout())
                                                            .temperature(o.temperature())));
      moe_head_ = gated_head.ptr();
      break;
    case HeadKind::Soft:
      soft_head = register_module("head", SoftMoE(SoftMoEOptions(F, o.experts())
                                                      .slots(o.slots())
                                                      .hidden(o.head_hidden())
                                                      .out_dim(C)
                                                      .kind(o.expert_kind())
                                                      .activation(o.activation())
                                                      .dropout(o.dropout())));
      moe_head_ = soft_head.ptr();
      break;
    case HeadKind::Sparse:
      sparse_head = register_module("head", SparseMoE(SparseMoEOptions(F, o.experts())
                                                          .top_k(o.top_k())
                                                          .hidden(o.head_hidden())
                                                          .out_dim(C)
                                                          .kind(o.expert_kind())
                                                          .activation(o.activation())
                                                          .dropout(o.dropout())
                                                          .renormalize(o.renormalize())
                                                          .noisy(o.noisy())
                                                          .capacity_factor(o.capacity_factor())));
      moe_head_ = sparse_head.ptr();
      break;
  }
}

torch::Tensor ClassifierImpl::features(const torch::Tensor& x) { return backbone.forward(x); }

ClassifierOutput ClassifierImpl::forward_with_routing(const torch::Tensor& x) {
  const auto f = features(x);
  ClassifierOutput out;
  if (dense_head) {
    out.logits = dense_head(f);
    return out;
  }
  auto r = moe_head_->forward_moe(f);
  out.logits = std::move(r.output);
  out.routing = std::move(r.routing);
  out.has_routing = true;
  return out;
}

}  // namespace moescope
