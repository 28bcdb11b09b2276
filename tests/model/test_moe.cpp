#include "moescope/model/moe.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "support/finite_difference.hpp"
#include "support/seeded.hpp"

namespace moescope {
namespace {

using testing::central_gradient;
using testing::max_abs_diff;
using Matrix = std::vector<std::vector<double>>;

class SparseMoETest : public testing::SeededTest {};
class GatedMixtureTest : public testing::SeededTest {};
class SoftMoETest : public testing::SeededTest {};
class ProbeTest : public testing::SeededTest {};

torch::Tensor from_rows(const Matrix& m) {
  auto t = torch::empty({static_cast<std::int64_t>(m.size()), static_cast<std::int64_t>(m[0].size())});
  for (std::size_t i = 0; i < m.size(); ++i) {
    for (std::size_t j = 0; j < m[i].size(); ++j) t[i][j] = m[i][j];
  }
  return t;
}

std::vector<double> matvec(const Matrix& w, const std::vector<double>& b, const std::vector<double>& x) {
  std::vector<double> y(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) {
    y[i] = b.empty() ? 0.0 : b[i];
    for (std::size_t j = 0; j < x.size(); ++j) y[i] += w[i][j] * x[j];
  }
  return y;
}

struct HandExpert {
  Matrix w1;
  std::vector<double> b1;
  Matrix w2;
  std::vector<double> b2;
  std::vector<double> apply(const std::vector<double>& x) const {
    auto h = matvec(w1, b1, x);
    for (auto& v : h) v = std::max(v, 0.0);
    return matvec(w2, b2, h);
  }
};

void set_expert(torch::nn::ModuleList& experts, std::int64_t e, const HandExpert& h) {
  auto* ffn = experts->ptr(static_cast<std::size_t>(e))->as<FFNImpl>();
  ffn->fc1->weight.copy_(from_rows(h.w1));
  ffn->fc1->bias.copy_(from_rows({h.b1}).squeeze(0));
  ffn->fc2->weight.copy_(from_rows(h.w2));
  ffn->fc2->bias.copy_(from_rows({h.b2}).squeeze(0));
}

// E = 3 experts (d = 2, hidden 2), top-2, 4 tokens, every weight set by hand.
struct HandCase {
  Matrix router{{1.0, -0.5}, {0.3, 0.8}, {-0.7, 0.2}};
  std::vector<HandExpert> experts{
      {{{0.5, -0.2}, {0.1, 0.9}}, {0.1, -0.1}, {{1.0, 0.3}, {-0.4, 0.6}}, {0.05, 0.0}},
      {{{-0.3, 0.7}, {0.8, 0.2}}, {0.0, 0.2}, {{0.2, -0.9}, {0.5, 0.5}}, {-0.1, 0.1}},
      {{{0.6, 0.6}, {-0.5, 0.4}}, {0.3, 0.0}, {{-0.7, 0.1}, {0.2, 1.1}}, {0.0, -0.2}}};
  Matrix tokens{{1.0, 0.5}, {-0.8, 1.2}, {0.3, -1.5}, {2.0, 0.1}};

  SparseMoE build(bool renormalize) const {
    SparseMoE moe(SparseMoEOptions(2, 3).top_k(2).hidden(2).renormalize(renormalize));
    torch::NoGradGuard no_grad;
    moe->router->weight.copy_(from_rows(router));
    for (std::int64_t e = 0; e < 3; ++e) set_expert(moe->experts, e, experts[static_cast<std::size_t>(e)]);
    return moe;
  }

  // Reference: softmax, sort, top-2, (renormalise), weighted sum, by explicit loops in double.
  Matrix expected(bool renormalize, std::vector<std::vector<std::int64_t>>* chosen = nullptr) const {
    Matrix out;
    for (const auto& x : tokens) {
      const auto logits = matvec(router, {}, x);
      const double mx = *std::max_element(logits.begin(), logits.end());
      std::vector<double> p(3);
      double z = 0.0;
      for (int e = 0; e < 3; ++e) z += (p[e] = std::exp(logits[e] - mx));
      for (auto& v : p) v /= z;
      std::vector<std::int64_t> order{0, 1, 2};
      std::sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return p[a] > p[b]; });
      const double norm = renormalize ? p[order[0]] + p[order[1]] : 1.0;
      std::vector<double> y(2, 0.0);
      for (int j = 0; j < 2; ++j) {
        const auto ye = experts[static_cast<std::size_t>(order[j])].apply(x);
        for (int i = 0; i < 2; ++i) y[i] += p[order[j]] / norm * ye[i];
      }
      out.push_back(y);
      if (chosen) chosen->push_back({order[0], order[1]});
    }
    return out;
  }
};

TEST_F(SparseMoETest, HandBuiltCaseMatchesExplicitLoops) {
  const HandCase hc;
  for (const bool renorm : {true, false}) {
    auto moe = hc.build(renorm);
    std::vector<std::vector<std::int64_t>> chosen;
    const auto expected = from_rows(hc.expected(renorm, &chosen));
    const auto r = moe->forward_moe(from_rows(hc.tokens));
    // float32 against double on O(1) values through a dozen operations: rounding stays below 1e-6.
    EXPECT_LT(max_abs_diff(r.output, expected), 1e-6) << "renormalize " << renorm;
    for (std::int64_t t = 0; t < 4; ++t) {
      EXPECT_EQ(r.routing.topk_indices[t][0].item<std::int64_t>(), chosen[t][0]);
      EXPECT_EQ(r.routing.topk_indices[t][1].item<std::int64_t>(), chosen[t][1]);
    }
    EXPECT_EQ(r.routing.logits.sizes(), (std::vector<std::int64_t>{4, 3}));
    EXPECT_EQ(r.routing.probs.sizes(), (std::vector<std::int64_t>{4, 3}));
    EXPECT_EQ(r.routing.topk_weights.sizes(), (std::vector<std::int64_t>{4, 2}));
    EXPECT_EQ(r.routing.expert_counts.sum().item<std::int64_t>(), 8);
    EXPECT_EQ(r.routing.dropped, 0);
    EXPECT_FALSE(r.routing.expert_outputs.defined());
    EXPECT_FALSE(r.routing.dropped_mask.defined());
  }
}

TEST_F(SparseMoETest, RenormalisedWeightsSumToOne) {
  SparseMoE moe(SparseMoEOptions(8, 6).top_k(3).hidden(16));
  const auto r = moe->forward_moe(torch::randn({2, 7, 8}));
  EXPECT_EQ(r.output.sizes(), (std::vector<std::int64_t>{2, 7, 8}));
  // Sums of three float32 quotients: a few ulps.
  EXPECT_LT(max_abs_diff(r.routing.topk_weights.sum(-1), torch::ones({14})), 1e-6);
  // Without renormalisation the weights are the softmax values themselves.
  moe->options.renormalize(false);
  const auto x = torch::randn({5, 8});
  const auto r2 = moe->forward_moe(x);
  EXPECT_TRUE(torch::allclose(r2.routing.topk_weights, r2.routing.probs.gather(1, r2.routing.topk_indices)));
  EXPECT_TRUE((r2.routing.topk_weights.sum(-1) < 1.0).all().item<bool>());
}

TEST_F(SparseMoETest, MatchesDenseComputationAndKeepsSelectedOutputs) {
  SparseMoE moe(SparseMoEOptions(6, 5).top_k(2).hidden(12).out_dim(4).keep_expert_outputs(true));
  const auto x = torch::randn({9, 6});
  const auto r = moe->forward_moe(x);
  // Reference: every expert on every token, then pick by the routing.
  std::vector<torch::Tensor> all;
  for (std::int64_t e = 0; e < 5; ++e) all.push_back(detail::run_expert(moe->experts, e, x));
  const auto y = torch::stack(all, 1);  // [T, E, O]
  const auto picked = y.gather(1, r.routing.topk_indices.unsqueeze(-1).expand({9, 2, 4}));
  EXPECT_EQ(r.routing.expert_outputs.sizes(), (std::vector<std::int64_t>{9, 2, 4}));
  EXPECT_LT(max_abs_diff(r.routing.expert_outputs, picked), 1e-6);
  const auto expected = (picked * r.routing.topk_weights.unsqueeze(-1)).sum(1);
  EXPECT_LT(max_abs_diff(r.output, expected), 1e-6);
  // Counts per expert equal the routing's.
  EXPECT_TRUE(torch::equal(r.routing.expert_counts, torch::bincount(r.routing.topk_indices.reshape(-1), {}, 5)));
}

TEST_F(SparseMoETest, GradientsReachRouterAndExperts) {
  SparseMoE moe(SparseMoEOptions(4, 3).top_k(2).hidden(5));
  moe->forward(torch::randn({6, 4})).pow(2).sum().backward();
  EXPECT_GT(moe->router->weight.grad().abs().sum().item<double>(), 0.0);
  for (const auto& p : moe->experts->parameters()) ASSERT_TRUE(p.grad().defined());
}

TEST_F(SparseMoETest, ExpertsWithoutTokensDoNotRun) {
  // Every token prefers expert 0 (k = 1): experts 1 and 2 never run, so their weights get no gradient at all
  // (a dense path that ran them and multiplied by zero would leave zero gradients, not undefined ones).
  SparseMoE moe(SparseMoEOptions(2, 3).top_k(1).hidden(4));
  {
    torch::NoGradGuard no_grad;
    moe->router->weight.copy_(from_rows({{3.0, 0.0}, {0.0, 0.0}, {-3.0, 0.0}}));
  }
  const auto x = torch::cat({torch::ones({5, 1}), 0.1 * torch::randn({5, 1})}, 1);
  const auto r = moe->forward_moe(x);
  EXPECT_TRUE(torch::equal(r.routing.expert_counts, torch::tensor({5, 0, 0}, torch::kLong)));
  r.output.sum().backward();
  auto* e0 = moe->experts->ptr(0)->as<FFNImpl>();
  auto* e1 = moe->experts->ptr(1)->as<FFNImpl>();
  auto* e2 = moe->experts->ptr(2)->as<FFNImpl>();
  EXPECT_TRUE(e0->fc1->weight.grad().defined());
  EXPECT_FALSE(e1->fc1->weight.grad().defined());
  EXPECT_FALSE(e2->fc2->weight.grad().defined());
}

TEST_F(SparseMoETest, DoubleGradientMatchesFiniteDifferences) {
  // In float64 (as curvature code may run it), d/dx of <c, out(x)> by autograd against central differences.
  SparseMoE moe(SparseMoEOptions(3, 3).top_k(2).hidden(5).noisy(true));
  moe->to(torch::kDouble);
  moe->eval();
  const auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  const auto c = torch::randn({4, 3}, torch::kDouble);
  const auto f = [&](const torch::Tensor& in) { return (moe->forward(in) * c).sum(); };
  const auto g = torch::autograd::grad({f(x)}, {x})[0];
  const auto fd = central_gradient(f, x, 1e-6);
  // Truncation O(h^2) ~ 1e-12 and rounding ~ 1e-16 / h ~ 1e-10; a routing switch or ReLU kink within h of a
  // random point would show as an O(1) error, not as a small one.
  EXPECT_LT(max_abs_diff(g, fd), 1e-7);
}

TEST_F(SparseMoETest, CapacityDropsLaterTokensAndCountsThem) {
  // k = 1, E = 2, 6 tokens, CF = 1: C = ceil(6 * 1 * 1 / 2) = 3. Tokens 0, 1, 2, 3, 5 prefer expert 0,
  // token 4 expert 1: expert 0 keeps tokens 0-2 and drops 3 and 5.
  SparseMoE moe(SparseMoEOptions(2, 2).top_k(1).hidden(3).capacity_factor(1.0).keep_expert_outputs(true));
  {
    torch::NoGradGuard no_grad;
    moe->router->weight.copy_(from_rows({{2.0, 0.0}, {0.0, 1.0}}));
  }
  const auto x = from_rows({{1, 0}, {1, 0.1}, {1, -0.2}, {1, 0.3}, {1, 10}, {1, 0.5}});
  const auto r = moe->forward_moe(x);
  EXPECT_EQ(r.routing.capacity, 3);
  EXPECT_EQ(expert_capacity(6, 1, 1.0, 2), 3);
  EXPECT_EQ(r.routing.dropped, 2);
  EXPECT_EQ(r.routing.expert_counts[0].item<std::int64_t>(), 3);
  EXPECT_EQ(r.routing.expert_counts[1].item<std::int64_t>(), 1);
  const std::vector<bool> dropped{false, false, false, true, false, true};
  const auto e0 = detail::run_expert(moe->experts, 0, x);
  const auto e1 = detail::run_expert(moe->experts, 1, x);
  for (std::int64_t t = 0; t < 6; ++t) {
    EXPECT_EQ(r.routing.dropped_mask[t][0].item<bool>(), dropped[t]) << "token " << t;
    const auto expected = dropped[t] ? torch::zeros({2}) : (t == 4 ? e1[t] : e0[t]);
    EXPECT_LT(max_abs_diff(r.output[t], expected), 1e-6) << "token " << t;
    EXPECT_LT(max_abs_diff(r.routing.expert_outputs[t][0], expected), 1e-6) << "token " << t;
  }
  // A factor that fits everyone drops nothing: C = ceil(6 * 2.0 / 2) = 6.
  moe->options.capacity_factor(2.0);
  const auto r2 = moe->forward_moe(x);
  EXPECT_EQ(r2.routing.dropped, 0);
  EXPECT_EQ(r2.routing.capacity, 6);
}

TEST_F(SparseMoETest, CapacityWithTopTwoCountsAssignments) {
  // Top-2 of 4 experts, 10 tokens, CF 0.5: C = ceil(10 * 2 * 0.5 / 4) = 3; kept = sum_e min(n_e, 3).
  SparseMoE moe(SparseMoEOptions(5, 4).top_k(2).hidden(4).capacity_factor(0.5));
  const auto r = moe->forward_moe(torch::randn({10, 5}));
  EXPECT_EQ(r.routing.capacity, 3);
  const auto n = torch::bincount(r.routing.topk_indices.reshape(-1), {}, 4);
  EXPECT_TRUE(torch::equal(r.routing.expert_counts, n.clamp_max(3)));
  EXPECT_EQ(r.routing.dropped, 20 - n.clamp_max(3).sum().item<std::int64_t>());
  EXPECT_EQ(r.routing.dropped_mask.sum().item<std::int64_t>(), r.routing.dropped);
  // Within each expert the kept tokens are its first ones in token order.
  const auto idx = r.routing.topk_indices;
  const auto mask = r.routing.dropped_mask;
  for (std::int64_t e = 0; e < 4; ++e) {
    std::int64_t seen = 0;
    for (std::int64_t t = 0; t < 10; ++t) {
      for (std::int64_t j = 0; j < 2; ++j) {
        if (idx[t][j].item<std::int64_t>() != e) continue;
        EXPECT_EQ(mask[t][j].item<bool>(), seen >= 3) << "expert " << e << " token " << t;
        ++seen;
      }
    }
  }
}

TEST_F(SparseMoETest, NoisyRoutingOnlyInTraining) {
  SparseMoE moe(SparseMoEOptions(6, 4).top_k(2).hidden(8).noisy(true));
  ASSERT_TRUE(moe->noise);
  const auto x = torch::randn({32, 6});
  moe->eval();
  const auto a = moe->forward_moe(x), b = moe->forward_moe(x);
  EXPECT_TRUE(torch::equal(a.output, b.output));
  EXPECT_TRUE(torch::equal(a.routing.logits, moe->router(x)));
  EXPECT_FALSE(a.routing.clean_logits.defined());
  moe->train();
  const auto c = moe->forward_moe(x), d = moe->forward_moe(x);
  EXPECT_FALSE(torch::equal(c.routing.logits, d.routing.logits));
  EXPECT_TRUE(torch::equal(c.routing.clean_logits, moe->router(x)));
  EXPECT_LT(max_abs_diff(c.routing.noise_stddev, torch::softplus(moe->noise(x))), 1e-7);
  // The noise is N(0,1) scaled by the stddev: standardised, its 128 values have mean ~0 and variance ~1.
  const auto z = (c.routing.logits - c.routing.clean_logits) / c.routing.noise_stddev;
  EXPECT_LT(z.mean().abs().item<double>(), 0.4);  // 4 standard errors (1/sqrt(128) = 0.088)
  EXPECT_NEAR(z.var().item<double>(), 1.0, 0.5);  // about 4 standard errors of a sample variance (0.125)
  // Without the flag, training mode is noise-free.
  SparseMoE plain(SparseMoEOptions(6, 4).top_k(2).hidden(8));
  EXPECT_FALSE(plain->noise);
  EXPECT_TRUE(torch::equal(plain->forward_moe(x).routing.logits, plain->forward_moe(x).routing.logits));
}

TEST_F(SparseMoETest, RejectsBadOptionsAndInputs) {
  EXPECT_THROW(SparseMoE(SparseMoEOptions(4, 3).top_k(4)), c10::Error);
  EXPECT_THROW(SparseMoE(SparseMoEOptions(4, 0)), c10::Error);
  EXPECT_THROW(SparseMoE(SparseMoEOptions(4, 3).capacity_factor(-1)), c10::Error);
  SparseMoE moe(SparseMoEOptions(4, 3).top_k(1));
  EXPECT_THROW(moe->forward(torch::randn({2, 5})), c10::Error);
}

TEST_F(GatedMixtureTest, EqualsExplicitWeightedSum) {
  GatedMixture gm(GatedMixtureOptions(6, 4).hidden(5).out_dim(3).temperature(0.7).keep_expert_outputs(true));
  const auto x = torch::randn({2, 3, 6});
  const auto r = gm->forward_moe(x);
  EXPECT_EQ(r.output.sizes(), (std::vector<std::int64_t>{2, 3, 3}));
  const auto flat = x.reshape({6, 6});
  const auto p = torch::softmax(torch::matmul(flat, gm->router->weight.t()) / 0.7, -1);
  auto expected = torch::zeros({6, 3});
  for (std::int64_t e = 0; e < 4; ++e) {
    auto* ffn = gm->experts->ptr(static_cast<std::size_t>(e))->as<FFNImpl>();
    expected += p.select(1, e).unsqueeze(1) * ffn->forward(flat);
  }
  EXPECT_LT(max_abs_diff(r.output.reshape({6, 3}), expected), 1e-6);
  EXPECT_LT(max_abs_diff(r.routing.probs, p), 1e-6);
  EXPECT_EQ(r.routing.expert_outputs.sizes(), (std::vector<std::int64_t>{6, 4, 3}));
  EXPECT_TRUE(torch::equal(r.routing.expert_counts, torch::full({4}, 6, torch::kLong)));
  EXPECT_THROW(GatedMixture(GatedMixtureOptions(6, 4).temperature(0.0)), c10::Error);
}

// Soft MoE by loops: per sequence b and slot s, logits from normalised vectors, softmaxes by hand.
torch::Tensor soft_moe_by_loops(SoftMoEImpl& moe, const torch::Tensor& x) {
  const std::int64_t B = x.size(0), m = x.size(1), d = x.size(2);
  const std::int64_t E = moe.options.experts(), p = moe.options.slots(), S = E * p;
  const auto xd = x.to(torch::kDouble), phi = moe.phi.detach().to(torch::kDouble);
  const double scale = moe.scale.item<double>();
  std::vector<torch::Tensor> outs;
  for (std::int64_t b = 0; b < B; ++b) {
    auto logits = torch::zeros({m, S}, torch::kDouble);
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t s = 0; s < S; ++s) {
        double dot = 0, nx = 0, np = 0;
        for (std::int64_t c = 0; c < d; ++c) {
          const double xv = xd[b][i][c].item<double>(), pv = phi[c][s].item<double>();
          dot += xv * pv;
          nx += xv * xv;
          np += pv * pv;
        }
        logits[i][s] = scale * dot / std::sqrt(nx) / std::sqrt(np);
      }
    }
    auto slot_out = std::vector<torch::Tensor>(static_cast<std::size_t>(S));
    for (std::int64_t s = 0; s < S; ++s) {
      double z = 0;
      for (std::int64_t i = 0; i < m; ++i) z += std::exp(logits[i][s].item<double>());
      auto slot_in = torch::zeros({d}, torch::kDouble);
      for (std::int64_t i = 0; i < m; ++i) slot_in += std::exp(logits[i][s].item<double>()) / z * xd[b][i];
      auto* ffn = moe.experts->ptr(static_cast<std::size_t>(s / p))->as<FFNImpl>();
      slot_out[static_cast<std::size_t>(s)] = ffn->forward(slot_in.to(torch::kFloat).unsqueeze(0)).squeeze(0).to(torch::kDouble);
    }
    auto out = torch::zeros({m, slot_out[0].size(0)}, torch::kDouble);
    for (std::int64_t i = 0; i < m; ++i) {
      double z = 0;
      for (std::int64_t s = 0; s < S; ++s) z += std::exp(logits[i][s].item<double>());
      for (std::int64_t s = 0; s < S; ++s) out[i] += std::exp(logits[i][s].item<double>()) / z * slot_out[static_cast<std::size_t>(s)];
    }
    outs.push_back(out);
  }
  return torch::stack(outs, 0);
}

TEST_F(SoftMoETest, DispatchAndCombineAreNormalisedAndOutputMatchesLoops) {
  SoftMoE moe(SoftMoEOptions(4, 3).slots(2).hidden(6).out_dim(5).keep_expert_outputs(true));
  {
    torch::NoGradGuard no_grad;
    moe->scale.fill_(2.5);  // a scale other than 1, so the test sees it
  }
  const auto x = torch::randn({2, 5, 4});
  const auto r = moe->forward_moe(x);
  EXPECT_EQ(r.output.sizes(), (std::vector<std::int64_t>{2, 5, 5}));
  EXPECT_EQ(r.routing.dispatch.sizes(), (std::vector<std::int64_t>{2, 5, 6}));
  // Softmax sums in float32: a few ulps.
  EXPECT_LT(max_abs_diff(r.routing.dispatch.sum(1), torch::ones({2, 6})), 1e-6);
  EXPECT_LT(max_abs_diff(r.routing.combine.sum(2), torch::ones({2, 5})), 1e-6);
  EXPECT_LT(max_abs_diff(r.routing.probs.sum(1), torch::ones({10})), 1e-6);
  EXPECT_EQ(r.routing.expert_outputs.sizes(), (std::vector<std::int64_t>{2, 6, 5}));
  EXPECT_TRUE(torch::equal(r.routing.expert_counts, torch::full({3}, 4, torch::kLong)));
  // float32 layer against a double loop with float32 experts: expert rounding (~1e-7 relative) dominates.
  EXPECT_LT(max_abs_diff(r.output, soft_moe_by_loops(*moe, x)), 1e-5);
}

TEST_F(SoftMoETest, OneExpertOneSlotOneTokenIsThatExpert) {
  SoftMoE moe(SoftMoEOptions(6, 1).slots(1).hidden(7));
  const auto x = torch::randn({4, 6});  // [T, d]: four sequences of one token
  const auto y = moe(x);
  auto* ffn = moe->experts->ptr(0)->as<FFNImpl>();
  EXPECT_EQ(y.sizes(), (std::vector<std::int64_t>{4, 6}));
  // Dispatch and combine are both exactly 1 (softmax of a single value).
  EXPECT_LT(max_abs_diff(y, ffn->forward(x)), 1e-6);
}

TEST_F(SoftMoETest, GradientsReachPhiScaleAndExperts) {
  SoftMoE moe(SoftMoEOptions(4, 2).slots(2).hidden(3));
  moe(torch::randn({3, 5, 4})).pow(2).sum().backward();
  EXPECT_GT(moe->phi.grad().abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(moe->scale.grad().defined());
  std::vector<std::string> names;
  for (const auto& p : moe->named_parameters()) names.push_back(p.key());
  EXPECT_NE(std::find(names.begin(), names.end(), "phi"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "experts.1.fc2.weight"), names.end());
  EXPECT_THROW(moe(torch::randn({2, 3, 4, 4})), c10::Error);
}

TEST_F(ProbeTest, NoProbeOrNoFlagsRecordsNothing) {
  SparseMoE moe(SparseMoEOptions(4, 3).top_k(2).hidden(5));
  const auto x = torch::randn({6, 4});
  auto probe = std::make_shared<Probe>();
  EXPECT_FALSE(probe->any());
  moe->set_probe(probe);
  moe->forward(x);
  EXPECT_EQ(probe->calls, 1);
  EXPECT_TRUE(probe->probs.empty() && probe->choices.empty() && probe->expert_outputs.empty() &&
              probe->inputs.empty() && probe->choice_weights.empty());
  probe->record_probs = true;
  moe->set_probe(nullptr);
  moe->forward(x);
  EXPECT_EQ(probe->calls, 1);
  EXPECT_TRUE(probe->probs.empty());
}

TEST_F(ProbeTest, RecordsShapesAndEveryExpertsOutputs) {
  auto probe = std::make_shared<Probe>();
  probe->record_probs = probe->record_choices = probe->record_expert_outputs = probe->record_inputs = true;
  const auto x = torch::randn({2, 3, 4});
  const auto flat = x.reshape({6, 4});

  SparseMoE sparse(SparseMoEOptions(4, 3).top_k(2).hidden(5).out_dim(2));
  GatedMixture gated(GatedMixtureOptions(4, 3).hidden(5).out_dim(2));
  SoftMoE soft(SoftMoEOptions(4, 3).hidden(5).out_dim(2));
  std::vector<std::pair<MoELayer*, torch::nn::ModuleList>> layers{
      {sparse.get(), sparse->experts}, {gated.get(), gated->experts}, {soft.get(), soft->experts}};
  for (auto& [layer, experts] : layers) {
    probe->clear();
    layer->set_probe(probe);
    const auto r = layer->forward_moe(x);
    layer->forward_moe(x);
    ASSERT_EQ(probe->calls, 2);
    ASSERT_EQ(probe->probs.size(), 2u);
    EXPECT_EQ(probe->probs[0].sizes(), (std::vector<std::int64_t>{6, 3}));
    EXPECT_EQ(probe->inputs[0].sizes(), (std::vector<std::int64_t>{6, 4}));
    const std::int64_t k = layer == sparse.get() ? 2 : 1;
    EXPECT_EQ(probe->choices[0].sizes(), (std::vector<std::int64_t>{6, k}));
    EXPECT_EQ(probe->choice_weights[0].sizes(), (std::vector<std::int64_t>{6, k}));
    EXPECT_FALSE(probe->probs[0].requires_grad());
    ASSERT_EQ(probe->expert_outputs[0].sizes(), (std::vector<std::int64_t>{6, 3, 2}));
    for (std::int64_t e = 0; e < 3; ++e) {
      EXPECT_LT(max_abs_diff(probe->expert_outputs[0].select(1, e), detail::run_expert(experts, e, flat)), 1e-6);
    }
    layer->set_probe(nullptr);
  }
}


// ------------------------------------------------------------------------------------- batched vs per-expert path

class BatchedPathTest : public testing::SeededTest {};

// Everything a layer reports for one input, and the gradients of a loss that reads the output and (when kept) the
// expert outputs, as double tensors in a fixed order; `names` says what each is.
struct Reported {
  std::vector<std::string> names;
  std::vector<torch::Tensor> tensors;
  std::int64_t dropped = 0, capacity = 0;
  void add(const std::string& name, const torch::Tensor& t) {
    if (!t.defined()) return;
    names.push_back(name);
    tensors.push_back(t.detach().to(torch::kDouble));
  }
};

template <typename Layer>
Reported report(Layer& layer, bool batched, const torch::Tensor& x, const std::shared_ptr<Probe>& probe) {
  layer->options.batched_experts(batched);
  probe->clear();
  layer->set_probe(probe);
  torch::manual_seed(7);  // the same noise draws on both paths
  const auto r = layer->forward_moe(x);
  layer->set_probe(nullptr);
  const auto readout = [](const torch::Tensor& t) {
    return (t * torch::cos(torch::arange(t.numel(), t.options()).view(t.sizes()))).sum();
  };
  auto loss = readout(r.output);
  if (r.routing.expert_outputs.defined()) loss = loss + readout(r.routing.expert_outputs);
  const auto params = layer->parameters();
  const auto grads = torch::autograd::grad({loss}, params, {}, false, false, /*allow_unused=*/true);
  Reported out;
  out.add("output", r.output);
  const auto& ri = r.routing;
  for (const auto& [name, t] : std::vector<std::pair<std::string, torch::Tensor>>{
           {"logits", ri.logits}, {"probs", ri.probs}, {"topk_indices", ri.topk_indices},
           {"topk_weights", ri.topk_weights}, {"dropped_mask", ri.dropped_mask}, {"expert_counts", ri.expert_counts},
           {"expert_outputs", ri.expert_outputs}, {"clean_logits", ri.clean_logits},
           {"noise_stddev", ri.noise_stddev}, {"dispatch", ri.dispatch}, {"combine", ri.combine}}) {
    out.add(name, t);
  }
  for (std::size_t i = 0; i < probe->expert_outputs.size(); ++i) out.add("probe expert_outputs", probe->expert_outputs[i]);
  for (std::size_t i = 0; i < probe->choices.size(); ++i) out.add("probe choices", probe->choices[i]);
  for (std::size_t i = 0; i < probe->choice_weights.size(); ++i) out.add("probe choice_weights", probe->choice_weights[i]);
  for (std::size_t i = 0; i < probe->inputs.size(); ++i) out.add("probe inputs", probe->inputs[i]);
  const auto named = layer->named_parameters();
  for (std::size_t i = 0; i < grads.size(); ++i) {
    // An expert without tokens gets no gradient on the per-expert path and zeros from a padded batched product.
    out.add("grad " + named[i].key(), grads[i].defined() ? grads[i] : torch::zeros_like(params[i]));
  }
  out.dropped = ri.dropped;
  out.capacity = ri.capacity;
  return out;
}

// Float64 throughout: the two paths compute the same sums in another order, so they agree to a few units of
// 1.1e-16 relative; 1e-12 relative to the larger of 1 and the reference's magnitude leaves a wide margin.
template <typename Layer>
void expect_paths_agree(Layer& layer, const torch::Tensor& x, const std::string& what) {
  auto probe = std::make_shared<Probe>();
  probe->record_probs = probe->record_choices = probe->record_expert_outputs = probe->record_inputs = true;
  for (const bool with_probe : {false, true}) {
    auto p = with_probe ? probe : std::make_shared<Probe>();
    const Reported ref = report(layer, false, x, p);
    const Reported got = report(layer, true, x, p);
    ASSERT_EQ(got.names, ref.names) << what;
    EXPECT_EQ(got.dropped, ref.dropped) << what;
    EXPECT_EQ(got.capacity, ref.capacity) << what;
    for (std::size_t i = 0; i < ref.tensors.size(); ++i) {
      ASSERT_EQ(got.tensors[i].sizes(), ref.tensors[i].sizes()) << what << ": " << ref.names[i];
      const double scale = std::max(1.0, ref.tensors[i].abs().max().item<double>());
      EXPECT_LT(max_abs_diff(got.tensors[i], ref.tensors[i]), 1e-12 * scale)
          << what << " (probe " << with_probe << "): " << ref.names[i];
    }
  }
}

TEST_F(BatchedPathTest, GatedMixtureEqualsPerExpertPath) {
  for (const bool keep : {false, true}) {
    for (const auto kind : {FFNKind::MLP, FFNKind::SwiGLU}) {
      GatedMixture gm(
          GatedMixtureOptions(6, 4).hidden(5).out_dim(3).temperature(0.7).router_bias(true).kind(kind).keep_expert_outputs(keep));
      gm->to(torch::kDouble);
      expect_paths_agree(gm, torch::randn({2, 5, 6}, torch::kDouble),
                         std::string("gated ") + ffn_kind_name(kind) + (keep ? " keep" : ""));
    }
  }
}

TEST_F(BatchedPathTest, SoftMoEEqualsPerExpertPath) {
  for (const bool keep : {false, true}) {
    SoftMoE moe(SoftMoEOptions(4, 3).slots(2).hidden(6).out_dim(5).keep_expert_outputs(keep));
    moe->to(torch::kDouble);
    expect_paths_agree(moe, torch::randn({2, 5, 4}, torch::kDouble), "soft [B, m, d]");
    expect_paths_agree(moe, torch::randn({7, 4}, torch::kDouble), "soft [T, d]");
  }
}

TEST_F(BatchedPathTest, SparseMoEEqualsPerExpertPathPaddedAndGrouped) {
  // Random routing of 16 tokens over 4 experts pads into one batched product; a router that sends almost every
  // token to expert 0 runs group by group. Top-1 and top-2, with and without capacity, clean and noisy.
  for (const bool unbalanced : {false, true}) {
    for (const std::int64_t k : {1, 2}) {
      for (const double cf : {0.0, 1.0}) {
        for (const bool noisy : {false, true}) {
          SparseMoE moe(SparseMoEOptions(6, 4).top_k(k).hidden(5).out_dim(3).capacity_factor(cf).noisy(noisy)
                            .keep_expert_outputs(true));
          moe->to(torch::kDouble);
          auto x = torch::randn({16, 6}, torch::kDouble);
          if (unbalanced) {
            torch::NoGradGuard ng;
            moe->router->weight.zero_();
            moe->router->weight[0].fill_(1.0);
            moe->router->weight[1].fill_(0.5);
            x = x.abs() + 0.5;
          }
          moe->train();  // noise only in training (no dropout here)
          const std::string what = std::string(unbalanced ? "unbalanced" : "random") + " k=" + std::to_string(k) +
                                   " cf=" + std::to_string(cf) + (noisy ? " noisy" : "");
          torch::manual_seed(7);
          const auto counts_t = moe->forward_moe(x).routing.expert_counts;
          const std::vector<std::int64_t> counts(counts_t.data_ptr<std::int64_t>(),
                                                 counts_t.data_ptr<std::int64_t>() + 4);
          // (With k = 2 of 4 experts no group exceeds T = N / 2 rows, so padding never doubles the rows.)
          if (cf == 0.0 && !noisy) EXPECT_EQ(BatchedExperts::grouped_uses_padding(counts), !unbalanced || k == 2) << what;
          expect_paths_agree(moe, x, what);
        }
      }
    }
  }
}

TEST_F(BatchedPathTest, Float32GatedHeadWithinRoundingOfTheReference) {
  // The vision study's gated head (8 experts 512-64-10) on 128 tokens in float32: both paths against the same
  // layer in float64. The batched path may not be less accurate than the per-expert one: its largest error is at
  // most 2x the reference path's plus a few ulps of the output's scale.
  GatedMixture gm(GatedMixtureOptions(512, 8).hidden(64).out_dim(10));
  GatedMixture gm64(GatedMixtureOptions(512, 8).hidden(64).out_dim(10));
  {
    torch::NoGradGuard ng;
    const auto src = gm->parameters(), dst = gm64->parameters();
    for (std::size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  gm64->to(torch::kDouble);
  gm64->options.batched_experts(false);
  const auto x = torch::relu(torch::randn({128, 512}));  // post-ReLU features, as the backbone gives
  torch::NoGradGuard ng;
  const auto exact = gm64->forward(x.to(torch::kDouble));
  gm->options.batched_experts(false);
  const double ref_err = max_abs_diff(gm->forward(x), exact);
  gm->options.batched_experts(true);
  const double new_err = max_abs_diff(gm->forward(x), exact);
  const double u = std::ldexp(1.0, -24);
  EXPECT_LE(new_err, 2 * ref_err + 4 * u * exact.abs().max().item<double>()) << "reference error " << ref_err;
  EXPECT_LT(new_err / exact.abs().max().item<double>(), 1e-5);
}

}  // namespace
}  // namespace moescope
