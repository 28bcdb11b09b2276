#include "moescope/io/layout.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "moescope/util/error.hpp"
#include "support/expect_error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::input_error_of;

// Small but realistic MoE shapes: E experts, hidden size H, expert intermediate size I.
constexpr std::int64_t kE = 4, kH = 8, kI = 6;

TensorInfo T(const std::string& name, std::vector<std::int64_t> shape, DType dtype = DType::BF16) {
  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  return t;
}

// [H, I] for a down matrix, [I, H] for gate and up.
std::vector<std::int64_t> ffn_shape(const std::string& matrix) {
  if (matrix.find("down") != std::string::npos) return {kH, kI};
  return {kI, kH};
}

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l); }

// Attention and norm tensors every decoder layer has: detection must look past them.
void add_attention(std::vector<TensorInfo>& v, const std::string& p) {
  for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"})
    v.push_back(T(p + ".self_attn." + m + ".weight", {kH, kH}));
  v.push_back(T(p + ".input_layernorm.weight", {kH}));
  v.push_back(T(p + ".post_attention_layernorm.weight", {kH}));
}

std::vector<TensorInfo> model_frame() {
  return {T("model.embed_tokens.weight", {32, kH}), T("model.norm.weight", {kH}), T("lm_head.weight", {32, kH})};
}

std::vector<TensorInfo> mixtral(int layers = 2) {
  auto v = model_frame();
  for (int l = 0; l < layers; ++l) {
    add_attention(v, layer_prefix(l));
    const std::string p = layer_prefix(l) + ".block_sparse_moe";
    v.push_back(T(p + ".gate.weight", {kE, kH}));
    for (int e = 0; e < kE; ++e) {
      const std::string x = p + ".experts." + std::to_string(e);
      v.push_back(T(x + ".w1.weight", {kI, kH}));
      v.push_back(T(x + ".w2.weight", {kH, kI}));
      v.push_back(T(x + ".w3.weight", {kI, kH}));
    }
  }
  return v;
}

// OLMoE / Qwen3-MoE spelling; qwen2 adds the shared expert and its gate.
std::vector<TensorInfo> olmoe(int layers = 3, bool qwen2_shared = false) {
  auto v = model_frame();
  for (int l = 0; l < layers; ++l) {
    add_attention(v, layer_prefix(l));
    const std::string p = layer_prefix(l) + ".mlp";
    v.push_back(T(p + ".gate.weight", {kE, kH}));
    for (int e = 0; e < kE; ++e) {
      const std::string x = p + ".experts." + std::to_string(e);
      v.push_back(T(x + ".gate_proj.weight", {kI, kH}));
      v.push_back(T(x + ".up_proj.weight", {kI, kH}));
      v.push_back(T(x + ".down_proj.weight", {kH, kI}));
    }
    if (qwen2_shared) {
      v.push_back(T(p + ".shared_expert.gate_proj.weight", {2 * kI, kH}));
      v.push_back(T(p + ".shared_expert.up_proj.weight", {2 * kI, kH}));
      v.push_back(T(p + ".shared_expert.down_proj.weight", {kH, 2 * kI}));
      v.push_back(T(p + ".shared_expert_gate.weight", {1, kH}));
    }
  }
  return v;
}

// DeepSeek-V3: layers 0-2 dense, 3-4 MoE, FP8 weights with 128x128 block scales, shared experts, router bias.
std::vector<TensorInfo> deepseek_v3() {
  auto v = model_frame();
  const auto fp8 = [&](const std::string& name, std::vector<std::int64_t> shape) {
    v.push_back(T(name + ".weight", std::move(shape), DType::F8_E4M3));
    v.push_back(T(name + ".weight_scale_inv", {1, 1}, DType::F32));
  };
  for (int l = 0; l < 5; ++l) {
    add_attention(v, layer_prefix(l));
    const std::string p = layer_prefix(l) + ".mlp";
    if (l < 3) {
      fp8(p + ".gate_proj", {3 * kI, kH});
      fp8(p + ".up_proj", {3 * kI, kH});
      fp8(p + ".down_proj", {kH, 3 * kI});
      continue;
    }
    v.push_back(T(p + ".gate.weight", {kE, kH}));
    v.push_back(T(p + ".gate.e_score_correction_bias", {kE}, DType::F32));
    for (int e = 0; e < kE; ++e) {
      const std::string x = p + ".experts." + std::to_string(e);
      fp8(x + ".gate_proj", {kI, kH});
      fp8(x + ".up_proj", {kI, kH});
      fp8(x + ".down_proj", {kH, kI});
    }
    fp8(p + ".shared_experts.gate_proj", {kI, kH});
    fp8(p + ".shared_experts.up_proj", {kI, kH});
    fp8(p + ".shared_experts.down_proj", {kH, kI});
  }
  return v;
}

// Switch Transformers: MoE in every other block; encoder FFN is sub-layer 1, decoder FFN sub-layer 2.
std::vector<TensorInfo> switch_t5() {
  std::vector<TensorInfo> v = {T("shared.weight", {32, kH})};
  for (const std::string part : {"encoder", "decoder"}) {
    const std::string sub = part == "encoder" ? "1" : "2";
    for (int b = 0; b < 4; ++b) {
      const std::string blk = part + ".block." + std::to_string(b);
      v.push_back(T(blk + ".layer.0.SelfAttention.q.weight", {kH, kH}));
      const std::string p = blk + ".layer." + sub + ".mlp";
      if (b % 2 == 0) {
        v.push_back(T(p + ".wi.weight", {kI, kH}));
        v.push_back(T(p + ".wo.weight", {kH, kI}));
        continue;
      }
      v.push_back(T(p + ".router.classifier.weight", {kE, kH}));
      for (int e = 0; e < kE; ++e) {
        const std::string x = p + ".experts.expert_" + std::to_string(e);
        v.push_back(T(x + ".wi.weight", {kI, kH}));
        v.push_back(T(x + ".wo.weight", {kH, kI}));
      }
    }
  }
  std::reverse(v.begin(), v.end());  // decoder first: the order must come from the detector
  return v;
}

std::vector<TensorInfo> fused_v5(int layers = 2) {
  auto v = model_frame();
  for (int l = 0; l < layers; ++l) {
    add_attention(v, layer_prefix(l));
    const std::string p = layer_prefix(l) + ".mlp";
    v.push_back(T(p + ".gate.weight", {kE, kH}));
    v.push_back(T(p + ".experts.gate_up_proj", {kE, 2 * kI, kH}));
    v.push_back(T(p + ".experts.down_proj", {kE, kH, kI}));
  }
  return v;
}

std::vector<TensorInfo> gpt_oss(int layers = 2) {
  auto v = model_frame();
  for (int l = 0; l < layers; ++l) {
    add_attention(v, layer_prefix(l));
    const std::string p = layer_prefix(l) + ".mlp";
    v.push_back(T(p + ".router.weight", {kE, kH}));
    v.push_back(T(p + ".router.bias", {kE}));
    v.push_back(T(p + ".experts.gate_up_proj", {kE, kH, 2 * kI}));
    v.push_back(T(p + ".experts.gate_up_proj_bias", {kE, 2 * kI}));
    v.push_back(T(p + ".experts.down_proj", {kE, kI, kH}));
    v.push_back(T(p + ".experts.down_proj_bias", {kE, kH}));
  }
  return v;
}

std::vector<std::string> keys(const Layout& l) {
  std::vector<std::string> k;
  for (const auto& x : l.layers) k.push_back(x.key);
  return k;
}

std::vector<std::string> roles(const ExpertLayout& e) {
  std::vector<std::string> r;
  for (const auto& m : e.matrices) r.push_back(m.role);
  return r;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

bool any_note(const Layout& l, const std::string& part) {
  return std::any_of(l.notes.begin(), l.notes.end(), [&](const std::string& n) { return has(n, part); });
}

void remove_if_name(std::vector<TensorInfo>& v, const std::function<bool(const std::string&)>& pred) {
  v.erase(std::remove_if(v.begin(), v.end(), [&](const TensorInfo& t) { return pred(t.name); }), v.end());
}

TensorInfo& tensor(std::vector<TensorInfo>& v, const std::string& name) {
  auto it = std::find_if(v.begin(), v.end(), [&](const TensorInfo& t) { return t.name == name; });
  if (it == v.end()) throw std::runtime_error("fixture lacks " + name);
  return *it;
}

// ---- detection, one family each ----

TEST(Layout, Mixtral) {
  const Layout l = detect_layout(mixtral());
  EXPECT_EQ(l.family, "mixtral");
  EXPECT_TRUE(l.notes.empty());
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00", "layer_01"}));
  const MoELayerLayout& L = l.layers[1];
  EXPECT_EQ(L.prefix, "model.layers.1.block_sparse_moe");
  EXPECT_EQ(L.layer, 1);
  EXPECT_EQ(L.router, "model.layers.1.block_sparse_moe.gate.weight");
  EXPECT_EQ(L.router_bias, "");
  EXPECT_EQ(L.activation, "swiglu");
  EXPECT_TRUE(L.shared_experts.empty());
  ASSERT_EQ(L.experts.size(), 4u);
  for (int e = 0; e < kE; ++e) {
    const ExpertLayout& x = L.experts[static_cast<std::size_t>(e)];
    EXPECT_EQ(x.index, e);
    EXPECT_EQ(roles(x), (std::vector<std::string>{"down", "gate", "up"}));
  }
  const ExpertLayout& x2 = L.experts[2];
  const std::string base = "model.layers.1.block_sparse_moe.experts.2.";
  EXPECT_EQ(x2.find("gate")->tensor, base + "w1.weight");
  EXPECT_EQ(x2.find("up")->tensor, base + "w3.weight");
  const MatrixView* down = x2.find("down");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->tensor, base + "w2.weight");
  EXPECT_EQ(down->rows, kH);
  EXPECT_EQ(down->cols, kI);
  EXPECT_EQ(down->offset, 0);
  EXPECT_TRUE(down->contiguous());
  EXPECT_EQ(x2.find("gate")->rows, kI);
  EXPECT_EQ(x2.find("gate")->cols, kH);
  EXPECT_EQ(x2.find("gate_bias"), nullptr);
}

TEST(Layout, OlmoeQwen3) {
  const Layout l = detect_layout(olmoe(3));
  EXPECT_EQ(l.family, "olmoe-qwen-deepseek");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00", "layer_01", "layer_02"}));
  for (const auto& L : l.layers) {
    EXPECT_EQ(L.prefix, layer_prefix(L.layer) + ".mlp");
    EXPECT_EQ(L.router, L.prefix + ".gate.weight");
    EXPECT_EQ(L.experts.size(), 4u);
    EXPECT_EQ(L.activation, "swiglu");
    EXPECT_EQ(L.experts[3].find("up")->tensor, L.prefix + ".experts.3.up_proj.weight");
  }
}

TEST(Layout, Qwen2SharedExpertReportedApart) {
  const Layout l = detect_layout(olmoe(2, /*qwen2_shared=*/true));
  EXPECT_EQ(l.family, "olmoe-qwen-deepseek");
  ASSERT_EQ(l.layers.size(), 2u);
  const MoELayerLayout& L = l.layers[0];
  EXPECT_EQ(L.experts.size(), 4u);  // routed experts only
  ASSERT_EQ(L.shared_experts.size(), 1u);
  const ExpertLayout& s = L.shared_experts[0];
  EXPECT_EQ(roles(s), (std::vector<std::string>{"down", "gate", "up"}));
  EXPECT_EQ(s.find("gate")->tensor, "model.layers.0.mlp.shared_expert.gate_proj.weight");
  EXPECT_EQ(s.find("gate")->rows, 2 * kI);
  EXPECT_EQ(L.shared_expert_gate, "model.layers.0.mlp.shared_expert_gate.weight");
}

TEST(Layout, DeepSeekDenseLayersNotedAndScalesIgnored) {
  const Layout l = detect_layout(deepseek_v3());
  EXPECT_EQ(l.family, "olmoe-qwen-deepseek");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_03", "layer_04"}));
  EXPECT_TRUE(any_note(l, "layers 0-2 are dense (no experts)")) << ::testing::PrintToString(l.notes);
  for (const auto& L : l.layers) {
    EXPECT_EQ(L.router, L.prefix + ".gate.weight");
    EXPECT_EQ(L.router_bias, L.prefix + ".gate.e_score_correction_bias");
    ASSERT_EQ(L.experts.size(), 4u);
    for (const auto& e : L.experts) {
      EXPECT_EQ(roles(e), (std::vector<std::string>{"down", "gate", "up"}));  // no weight_scale_inv
      for (const auto& m : e.matrices) EXPECT_FALSE(has(m.tensor, "scale_inv"));
    }
    ASSERT_EQ(L.shared_experts.size(), 1u);
    EXPECT_EQ(roles(L.shared_experts[0]), (std::vector<std::string>{"down", "gate", "up"}));
    EXPECT_EQ(L.shared_experts[0].find("down")->tensor, L.prefix + ".shared_experts.down_proj.weight");
  }
}

TEST(Layout, SwitchEncoderAndDecoder) {
  const Layout l = detect_layout(switch_t5());
  EXPECT_EQ(l.family, "switch");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"encoder_layer_01", "encoder_layer_03", "decoder_layer_01",
                                               "decoder_layer_03"}));
  EXPECT_EQ(l.layers[0].prefix, "encoder.block.1.layer.1.mlp");
  EXPECT_EQ(l.layers[3].prefix, "decoder.block.3.layer.2.mlp");
  EXPECT_EQ(l.layers[3].layer, 3);  // the block number, not the sub-layer
  EXPECT_EQ(l.layers[2].router, "decoder.block.1.layer.2.mlp.router.classifier.weight");
  for (const auto& L : l.layers) {
    EXPECT_EQ(L.activation, "relu");
    ASSERT_EQ(L.experts.size(), 4u);
    EXPECT_EQ(roles(L.experts[1]), (std::vector<std::string>{"down", "up"}));
    EXPECT_EQ(L.experts[1].find("up")->tensor, L.prefix + ".experts.expert_1.wi.weight");
    EXPECT_EQ(L.experts[1].find("down")->tensor, L.prefix + ".experts.expert_1.wo.weight");
  }
  EXPECT_TRUE(any_note(l, "encoder layers 0, 2 are dense")) << ::testing::PrintToString(l.notes);
  EXPECT_TRUE(any_note(l, "decoder layers 0, 2 are dense")) << ::testing::PrintToString(l.notes);
}

void expect_view(const MatrixView* v, const std::string& tensor, std::int64_t offset, std::int64_t rows,
                 std::int64_t cols, std::int64_t row_stride, std::int64_t col_stride) {
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->tensor, tensor);
  EXPECT_EQ(v->offset, offset);
  EXPECT_EQ(v->rows, rows);
  EXPECT_EQ(v->cols, cols);
  EXPECT_EQ(v->row_stride, row_stride);
  EXPECT_EQ(v->col_stride, col_stride);
}

TEST(Layout, FusedV5Views) {
  const Layout l = detect_layout(fused_v5());
  EXPECT_EQ(l.family, "fused-v5");
  EXPECT_TRUE(l.notes.empty()) << ::testing::PrintToString(l.notes);
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00", "layer_01"}));
  const MoELayerLayout& L = l.layers[1];
  EXPECT_EQ(L.router, "model.layers.1.mlp.gate.weight");
  EXPECT_EQ(L.activation, "swiglu");
  ASSERT_EQ(L.experts.size(), 4u);
  const ExpertLayout& x = L.experts[2];
  EXPECT_EQ(roles(x), (std::vector<std::string>{"down", "gate", "up"}));
  const std::string gu = "model.layers.1.mlp.experts.gate_up_proj", dn = "model.layers.1.mlp.experts.down_proj";
  // Expert 2 of [4, 12, 8]: elements 192..287; gate rows first (192..239), then up (240..287).
  expect_view(x.find("gate"), gu, 192, kI, kH, kH, 1);
  expect_view(x.find("up"), gu, 240, kI, kH, kH, 1);
  // Expert 2 of [4, 8, 6]: elements 96..143.
  expect_view(x.find("down"), dn, 96, kH, kI, kI, 1);
  EXPECT_TRUE(x.find("gate")->contiguous());
}

TEST(Layout, GptOssViews) {
  const Layout l = detect_layout(gpt_oss());
  EXPECT_EQ(l.family, "gpt-oss");
  EXPECT_TRUE(l.notes.empty()) << ::testing::PrintToString(l.notes);
  ASSERT_EQ(l.layers.size(), 2u);
  const MoELayerLayout& L = l.layers[0];
  EXPECT_EQ(L.router, "model.layers.0.mlp.router.weight");
  EXPECT_EQ(L.router_bias, "model.layers.0.mlp.router.bias");
  EXPECT_EQ(L.activation, "swiglu");
  ASSERT_EQ(L.experts.size(), 4u);
  const ExpertLayout& x = L.experts[2];
  EXPECT_EQ(roles(x), (std::vector<std::string>{"down", "down_bias", "gate", "gate_bias", "up", "up_bias"}));
  const std::string p = "model.layers.0.mlp.experts.";
  // gate_up [4, 8, 12]: expert 2 starts at 192; gate = even columns, up = odd columns.
  expect_view(x.find("gate"), p + "gate_up_proj", 192, kH, kI, 2 * kI, 2);
  expect_view(x.find("up"), p + "gate_up_proj", 193, kH, kI, 2 * kI, 2);
  expect_view(x.find("down"), p + "down_proj", 96, kI, kH, kH, 1);
  expect_view(x.find("gate_bias"), p + "gate_up_proj_bias", 24, 1, kI, 2 * kI, 2);
  expect_view(x.find("up_bias"), p + "gate_up_proj_bias", 25, 1, kI, 2 * kI, 2);
  expect_view(x.find("down_bias"), p + "down_proj_bias", 16, 1, kH, kH, 1);
  EXPECT_FALSE(x.find("gate")->contiguous());
}

TEST(Layout, FusedShapesThatFitNeitherLayoutFail) {
  auto v = fused_v5(1);
  tensor(v, "model.layers.0.mlp.experts.down_proj").shape = {kE, kH, kI + 1};
  const std::string msg = input_error_of([&] { detect_layout(v); });
  EXPECT_TRUE(has(msg, "model.layers.0.mlp")) << msg;
  EXPECT_TRUE(has(msg, "[4, 8, 7]")) << msg;
}

TEST(Layout, GptOssRouterWithV5ShapesIsNoted) {
  auto v = fused_v5(1);
  remove_if_name(v, [](const std::string& n) { return n == "model.layers.0.mlp.gate.weight"; });
  v.push_back(T("model.layers.0.mlp.router.weight", {kE, kH}));
  const Layout l = detect_layout(v);
  EXPECT_EQ(l.family, "fused-v5");  // shapes decide
  EXPECT_TRUE(any_note(l, "router")) << ::testing::PrintToString(l.notes);
}

TEST(Layout, MoescopeReluHead) {
  std::vector<TensorInfo> v = {T("backbone.conv1.weight", {16, 3, 3, 3}), T("backbone.fc.weight", {kH, 16}),
                               T("head.router.weight", {kE, kH}), T("head.router.bias", {kE})};
  for (int e = 0; e < kE; ++e) {
    const std::string x = "head.experts." + std::to_string(e);
    v.push_back(T(x + ".fc1.weight", {kI, kH}, DType::F32));
    v.push_back(T(x + ".fc1.bias", {kI}, DType::F32));
    v.push_back(T(x + ".fc2.weight", {10, kI}, DType::F32));
    v.push_back(T(x + ".fc2.bias", {10}, DType::F32));
  }
  const Layout l = detect_layout(v);
  EXPECT_EQ(l.family, "moescope");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00"}));
  const MoELayerLayout& L = l.layers[0];
  EXPECT_EQ(L.prefix, "head");
  EXPECT_EQ(L.layer, 0);
  EXPECT_EQ(L.router, "head.router.weight");
  EXPECT_EQ(L.router_bias, "head.router.bias");
  EXPECT_EQ(L.activation, "relu");
  ASSERT_EQ(L.experts.size(), 4u);
  EXPECT_EQ(roles(L.experts[0]), (std::vector<std::string>{"down", "down_bias", "up", "up_bias"}));
  expect_view(L.experts[3].find("up_bias"), "head.experts.3.fc1.bias", 0, 1, kI, kI, 1);
  expect_view(L.experts[3].find("down"), "head.experts.3.fc2.weight", 0, 10, kI, kI, 1);
}

TEST(Layout, MoescopeSwigluBlocksNumberedFromPrefix) {
  std::vector<TensorInfo> v;
  for (int b : {3, 1}) {
    const std::string p = "blocks." + std::to_string(b) + ".moe";
    v.push_back(T(p + ".router.weight", {kE, kH}));
    for (int e = 0; e < kE; ++e)
      for (const char* m : {"w_gate", "w_up", "w_down"})
        v.push_back(T(p + ".experts." + std::to_string(e) + "." + m + ".weight", ffn_shape(m)));
  }
  const Layout l = detect_layout(v);
  EXPECT_EQ(l.family, "moescope");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_01", "layer_03"}));
  EXPECT_EQ(l.layers[1].prefix, "blocks.3.moe");
  EXPECT_EQ(l.layers[1].layer, 3);
  EXPECT_EQ(l.layers[0].activation, "swiglu");
  EXPECT_EQ(l.layers[0].experts[1].find("gate")->tensor, "blocks.1.moe.experts.1.w_gate.weight");
}

TEST(Layout, UnnumberedPrefixesCountFromZeroInNameOrder) {
  std::vector<TensorInfo> v;
  for (const std::string p : {"tail", "head"}) {
    v.push_back(T(p + ".router.weight", {kE, kH}));
    for (int e = 0; e < kE; ++e) {
      v.push_back(T(p + ".experts." + std::to_string(e) + ".fc1.weight", {kI, kH}));
      v.push_back(T(p + ".experts." + std::to_string(e) + ".fc2.weight", {kH, kI}));
    }
  }
  Layout l = detect_layout(v);
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00", "layer_01"}));
  EXPECT_EQ(l.layers[0].prefix, "head");
  EXPECT_EQ(l.layers[1].prefix, "tail");

  // A numbered block keeps its number; the unnumbered one takes the next free one.
  for (auto& t : v)
    if (t.name.rfind("tail.", 0) == 0) t.name = "blocks.0.moe" + t.name.substr(4);
  l = detect_layout(v);
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00", "layer_01"}));
  EXPECT_EQ(l.layers[0].prefix, "blocks.0.moe");
  EXPECT_EQ(l.layers[1].prefix, "head");
}

TEST(Layout, GenericFallback) {
  // Jamba-style: Qwen matrix names under feed_forward with a "router".
  std::vector<TensorInfo> v = {T("model.layers.1.feed_forward.router.weight", {kE, kH})};
  for (int e = 0; e < kE; ++e)
    for (const char* m : {"gate_proj", "up_proj", "down_proj"})
      v.push_back(T("model.layers.1.feed_forward.experts." + std::to_string(e) + "." + m + ".weight", ffn_shape(m)));
  Layout l = detect_layout(v);
  EXPECT_EQ(l.family, "generic");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_01"}));
  EXPECT_EQ(l.layers[0].router, "model.layers.1.feed_forward.router.weight");
  EXPECT_EQ(l.layers[0].activation, "swiglu");

  // NLLB-MoE-style: expert_<e> spelling with fc1/fc2 inside an encoder.
  v = {T("model.encoder.layers.3.ffn.router.classifier.weight", {kE, kH})};
  for (int e = 0; e < kE; ++e) {
    v.push_back(T("model.encoder.layers.3.ffn.experts.expert_" + std::to_string(e) + ".fc1.weight", {kI, kH}));
    v.push_back(T("model.encoder.layers.3.ffn.experts.expert_" + std::to_string(e) + ".fc2.weight", {kH, kI}));
  }
  l = detect_layout(v);
  EXPECT_EQ(l.family, "generic");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"encoder_layer_03"}));
  EXPECT_EQ(l.layers[0].activation, "relu");
  EXPECT_EQ(l.layers[0].router, "model.encoder.layers.3.ffn.router.classifier.weight");
}

TEST(Layout, CollidingLayerNumbersGetDistinctKeys) {
  auto v = olmoe(1);
  for (auto t : olmoe(1)) {
    if (t.name.rfind("model.layers.", 0) != 0) continue;
    t.name = "vision_" + t.name;
    v.push_back(t);
  }
  const Layout l = detect_layout(v);
  ASSERT_EQ(l.layers.size(), 2u);
  EXPECT_NE(l.layers[0].key, l.layers[1].key);
  EXPECT_TRUE(any_note(l, "ambiguous"));
}

// ---- custom pattern ----

std::vector<TensorInfo> custom_net() {
  std::vector<TensorInfo> v = {T("net.embed", {32, kH})};
  for (int l : {0, 2}) {
    const std::string p = "net." + std::to_string(l) + ".moe";
    v.push_back(T(p + ".router.weight", {kE, kH}));
    for (int e = 0; e < kE; ++e) {
      v.push_back(T(p + ".e" + std::to_string(e) + ".w1", {kI, kH}));
      v.push_back(T(p + ".e" + std::to_string(e) + ".w2", {kH, kI}));
    }
  }
  return v;
}

TEST(Layout, CustomPattern) {
  LayoutOptions o;
  o.expert_pattern = R"(^net\.(?<layer>\d+)\.moe\.e(?<expert>\d+)\.(?<matrix>\w+)$)";
  const Layout l = detect_layout(custom_net(), o);
  EXPECT_EQ(l.family, "custom");
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00", "layer_02"}));
  const MoELayerLayout& L = l.layers[1];
  EXPECT_EQ(L.layer, 2);
  EXPECT_EQ(L.prefix, "net.2.moe");
  EXPECT_EQ(L.router, "net.2.moe.router.weight");
  ASSERT_EQ(L.experts.size(), 4u);
  EXPECT_EQ(roles(L.experts[3]), (std::vector<std::string>{"w1", "w2"}));
  EXPECT_EQ(L.experts[3].find("w2")->tensor, "net.2.moe.e3.w2");
}

TEST(Layout, CustomPatternCountsUnnamedGroups) {
  // The plain group "(net)" and the escaped "\(" must shift/not shift the group numbers correctly.
  LayoutOptions o;
  o.expert_pattern = R"(^(net)\.(?:x\()?(?<layer>\d+)\.moe\.[e](?<expert>\d+)\.(?<matrix>w[12])$)";
  const Layout l = detect_layout(custom_net(), o);
  ASSERT_EQ(keys(l), (std::vector<std::string>{"layer_00", "layer_02"}));
  EXPECT_EQ(l.layers[0].experts.size(), 4u);
  EXPECT_EQ(l.layers[0].experts[1].find("w1")->tensor, "net.0.moe.e1.w1");
}

TEST(Layout, CustomPatternOverridesBuiltins) {
  LayoutOptions o;
  o.expert_pattern = R"(^nothing\.(?<layer>\d+)\.(?<expert>\d+)\.(?<matrix>\w+)$)";
  const Layout l = detect_layout(mixtral(), o);
  EXPECT_EQ(l.family, "none");
  EXPECT_TRUE(l.layers.empty());
  EXPECT_TRUE(any_note(l, "matched no tensor"));
}

TEST(Layout, BadPatternsFail) {
  const auto err = [](const std::string& pattern) {
    LayoutOptions o;
    o.expert_pattern = pattern;
    o.pattern_source = "--expert-pattern";
    return input_error_of([&] { detect_layout(custom_net(), o); });
  };
  std::string msg = err(R"(^net\.(?<layer>\d+)\.moe\.e(?<expert>\d+)\.\w+$)");
  EXPECT_EQ(msg.rfind("--expert-pattern: ", 0), 0u) << msg;
  EXPECT_TRUE(has(msg, "matrix")) << msg;
  msg = err(R"(^net\.(?<layer>\d+)\.moe\.e(?<expert>\d+)\.(?<matrix>\w+$)");
  EXPECT_EQ(msg.rfind("--expert-pattern: ", 0), 0u) << msg;
  msg = err(R"(^net\.(?<layer>\d+)\.moe\.e(?<expert>\d+)\.(?<matrix>[\w+$)");
  EXPECT_EQ(msg.rfind("--expert-pattern: ", 0), 0u) << msg;
  msg = err(R"(^net\.(?<layer>\d+)\.moe\.e(?<expert>\d+)\.(?<mat>\w+)$)");
  EXPECT_TRUE(has(msg, "unknown group name 'mat'")) << msg;
  msg = err(R"(^net\.(?<layer>\d+)\.moe\.e(?<expert>\d+)\.(?<matrix>\w+)(?<layer>x)?$)");
  EXPECT_TRUE(has(msg, "appears twice")) << msg;
}

TEST(Layout, CustomPatternNonNumericLayerFails) {
  LayoutOptions o;
  o.expert_pattern = R"(^(?<layer>\w+)\.e(?<expert>\d+)\.(?<matrix>\w+)$)";
  o.pattern_source = "--expert-pattern";
  const std::string msg = input_error_of([&] { detect_layout({T("abc.e0.w1", {2, 2})}, o); });
  EXPECT_TRUE(has(msg, "--expert-pattern")) << msg;
  EXPECT_TRUE(has(msg, "abc.e0.w1")) << msg;
}

// ---- validation ----

TEST(Layout, InconsistentShapesNameLayerAndExpert) {
  auto v = mixtral();
  tensor(v, "model.layers.1.block_sparse_moe.experts.3.w2.weight").shape = {kH, kI + 1};
  const std::string msg = input_error_of([&] { detect_layout(v); });
  EXPECT_TRUE(has(msg, "layer_01")) << msg;
  EXPECT_TRUE(has(msg, "expert 3")) << msg;
  EXPECT_TRUE(has(msg, "'down'")) << msg;
}

TEST(Layout, MissingMatrixNamesLayerAndExpert) {
  auto v = mixtral();
  remove_if_name(v, [](const std::string& n) { return n == "model.layers.0.block_sparse_moe.experts.1.w3.weight"; });
  const std::string msg = input_error_of([&] { detect_layout(v); });
  EXPECT_TRUE(has(msg, "layer_00")) << msg;
  EXPECT_TRUE(has(msg, "expert 1")) << msg;
}

TEST(Layout, GapInExpertIndicesFails) {
  auto v = olmoe(2);
  remove_if_name(v, [](const std::string& n) { return has(n, "model.layers.1.mlp.experts.2."); });
  const std::string msg = input_error_of([&] { detect_layout(v); });
  EXPECT_TRUE(has(msg, "layer_01")) << msg;
  EXPECT_TRUE(has(msg, "expert 2 is missing")) << msg;
}

TEST(Layout, TwoMatricesForOneRoleFail) {
  auto v = mixtral(1);
  v.push_back(T("model.layers.0.block_sparse_moe.experts.0.gate_proj.weight", {kI, kH}));
  const std::string msg = input_error_of([&] { detect_layout(v); });
  EXPECT_TRUE(has(msg, "expert 0")) << msg;
  EXPECT_TRUE(has(msg, "'gate'")) << msg;
}

TEST(Layout, RouterRowMismatchIsANoteNotAnError) {
  auto v = mixtral();
  tensor(v, "model.layers.0.block_sparse_moe.gate.weight").shape = {kE + 1, kH};
  const Layout l = detect_layout(v);
  EXPECT_EQ(l.layers.size(), 2u);
  EXPECT_TRUE(any_note(l, "layer_00: router")) << ::testing::PrintToString(l.notes);
}

TEST(Layout, UnknownNamesGiveFamilyNone) {
  Layout l = detect_layout({T("foo.bar.weight", {3, 3}), T("encoder.conv.weight", {4, 3, 3, 3}),
                            T("model.layers.0.mlp.gate_proj.weight", {kI, kH})});
  EXPECT_EQ(l.family, "none");
  EXPECT_TRUE(l.layers.empty());
  EXPECT_TRUE(l.notes.empty());
  l = detect_layout(std::vector<TensorInfo>{});
  EXPECT_EQ(l.family, "none");
}

TEST(Layout, Mxfp4ExpertsAreNotedNotMisread) {
  const Layout l = detect_layout({T("model.layers.0.mlp.router.weight", {kE, kH}),
                                  T("model.layers.0.mlp.experts.gate_up_proj_blocks", {kE, 2 * kI, 1, 16}, DType::U8),
                                  T("model.layers.0.mlp.experts.gate_up_proj_scales", {kE, 2 * kI, 1}, DType::U8)});
  EXPECT_EQ(l.family, "none");
  EXPECT_TRUE(any_note(l, "MXFP4"));
}

// ---- read_view_f64 ----

// A source whose raw() calls are counted: read_f64 makes exactly one per call.
class CountingSource : public TensorSource {
 public:
  explicit CountingSource(const MemoryTensorSource& inner) : inner_(inner) {}
  const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
  ByteView raw(const std::string& name) const override {
    ++reads;
    return inner_.raw(name);
  }
  const std::string& path() const override { return inner_.path(); }
  mutable int reads = 0;

 private:
  const MemoryTensorSource& inner_;
};

// Adds an F32 tensor whose element at flat index k holds k (exact in float for these sizes).
void add_iota(MemoryTensorSource& src, const std::string& name, std::vector<std::int64_t> shape) {
  TensorInfo t = T(name, std::move(shape), DType::F32);
  std::vector<float> vals(static_cast<std::size_t>(t.numel()));
  for (std::size_t k = 0; k < vals.size(); ++k) vals[k] = static_cast<float>(k);
  src.add(t, testing::f32_bytes(vals));
}

std::vector<double> read_all(const TensorSource& src, const MatrixView& v) {
  std::vector<double> out(static_cast<std::size_t>(v.numel()), -1.0);
  read_view_f64(src, v, 0, v.numel(), out.data());
  return out;
}

MemoryTensorSource fused_source(const std::vector<TensorInfo>& infos) {
  MemoryTensorSource src("mem.safetensors");
  for (const auto& t : infos)
    if (t.name.rfind("model.layers.0.mlp.experts.", 0) == 0) add_iota(src, t.name, t.shape);
  return src;
}

TEST(ReadView, FusedV5ExpertTwo) {
  const auto infos = fused_v5(1);
  const MemoryTensorSource src = fused_source(infos);
  const Layout l = detect_layout(infos);
  const ExpertLayout& x = l.layers[0].experts[2];
  // Row-major [E, 2I, H]: element (e, j, h) sits at (e * 2I + j) * H + h; gate is j < I, up is j >= I.
  const auto gu = [](std::int64_t e, std::int64_t j, std::int64_t h) { return double((e * 2 * kI + j) * kH + h); };
  const auto dn = [](std::int64_t e, std::int64_t h, std::int64_t i) { return double((e * kH + h) * kI + i); };
  std::vector<double> gate, up, down;
  for (std::int64_t i = 0; i < kI; ++i)
    for (std::int64_t h = 0; h < kH; ++h) {
      gate.push_back(gu(2, i, h));
      up.push_back(gu(2, kI + i, h));
    }
  for (std::int64_t h = 0; h < kH; ++h)
    for (std::int64_t i = 0; i < kI; ++i) down.push_back(dn(2, h, i));
  EXPECT_EQ(read_all(src, *x.find("gate")), gate);
  EXPECT_EQ(read_all(src, *x.find("up")), up);
  EXPECT_EQ(read_all(src, *x.find("down")), down);
  EXPECT_EQ(gate.front(), 192.0);  // 2 experts of 12 x 8 before it
  EXPECT_EQ(up.front(), 240.0);

  // Contiguous views take one read.
  CountingSource counting(src);
  read_all(counting, *x.find("up"));
  EXPECT_EQ(counting.reads, 1);
}

TEST(ReadView, GptOssExpertTwo) {
  const auto infos = gpt_oss(1);
  const MemoryTensorSource src = fused_source(infos);
  const Layout l = detect_layout(infos);
  const ExpertLayout& x = l.layers[0].experts[2];
  // Row-major [E, H, 2I] with gate at even and up at odd positions of the last dim.
  const auto gu = [](std::int64_t e, std::int64_t h, std::int64_t j) { return double((e * kH + h) * 2 * kI + j); };
  const auto dn = [](std::int64_t e, std::int64_t i, std::int64_t h) { return double((e * kI + i) * kH + h); };
  std::vector<double> gate, up, down, gate_b, up_b, down_b;
  for (std::int64_t h = 0; h < kH; ++h)
    for (std::int64_t i = 0; i < kI; ++i) {
      gate.push_back(gu(2, h, 2 * i));
      up.push_back(gu(2, h, 2 * i + 1));
    }
  for (std::int64_t i = 0; i < kI; ++i)
    for (std::int64_t h = 0; h < kH; ++h) down.push_back(dn(2, i, h));
  for (std::int64_t i = 0; i < kI; ++i) {
    gate_b.push_back(double(2 * 2 * kI + 2 * i));  // [E, 2I]: row 2, column 2i
    up_b.push_back(double(2 * 2 * kI + 2 * i + 1));
  }
  for (std::int64_t h = 0; h < kH; ++h) down_b.push_back(double(2 * kH + h));
  EXPECT_EQ(read_all(src, *x.find("gate")), gate);
  EXPECT_EQ(read_all(src, *x.find("up")), up);
  EXPECT_EQ(read_all(src, *x.find("down")), down);
  EXPECT_EQ(read_all(src, *x.find("gate_bias")), gate_b);
  EXPECT_EQ(read_all(src, *x.find("up_bias")), up_b);
  EXPECT_EQ(read_all(src, *x.find("down_bias")), down_b);
  // Spot values: expert 2 starts at 2 * 8 * 12 = 192; up (1, 0) is one row (12) further than up (0, 0) = 193.
  EXPECT_EQ(up[0], 193.0);
  EXPECT_EQ(up[kI], 205.0);
  EXPECT_EQ(gate[1], 194.0);

  // Strided views read once per row, not once per element.
  CountingSource counting(src);
  read_all(counting, *x.find("gate"));
  EXPECT_EQ(counting.reads, kH);
}

TEST(ReadView, PartialReadsMatchTheFullRead) {
  const auto infos = gpt_oss(1);
  const MemoryTensorSource src = fused_source(infos);
  const Layout l = detect_layout(infos);
  for (const char* role : {"gate", "up", "down", "gate_bias"}) {
    const MatrixView& v = *l.layers[0].experts[1].find(role);
    const std::vector<double> all = read_all(src, v);
    for (std::int64_t first = 0; first < v.numel(); first += 5)
      for (std::int64_t count : {std::int64_t(0), std::int64_t(1), std::int64_t(7), std::int64_t(13)}) {
        if (first + count > v.numel()) continue;
        std::vector<double> part(static_cast<std::size_t>(count) + 1, -1.0);
        read_view_f64(src, v, first, count, part.data());
        for (std::int64_t k = 0; k < count; ++k)
          ASSERT_EQ(part[static_cast<std::size_t>(k)], all[static_cast<std::size_t>(first + k)])
              << role << " first " << first << " count " << count;
        EXPECT_EQ(part.back(), -1.0);  // nothing written past count
      }
  }
}

TEST(ReadView, OutOfBoundsFailsNamingTheFile) {
  const auto infos = fused_v5(1);
  const MemoryTensorSource src = fused_source(infos);
  MatrixView v = *detect_layout(infos).layers[0].experts[3].find("up");
  std::vector<double> out(static_cast<std::size_t>(v.numel()) + 1);
  // A request past the view's own size.
  std::string msg = input_error_of([&] { read_view_f64(src, v, 1, v.numel(), out.data()); });
  EXPECT_EQ(msg.rfind("mem.safetensors: ", 0), 0u) << msg;
  // A view that runs past the tensor.
  v.offset += 1;
  msg = input_error_of([&] { read_view_f64(src, v, 0, 1, out.data()); });
  EXPECT_EQ(msg.rfind("mem.safetensors: ", 0), 0u) << msg;
  EXPECT_TRUE(has(msg, "gate_up_proj")) << msg;
  v.offset = -1;
  msg = input_error_of([&] { read_view_f64(src, v, 0, 1, out.data()); });
  EXPECT_FALSE(msg.empty());
}

}  // namespace
}  // namespace moescope
