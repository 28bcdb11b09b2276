// metrics/hf_activations_torch and the Hugging Face path of analyse_activations: every routed expert on the model's
// own MoE inputs, the router's real choices, shared experts apart. Checked against a direct computation that runs
// the model with its MoE trace and calls expert_forward token by token, with plain loops for every statistic.
//
// Tolerance 1e-10: a float64 model end to end; both sides sum the same float64 terms in other orders and shapes
// (one batch against several), so they differ by rounding of order 1e-15 per operation.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <numeric>

#include "moescope/io/checkpoint.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/metrics/hf_activations_torch.hpp"
#include "moescope/model/hf.hpp"
#include "moescope/util/random.hpp"
#include "support/expect_error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;

constexpr double kTol = 1e-10;

std::string write_model(const TempDir& dir, const std::string& family, DType dtype = DType::F64) {
  SyntheticModelOptions o;
  o.family = family;
  o.dtype = dtype;
  o.seed = 9;
  const std::string path = dir.file(family);
  write_synthetic_model(path, o);
  return path;
}

// n random ids below V, written to DIR/ids.txt.
std::vector<std::int64_t> write_ids(const TempDir& dir, std::int64_t n, std::int64_t V) {
  Rng rng(21);
  std::vector<std::int64_t> ids;
  std::ofstream f(dir.file("ids.txt"));
  for (std::int64_t i = 0; i < n; ++i) {
    ids.push_back(static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(V))));
    f << ids.back() << (i % 16 == 15 ? "\n" : " ");
  }
  return ids;
}

double dot64(const torch::Tensor& a, const torch::Tensor& b) {
  double s = 0;
  auto pa = a.contiguous(), pb = b.contiguous();
  for (std::int64_t i = 0; i < pa.numel(); ++i) s += pa.data_ptr<double>()[i] * pb.data_ptr<double>()[i];
  return s;
}
double cosine64(const torch::Tensor& a, const torch::Tensor& b) { return dot64(a, b) / std::sqrt(dot64(a, a) * dot64(b, b)); }

// The statistics of one layer computed directly from the trace of one forward pass over all windows.
struct Direct {
  Eigen::MatrixXd overlap, routed_overlap, source_overlap;
  double mso = 0, mean_overlap = 0, routed_mean = 0, entropy = 0;
  std::vector<double> load, importance, mean_norm, shared_overlap;
  double shared_mixture = 0, shared_norm = 0, shared_gate = 0;
};

Direct direct(HFCausalLM& m, const HFMoETrace& t, std::int64_t tokens) {
  auto block = m->moe_block(t.layer);
  const std::int64_t E = block->num_experts(), k = t.topk_experts.size(1);
  Direct d;
  d.overlap = Eigen::MatrixXd::Zero(E, E);
  Eigen::MatrixXd rsum = Eigen::MatrixXd::Zero(E, E), rcnt = rsum, ssum = rsum, scnt = rsum;
  d.load.assign(E, 0);
  d.importance.assign(E, 0);
  d.mean_norm.assign(E, 0);
  d.shared_overlap.assign(E, 0);
  double pairs = 0, rpairs = 0;
  torch::NoGradGuard ng;
  for (std::int64_t i = 0; i < tokens; ++i) {
    const auto x = t.inputs.narrow(0, i, 1);
    std::vector<torch::Tensor> y;
    for (std::int64_t e = 0; e < E; ++e) y.push_back(block->expert_forward(e, x)[0]);
    std::vector<bool> in(E, false);
    for (std::int64_t s = 0; s < k; ++s) in[t.topk_experts[i][s].item<std::int64_t>()] = true;
    for (std::int64_t a = 0; a < E; ++a) {
      d.mean_norm[a] += std::sqrt(dot64(y[a], y[a])) / tokens;
      const double p = t.router_probs[i][a].item<double>();
      d.importance[a] += p / tokens;
      d.entropy -= p * std::log(p) / tokens;
      for (std::int64_t b = 0; b < E; ++b) {
        const double c = cosine64(y[a], y[b]);
        d.overlap(a, b) += c / tokens;
        if (a != b) d.mso += c * c, d.mean_overlap += c, pairs += 1;
        if (a != b && in[a] && in[b]) rsum(a, b) += c, rcnt(a, b) += 1, d.routed_mean += c, rpairs += 1;
        if (a != b && in[a]) ssum(a, b) += c, scnt(a, b) += 1;
      }
    }
    for (std::int64_t s = 0; s < k; ++s) d.load[t.topk_experts[i][s].item<std::int64_t>()] += 1.0 / (tokens * k);
    if (t.shared_gate.defined() || block->shared_experts) {
      torch::Tensor gate;
      const auto sh = block->shared_forward(x, &gate)[0];
      auto mix = torch::zeros_like(sh);
      for (std::int64_t s = 0; s < k; ++s)
        mix += t.topk_weights[i][s].item<double>() * y[t.topk_experts[i][s].item<std::int64_t>()];
      for (std::int64_t e = 0; e < E; ++e) d.shared_overlap[e] += cosine64(sh, y[e]) / tokens;
      d.shared_mixture += cosine64(sh, mix) / tokens;
      d.shared_norm += std::sqrt(dot64(sh, sh)) / tokens;
      d.shared_gate += gate.defined() ? gate[0][0].item<double>() / tokens : std::nan("");
    }
  }
  d.mso /= pairs;
  d.mean_overlap /= pairs;
  d.routed_mean /= rpairs;
  d.routed_overlap = rsum.cwiseQuotient(rcnt);
  d.source_overlap = ssum.cwiseQuotient(scnt);
  return d;
}

void expect_matrix_near(const Eigen::MatrixXd& got, const Eigen::MatrixXd& want, const std::string& what) {
  ASSERT_EQ(got.rows(), want.rows()) << what;
  for (Eigen::Index i = 0; i < want.rows(); ++i)
    for (Eigen::Index j = 0; j < want.cols(); ++j) {
      if (i == j) continue;  // the diagonal of routed/source matrices is defined by convention
      if (std::isnan(want(i, j))) {
        EXPECT_TRUE(std::isnan(got(i, j))) << what << "(" << i << "," << j << ")";
      } else {
        EXPECT_NEAR(got(i, j), want(i, j), kTol) << what << "(" << i << "," << j << ")";
      }
    }
}

class HFActivationsDirect : public ::testing::TestWithParam<std::string> {};

TEST_P(HFActivationsDirect, EqualsTheTraceAndExpertForward) {
  TempDir dir;
  const std::string path = write_model(dir, GetParam());
  HFCausalLM m = load_hf_model(path);
  ASSERT_EQ(m->dtype(), torch::kDouble);
  const std::int64_t C = 8, M = 37;  // 5 windows, the last cut after 5 of its 8 tokens
  const auto ids = write_ids(dir, 400, m->config().vocab_size);

  ActivationsRequest r;
  r.checkpoint = path;
  r.data = "tokens:" + dir.file("ids.txt");
  r.context = C;
  r.options.max_tokens = M;
  r.options.batch_size = 2;  // sequences per forward pass
  const ActivationsAnalysis a = analyse_activations(r);
  EXPECT_EQ(a.result.inputs, "data");
  EXPECT_EQ(a.result.samples, 5);
  EXPECT_EQ(a.weights_file, path);

  // The direct path: the same windows (train = the first 90% of the ids) in one forward pass.
  auto windows = torch::empty({5, C}, torch::kLong);
  for (std::int64_t w = 0; w < 5; ++w)
    for (std::int64_t j = 0; j < C; ++j) windows[w][j] = ids[static_cast<std::size_t>(w * C + j)];
  HFForwardOptions fo;
  fo.moe_trace = true;
  const HFOutput out = m->forward_with(windows, fo);
  const Layout layout = detect_layout(open_checkpoint(path)->tensors());
  ASSERT_EQ(a.result.layers.size(), out.moe.size());
  ASSERT_EQ(layout.layers.size(), out.moe.size());
  std::size_t shared_seen = 0;
  for (std::size_t l = 0; l < out.moe.size(); ++l) {
    const LayerActivations& got = a.result.layers[l];
    EXPECT_EQ(got.key, layout.layers[l].key);  // the keys geometry and inspect print
    EXPECT_EQ(got.layer, out.moe[l].layer);
    EXPECT_EQ(got.prefix, layout.layers[l].prefix);
    EXPECT_EQ(got.routing_source, "model");
    EXPECT_EQ(got.overlap.tokens, M);
    const Direct d = direct(m, out.moe[l], M);
    const std::int64_t E = got.experts;
    for (std::int64_t i = 0; i < E; ++i)
      for (std::int64_t j = 0; j < E; ++j) EXPECT_NEAR(got.overlap.overlap(i, j), d.overlap(i, j), kTol);
    EXPECT_NEAR(got.overlap.mso, d.mso, kTol);
    EXPECT_NEAR(got.overlap.mean_overlap, d.mean_overlap, kTol);
    EXPECT_NEAR(got.overlap.routed_mean_overlap, d.routed_mean, kTol);
    expect_matrix_near(got.overlap.routed_overlap, d.routed_overlap, "routed_overlap");
    expect_matrix_near(got.overlap.source_overlap, d.source_overlap, "source_overlap");
    for (std::int64_t e = 0; e < E; ++e) {
      EXPECT_NEAR(got.routing.load[e], d.load[e], kTol);
      EXPECT_NEAR(got.routing.importance[e], d.importance[e], kTol);
      EXPECT_NEAR(got.overlap.mean_norm[e], d.mean_norm[e], kTol * (1 + d.mean_norm[e]));
    }
    EXPECT_NEAR(got.routing.router_entropy, d.entropy, kTol);
    EXPECT_EQ(a.meta.top_k.at(got.key), m->config().num_experts_per_tok);
    auto block = m->moe_block(out.moe[l].layer);
    if (block->shared_expert || block->shared_experts) {
      ASSERT_LT(shared_seen, a.shared.size());
      const SharedExpertActivations& s = a.shared[shared_seen++];
      EXPECT_EQ(s.key, got.key);
      EXPECT_EQ(s.kind, block->shared_expert ? "gated" : "ungated");
      EXPECT_EQ(s.tokens, M);
      for (std::int64_t e = 0; e < E; ++e) EXPECT_NEAR(s.overlap[e], d.shared_overlap[e], kTol);
      EXPECT_NEAR(s.mixture_overlap, d.shared_mixture, kTol);
      EXPECT_NEAR(s.mean_norm, d.shared_norm, kTol * (1 + d.shared_norm));
      if (s.kind == "gated") EXPECT_NEAR(s.mean_gate, d.shared_gate, kTol);
      else EXPECT_TRUE(std::isnan(s.mean_gate));
    }
  }
  EXPECT_EQ(shared_seen, a.shared.size());
}

INSTANTIATE_TEST_SUITE_P(Families, HFActivationsDirect,
                         ::testing::Values("mixtral", "qwen2-moe", "olmoe", "deepseek-moe"), testing::DashFreeName());

// The batch size only groups the work: 1 or 4 sequences per pass give the same statistics (float32 model:
// the expert outputs are the same numbers, summed in the same token order).
TEST(HFActivations, BatchSizeDoesNotChangeTheResult) {
  TempDir dir;
  const std::string path = write_model(dir, "olmoe", DType::F32);
  write_ids(dir, 300, 200);
  ActivationsRequest r;
  r.checkpoint = path;
  r.data = "tokens:" + dir.file("ids.txt");
  r.context = 8;
  r.options.max_tokens = 40;
  r.options.batch_size = 1;
  const auto a = analyse_activations(r);
  r.options.batch_size = 4;
  const auto b = analyse_activations(r);
  ASSERT_EQ(a.result.layers.size(), b.result.layers.size());
  for (std::size_t l = 0; l < a.result.layers.size(); ++l) {
    EXPECT_NEAR(a.result.layers[l].overlap.mso, b.result.layers[l].overlap.mso, 1e-6);
    EXPECT_EQ(a.result.layers[l].routing.load, b.result.layers[l].routing.load);
  }
}

// DeepSeek-V3's sigmoid scores are normalised per token, so importance sums to 1 as for softmax routers; --layers
// keeps the layers asked for; --geometry pairs the weight side by the same keys.
TEST(HFActivations, SigmoidRouterLayersAndGeometry) {
  TempDir dir;
  const std::string path = write_model(dir, "deepseek-v3", DType::F32);
  write_ids(dir, 300, 200);
  ActivationsRequest r;
  r.checkpoint = path;
  r.data = "tokens:" + dir.file("ids.txt");
  r.context = 8;
  r.options.max_tokens = 24;
  r.layers = {2};
  r.geometry = true;
  const auto a = analyse_activations(r);
  ASSERT_EQ(a.result.layers.size(), 1u);
  EXPECT_EQ(a.result.layers[0].key, "layer_02");
  const auto& imp = a.result.layers[0].routing.importance;
  EXPECT_NEAR(std::accumulate(imp.begin(), imp.end(), 0.0), 1.0, 1e-6);
  ASSERT_TRUE(a.geometry.has_value());
  ASSERT_EQ(a.overlaps.size(), 1u);
  EXPECT_EQ(a.overlaps[0].key, "layer_02");
  ASSERT_EQ(a.shared.size(), 1u);
  EXPECT_EQ(a.shared[0].kind, "ungated");
  // The random probe still runs the checkpoint's experts without the model.
  ActivationsRequest p;
  p.checkpoint = path;
  p.random_probe = true;
  p.options.max_tokens = 16;
  EXPECT_EQ(analyse_activations(p).result.inputs, "random");
}

TEST(HFActivations, BankRunsTheBlocksExperts) {
  TempDir dir;
  HFCausalLM m = load_hf_model(write_model(dir, "qwen2-moe"));
  const ExpertBank b = hf_expert_bank(*m, {2, "layer_02"});
  EXPECT_EQ(b.experts, 6);
  EXPECT_EQ(b.prefix, "model.layers.2.mlp");
  const auto x = torch::randn({3, 32}, torch::kFloat);
  const auto y = run_all_experts(b, x);
  EXPECT_EQ(y.sizes(), (std::vector<std::int64_t>{3, 6, 32}));
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::allclose(y.select(1, 4), m->moe_block(2)->expert_forward(4, x.to(torch::kDouble)), 0, 0));
  const TokenRouting rt = b.route(x);
  EXPECT_EQ(rt.chosen.sizes(), (std::vector<std::int64_t>{3, 2}));
  EXPECT_THROW(hf_expert_bank(*m, {1, "layer_01"}), std::out_of_range);  // a dense layer
}

}  // namespace
}  // namespace moescope
