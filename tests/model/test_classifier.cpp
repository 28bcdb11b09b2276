#include "moescope/model/classifier.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/seeded.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace {

using testing::max_abs_diff;
using testing::parameter_count;
using testing::parameter_shapes;

class ClassifierTest : public testing::SeededTest {};

TEST_F(ClassifierTest, SparseHeadParameterNamesFollowTheLayout) {
  Classifier model(ClassifierOptions::vision_study(HeadKind::Sparse));
  const auto s = parameter_shapes(*model);
  EXPECT_EQ(s.at("head.router.weight"), (std::vector<std::int64_t>{8, 512}));
  EXPECT_EQ(s.count("head.router.bias"), 0u);
  EXPECT_EQ(s.at("head.noise.weight"), (std::vector<std::int64_t>{8, 512}));
  EXPECT_EQ(s.at("head.experts.0.fc1.weight"), (std::vector<std::int64_t>{64, 512}));
  EXPECT_EQ(s.at("head.experts.0.fc1.bias"), (std::vector<std::int64_t>{64}));
  EXPECT_EQ(s.at("head.experts.7.fc2.weight"), (std::vector<std::int64_t>{10, 64}));
  EXPECT_EQ(s.at("head.experts.7.fc2.bias"), (std::vector<std::int64_t>{10}));
  EXPECT_EQ(s.count("head.experts.8.fc1.weight"), 0u);
  EXPECT_EQ(s.at("backbone.conv1.weight"), (std::vector<std::int64_t>{64, 3, 3, 3}));
  EXPECT_EQ(s.at("backbone.layer2.0.downsample.0.weight"), (std::vector<std::int64_t>{128, 64, 1, 1}));
  EXPECT_EQ(s.at("backbone.layer4.1.bn2.weight"), (std::vector<std::int64_t>{512}));
  ASSERT_NE(model->moe_head(), nullptr);
  EXPECT_EQ(model->moe_head()->num_experts(), 8);
  // The backbone's count is checked by hand in test_backbone.cpp.
  EXPECT_EQ(parameter_count(*model), parameter_count(*ResNet18()) +
                                      moe_total_params(FFNOptions(512, 64).out_dim(10), 8, false, true));
}

std::vector<TensorInfo> tensor_infos(const torch::nn::Module& m) {
  std::vector<TensorInfo> out;
  for (const auto& p : m.named_parameters()) out.push_back({p.key(), DType::F32, p.value().sizes().vec()});
  return out;
}

TEST_F(ClassifierTest, LayoutDetectionFindsTheMoEHead) {
  // The io module's detector, given the model's own names, sees one moescope MoE layer with 8 experts.
  for (const auto kind : {FFNKind::MLP, FFNKind::SwiGLU}) {
    auto o = ClassifierOptions::vision_study(HeadKind::Sparse).resnet_width(8).expert_kind(kind);
    const auto layout = detect_layout(tensor_infos(*Classifier(o)));
    EXPECT_EQ(layout.family, "moescope");
    ASSERT_EQ(layout.layers.size(), 1u);
    EXPECT_EQ(layout.layers[0].prefix, "head");
    EXPECT_EQ(layout.layers[0].router, "head.router.weight");
    ASSERT_EQ(layout.layers[0].experts.size(), 8u);
    const auto* up = layout.layers[0].experts[3].find("up");
    ASSERT_NE(up, nullptr);
    EXPECT_EQ(up->tensor, kind == FFNKind::MLP ? "head.experts.3.fc1.weight" : "head.experts.3.w_up.weight");
    EXPECT_EQ(up->rows, 64);
    EXPECT_EQ(up->cols, 64);  // features of a width-8 ResNet: 8 * 8
  }
}

TEST_F(ClassifierTest, EveryHeadOnEveryBackboneRuns) {
  for (const auto backbone : {BackboneKind::MLP, BackboneKind::CNN, BackboneKind::ResNet18}) {
    for (const auto head : {HeadKind::Dense, HeadKind::Gated, HeadKind::Soft, HeadKind::Sparse}) {
      auto o = ClassifierOptions().backbone(backbone).head(head).in_channels(1).image_size(8).num_classes(3)
                   .head_hidden(6).experts(3).top_k(2).resnet_width(4).backbone_widths(
                       backbone == BackboneKind::MLP ? std::vector<std::int64_t>{16} : std::vector<std::int64_t>{4, 8});
      Classifier model(o);
      const auto out = model->forward_with_routing(torch::randn({2, 1, 8, 8}));
      EXPECT_EQ(out.logits.sizes(), (std::vector<std::int64_t>{2, 3}))
          << backbone_kind_name(backbone) << "/" << head_kind_name(head);
      EXPECT_EQ(out.has_routing, head != HeadKind::Dense);
      if (out.has_routing) {
        EXPECT_EQ(out.routing.probs.sizes(), (std::vector<std::int64_t>{2, 3}));
      } else {
        EXPECT_EQ(model->moe_head(), nullptr);
      }
    }
  }
}

TEST_F(ClassifierTest, VisionStudyHeads) {
  const auto gated = ClassifierOptions::vision_study(HeadKind::Gated);
  Classifier g(gated);
  ASSERT_TRUE(g->gated_head);
  EXPECT_EQ(g->gated_head->options.experts(), 8);
  EXPECT_EQ(parameter_shapes(*g).at("head.experts.3.fc1.weight"), (std::vector<std::int64_t>{64, 512}));
  const auto dense = ClassifierOptions::vision_study(HeadKind::Dense);
  EXPECT_EQ(dense.head_hidden(), 512);
  EXPECT_DOUBLE_EQ(dense.dropout(), 0.1);
  const auto sparse = ClassifierOptions::vision_study(HeadKind::Sparse);
  EXPECT_TRUE(sparse.noisy());
  EXPECT_EQ(sparse.top_k(), 2);
}

TEST_F(ClassifierTest, OptionsJsonRoundTrip) {
  auto o = ClassifierOptions()
               .backbone(BackboneKind::CNN)
               .head(HeadKind::Sparse)
               .in_channels(1)
               .image_size(28)
               .num_classes(7)
               .backbone_widths({8, 16, 32})
               .resnet_width(16)
               .batch_norm(false)
               .head_hidden(33)
               .experts(5)
               .top_k(3)
               .slots(2)
               .noisy(true)
               .capacity_factor(1.25)
               .temperature(0.5)
               .renormalize(false)
               .dropout(0.2)
               .activation(Activation::GELU)
               .expert_kind(FFNKind::SwiGLU);
  const nlohmann::json j = o;
  EXPECT_EQ(j.at("type"), "classifier");
  EXPECT_EQ(j.at("head"), "sparse");
  const auto back = nlohmann::json::parse(j.dump()).get<ClassifierOptions>();
  EXPECT_EQ(nlohmann::json(back), j);
  EXPECT_EQ(back.backbone_widths(), (std::vector<std::int64_t>{8, 16, 32}));
  EXPECT_DOUBLE_EQ(back.capacity_factor(), 1.25);
  EXPECT_EQ(back.expert_kind(), FFNKind::SwiGLU);
  // The rebuilt model has the same parameter names and shapes.
  EXPECT_EQ(parameter_shapes(*Classifier(back)), parameter_shapes(*Classifier(o)));
  // Missing fields keep defaults; typos and wrong types are errors naming the field.
  EXPECT_EQ(nlohmann::json::parse(R"({"head": "gated"})").get<ClassifierOptions>().experts(), 8);
  EXPECT_THROW(nlohmann::json::parse(R"({"expertz": 4})").get<ClassifierOptions>(), InputError);
  EXPECT_THROW(nlohmann::json::parse(R"({"experts": "four"})").get<ClassifierOptions>(), InputError);
  EXPECT_THROW(nlohmann::json::parse(R"({"head": "hard"})").get<ClassifierOptions>(), InputError);
  EXPECT_THROW(nlohmann::json::parse(R"({"type": "lm"})").get<ClassifierOptions>(), InputError);
}

TEST_F(ClassifierTest, CloneCopiesWeights) {
  Classifier model(ClassifierOptions().backbone(BackboneKind::MLP).head(HeadKind::Sparse).in_channels(1)
                       .image_size(4).num_classes(3).head_hidden(5).experts(3).backbone_widths({8}));
  auto copy = std::dynamic_pointer_cast<ClassifierImpl>(model->clone());
  ASSERT_TRUE(copy);
  model->eval();
  copy->eval();
  const auto x = torch::randn({3, 1, 4, 4});
  EXPECT_LT(max_abs_diff(model(x), copy->forward(x)), 1e-7);
  ASSERT_NE(copy->moe_head(), nullptr);
  EXPECT_NE(copy->moe_head(), model->moe_head());
}

}  // namespace
}  // namespace moescope
