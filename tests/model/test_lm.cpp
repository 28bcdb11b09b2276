#include "moescope/model/lm.hpp"

#include <gtest/gtest.h>

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

class TransformerLMTest : public testing::SeededTest {};

LMOptions small() {
  return LMOptions().vocab_size(17).context(12).dim(16).layers(3).heads(2).ffn_hidden(24).moe_every(2).experts(4)
      .top_k(2).expert_hidden(8);
}

TEST_F(TransformerLMTest, ParameterNames) {
  TransformerLM lm(small());
  const auto s = parameter_shapes(*lm);
  EXPECT_EQ(s.at("tok_emb.weight"), (std::vector<std::int64_t>{17, 16}));
  EXPECT_EQ(s.at("pos_emb.weight"), (std::vector<std::int64_t>{12, 16}));
  EXPECT_EQ(s.at("blocks.0.attn.qkv.weight"), (std::vector<std::int64_t>{48, 16}));
  EXPECT_EQ(s.at("blocks.0.attn.proj.weight"), (std::vector<std::int64_t>{16, 16}));
  EXPECT_EQ(s.at("blocks.0.ln1.weight"), (std::vector<std::int64_t>{16}));
  EXPECT_EQ(s.at("blocks.0.ffn.fc1.weight"), (std::vector<std::int64_t>{24, 16}));
  EXPECT_EQ(s.at("blocks.1.moe.router.weight"), (std::vector<std::int64_t>{4, 16}));
  EXPECT_EQ(s.at("blocks.1.moe.experts.3.fc1.weight"), (std::vector<std::int64_t>{8, 16}));
  EXPECT_EQ(s.at("blocks.1.moe.experts.0.fc2.weight"), (std::vector<std::int64_t>{16, 8}));
  EXPECT_EQ(s.count("blocks.1.ffn.fc1.weight"), 0u);
  EXPECT_EQ(s.count("blocks.2.ffn.fc1.weight"), 1u);
  EXPECT_EQ(s.count("lm_head.weight"), 0u);  // tied
  EXPECT_EQ(lm->moe_blocks(), (std::vector<std::int64_t>{1}));
  EXPECT_THROW(lm->moe_layer(0), c10::Error);
  EXPECT_EQ(lm->moe_layer(1)->options.experts(), 4);

  TransformerLM untied(small().tie_embeddings(false).moe_every(1).ffn_kind(FFNKind::SwiGLU));
  const auto u = parameter_shapes(*untied);
  EXPECT_EQ(u.at("lm_head.weight"), (std::vector<std::int64_t>{17, 16}));
  EXPECT_EQ(u.count("blocks.0.moe.experts.1.w_gate.weight"), 1u);
  EXPECT_EQ(untied->moe_blocks().size(), 3u);
  EXPECT_TRUE(TransformerLM(small().moe_every(0))->moe_blocks().empty());
}

TEST_F(TransformerLMTest, LayoutDetectionFindsEveryMoEBlock) {
  TransformerLM lm(small().layers(4));
  std::vector<TensorInfo> infos;
  for (const auto& p : lm->named_parameters()) infos.push_back({p.key(), DType::F32, p.value().sizes().vec()});
  const auto layout = detect_layout(infos);
  EXPECT_EQ(layout.family, "moescope");
  ASSERT_EQ(layout.layers.size(), 2u);  // blocks 1 and 3
  EXPECT_EQ(layout.layers[0].prefix, "blocks.1.moe");
  EXPECT_EQ(layout.layers[1].router, "blocks.3.moe.router.weight");
  EXPECT_EQ(layout.layers[1].experts.size(), 4u);
}

TEST_F(TransformerLMTest, CausalMaskHidesTheFuture) {
  TransformerLM lm(small().moe_every(1));
  lm->eval();
  torch::NoGradGuard no_grad;
  auto idx = torch::randint(0, 17, {2, 10}, torch::kLong);
  const auto out = lm->forward_with_routing(idx);
  EXPECT_EQ(out.logits.sizes(), (std::vector<std::int64_t>{2, 10, 17}));
  ASSERT_EQ(out.routing.size(), 3u);
  EXPECT_EQ(out.routing[0].probs.sizes(), (std::vector<std::int64_t>{20, 4}));
  auto changed = idx.clone();
  changed[0][6] = (idx[0][6].item<std::int64_t>() + 5) % 17;
  changed[1][9] = (idx[1][9].item<std::int64_t>() + 3) % 17;
  const auto after = lm(changed);
  // Positions before the change see the same inputs; only summation order in batched products may differ.
  EXPECT_LT(max_abs_diff(after[0].narrow(0, 0, 6), out.logits[0].narrow(0, 0, 6)), 1e-5);
  EXPECT_LT(max_abs_diff(after[1].narrow(0, 0, 9), out.logits[1].narrow(0, 0, 9)), 1e-5);
  EXPECT_GT(max_abs_diff(after[0][6], out.logits[0][6]), 1e-3);
}

TEST_F(TransformerLMTest, TiedHeadUsesTheEmbeddingAndTrains) {
  TransformerLM lm(small());
  const auto idx = torch::randint(0, 17, {2, 8}, torch::kLong);
  const auto logits = lm(idx);
  const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, 17}), idx.reshape(-1));
  loss.backward();
  EXPECT_TRUE(lm->tok_emb->weight.grad().defined());
  EXPECT_GT(lm->moe_layer(1)->router->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_THROW(lm(torch::zeros({1, 13}, torch::kLong)), c10::Error);  // longer than the context
}

TEST_F(TransformerLMTest, OptionsJsonRoundTrip) {
  auto o = small().noisy(true).capacity_factor(1.5).renormalize(false).ffn_kind(FFNKind::SwiGLU)
               .activation(Activation::ReLU).dropout(0.1).tie_embeddings(false).bias(false).keep_expert_outputs(true);
  const nlohmann::json j = o;
  EXPECT_EQ(j.at("type"), "lm");
  const auto back = nlohmann::json::parse(j.dump()).get<LMOptions>();
  EXPECT_EQ(nlohmann::json(back), j);
  EXPECT_EQ(back.moe_every(), 2);
  EXPECT_EQ(back.ffn_kind(), FFNKind::SwiGLU);
  EXPECT_EQ(parameter_shapes(*TransformerLM(back)), parameter_shapes(*TransformerLM(o)));
  EXPECT_THROW(nlohmann::json::parse(R"({"layer": 2})").get<LMOptions>(), InputError);
  EXPECT_THROW(nlohmann::json::parse(R"({"type": "classifier"})").get<LMOptions>(), InputError);
}

TEST_F(TransformerLMTest, ExpertOutputsForOrthogonalityLoss) {
  TransformerLM lm(small().moe_every(1).keep_expert_outputs(true));
  const auto out = lm->forward_with_routing(torch::randint(0, 17, {2, 5}, torch::kLong));
  ASSERT_EQ(out.routing.size(), 3u);
  EXPECT_EQ(out.routing[2].expert_outputs.sizes(), (std::vector<std::int64_t>{10, 2, 16}));
  EXPECT_TRUE(out.routing[2].expert_outputs.requires_grad());
}

}  // namespace
}  // namespace moescope
