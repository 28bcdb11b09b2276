// The Hugging Face MoE families' forward pass against an independent float64 reference (hf_reference.hpp), on tiny
// random checkpoints written by io/synthetic_model; routing on hand-built cases; masking, GQA, tied embeddings; the
// LM loss; and the Hessian of one expert against finite differences.
//
// Tolerances: float64 end to end, so the forward agrees with the reference to rounding: 1e-10 relative to the
// largest entry (a few hundred operations of 1e-16 each, times condition numbers of order 10-100).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <map>

#include "model/hf_reference.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/model/params.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/model/hf.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;
using testing::hfref::Mat;
using testing::hfref::Reference;

// Max |a - b| / max |b|.
double rel_err(const torch::Tensor& a, const Mat& b) {
  const auto t = a.to(torch::kDouble).contiguous();
  EXPECT_EQ(t.size(0), b.rows());
  EXPECT_EQ(t.size(1), b.cols());
  double num = 0, den = 0;
  for (Eigen::Index i = 0; i < b.rows(); ++i)
    for (Eigen::Index j = 0; j < b.cols(); ++j) {
      num = std::max(num, std::fabs(t[i][j].item<double>() - b(i, j)));
      den = std::max(den, std::fabs(b(i, j)));
    }
  return num / den;
}

torch::Tensor random_ids(std::int64_t B, std::int64_t S, std::int64_t V, std::uint64_t seed) {
  Rng rng(seed);
  auto ids = torch::empty({B, S}, torch::kLong);
  for (std::int64_t i = 0; i < B * S; ++i) ids.view({-1})[i] = static_cast<std::int64_t>(rng.uniform() * V);
  return ids;
}

std::vector<std::int64_t> row(const torch::Tensor& ids, std::int64_t b) {
  std::vector<std::int64_t> v;
  for (std::int64_t s = 0; s < ids.size(1); ++s) v.push_back(ids[b][s].item<std::int64_t>());
  return v;
}

std::string write_model(const TempDir& dir, const std::string& family, const std::string& overrides = "{}",
                        DType dtype = DType::F64, std::uint64_t seed = 7) {
  SyntheticModelOptions o;
  o.family = family;
  o.dtype = dtype;
  o.seed = seed;
  o.config_overrides = nlohmann::json::parse(overrides);
  const std::string path = dir.file("model");
  write_synthetic_model(path, o);
  return path;
}

struct Case {
  std::string label, family, overrides;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.label << " " << c.overrides; }

class HFForward : public ::testing::TestWithParam<Case> {};

// Every hidden state, the logits and the routing decisions agree with the reference for two sequences.
TEST_P(HFForward, Float64MatchesReference) {
  const Case& c = GetParam();
  TempDir dir;
  const std::string path = write_model(dir, c.family, c.overrides);
  HFCausalLM model = load_hf_model(path);
  ASSERT_EQ(model->dtype(), torch::kDouble);
  const Reference ref(path);
  const auto ids = random_ids(2, 9, model->config().vocab_size, 11);
  HFForwardOptions fo;
  fo.hidden_states = true;
  fo.moe_trace = true;
  const HFOutput out = model->forward_with(ids, fo);
  ASSERT_EQ(out.hidden_states.size(), static_cast<std::size_t>(model->config().num_hidden_layers + 1));
  ASSERT_EQ(out.moe.size(), model->moe_layers().size());
  ASSERT_FALSE(out.moe.empty());
  for (std::int64_t b = 0; b < 2; ++b) {
    const auto r = ref.forward(row(ids, b));
    for (std::size_t l = 0; l < r.hidden.size(); ++l)
      EXPECT_LT(rel_err(out.hidden_states[l][b], r.hidden[l]), 1e-10) << "hidden state " << l << ", sequence " << b;
    EXPECT_LT(rel_err(out.logits[b], r.logits), 1e-10) << "sequence " << b;
    ASSERT_EQ(r.routing.size(), out.moe.size());
    for (std::size_t m = 0; m < out.moe.size(); ++m) {
      const auto& t = out.moe[m];
      for (std::int64_t s = 0; s < ids.size(1); ++s) {
        std::map<int, double> want(r.routing[m][static_cast<std::size_t>(s)].begin(),
                                   r.routing[m][static_cast<std::size_t>(s)].end());
        const std::int64_t tok = b * ids.size(1) + s;
        ASSERT_EQ(t.topk_experts.size(1), static_cast<std::int64_t>(want.size()));
        for (std::int64_t j = 0; j < t.topk_experts.size(1); ++j) {
          const int e = static_cast<int>(t.topk_experts[tok][j].item<std::int64_t>());
          ASSERT_TRUE(want.count(e)) << "layer " << t.layer << " token " << tok << " expert " << e;
          EXPECT_NEAR(t.topk_weights[tok][j].item<double>(), want[e], 1e-12);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Families, HFForward,
    ::testing::Values(Case{"mixtral", "mixtral", "{}"},
                      Case{"mixtral_window", "mixtral", R"({"sliding_window": 3})"},
                      Case{"mixtral_tied", "mixtral", R"({"tie_word_embeddings": true})"},
                      Case{"mixtral_linear_rope", "mixtral", R"({"rope_scaling": {"type": "linear", "factor": 2.0}})"},
                      Case{"qwen2_moe", "qwen2-moe", "{}"},
                      Case{"qwen2_moe_norm_step2", "qwen2-moe",
                           R"({"norm_topk_prob": true, "decoder_sparse_step": 2, "mlp_only_layers": []})"},
                      Case{"qwen2_moe_no_qkv_bias", "qwen2-moe", R"({"qkv_bias": false})"},
                      Case{"qwen3_moe", "qwen3-moe", "{}"},
                      Case{"qwen3_moe_bias_unnormed", "qwen3-moe", R"({"attention_bias": true, "norm_topk_prob": false})"},
                      Case{"olmoe", "olmoe", "{}"},
                      Case{"olmoe_clip_norm", "olmoe", R"({"clip_qkv": 0.5, "norm_topk_prob": true})"},
                      Case{"olmoe_bias", "olmoe", R"({"attention_bias": true})"},
                      Case{"deepseek_moe", "deepseek-moe", "{}"},
                      Case{"deepseek_moe_norm_freq2", "deepseek-moe",
                           R"({"norm_topk_prob": true, "moe_layer_freq": 2, "num_hidden_layers": 4})"},
                      Case{"deepseek_v2_yarn", "deepseek-v2", "{}"},
                      Case{"deepseek_v2_plain_rope_scaled", "deepseek-v2",
                           R"({"rope_scaling": null, "routed_scaling_factor": 16.0})"},
                      Case{"deepseek_v2_qlora_bias_grouped", "deepseek-v2",
                           R"({"q_lora_rank": 12, "attention_bias": true, "topk_method": "group_limited_greedy",
                               "n_group": 4, "topk_group": 2})"},
                      Case{"deepseek_v2_normed", "deepseek-v2", R"({"norm_topk_prob": true, "routed_scaling_factor": 3.0})"},
                      Case{"deepseek_v3", "deepseek-v3", "{}"},
                      Case{"deepseek_v3_unnormed_mscale", "deepseek-v3",
                           R"({"norm_topk_prob": false, "rope_scaling": {"mscale": 0.8}})"}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.label; });

// ----------------------------------------------------------------------------- transformers' eager operations

// tools/hf_eager_reference.py runs the transformers-native families with plain PyTorch, operation for operation as
// their eager modeling code does (same dtypes, casts and order of sums). Python's torch is Debian's build of the same
// LibTorch, so the same operations give the same bits: float32 and bfloat16 logits must be identical (measured: all
// eight cases identical to the last bit). Any cast, upcast or summation order that differs from transformers' shows
// up here as a bf16-sized difference.
class HFEager : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(HFEager, MatchesTransformersEagerComputation) {
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch and numpy is not installed";
  const auto& [family, dtype] = GetParam();
  TempDir dir;
  const std::string path = write_model(dir, family, R"({"sliding_window": 5})", dtype, 13);
  HFCausalLM m = load_hf_model(path);
  const auto ids = random_ids(1, 9, m->config().vocab_size, 31);
  std::string list;
  for (auto v : row(ids, 0)) list += (list.empty() ? "" : ",") + std::to_string(v);
  const std::string out = dir.file("logits.bin");
  const std::string cmd = "/usr/bin/python3 " + std::string(MOESCOPE_SOURCE_DIR) + "/tools/hf_eager_reference.py " +
                          path + " " + list + " " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto bytes = testing::read_bytes(out);
  const std::int64_t V = m->config().vocab_size;
  ASSERT_EQ(bytes.size(), static_cast<std::size_t>(9 * V * 4));
  const auto want = torch::from_blob(const_cast<std::uint8_t*>(bytes.data()), {9, V}, torch::kFloat).clone();
  const auto got = m->forward(ids)[0].to(torch::kFloat);
  const double scale = want.abs().max().item<double>();
  const double err = (got - want).abs().max().item<double>() / scale;
  const double same = (got == want).to(torch::kDouble).mean().item<double>();
  std::cout << family << " " << dtype_name(dtype) << ": max difference " << err << " of the largest logit, "
            << 100.0 * same << "% of the logits identical\n";
  EXPECT_EQ(same, 1.0);
  EXPECT_EQ(err, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Families, HFEager,
                         ::testing::Combine(::testing::Values("mixtral", "qwen2-moe", "qwen3-moe", "olmoe"),
                                            ::testing::Values(DType::F32, DType::BF16)),
                         [](const auto& info) {
                           std::string s = std::get<0>(info.param) + "_" + std::string(dtype_name(std::get<1>(info.param)));
                           for (auto& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

// ------------------------------------------------------------------------------------- masks, heads, embeddings

// With one layer and a window of 3, position 6 sees positions 4..6 only: changing token 3 leaves its logits
// unchanged, changing token 4 does not. ("Unchanged" is to 1e-12, not bit for bit: the experts' matrix products run
// on the tokens routed to them, and a product's rounding may depend on how many rows it has.)
TEST(HFModel, SlidingWindowHidesOlderTokens) {
  TempDir dir;
  HFCausalLM model = load_hf_model(write_model(dir, "mixtral", R"({"sliding_window": 3, "num_hidden_layers": 1})"));
  auto ids = random_ids(1, 7, model->config().vocab_size, 3);
  const auto base = model->forward(ids);
  auto diff = [&](const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); };
  auto with = [&](std::int64_t pos) {
    auto changed = ids.clone();
    changed[0][pos] = (ids[0][pos].item<std::int64_t>() + 1) % model->config().vocab_size;
    return model->forward(changed);
  };
  EXPECT_LT(diff(with(3)[0][6], base[0][6]), 1e-12);
  EXPECT_GT(diff(with(3)[0][5], base[0][5]), 1e-6);
  EXPECT_GT(diff(with(4)[0][6], base[0][6]), 1e-6);
  // and the causal mask: nothing depends on later tokens
  EXPECT_LT(diff(with(6).narrow(1, 0, 6), base.narrow(1, 0, 6)), 1e-12);
}

HFWeights weights_of(const HFCausalLM& m) {
  HFWeights w;
  for (const auto& p : m->named_parameters()) w.emplace(p.key(), p.value().detach().clone());
  for (const auto& b : m->named_buffers()) w.emplace(b.key(), b.value().clone());
  return w;
}

// Grouped-query attention equals multi-head attention whose key/value heads are the shared ones repeated.
TEST(HFModel, GroupedQueryAttentionEqualsRepeatedHeads) {
  for (const std::string family : {"mixtral", "qwen3-moe", "olmoe"}) {
    TempDir dir;
    HFCausalLM gqa = load_hf_model(write_model(dir, family));
    const HFConfig& c = gqa->config();
    ASSERT_LT(c.num_key_value_heads, c.num_attention_heads) << family;
    const std::int64_t rep = c.num_attention_heads / c.num_key_value_heads, hd = c.head_dim;
    HFWeights w = weights_of(gqa);
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
      for (const char* m : {"k_proj.weight", "v_proj.weight", "k_norm.weight"}) {
        if (!w.count(p + m) || (std::string(m) == "k_norm.weight" && c.qk_norm != HFQKNorm::Full)) continue;
        // rows [g*hd, (g+1)*hd) serve query heads g*rep .. g*rep+rep-1
        const auto t = w[p + m];
        const auto heads = t.view({c.num_key_value_heads, hd, -1});
        w[p + m] = heads.repeat_interleave(rep, 0).reshape(
            t.dim() == 1 ? std::vector<std::int64_t>{c.num_attention_heads * hd}
                         : std::vector<std::int64_t>{c.num_attention_heads * hd, t.size(1)});
      }
    }
    HFConfig mha_cfg = c;
    mha_cfg.num_key_value_heads = c.num_attention_heads;
    HFCausalLM mha(mha_cfg, std::move(w));
    const auto ids = random_ids(2, 6, c.vocab_size, 5);
    EXPECT_LT((gqa->forward(ids) - mha->forward(ids)).abs().max().item<double>(), 1e-12) << family;
  }
}

TEST(HFModel, TiedEmbeddingsShareTheEmbeddingMatrix) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "qwen3-moe", R"({"tie_word_embeddings": true})"));
  for (const auto& p : m->named_parameters()) EXPECT_NE(p.key(), "lm_head.weight");
  EXPECT_FALSE(m->lm_head);
  const auto ids = random_ids(1, 5, m->config().vocab_size, 9);
  const HFOutput o = m->forward_with(ids, {});
  const auto want = torch::matmul(o.last_hidden_state, m->model->embed_tokens->weight.t());
  EXPECT_LT((o.logits - want).abs().max().item<double>(), 1e-12);
}

// The LM loss is the mean cross-entropy of the next-token predictions, computed here from the reference's logits.
TEST(HFModel, LossIsMeanNextTokenCrossEntropy) {
  TempDir dir;
  const std::string path = write_model(dir, "olmoe");
  HFCausalLM m = load_hf_model(path);
  const Reference ref(path);
  const auto ids = random_ids(2, 6, m->config().vocab_size, 21);
  double sum = 0;
  for (std::int64_t b = 0; b < 2; ++b) {
    const auto r = ref.forward(row(ids, b));
    for (std::int64_t s = 0; s + 1 < 6; ++s) {
      const auto z = r.logits.row(s);
      const double mx = z.maxCoeff();
      sum += mx + std::log((z.array() - mx).exp().sum()) - z(ids[b][s + 1].item<std::int64_t>());
    }
  }
  EXPECT_NEAR(m->loss(ids).item<double>(), sum / 10.0, 1e-12 * sum);
  EXPECT_THROW(m->loss(ids.narrow(1, 0, 1)), InputError);
}

TEST(HFModel, TokenIdsAreChecked) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "mixtral"));
  auto ids = random_ids(1, 4, m->config().vocab_size, 1);
  ids[0][2] = m->config().vocab_size;
  try {
    m->forward(ids);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("vocab_size"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 2]"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
  ids[0][2] = -1;
  EXPECT_THROW(m->forward(ids), InputError);
  EXPECT_THROW(m->forward(ids.to(torch::kInt)), InputError);
  EXPECT_THROW(m->forward(torch::zeros({4}, torch::kLong)), InputError);
}

// ------------------------------------------------------------------------------------------------- routing

// Sets a router's weight so that logits(x = e_0) are `want` (column 0), and returns x = e_0.
torch::Tensor route_to(HFSparseMoE& block, const std::vector<double>& want) {
  torch::NoGradGuard g;
  auto& w = block->gate->weight;
  w.zero_();
  for (std::size_t e = 0; e < want.size(); ++e) w[static_cast<std::int64_t>(e)][0] = want[e];
  auto x = torch::zeros({1, w.size(1)}, w.options());
  x[0][0] = 1.0;
  return x;
}

std::vector<std::pair<std::int64_t, double>> chosen(const HFRouting& r) {
  std::vector<std::pair<std::int64_t, double>> v;
  for (std::int64_t j = 0; j < r.experts.size(1); ++j)
    v.emplace_back(r.experts[0][j].item<std::int64_t>(), r.weights[0][j].item<double>());
  std::sort(v.begin(), v.end());
  return v;
}

double logit(double p) { return std::log(p / (1 - p)); }

TEST(HFRouting, MixtralRenormalisesTheTopTwo) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "mixtral"));
  auto block = m->moe_block(0);
  const auto x = route_to(block, {2.0, 1.0, 0.5, -1.0});
  const HFRouting r = block->gate(x);
  const double z = std::exp(2.0) + std::exp(1.0) + std::exp(0.5) + std::exp(-1.0);
  EXPECT_NEAR(r.scores[0][0].item<double>(), std::exp(2.0) / z, 1e-15);
  const auto c = chosen(r);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].first, 0);
  EXPECT_EQ(c[1].first, 1);
  EXPECT_NEAR(c[0].second, 1.0 / (1.0 + std::exp(-1.0)), 1e-15);  // e^2 / (e^2 + e^1)
  EXPECT_NEAR(c[1].second, 1.0 / (1.0 + std::exp(1.0)), 1e-15);
  // The block combines exactly these experts with these weights.
  const auto out = block->forward(x);
  const auto want = c[0].second * block->expert_forward(0, x) + c[1].second * block->expert_forward(1, x);
  EXPECT_LT((out - want).abs().max().item<double>(), 1e-14);
}

TEST(HFRouting, Qwen2KeepsRawProbabilitiesAndGatesTheSharedExpert) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "qwen2-moe"));
  auto block = m->moe_block(0);
  const auto x = route_to(block, {0.0, 1.5, 0.2, 1.0, -2.0, 0.1});
  {
    torch::NoGradGuard g;
    block->shared_expert_gate->weight.zero_();
    block->shared_expert_gate->weight[0][0] = 0.3;
  }
  HFRouting r;
  torch::Tensor gate;
  const auto out = block->forward(x, &r, &gate);
  double z = 0;
  for (double v : {0.0, 1.5, 0.2, 1.0, -2.0, 0.1}) z += std::exp(v);
  const auto c = chosen(r);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].first, 1);
  EXPECT_EQ(c[1].first, 3);
  EXPECT_NEAR(c[0].second, std::exp(1.5) / z, 1e-15);  // norm_topk_prob false: the softmax values themselves
  EXPECT_NEAR(c[1].second, std::exp(1.0) / z, 1e-15);
  const double sg = 1.0 / (1.0 + std::exp(-0.3));
  EXPECT_NEAR(gate[0][0].item<double>(), sg, 1e-15);
  const auto want = c[0].second * block->expert_forward(1, x) + c[1].second * block->expert_forward(3, x) +
                    sg * block->shared_expert(x);
  EXPECT_LT((out - want).abs().max().item<double>(), 1e-14);
}

TEST(HFRouting, Qwen3AndOlmoeRenormaliseWhenAsked) {
  for (const std::string family : {"qwen3-moe", "olmoe"}) {
    TempDir dir;
    HFCausalLM m = load_hf_model(write_model(dir, family, R"({"norm_topk_prob": true})"));
    auto block = m->moe_block(0);
    std::vector<double> l(static_cast<std::size_t>(m->config().num_experts), 0.0);
    l[5] = 1.0, l[2] = 0.25;
    const auto c = chosen(block->gate(route_to(block, l)));
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(c[0].first, 2);
    EXPECT_EQ(c[1].first, 5);
    EXPECT_NEAR(c[1].second, std::exp(1.0) / (std::exp(1.0) + std::exp(0.25)), 1e-15) << family;
  }
}

// DeepSeek-V3: experts are chosen among the topk_group groups with the highest sums of their two best biased scores;
// the weights are the plain sigmoid scores, normalised and scaled by routed_scaling_factor 2.5.
TEST(HFRouting, DeepseekV3GroupsAndCorrectionBias) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "deepseek-v3"));  // 8 experts in 4 groups, keep 2, k = 2
  auto block = m->moe_block(1);
  const std::vector<double> s = {0.9, 0.05, 0.6, 0.55, 0.5, 0.5, 0.1, 0.1};
  std::vector<double> l;
  for (double p : s) l.push_back(logit(p));
  const auto x = route_to(block, l);
  torch::NoGradGuard g;
  block->gate->e_score_correction_bias.zero_();
  // group sums 0.95, 1.15, 1.0, 0.2: groups 1 and 2 win, so expert 0 (the best single score) is not eligible
  auto c = chosen(block->gate(x));
  EXPECT_EQ(c[0].first, 2);
  EXPECT_EQ(c[1].first, 3);
  EXPECT_NEAR(c[0].second, 0.6 / 1.15 * 2.5, 1e-14);
  EXPECT_NEAR(c[1].second, 0.55 / 1.15 * 2.5, 1e-14);
  // a bias of 0.3 on expert 4 makes group 2 (sum 1.3) and expert 4 (0.8) win; its weight is still its score 0.5
  block->gate->e_score_correction_bias[4] = 0.3;
  c = chosen(block->gate(x));
  EXPECT_EQ(c[0].first, 2);
  EXPECT_EQ(c[1].first, 4);
  EXPECT_NEAR(c[0].second, 0.6 / 1.1 * 2.5, 1e-14);
  EXPECT_NEAR(c[1].second, 0.5 / 1.1 * 2.5, 1e-14);
}

// DeepSeek-V2's group_limited_greedy keeps the topk_group groups with the best single scores; without
// norm_topk_prob the softmax values are scaled by routed_scaling_factor.
TEST(HFRouting, DeepseekV2GroupLimitedGreedyAndScaling) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(
      dir, "deepseek-v2", R"({"topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 1, "routed_scaling_factor": 2.0})"));
  auto block = m->moe_block(1);
  const std::vector<double> l = {3.0, 0.0, 2.9, 2.8, 2.5, 0.0, 0.0, 0.0};
  const auto c = chosen(block->gate(route_to(block, l)));
  double z = 0;
  for (double v : l) z += std::exp(v);
  EXPECT_EQ(c[0].first, 0);
  EXPECT_EQ(c[1].first, 1);  // expert 2 (2.9) is in a group that is not kept
  EXPECT_NEAR(c[0].second, 2.0 * std::exp(3.0) / z, 1e-14);
  EXPECT_NEAR(c[1].second, 2.0 * 1.0 / z, 1e-14);
}

// DeepSeek-MoE: raw softmax weights (norm_topk_prob false, no scaling) and the shared experts added ungated.
TEST(HFRouting, DeepseekMoeAddsSharedExperts) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "deepseek-moe"));
  EXPECT_THROW(m->moe_block(0), std::out_of_range);  // the first layer is dense
  auto block = m->moe_block(1);
  const std::vector<double> l = {0.5, 0.0, 1.0, 0.0, 0.0, 0.25};
  const auto x = route_to(block, l);
  HFRouting r;
  const auto out = block->forward(x, &r);
  const auto c = chosen(r);
  double z = 0;
  for (double v : l) z += std::exp(v);
  EXPECT_EQ(c[0].first, 0);
  EXPECT_EQ(c[1].first, 2);
  EXPECT_NEAR(c[0].second, std::exp(0.5) / z, 1e-15);
  const auto want = c[0].second * block->expert_forward(0, x) + c[1].second * block->expert_forward(2, x) +
                    block->shared_experts(x);
  EXPECT_LT((out - want).abs().max().item<double>(), 1e-14);
}

// ------------------------------------------------------------------------------------------------ trace

// What the trace records is what the block did: every expert's output on the recorded inputs, mixed with the
// recorded weights (plus the shared expert), is the block's output.
TEST(HFModel, MoETraceReproducesTheBlock) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "qwen2-moe"));
  HFForwardOptions fo;
  fo.moe_trace = true;
  const auto ids = random_ids(2, 5, m->config().vocab_size, 4);
  const HFOutput o = m->forward_with(ids, fo);
  ASSERT_EQ(o.moe.size(), 2u);  // layers 0 and 2 (layer 1 is in mlp_only_layers)
  EXPECT_EQ(o.moe[0].layer, 0);
  EXPECT_EQ(o.moe[1].layer, 2);
  for (const auto& t : o.moe) {
    auto block = m->moe_block(t.layer);
    const std::int64_t T = t.inputs.size(0), E = block->num_experts();
    ASSERT_EQ(T, 10);
    ASSERT_EQ(t.router_probs.sizes(), (std::vector<std::int64_t>{T, E}));
    EXPECT_LT((t.router_probs.sum(-1) - 1.0).abs().max().item<double>(), 1e-14);
    std::vector<torch::Tensor> all;  // every expert on every token, as an activations run would do
    for (std::int64_t e = 0; e < E; ++e) all.push_back(block->expert_forward(e, t.inputs));
    auto mixed = block->shared_forward(t.inputs);
    EXPECT_LT((mixed - t.shared_gate * block->shared_expert(t.inputs)).abs().max().item<double>(), 1e-14);
    for (std::int64_t i = 0; i < T; ++i)
      for (std::int64_t j = 0; j < t.topk_experts.size(1); ++j)
        mixed[i] += t.topk_weights[i][j] * all[static_cast<std::size_t>(t.topk_experts[i][j].item<std::int64_t>())][i];
    EXPECT_LT((mixed - block->forward(t.inputs)).abs().max().item<double>(), 1e-13);
  }
}

// ------------------------------------------------------------------------------------------------ curvature

Eigen::MatrixXd assemble(const LinearOperator& op) {
  const std::int64_t n = op.size();
  Eigen::MatrixXd h(n, n);
  for (std::int64_t j = 0; j < n; ++j) h.col(j) = op.apply(Eigen::VectorXd::Unit(n, j));
  return h;
}

// The Hessian of the LM loss over one expert's parameters by double backward equals central differences of the
// gradient, column by column. The expert sits in the last layer, so no routing downstream of it can flip.
// Central differences with step h have error h^2/6 |d^3 L| plus rounding eps |g| / h: with h = 1e-4 in float64
// about 1e-9 and 1e-12 against entries of order 1e-2 .. 1, so 1e-6 of the largest entry is a safe bound.
TEST(HFCurvature, ExpertHessianMatchesFiniteDifferences) {
  TempDir dir;
  const std::string path = write_model(
      dir, "mixtral",
      R"({"hidden_size": 16, "intermediate_size": 6, "num_attention_heads": 2, "num_key_value_heads": 1})");
  HFLoadOptions lo;
  lo.trainable = "all";
  HFCausalLM m = load_hf_model(path, lo);
  const auto ids = random_ids(2, 8, m->config().vocab_size, 8);
  // the expert of the last layer with the most tokens
  HFForwardOptions fo;
  fo.moe_trace = true;
  const auto counts = torch::bincount(m->forward_with(ids, fo).moe.back().topk_experts.reshape({-1}), {}, 4);
  const std::int64_t e = counts.argmax().item<std::int64_t>();
  ASSERT_GT(counts[e].item<std::int64_t>(), 0);
  const auto sel = select_parameters(*m, "expert:1." + std::to_string(e));
  ASSERT_EQ(sel.size(), 3u);
  std::vector<torch::Tensor> params;
  for (const auto& p : sel) params.push_back(p.second);
  HessianOperator op(params, [&](std::int64_t) { return BatchLoss{m->loss(ids), 2}; }, 1);
  ASSERT_EQ(op.size(), 3 * 6 * 16);
  const Eigen::MatrixXd H = assemble(op);

  auto grad = [&]() {
    const auto g = torch::autograd::grad({m->loss(ids)}, params);
    return flatten_tensors(g);
  };
  const double h = 1e-4;
  Eigen::MatrixXd F(op.size(), op.size());
  std::int64_t col = 0;
  for (auto& p : params) {
    auto flat = p.view({-1});
    for (std::int64_t i = 0; i < flat.size(0); ++i, ++col) {
      const double v = flat[i].item<double>();
      {
        torch::NoGradGuard g;
        flat[i] = v + h;
      }
      const auto gp = grad();
      {
        torch::NoGradGuard g;
        flat[i] = v - h;
      }
      const auto gm = grad();
      {
        torch::NoGradGuard g;
        flat[i] = v;
      }
      const auto d = ((gp - gm) / (2 * h)).contiguous();
      F.col(col) = Eigen::Map<const Eigen::VectorXd>(d.data_ptr<double>(), op.size());
    }
  }
  const double scale = H.cwiseAbs().maxCoeff();
  EXPECT_GT(scale, 1e-3);
  EXPECT_LT((H - F).cwiseAbs().maxCoeff(), 1e-6 * scale);
  EXPECT_LT((H - H.transpose()).cwiseAbs().maxCoeff(), 1e-12 * scale);
}

}  // namespace
}  // namespace moescope
