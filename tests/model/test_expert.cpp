#include "moescope/model/expert.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>

#include "support/seeded.hpp"

namespace moescope {
namespace {

using testing::max_abs_diff;

class FFNTest : public testing::SeededTest {};

std::int64_t count_params(torch::nn::Module& m) {
  std::int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

std::map<std::string, std::vector<std::int64_t>> shapes(const torch::nn::Module& m) {
  std::map<std::string, std::vector<std::int64_t>> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

TEST_F(FFNTest, MLPNamesShapesAndForward) {
  FFN ffn(FFNOptions(6, 4).out_dim(3));
  const auto s = shapes(*ffn);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s.at("fc1.weight"), (std::vector<std::int64_t>{4, 6}));
  EXPECT_EQ(s.at("fc1.bias"), (std::vector<std::int64_t>{4}));
  EXPECT_EQ(s.at("fc2.weight"), (std::vector<std::int64_t>{3, 4}));
  EXPECT_EQ(s.at("fc2.bias"), (std::vector<std::int64_t>{3}));
  const auto x = torch::randn({2, 5, 6});
  const auto expected = torch::matmul(torch::relu(torch::matmul(x, ffn->fc1->weight.t()) + ffn->fc1->bias),
                                      ffn->fc2->weight.t()) + ffn->fc2->bias;
  const auto y = ffn(x);
  EXPECT_EQ(y.sizes(), (std::vector<std::int64_t>{2, 5, 3}));
  // Same float32 products in another order: rounding only (values O(1), 6-term sums).
  EXPECT_LT(max_abs_diff(y, expected), 1e-5);
}

TEST_F(FFNTest, SwiGLUNamesAndForward) {
  FFN ffn(FFNOptions(5, 7).kind(FFNKind::SwiGLU).bias(false));
  const auto s = shapes(*ffn);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s.at("w_gate.weight"), (std::vector<std::int64_t>{7, 5}));
  EXPECT_EQ(s.at("w_up.weight"), (std::vector<std::int64_t>{7, 5}));
  EXPECT_EQ(s.at("w_down.weight"), (std::vector<std::int64_t>{5, 7}));
  const auto x = torch::randn({3, 5});
  const auto g = torch::matmul(x, ffn->w_gate->weight.t());
  const auto expected = torch::matmul(g * torch::sigmoid(g) * torch::matmul(x, ffn->w_up->weight.t()),
                                      ffn->w_down->weight.t());
  EXPECT_LT(max_abs_diff(ffn(x), expected), 1e-5);
}

TEST_F(FFNTest, DropoutOnlyInTraining) {
  FFN ffn(FFNOptions(8, 32).dropout(0.5));
  const auto x = torch::randn({4, 8});
  ffn->eval();
  EXPECT_TRUE(torch::equal(ffn(x), ffn(x)));
  ffn->train();
  EXPECT_FALSE(torch::equal(ffn(x), ffn(x)));
}

TEST_F(FFNTest, ExpertListNames) {
  auto list = make_experts(FFNOptions(4, 3), 2);
  const auto s = shapes(*list);
  EXPECT_EQ(s.count("0.fc1.weight"), 1u);
  EXPECT_EQ(s.count("1.fc2.bias"), 1u);
  EXPECT_EQ(s.size(), 8u);
}

TEST_F(FFNTest, ParameterCountsMatchModules) {
  for (const auto& o : {FFNOptions(512, 64).out_dim(10), FFNOptions(16, 48).kind(FFNKind::SwiGLU),
                        FFNOptions(16, 48).kind(FFNKind::SwiGLU).bias(false)}) {
    FFN ffn(o);
    EXPECT_EQ(ffn_params(o), count_params(*ffn));
  }
  // The vision study's experts: 512-64-10 = 33,482 parameters each; 8 of them + an 8x512 router.
  const auto expert = FFNOptions(512, 64).out_dim(10);
  EXPECT_EQ(ffn_params(expert), 512 * 64 + 64 + 64 * 10 + 10);
  EXPECT_EQ(moe_total_params(expert, 8), 8 * 33482 + 8 * 512);
  EXPECT_EQ(moe_total_params(expert, 8, false, true), 8 * 33482 + 2 * 8 * 512);
  EXPECT_EQ(moe_active_params(expert, 8, 2), 2 * 33482 + 8 * 512);
  EXPECT_THROW(moe_active_params(expert, 8, 9), c10::Error);
}

TEST_F(FFNTest, DenseHiddenMatchesParameterBudget) {
  const auto expert = FFNOptions(512, 64).out_dim(10);
  const auto dense = FFNOptions(512, 1).out_dim(10);
  const std::int64_t per_unit = 512 + 1 + 10;  // one hidden unit: a row of fc1, its bias, a column of fc2
  for (const std::int64_t target : {moe_total_params(expert, 8), moe_active_params(expert, 8, 2)}) {
    const std::int64_t h = dense_hidden_for_params(target, dense);
    FFN ffn(FFNOptions(dense).hidden(h));
    const std::int64_t n = count_params(*ffn);
    // The nearest width is within half a hidden unit's worth of parameters of the target.
    EXPECT_LE(std::llabs(n - target), per_unit / 2 + 1) << "target " << target << " h " << h;
  }
  EXPECT_EQ(dense_hidden_for_params(1, dense), 1);
  // An exact hit: h = 100.
  EXPECT_EQ(dense_hidden_for_params(ffn_params(FFNOptions(dense).hidden(100)), dense), 100);
}

TEST_F(FFNTest, RejectsBadOptions) {
  EXPECT_THROW(FFN(FFNOptions(0, 4)), c10::Error);
  EXPECT_THROW(FFN(FFNOptions(4, 4).dropout(1.0)), c10::Error);
  EXPECT_THROW(parse_activation("tanh"), std::invalid_argument);
  EXPECT_EQ(parse_activation(activation_name(Activation::GELU)), Activation::GELU);
  EXPECT_EQ(parse_ffn_kind(ffn_kind_name(FFNKind::SwiGLU)), FFNKind::SwiGLU);
}

}  // namespace
}  // namespace moescope
