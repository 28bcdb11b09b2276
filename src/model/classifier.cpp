#include "moescope/model/classifier.hpp"

#include <stdexcept>

#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"

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
  if (!o.input_mean().empty()) {
    j["input_mean"] = o.input_mean();
    j["input_std"] = o.input_std();
  }
}

void from_json(const nlohmann::json& j, ClassifierOptions& o) {
  const char* what = "classifier config";
  json_fields::check(j, what, "classifier",
                       {"backbone", "head", "in_channels", "image_size", "num_classes", "backbone_widths",
                        "resnet_width", "batch_norm", "head_hidden", "experts", "top_k", "slots", "noisy",
                        "capacity_factor", "temperature", "renormalize", "dropout", "activation", "expert_kind",
                        "input_mean", "input_std"});
  json_fields::read_enum(j, what, "backbone", o.backbone(), parse_backbone_kind);
  json_fields::read_enum(j, what, "head", o.head(), parse_head_kind);
  json_fields::read(j, what, "in_channels", o.in_channels());
  json_fields::read(j, what, "image_size", o.image_size());
  json_fields::read(j, what, "num_classes", o.num_classes());
  json_fields::read(j, what, "backbone_widths", o.backbone_widths());
  json_fields::read(j, what, "resnet_width", o.resnet_width());
  json_fields::read(j, what, "batch_norm", o.batch_norm());
  json_fields::read(j, what, "head_hidden", o.head_hidden());
  json_fields::read(j, what, "experts", o.experts());
  json_fields::read(j, what, "top_k", o.top_k());
  json_fields::read(j, what, "slots", o.slots());
  json_fields::read(j, what, "noisy", o.noisy());
  json_fields::read(j, what, "capacity_factor", o.capacity_factor());
  json_fields::read(j, what, "temperature", o.temperature());
  json_fields::read(j, what, "renormalize", o.renormalize());
  json_fields::read(j, what, "dropout", o.dropout());
  json_fields::read_enum(j, what, "activation", o.activation(), parse_activation);
  json_fields::read_enum(j, what, "expert_kind", o.expert_kind(), parse_ffn_kind);
  json_fields::read(j, what, "input_mean", o.input_mean());
  json_fields::read(j, what, "input_std", o.input_std());
  const auto need = [&](bool ok, const std::string& field, const std::string& rule) {
    if (!ok) throw InputError(std::string(what) + ": field '" + field + "' " + rule);
  };
  need(o.in_channels() > 0, "in_channels", "must be positive");
  need(o.image_size() > 0, "image_size", "must be positive");
  need(o.num_classes() > 0, "num_classes", "must be positive");
  need(o.head_hidden() > 0, "head_hidden", "must be positive");
  if (o.head() != HeadKind::Dense) {
    need(o.experts() >= 2, "experts", "must be at least 2 for an MoE head, got " + std::to_string(o.experts()));
    if (o.head() == HeadKind::Sparse)
      need(o.top_k() >= 1 && o.top_k() <= o.experts(), "top_k",
           "must be between 1 and experts (" + std::to_string(o.experts()) + "), got " + std::to_string(o.top_k()));
    if (o.head() == HeadKind::Soft) need(o.slots() >= 1, "slots", "must be at least 1");
  }
  need(o.dropout() >= 0.0 && o.dropout() < 1.0, "dropout", "must be in [0, 1)");
  need(o.capacity_factor() >= 0.0, "capacity_factor", "must be >= 0 (0: no capacity limit)");
  need(o.temperature() > 0.0, "temperature", "must be positive");
  need(o.input_mean().size() == o.input_std().size(), "input_std", "must have as many entries as input_mean");
  need(o.input_mean().empty() || static_cast<std::int64_t>(o.input_mean().size()) == o.in_channels(), "input_mean",
       "must have one entry per input channel (" + std::to_string(o.in_channels()) + ")");
  for (double s : o.input_std()) need(s > 0.0, "input_std", "entries must be positive");
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
  input_mean = torch::Tensor();
  input_std = torch::Tensor();
  if (!o.input_mean().empty()) {
    TORCH_CHECK(static_cast<std::int64_t>(o.input_mean().size()) == o.in_channels() &&
                    o.input_std().size() == o.input_mean().size(),
                "Classifier: input_mean and input_std need one entry per input channel");
    const auto c = o.in_channels();
    input_mean = register_buffer("input_mean", torch::tensor(o.input_mean(), torch::kFloat64).to(torch::kFloat32).view({1, c, 1, 1}));
    input_std = register_buffer("input_std", torch::tensor(o.input_std(), torch::kFloat64).to(torch::kFloat32).view({1, c, 1, 1}));
  }

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

torch::Tensor ClassifierImpl::features(const torch::Tensor& x) {
  if (input_mean.defined() && x.dim() == 4) return backbone.forward((x - input_mean) / input_std);
  return backbone.forward(x);
}

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
