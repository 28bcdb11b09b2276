// Activation overlap and routing statistics against closed forms and hand-computed cases.
// Tolerances: every statistic is a float64 sum of a few hundred terms of size <= 1, so 1e-12 absolute covers the
// rounding; the random-vector check uses a few standard errors of the estimator (stated there).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "moescope/metrics/activations.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace {

constexpr double kTol = 1e-12;

TEST(ActivationOverlap, IdenticalExpertsGiveOne) {
  const int E = 4, T = 25, O = 6;
  std::mt19937 g(1);
  std::normal_distribution<double> n;
  std::vector<double> y(static_cast<std::size_t>(T * E * O));
  for (int t = 0; t < T; ++t) {
    std::vector<double> v(O);
    for (auto& x : v) x = n(g);
    for (int e = 0; e < E; ++e)
      for (int c = 0; c < O; ++c) y[static_cast<std::size_t>((t * E + e) * O + c)] = v[static_cast<std::size_t>(c)];
  }
  ActivationOverlapAccumulator acc(E);
  acc.add(y.data(), T, O);
  const ActivationOverlap r = acc.result();
  EXPECT_NEAR(r.mean_overlap, 1.0, kTol);
  EXPECT_NEAR(r.mso, 1.0, kTol);
  for (int i = 0; i < E; ++i)
    for (int j = 0; j < E; ++j) EXPECT_NEAR(r.overlap(i, j), 1.0, kTol);
  EXPECT_EQ(r.tokens, T);
  // No routing given: the routed statistics are undefined, not zero.
  EXPECT_TRUE(std::isnan(r.routed_mean_overlap));
  EXPECT_TRUE(std::isnan(r.routed_overlap(0, 1)));
}

TEST(ActivationOverlap, OrthogonalOutputRangesGiveZero) {
  // Expert e writes only to coordinates [2e, 2e + 2) of R^{2E}: its outputs span a subspace orthogonal to the
  // others', whatever the token, so every cosine is exactly 0.
  const int E = 3, T = 17, O = 2 * E;
  std::mt19937 g(2);
  std::normal_distribution<float> n;
  std::vector<float> y(static_cast<std::size_t>(T * E * O), 0.0f);
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e)
      for (int c = 2 * e; c < 2 * e + 2; ++c) y[static_cast<std::size_t>((t * E + e) * O + c)] = n(g);
  std::vector<std::int64_t> chosen;  // top-2: experts (t mod 3, (t+1) mod 3)
  for (int t = 0; t < T; ++t) chosen.insert(chosen.end(), {t % E, (t + 1) % E});
  ActivationOverlapAccumulator acc(E);
  acc.add(y.data(), T, O, chosen.data(), 2);
  const ActivationOverlap r = acc.result();
  EXPECT_NEAR(r.mean_overlap, 0.0, kTol);
  EXPECT_NEAR(r.mso, 0.0, kTol);
  EXPECT_NEAR(r.routed_mean_overlap, 0.0, kTol);
  for (int i = 0; i < E; ++i) {
    EXPECT_DOUBLE_EQ(r.overlap(i, i), 1.0);
    for (int j = 0; j < E; ++j)
      if (i != j) EXPECT_NEAR(r.overlap(i, j), 0.0, kTol);
  }
}

// 3 tokens x 2 experts in R^2, by hand:
//   t0: y0 = (1, 0), y1 = (1, 1)    cos = 1/sqrt(2)   chosen {0, 1}
//   t1: y0 = (0, 2), y1 = (0, -3)   cos = -1          chosen {0} (second slot dropped: -1)
//   t2: y0 = (3, 4), y1 = (4, 3)    cos = 24/25       chosen {1, 0}
TEST(ActivationOverlap, HandComputedThreeTokensTwoExperts) {
  const std::vector<double> y = {1, 0, 1, 1, /**/ 0, 2, 0, -3, /**/ 3, 4, 4, 3};
  const std::vector<std::int64_t> chosen = {0, 1, 0, -1, 1, 0};
  ActivationOverlapAccumulator acc(2);
  acc.add(y.data(), 3, 2, chosen.data(), 2);
  const ActivationOverlap r = acc.result();
  const double c0 = 1 / std::sqrt(2.0), c1 = -1, c2 = 0.96;
  EXPECT_NEAR(r.overlap(0, 1), (c0 + c1 + c2) / 3, kTol);
  EXPECT_NEAR(r.overlap(1, 0), (c0 + c1 + c2) / 3, kTol);
  EXPECT_NEAR(r.mean_overlap, (c0 + c1 + c2) / 3, kTol);
  EXPECT_NEAR(r.mso, (c0 * c0 + c1 * c1 + c2 * c2) / 3, kTol);
  EXPECT_NEAR(r.overlap_sq(0, 1), (c0 * c0 + c1 * c1 + c2 * c2) / 3, kTol);
  // Co-routed: t0 and t2 only.
  EXPECT_NEAR(r.routed_overlap(0, 1), (c0 + c2) / 2, kTol);
  EXPECT_NEAR(r.routed_mean_overlap, (c0 + c2) / 2, kTol);
  EXPECT_NEAR(r.routed_mso, (c0 * c0 + c2 * c2) / 2, kTol);
  EXPECT_EQ(r.routed_tokens(0, 1), 2);
  EXPECT_EQ(r.routed_tokens(0, 0), 3);  // tokens routed to expert 0
  EXPECT_EQ(r.routed_tokens(1, 1), 2);
  // Source-conditioned: row 0 = tokens routed to 0 (all three), row 1 = tokens routed to 1 (t0, t2).
  EXPECT_NEAR(r.source_overlap(0, 1), (c0 + c1 + c2) / 3, kTol);
  EXPECT_NEAR(r.source_overlap(1, 0), (c0 + c2) / 2, kTol);
  EXPECT_NEAR(r.source_mean_overlap, (c0 + c1 + c2 + c0 + c2) / 5, kTol);
  EXPECT_NEAR(r.mean_norm[0], (1 + 2 + 5) / 3.0, kTol);
  EXPECT_NEAR(r.mean_norm[1], (std::sqrt(2.0) + 3 + 5) / 3.0, kTol);
}

TEST(ActivationOverlap, ChunkedEqualsOneShot) {
  const int E = 5, T = 37, O = 7, k = 2;
  std::mt19937 g(3);
  std::normal_distribution<float> n;
  std::uniform_int_distribution<int> pick(-1, E - 1);
  std::vector<float> y(static_cast<std::size_t>(T * E * O));
  for (auto& v : y) v = n(g) + 0.3f;  // a shared offset makes the cosines positive on average
  std::vector<std::int64_t> chosen(static_cast<std::size_t>(T * k));
  for (auto& c : chosen) c = pick(g);
  ActivationOverlapAccumulator whole(E), parts(E);
  whole.add(y.data(), T, O, chosen.data(), k);
  const int cuts[] = {0, 1, 10, 26, T};
  for (int c = 0; c + 1 < 5; ++c)
    parts.add(y.data() + cuts[c] * E * O, cuts[c + 1] - cuts[c], O, chosen.data() + cuts[c] * k, k);
  const ActivationOverlap a = whole.result(), b = parts.result();
  EXPECT_GT(a.mean_overlap, 0.0);
  EXPECT_NEAR(a.mean_overlap, b.mean_overlap, kTol);
  EXPECT_NEAR(a.mso, b.mso, kTol);
  EXPECT_NEAR(a.routed_mean_overlap, b.routed_mean_overlap, kTol);
  EXPECT_NEAR(a.source_mean_overlap, b.source_mean_overlap, kTol);
  EXPECT_LT((a.overlap - b.overlap).cwiseAbs().maxCoeff(), kTol);
  EXPECT_EQ((a.routed_tokens - b.routed_tokens).cwiseAbs().maxCoeff(), 0.0);
  // The routed matrix against a direct loop over the tokens.
  for (int i = 0; i < E; ++i)
    for (int j = i + 1; j < E; ++j) {
      double s = 0, cnt = 0;
      for (int t = 0; t < T; ++t) {
        bool hi = false, hj = false;
        for (int q = 0; q < k; ++q) {
          hi |= chosen[static_cast<std::size_t>(t * k + q)] == i;
          hj |= chosen[static_cast<std::size_t>(t * k + q)] == j;
        }
        if (!hi || !hj) continue;
        double d = 0, ni = 0, nj = 0;
        for (int c = 0; c < O; ++c) {
          const double a_ = y[static_cast<std::size_t>((t * E + i) * O + c)], b_ = y[static_cast<std::size_t>((t * E + j) * O + c)];
          d += a_ * b_, ni += a_ * a_, nj += b_ * b_;
        }
        s += d / std::sqrt(ni * nj), cnt += 1;
      }
      if (cnt > 0) EXPECT_NEAR(a.routed_overlap(i, j), s / cnt, 1e-12);
      else EXPECT_TRUE(std::isnan(a.routed_overlap(i, j)));
    }
}

TEST(ActivationOverlap, IndependentGaussianOutputsHaveMsoOneOverDim) {
  // Independent isotropic vectors in R^O: cos^2 ~ Beta(1/2, (O-1)/2), mean 1/O, variance
  // 2(O-1)/(O^2 (O+2)). Averaged over T tokens (pairs of a token are treated as one draw, a conservative count),
  // the standard error is sqrt(var/T); allow 5 of them. The mean cosine is 0 with variance 1/O.
  const int E = 4, T = 3000, O = 16;
  std::mt19937 g(4);
  std::normal_distribution<double> n;
  std::vector<double> y(static_cast<std::size_t>(T * E * O));
  for (auto& v : y) v = n(g);
  ActivationOverlapAccumulator acc(E);
  acc.add(y.data(), T, O);
  const ActivationOverlap r = acc.result();
  const double var = 2.0 * (O - 1) / (double(O) * O * (O + 2));
  EXPECT_NEAR(r.mso, 1.0 / O, 5 * std::sqrt(var / T));
  EXPECT_NEAR(r.mean_overlap, 0.0, 5 * std::sqrt(1.0 / O / T));
}

TEST(ActivationOverlap, ZeroOutputSkipsItsPairs) {
  // Token 1 has expert 1 silent (a ReLU expert can output exactly 0): its cosines are undefined and skipped.
  const std::vector<double> y = {1, 0, 1, 0, 0, 1, /**/ 1, 0, 0, 0, 1, 0};  // 2 tokens x 3 experts x 2
  ActivationOverlapAccumulator acc(3);
  acc.add(y.data(), 2, 2);
  const ActivationOverlap r = acc.result();
  EXPECT_NEAR(r.overlap(0, 1), 1.0, kTol);  // token 0 only
  EXPECT_NEAR(r.overlap(1, 2), 0.0, kTol);  // token 0 only
  EXPECT_NEAR(r.overlap(0, 2), 0.5, kTol);  // token 0: 0, token 1: 1
  EXPECT_EQ(r.pair_tokens(0, 1), 1);
  EXPECT_EQ(r.pair_tokens(0, 2), 2);
  EXPECT_NEAR(r.mean_overlap, (1 + 0 + 0 + 1) / 4.0, kTol);
}

TEST(ActivationOverlap, RejectsBadArguments) {
  EXPECT_THROW(ActivationOverlapAccumulator(1), std::invalid_argument);
  ActivationOverlapAccumulator acc(2);
  const std::vector<double> y(8, 1.0);
  const std::vector<std::int64_t> bad = {0, 2};
  EXPECT_THROW(acc.add(y.data(), 1, 4, bad.data(), 2), std::invalid_argument);
  acc.add(y.data(), 1, 4);
  EXPECT_THROW(acc.add(y.data(), 2, 2), std::invalid_argument);  // width changed
}

TEST(RoutingStats, HandComputed) {
  // probs t0 (0.5, 0.5), t1 (1, 0), t2 (0.25, 0.75); top-1 choices 0, 0, 1; t1's assignment dropped.
  const std::vector<float> p = {0.5f, 0.5f, 1.0f, 0.0f, 0.25f, 0.75f};
  const std::vector<std::int64_t> chosen = {0, 0, 1};
  const std::vector<std::uint8_t> dropped = {0, 1, 0};
  RoutingAccumulator acc(2);
  acc.add(p.data(), chosen.data(), dropped.data(), 3, 1);
  const RoutingStats r = acc.result();
  const double h2 = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75));
  EXPECT_NEAR(r.router_entropy, (std::log(2.0) + 0 + h2) / 3, 1e-7);  // probabilities are float32
  // Unbiased variance over the 2 experts per token: 0, 0.5, 0.125 (exact in float32).
  EXPECT_NEAR(r.routing_variance, (0.0 + 0.5 + 0.125) / 3, kTol);
  EXPECT_NEAR(r.importance[0], 1.75 / 3, 1e-7);
  EXPECT_NEAR(r.importance[1], 1.25 / 3, 1e-7);
  EXPECT_NEAR(r.load[0], 2.0 / 3, kTol);
  EXPECT_NEAR(r.load[1], 1.0 / 3, kTol);
  EXPECT_EQ(r.dropped, 1);
  EXPECT_NEAR(r.dropped_fraction, 1.0 / 3, kTol);
  EXPECT_EQ(r.tokens, 3);
}

TEST(RoutingStats, UniformRoutingHasEntropyLogE) {
  const int E = 8, T = 10;
  std::vector<double> p(static_cast<std::size_t>(T * E), 1.0 / E);
  RoutingAccumulator acc(E);
  acc.add(p.data(), nullptr, nullptr, T, 0);
  EXPECT_NEAR(acc.result().router_entropy, std::log(8.0), kTol);
  EXPECT_NEAR(acc.result().routing_variance, 0.0, kTol);
  EXPECT_TRUE(std::isnan(acc.result().load[0]));  // no choices seen
}

TEST(CompareSpaces, LinearRelationGivesOneAndPoolsLayers) {
  // Activation overlap = 0.5 + 2 * weight overlap (a monotone, linear map): r = rho = 1 per layer and pooled.
  std::vector<LayerOverlaps> layers;
  std::mt19937 g(5);
  std::uniform_real_distribution<double> u(-0.2, 0.2);
  for (int l = 0; l < 3; ++l) {
    LayerOverlaps lo;
    lo.key = "layer_0" + std::to_string(l);
    const int E = 4;
    lo.weight_overlap = Eigen::MatrixXd::Identity(E, E);
    for (int i = 0; i < E; ++i)
      for (int j = i + 1; j < E; ++j) lo.weight_overlap(i, j) = lo.weight_overlap(j, i) = u(g);
    lo.activation_overlap = (0.5 + 2 * lo.weight_overlap.array()).matrix();
    lo.weight_mso = 0.01 * (l + 1);
    lo.activation_mso = 0.6 - 0.1 * l;  // decreasing with weight MSO: r = -1 across layers
    layers.push_back(lo);
  }
  const SpaceComparison c = compare_spaces(layers);
  ASSERT_EQ(c.layers.size(), 3u);
  EXPECT_EQ(c.layers[0].weight.size(), 6u);
  EXPECT_EQ(c.pairs, 18);
  EXPECT_NEAR(c.layers[1].pearson_r, 1.0, 1e-12);
  EXPECT_NEAR(c.layers[1].spearman_rho, 1.0, 1e-12);
  EXPECT_NEAR(c.pearson_r, 1.0, 1e-12);
  EXPECT_NEAR(c.layer_mso_pearson_r, -1.0, 1e-12);
  EXPECT_NEAR(c.layer_mso_spearman_rho, -1.0, 1e-12);
  // Two experts: one pair, no correlation defined.
  LayerOverlaps two{"layer_09", Eigen::MatrixXd::Identity(2, 2), Eigen::MatrixXd::Identity(2, 2), 0, 0};
  EXPECT_TRUE(std::isnan(compare_spaces({two}).layers[0].pearson_r));
  LayerOverlaps bad{"layer_10", Eigen::MatrixXd::Identity(2, 2), Eigen::MatrixXd::Identity(3, 3), 0, 0};
  EXPECT_THROW(compare_spaces({bad}), InputError);
}

}  // namespace
}  // namespace moescope
