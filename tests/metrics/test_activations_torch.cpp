// Running checkpoint experts on recorded / random inputs, checked against moescope's own MoE modules (an
// independent implementation of the same experts) and against plain float64 loops over the stored matrices.
// Tolerances: outputs are float32 (relative rounding about 1e-7 per operation over ~100-term sums), so cosines
// computed two ways agree to about 1e-6; we allow 1e-5. Counts and choices must agree exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "support/seeded.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/model/moe.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;

// Writes float32 tensors (any shape) to a safetensors file.
void write_tensors(const std::string& path, const std::map<std::string, torch::Tensor>& ts) {
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> w;
  for (const auto& [name, t] : ts) {
    keep.push_back(t.detach().to(torch::kFloat32).contiguous());
    w.push_back({TensorInfo{name, DType::F32, keep.back().sizes().vec()}, keep.back().data_ptr<float>()});
  }
  write_safetensors(path, w);
}

class ActivationsTorch : public testing::SeededTest {};

// The layer's own path: its experts and its own routing on the tokens x.
LayerActivations via_module(SparseMoE& moe, const torch::Tensor& x, std::int64_t batch) {
  MoELayerRef ref{0, "moe", moe.get(), moe->experts};
  const ExpertBank bank = layer_expert_bank(ref);
  LayerActivationAccumulator acc(bank, "model");
  for (std::int64_t at = 0; at < x.size(0); at += batch) {
    const auto xb = x.narrow(0, at, std::min(batch, x.size(0) - at));
    acc.add(xb, bank.route(xb), xb.size(0));
  }
  return acc.finish();
}

void expect_same(const LayerActivations& a, const LayerActivations& b) {
  EXPECT_EQ(a.overlap.tokens, b.overlap.tokens);
  EXPECT_LT((a.overlap.overlap - b.overlap.overlap).cwiseAbs().maxCoeff(), 1e-5);
  EXPECT_NEAR(a.overlap.mean_overlap, b.overlap.mean_overlap, 1e-5);
  EXPECT_NEAR(a.overlap.mso, b.overlap.mso, 1e-5);
  if (std::isnan(b.overlap.routed_mean_overlap)) EXPECT_TRUE(std::isnan(a.overlap.routed_mean_overlap));
  else EXPECT_NEAR(a.overlap.routed_mean_overlap, b.overlap.routed_mean_overlap, 1e-5);
  EXPECT_EQ(a.overlap.routed_tokens, b.overlap.routed_tokens);  // same top-k choices
  for (std::size_t e = 0; e < a.routing.load.size(); ++e) {
    EXPECT_DOUBLE_EQ(a.routing.load[e], b.routing.load[e]);
    EXPECT_NEAR(a.routing.importance[e], b.routing.importance[e], 1e-6);
  }
  EXPECT_NEAR(a.routing.router_entropy, b.routing.router_entropy, 1e-5);
}

TEST_F(ActivationsTorch, RecordedMixtralFixtureMatchesOwnModel) {
  const std::int64_t d = 12, E = 4, h = 16, T = 150;
  SparseMoE moe(SparseMoEOptions(d, E).top_k(2).hidden(h).kind(FFNKind::SwiGLU));
  moe->eval();
  // Mixtral experts have no biases: zero the module's so both compute the same function.
  std::map<std::string, torch::Tensor> ckpt;
  const std::string p = "model.layers.0.block_sparse_moe.";
  ckpt[p + "gate.weight"] = moe->router->weight;
  for (std::int64_t e = 0; e < E; ++e) {
    auto* f = moe->experts->ptr(static_cast<std::size_t>(e))->as<FFNImpl>();
    torch::NoGradGuard ng;
    for (auto* l : {&f->w_gate, &f->w_up, &f->w_down}) (*l)->bias.zero_();
    const std::string x = p + "experts." + std::to_string(e) + ".";
    ckpt[x + "w1.weight"] = f->w_gate->weight;
    ckpt[x + "w3.weight"] = f->w_up->weight;
    ckpt[x + "w2.weight"] = f->w_down->weight;
  }
  ckpt["model.embed_tokens.weight"] = torch::randn({5, d});
  TempDir dir;
  write_tensors(dir.file("mixtral.safetensors"), ckpt);
  const torch::Tensor x = torch::randn({T, d});
  write_tensors(dir.file("acts.safetensors"), {{"layer_00.inputs", x}});

  SafetensorsFile src(dir.file("mixtral.safetensors"));
  const Layout layout = detect_layout(src.tensors());
  ASSERT_EQ(layout.family, "mixtral");
  ASSERT_EQ(layout.layers.size(), 1u);
  const ExpertBank bank = checkpoint_expert_bank(src, layout, layout.layers[0], 2);
  EXPECT_EQ(bank.kind, "swiglu");
  EXPECT_EQ(bank.dim, d);
  SafetensorsFile rec(dir.file("acts.safetensors"));
  ActivationsOptions o;
  o.batch_size = 64;
  const ActivationsResult r = recorded_activations({bank}, rec, o);
  ASSERT_EQ(r.layers.size(), 1u);
  EXPECT_EQ(r.layers[0].routing_source, "router");
  const LayerActivations own = via_module(moe, x, 37);
  expect_same(r.layers[0], own);
  EXPECT_GT(own.overlap.routed_tokens.sum(), 0);  // top-2: pairs are co-routed
  // Expert by expert, the checkpoint function equals the module.
  for (std::int64_t e = 0; e < E; ++e)
    EXPECT_LT(testing::max_abs_diff(bank.expert(e, x), detail::run_expert(moe->experts, e, x)), 1e-5);

  // Recorded router probabilities are used as given: the module's own give the same routing.
  const torch::Tensor probs = torch::softmax(moe->router(x), -1);
  write_tensors(dir.file("acts2.safetensors"), {{"layer_00.inputs", x}, {"layer_00.router_probs", probs}});
  SafetensorsFile rec2(dir.file("acts2.safetensors"));
  const ActivationsResult r2 = recorded_activations({bank}, rec2, o);
  EXPECT_EQ(r2.layers[0].routing_source, "recorded");
  expect_same(r2.layers[0], own);
}

TEST_F(ActivationsTorch, OwnNamedCheckpointWithBiasesMatchesModule) {
  // moescope's own tensor names (experts.E.fc1 / fc2 with biases), ReLU experts, written from the module.
  const std::int64_t d = 10, E = 3;
  SparseMoE moe(SparseMoEOptions(d, E).top_k(1).hidden(14));
  moe->eval();
  std::map<std::string, torch::Tensor> ckpt;
  for (const auto& kv : moe->named_parameters()) ckpt["head." + kv.key()] = kv.value();
  TempDir dir;
  write_tensors(dir.file("m.safetensors"), ckpt);
  SafetensorsFile src(dir.file("m.safetensors"));
  const Layout layout = detect_layout(src.tensors());
  ASSERT_EQ(layout.layers.size(), 1u);
  const ExpertBank bank = checkpoint_expert_bank(src, layout, layout.layers[0], 1);
  EXPECT_EQ(bank.kind, "relu");
  const torch::Tensor x = torch::randn({60, d});
  for (std::int64_t e = 0; e < E; ++e)
    EXPECT_LT(testing::max_abs_diff(bank.expert(e, x), detail::run_expert(moe->experts, e, x)), 1e-5);
  ActivationsOptions o;
  o.max_tokens = 60;
  o.batch_size = 25;
  o.seed = 3;
  // Random probe through both banks: same Gaussian stream, same numbers.
  MoELayerRef ref{0, "head", moe.get(), moe->experts};
  const ActivationsResult a = random_activations({bank}, o), b = random_activations({layer_expert_bank(ref)}, o);
  expect_same(a.layers[0], b.layers[0]);
  EXPECT_NE(a.description.find("Gaussian"), std::string::npos);
  // Top-1: no pair is co-routed, so the co-routed statistic is undefined and the source-routed one is not.
  EXPECT_TRUE(std::isnan(a.layers[0].overlap.routed_mean_overlap));
  EXPECT_FALSE(std::isnan(a.layers[0].overlap.source_mean_overlap));
}

// Expert e of a checkpoint layer computed by plain float64 loops over its matrix views.
std::vector<double> reference_expert(const TensorSource& src, const ExpertLayout& ex, bool swiglu,
                                     const std::vector<double>& x) {
  const auto mat = [&](const char* role) {
    const MatrixView* v = ex.find(role);
    std::vector<double> m(static_cast<std::size_t>(v ? v->numel() : 0));
    if (v) read_view_f64(src, *v, 0, v->numel(), m.data());
    return std::make_pair(m, v ? *v : MatrixView{});
  };
  const auto [up, uv] = mat("up");
  const auto [gate, gv] = mat("gate");
  const auto [down, dv] = mat("down");
  const auto [ub, ubv] = mat("up_bias");
  const auto [gb, gbv] = mat("gate_bias");
  const auto [db, dbv] = mat("down_bias");
  const std::int64_t I = uv.rows, H = uv.cols, O = dv.rows;
  std::vector<double> hid(static_cast<std::size_t>(I)), y(static_cast<std::size_t>(O));
  for (std::int64_t i = 0; i < I; ++i) {
    double u = ub.empty() ? 0 : ub[static_cast<std::size_t>(i)], g = gb.empty() ? 0 : gb[static_cast<std::size_t>(i)];
    for (std::int64_t c = 0; c < H; ++c) {
      u += up[static_cast<std::size_t>(i * H + c)] * x[static_cast<std::size_t>(c)];
      if (swiglu) g += gate[static_cast<std::size_t>(i * H + c)] * x[static_cast<std::size_t>(c)];
    }
    hid[static_cast<std::size_t>(i)] = swiglu ? g / (1 + std::exp(-g)) * u : std::max(u, 0.0);
  }
  for (std::int64_t o = 0; o < O; ++o) {
    double s = db.empty() ? 0 : db[static_cast<std::size_t>(o)];
    for (std::int64_t i = 0; i < I; ++i) s += down[static_cast<std::size_t>(o * I + i)] * hid[static_cast<std::size_t>(i)];
    y[static_cast<std::size_t>(o)] = s;
  }
  return y;
}

TEST_F(ActivationsTorch, SyntheticFamiliesMatchFloat64Loops) {
  // Switch (ReLU wi/wo), fused transformers-v5 gate_up views, Qwen and DeepSeek names (SwiGLU).
  for (const std::string family : {"switch", "fused-v5", "qwen2-moe", "deepseek", "olmoe"}) {
    SCOPED_TRACE(family);
    TempDir dir;
    SyntheticCheckpointOptions so;
    so.family = family;
    so.layers = 2;  // DeepSeek's first layer is dense
    so.experts = 4;
    so.hidden = 8;
    so.intermediate = 6;
    so.seed = 7;
    write_synthetic_checkpoint(dir.file("c.safetensors"), so);
    SafetensorsFile src(dir.file("c.safetensors"));
    const Layout layout = detect_layout(src.tensors());
    ASSERT_FALSE(layout.layers.empty());
    const MoELayerLayout& L = layout.layers.back();
    const ExpertBank bank = checkpoint_expert_bank(src, layout, L, 2);
    EXPECT_EQ(bank.experts, 4);
    const torch::Tensor x = torch::randn({5, bank.dim});
    for (std::int64_t e = 0; e < bank.experts; ++e) {
      const torch::Tensor y = bank.expert(e, x);
      for (std::int64_t t = 0; t < 5; ++t) {
        std::vector<double> xv(static_cast<std::size_t>(bank.dim));
        for (std::int64_t c = 0; c < bank.dim; ++c) xv[static_cast<std::size_t>(c)] = x[t][c].item<double>();
        const auto ref = reference_expert(src, L.experts[static_cast<std::size_t>(e)], bank.kind == "swiglu", xv);
        ASSERT_EQ(static_cast<std::int64_t>(ref.size()), y.size(1));
        for (std::size_t o = 0; o < ref.size(); ++o)
          EXPECT_NEAR(y[t][static_cast<std::int64_t>(o)].item<double>(), ref[o], 1e-5 * (1 + std::abs(ref[o])));
      }
    }
    if (family == "switch") EXPECT_EQ(bank.kind, "relu");
    else EXPECT_EQ(bank.kind, "swiglu");
  }
}

TEST_F(ActivationsTorch, RejectsBadRecordedFilesAndUnsupportedExperts) {
  TempDir dir;
  SyntheticCheckpointOptions so;
  so.layers = 2;
  so.experts = 3;
  so.hidden = 8;
  so.intermediate = 6;
  write_synthetic_checkpoint(dir.file("c.safetensors"), so);
  SafetensorsFile src(dir.file("c.safetensors"));
  const Layout layout = detect_layout(src.tensors());
  std::vector<ExpertBank> banks;
  for (const auto& l : layout.layers) banks.push_back(checkpoint_expert_bank(src, layout, l, 2));
  const auto expect_input_error = [&](const std::map<std::string, torch::Tensor>& ts, const std::string& needle) {
    write_tensors(dir.file("a.safetensors"), ts);
    SafetensorsFile rec(dir.file("a.safetensors"));
    try {
      recorded_activations(banks, rec, {});
      ADD_FAILURE() << "no error for " << needle;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_input_error({{"layer_00.inputs", torch::randn({4, 7})}}, "layer_00.inputs");          // wrong width
  expect_input_error({{"layer_07.inputs", torch::randn({4, 8})}}, "layer_07.inputs");          // no such layer
  expect_input_error({{"layer_00.inputs", torch::randn({4, 8})}, {"layer_00.router_probs", torch::rand({3, 3})}},
                     "router_probs");                                                          // rows differ
  // Only layer 1 recorded: layer 0 is skipped, not an error.
  write_tensors(dir.file("b.safetensors"), {{"layer_01.inputs", torch::randn({9, 8})}});
  SafetensorsFile rec(dir.file("b.safetensors"));
  const ActivationsResult r = recorded_activations(banks, rec, {});
  ASSERT_EQ(r.layers.size(), 1u);
  EXPECT_EQ(r.layers[0].key, "layer_01");
  EXPECT_EQ(r.layers[0].overlap.tokens, 9);

  so.family = "gpt-oss";
  write_synthetic_checkpoint(dir.file("g.safetensors"), so);
  SafetensorsFile g(dir.file("g.safetensors"));
  const Layout gl = detect_layout(g.tensors());
  ASSERT_FALSE(gl.layers.empty());
  EXPECT_THROW(checkpoint_expert_bank(g, gl, gl.layers[0], 2), InputError);
}

}  // namespace
}  // namespace moescope
