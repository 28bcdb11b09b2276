#include "moescope/train/regularisers.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "moescope/model/moe.hpp"
#include "support/finite_difference.hpp"
#include "support/seeded.hpp"

namespace moescope {
namespace {

using testing::central_gradient;
using testing::max_abs_diff;

class RegularisersTest : public testing::SeededTest {};

const auto kDoubleOptions = torch::TensorOptions().dtype(torch::kDouble);

// Central differences of a scalar function of x (float64), element by element, against autograd.
// Step h = 1e-6: truncation error O(h^2 f''') ~ 1e-12 and rounding error O(eps |f| / h) ~ 1e-10 for the O(1)
// values used here, so 1e-6 relative (absolute below 1) leaves a wide margin and still catches any real
// gradient bug.
void expect_gradient_matches(const std::function<torch::Tensor(const torch::Tensor&)>& f, const torch::Tensor& x0,
                             double h = 1e-6, double tol = 1e-6) {
  ASSERT_EQ(x0.scalar_type(), torch::kDouble);
  auto x = x0.detach().clone().requires_grad_(true);
  auto y = f(x);
  ASSERT_EQ(y.dim(), 0);
  const auto g = torch::autograd::grad({y}, {x})[0].reshape({-1});
  const auto fd = central_gradient(f, x0, h).reshape({-1});
  for (std::int64_t n = 0; n < fd.numel(); ++n) {
    const double numeric = fd[n].item<double>();
    const double analytic = g[n].item<double>();
    EXPECT_NEAR(analytic, numeric, tol * std::max(1.0, std::abs(numeric))) << "element " << n;
  }
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<double> row(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// ---- Switch load balancing -------------------------------------------------------------------------

TEST_F(RegularisersTest, LoadBalanceUniformTop1IsOne) {
  const std::int64_t T = 12, N = 4;
  auto idx = torch::arange(T, torch::kLong).remainder(N).unsqueeze(1);  // each expert 3 times
  // Uniform choices make f_i = 1/N, so the loss is sum_i P_i = 1 whatever the probabilities.
  const auto uniform = torch::full({T, N}, 1.0 / N, kDoubleOptions);
  EXPECT_NEAR(switch_load_balancing_loss(uniform, idx, N).item<double>(), 1.0, 1e-15);
  const auto random = torch::softmax(torch::randn({T, N}, kDoubleOptions), 1);
  EXPECT_NEAR(switch_load_balancing_loss(random, idx, N).item<double>(), 1.0, 1e-14);
}

TEST_F(RegularisersTest, LoadBalanceCollapsedRoutingIsN) {
  // All tokens to expert 2 with probability 1: f = P = e_2, loss = N.
  const std::int64_t T = 5, N = 6;
  auto probs = torch::zeros({T, N}, kDoubleOptions);
  probs.select(1, 2).fill_(1.0);
  const auto idx = torch::full({T, 1}, 2, torch::kLong);
  EXPECT_NEAR(switch_load_balancing_loss(probs, idx, N).item<double>(), 6.0, 1e-14);
}

TEST_F(RegularisersTest, LoadBalanceTopKMatchesLoops) {
  const std::int64_t T = 7, N = 5, k = 2;
  const auto probs = torch::softmax(torch::randn({T, N}, kDoubleOptions), 1);
  const auto idx = std::get<1>(probs.topk(k, 1));
  std::vector<double> f(N, 0.0), P(N, 0.0);
  auto pa = probs.accessor<double, 2>();
  auto ia = idx.accessor<std::int64_t, 2>();
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t s = 0; s < k; ++s) f[ia[t][s]] += 1.0 / (T * k);
    for (std::int64_t e = 0; e < N; ++e) P[e] += pa[t][e] / T;
  }
  const double expected = N * dot(f, P);
  EXPECT_NEAR(switch_load_balancing_loss(probs, idx, N).item<double>(), expected, 1e-14);
  // [B, S, N] probabilities with [B, S, k] indices flatten to tokens.
  EXPECT_NEAR(switch_load_balancing_loss(probs.view({1, T, N}), idx.view({1, T, k}), N).item<double>(), expected,
              1e-14);
}

TEST_F(RegularisersTest, LoadBalanceGradientIsNfOverT) {
  // f carries no gradient: d/dp_{t,i} of N sum_i f_i mean_t p_{t,i} is N f_i / T for every token.
  const std::int64_t T = 6, N = 4, k = 2;
  auto probs = torch::softmax(torch::randn({T, N}, kDoubleOptions), 1).requires_grad_(true);
  const auto idx = std::get<1>(probs.detach().topk(k, 1));
  auto loss = switch_load_balancing_loss(probs, idx, N);
  loss.backward();
  std::vector<double> f(N, 0.0);
  auto ia = idx.accessor<std::int64_t, 2>();
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t s = 0; s < k; ++s) f[ia[t][s]] += 1.0 / (T * k);
  }
  auto g = probs.grad().accessor<double, 2>();
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t e = 0; e < N; ++e) EXPECT_NEAR(g[t][e], N * f[e] / T, 1e-15) << t << "," << e;
  }
}

TEST_F(RegularisersTest, LoadBalanceRoutingWithoutIndicesUsesArgmax) {
  const std::int64_t T = 9, N = 3;
  RoutingInfo r;
  r.probs = torch::softmax(torch::randn({T, N}, kDoubleOptions), 1);
  const auto top1 = r.probs.argmax(1, true);
  EXPECT_NEAR(switch_load_balancing_loss(r, N).item<double>(),
              switch_load_balancing_loss(r.probs, top1, N).item<double>(), 1e-15);
  r.topk_indices = torch::zeros({T, 1}, torch::kLong);
  EXPECT_NEAR(switch_load_balancing_loss(r, N).item<double>(), N * r.probs.select(1, 0).mean().item<double>(),
              1e-14);
}

TEST_F(RegularisersTest, LoadBalanceRejectsBadInput) {
  const auto probs = torch::softmax(torch::randn({4, 3}, kDoubleOptions), 1);
  EXPECT_THROW(switch_load_balancing_loss(probs, torch::full({4, 1}, 3, torch::kLong), 3), c10::Error);
  EXPECT_THROW(switch_load_balancing_loss(probs, torch::full({4, 1}, -1, torch::kLong), 3), c10::Error);
  EXPECT_THROW(switch_load_balancing_loss(probs, torch::zeros({4, 1}, torch::kLong), 4), c10::Error);
  EXPECT_THROW(switch_load_balancing_loss(probs, torch::zeros({4, 1}, kDoubleOptions), 3), c10::Error);
  EXPECT_THROW(switch_load_balancing_loss(RoutingInfo{}, 3), c10::Error);
}

// ---- Router z-loss ---------------------------------------------------------------------------------

TEST_F(RegularisersTest, ZLossOfZeroLogitsIsLogNSquared) {
  const std::int64_t N = 8;
  const double expected = std::log(8.0) * std::log(8.0);
  EXPECT_NEAR(router_z_loss(torch::zeros({5, N}, kDoubleOptions)).item<double>(), expected, 1e-14);
  EXPECT_NEAR(router_z_loss(torch::zeros({2, 3, N})).item<double>(), expected, 1e-5);  // float32, [B, S, N]
}

TEST_F(RegularisersTest, ZLossMatchesLoopsAndGradient) {
  const std::int64_t T = 6, N = 5;
  const auto x = 2.0 * torch::randn({T, N}, kDoubleOptions);
  auto xa = x.accessor<double, 2>();
  double expected = 0.0;
  for (std::int64_t t = 0; t < T; ++t) {
    double m = xa[t][0];
    for (std::int64_t e = 1; e < N; ++e) m = std::max(m, xa[t][e]);
    double s = 0.0;
    for (std::int64_t e = 0; e < N; ++e) s += std::exp(xa[t][e] - m);
    const double lse = m + std::log(s);
    expected += lse * lse / T;
  }
  EXPECT_NEAR(router_z_loss(x).item<double>(), expected, 1e-13);
  expect_gradient_matches([](const torch::Tensor& v) { return router_z_loss(v); }, x);
}

// ---- Weight orthogonality --------------------------------------------------------------------------

TEST_F(RegularisersTest, WeightOrthogonalityOfOrthogonalWeightsIsZero) {
  // Four 2x3 matrices with disjoint supports are orthogonal as flattened vectors.
  std::vector<torch::Tensor> w;
  for (std::int64_t e = 0; e < 4; ++e) {
    auto m = torch::zeros({2, 3}, kDoubleOptions);
    m.view({-1})[e] = 1.5 + e;
    if (e == 0) m.view({-1})[5] = -2.0;
    w.push_back(m);
  }
  EXPECT_NEAR(weight_orthogonality_loss(w).item<double>(), 0.0, 1e-15);
}

TEST_F(RegularisersTest, WeightOrthogonalityOfIdenticalWeights) {
  // Every pair has <u_i, u_j>^2 = 1: E(E-1)/2 pairs over E^2 is (E-1)/(2E), whatever the scale of each copy.
  const auto base = torch::randn({3, 4}, kDoubleOptions);
  for (std::int64_t E : {1, 2, 3, 5}) {
    std::vector<torch::Tensor> w;
    for (std::int64_t e = 0; e < E; ++e) w.push_back(base * (e % 2 == 0 ? 0.5 + e : -(1.0 + e)));
    EXPECT_NEAR(weight_orthogonality_loss(w).item<double>(), (E - 1.0) / (2.0 * E), 1e-14) << "E = " << E;
  }
}

TEST_F(RegularisersTest, WeightOrthogonalityMatchesLoopsAndGradient) {
  const std::int64_t E = 4;
  std::vector<torch::Tensor> w;
  for (std::int64_t e = 0; e < E; ++e) w.push_back(torch::randn({3, 2}, kDoubleOptions) + 0.3);
  double expected = 0.0;
  for (std::int64_t i = 0; i < E; ++i) {
    for (std::int64_t j = i + 1; j < E; ++j) {
      const auto a = row(w[i]), b = row(w[j]);
      const double c = dot(a, b) / std::sqrt(dot(a, a) * dot(b, b));
      expected += c * c / (E * E);
    }
  }
  EXPECT_NEAR(weight_orthogonality_loss(w).item<double>(), expected, 1e-14);

  const auto stacked = torch::stack(w);  // [E, 3, 2]
  expect_gradient_matches(
      [E](const torch::Tensor& s) {
        std::vector<torch::Tensor> parts;
        for (std::int64_t e = 0; e < E; ++e) parts.push_back(s[e]);
        return weight_orthogonality_loss(parts);
      },
      stacked);
}

TEST_F(RegularisersTest, WeightOrthogonalityEdgeCases) {
  // A zero matrix contributes nothing, and its gradient stays finite.
  auto zero = torch::zeros({2, 2}, kDoubleOptions).requires_grad_(true);
  auto other = torch::randn({2, 2}, kDoubleOptions);
  auto loss = weight_orthogonality_loss({zero, other, other});
  EXPECT_NEAR(loss.item<double>(), 1.0 / 9.0, 1e-14);
  loss.backward();
  EXPECT_TRUE(torch::isfinite(zero.grad()).all().item<bool>());
  EXPECT_THROW(weight_orthogonality_loss({}), c10::Error);
  EXPECT_THROW(weight_orthogonality_loss({torch::ones({2, 2}), torch::ones({2, 3})}), c10::Error);
}

TEST_F(RegularisersTest, ExpertParametersCollectsNamedWeights) {
  SparseMoE layer(SparseMoEOptions(6, 3).hidden(5));
  const auto fc1 = expert_parameters(layer->experts, "fc1.weight");
  ASSERT_EQ(fc1.size(), 3U);
  for (std::size_t e = 0; e < fc1.size(); ++e) {
    EXPECT_EQ(fc1[e].sizes(), torch::IntArrayRef({5, 6}));
    EXPECT_TRUE(fc1[e].is_same(layer->experts[e]->named_parameters()["fc1.weight"]));
  }
  EXPECT_THROW(expert_parameters(layer->experts, "no.such.weight"), c10::Error);
  // A loss built from them reaches the experts' parameters.
  weight_orthogonality_loss(fc1).backward();
  EXPECT_TRUE(fc1[0].grad().defined());
}

// ---- Guo et al. orthogonality ----------------------------------------------------------------------

// Explicit per-token Gram-Schmidt in doubles, the independent reference.
double guo_orth_loops(const torch::Tensor& x, double eps = 1e-6) {
  const auto T = x.size(0), k = x.size(1);
  double total = 0.0;
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t i = 0; i < k; ++i) {
      std::vector<std::vector<double>> basis;
      for (std::int64_t j = 0; j < k; ++j) {
        if (j == i) continue;
        auto r = row(x[t][j]);
        for (const auto& u : basis) {
          const double c = dot(r, u);
          for (std::size_t d = 0; d < r.size(); ++d) r[d] -= c * u[d];
        }
        const double n = std::sqrt(dot(r, r));
        if (n <= eps) continue;
        for (auto& v : r) v /= n;
        basis.push_back(r);
      }
      const auto xi = row(x[t][i]);
      for (const auto& u : basis) total += dot(u, xi) * dot(u, xi);
    }
  }
  return total / static_cast<double>(k * T);
}

TEST_F(RegularisersTest, GuoOrthogonalityOfOrthogonalOutputsIsZero) {
  // Token t's k = 3 outputs are scaled, rotated coordinate axes: mutually orthogonal.
  const std::int64_t T = 4, k = 3, d = 5;
  auto x = torch::zeros({T, k, d}, kDoubleOptions);
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t i = 0; i < k; ++i) x[t][i][(t + i) % d] = (i + 1.0) * (t % 2 == 0 ? 1.0 : -2.0);
  }
  EXPECT_NEAR(guo_orthogonality_loss(x).item<double>(), 0.0, 1e-15);
}

TEST_F(RegularisersTest, GuoOrthogonalityOfParallelOutputsIsMeanSquaredNorm) {
  // x_{t,i} = c_{t,i} v_t: the others span v_t, so each projection keeps all of x_{t,i} and
  // L_o = 1/(kT) sum_t sum_i ||x_{t,i}||^2 (the later parallel residuals are 0 and add no basis vector).
  const std::int64_t T = 3, k = 3, d = 4;
  const auto v = torch::randn({T, 1, d}, kDoubleOptions);
  const auto c = torch::tensor({1.0, -2.0, 0.5, 3.0, 1.5, -1.0, 0.25, 2.0, -0.75}, kDoubleOptions).view({T, k, 1});
  const auto x = c * v;
  double expected = 0.0;
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t i = 0; i < k; ++i) {
      const auto xi = row(x[t][i]);
      expected += dot(xi, xi) / (k * T);
    }
  }
  EXPECT_NEAR(guo_orthogonality_loss(x).item<double>(), expected, 1e-12 * expected);
}

TEST_F(RegularisersTest, GuoOrthogonalityMatchesLoopsAndGradient) {
  for (std::int64_t k : {2, 3, 4}) {
    const auto x = torch::randn({5, k, 6}, kDoubleOptions);
    EXPECT_NEAR(guo_orthogonality_loss(x).item<double>(), guo_orth_loops(x), 1e-13) << "k = " << k;
  }
  const auto x = torch::randn({3, 3, 4}, kDoubleOptions);
  expect_gradient_matches([](const torch::Tensor& v) { return guo_orthogonality_loss(v); }, x);
}

TEST_F(RegularisersTest, GuoOrthogonalityEdgeCases) {
  // k = 1 has no other expert to project on.
  EXPECT_EQ(guo_orthogonality_loss(torch::randn({4, 1, 3}, kDoubleOptions)).item<double>(), 0.0);
  // A dropped assignment's zero output adds no direction and has a finite gradient.
  auto x = torch::randn({2, 3, 4}, kDoubleOptions);
  x[0][1].zero_();
  EXPECT_NEAR(guo_orthogonality_loss(x).item<double>(), guo_orth_loops(x), 1e-13);
  auto xg = x.clone().requires_grad_(true);
  guo_orthogonality_loss(xg).backward();
  EXPECT_TRUE(torch::isfinite(xg.grad()).all().item<bool>());
  EXPECT_THROW(guo_orthogonality_loss(torch::randn({4, 3}, kDoubleOptions)), c10::Error);
  EXPECT_THROW(guo_orthogonality_loss(torch::Tensor()), c10::Error);
}

// ---- Guo et al. variance ---------------------------------------------------------------------------

double guo_var_loops(const torch::Tensor& logits) {
  const auto T = logits.size(0), N = logits.size(1);
  double total = 0.0;
  for (std::int64_t t = 0; t < T; ++t) {
    auto x = row(logits[t]);
    double z = 0.0;
    for (auto v : x) z += std::exp(v);
    double mean = 0.0;
    for (auto& v : x) mean += (v = std::exp(v) / z) / N;
    double var = 0.0;
    for (auto v : x) var += (v - mean) * (v - mean) / (N - 1);
    total += var / T;
  }
  return total;
}

TEST_F(RegularisersTest, GuoVarianceClosedForms) {
  // Uniform routing has no variance; one-hot routing s = e_1 has mean 1/N and
  // unbiased variance ((1 - 1/N)^2 + (N-1)/N^2) / (N-1) = 1/N.
  EXPECT_NEAR(guo_variance(torch::full({3, 4}, 0.7, kDoubleOptions)).item<double>(), 0.0, 1e-16);
  auto hard = torch::full({2, 4}, -1000.0, kDoubleOptions);
  hard.select(1, 1).fill_(0.0);
  EXPECT_NEAR(guo_variance(hard).item<double>(), 0.25, 1e-14);
  EXPECT_THROW(guo_variance(torch::zeros({3, 1}, kDoubleOptions)), c10::Error);
}

TEST_F(RegularisersTest, GuoVarianceMatchesLoopsAndGradient) {
  const auto x = torch::randn({6, 5}, kDoubleOptions);
  EXPECT_NEAR(guo_variance(x).item<double>(), guo_var_loops(x), 1e-15);
  EXPECT_NEAR(guo_variance(x.view({2, 3, 5})).item<double>(), guo_var_loops(x), 1e-15);
  expect_gradient_matches([](const torch::Tensor& v) { return guo_variance(v); }, x);
}

// ---- Combination -----------------------------------------------------------------------------------

TEST_F(RegularisersTest, CombinedTermsWeightAndSign) {
  const std::int64_t T = 6, N = 4, k = 2;
  RoutingInfo r;
  r.logits = torch::randn({T, N}, kDoubleOptions).requires_grad_(true);
  r.probs = torch::softmax(r.logits, 1);
  r.topk_indices = std::get<1>(r.probs.detach().topk(k, 1));
  r.expert_outputs = torch::randn({T, k, 3}, kDoubleOptions);
  std::vector<torch::Tensor> w{torch::randn({3, 2}, kDoubleOptions), torch::randn({3, 2}, kDoubleOptions), torch::randn({3, 2}, kDoubleOptions),
                               torch::randn({3, 2}, kDoubleOptions)};

  RegulariserWeights weights;
  weights.load_balance = 0.01;
  weights.z_loss = 0.001;
  weights.weight_orth = 0.5;
  weights.guo_orth = 0.2;
  weights.guo_var = 0.3;
  const auto terms = regulariser_terms(r, N, weights, w);

  const double lb = switch_load_balancing_loss(r, N).item<double>();
  const double z = router_z_loss(r.logits).item<double>();
  const double wo = weight_orthogonality_loss(w).item<double>();
  const double go = guo_orth_loops(r.expert_outputs);
  const double gv = guo_var_loops(r.logits.detach());
  EXPECT_NEAR(terms.load_balance, lb, 1e-15);
  EXPECT_NEAR(terms.z_loss, z, 1e-15);
  EXPECT_NEAR(terms.weight_orth, wo, 1e-15);
  EXPECT_NEAR(terms.guo_orth, go, 1e-13);
  EXPECT_NEAR(terms.guo_var, gv, 1e-15);
  EXPECT_NEAR(terms.total.item<double>(), 0.01 * lb + 0.001 * z + 0.5 * wo + 0.2 * go - 0.3 * gv, 1e-13);

  // The variance term lowers the loss, so its gradient pushes routing towards higher variance.
  RegulariserWeights var_only;
  var_only.guo_var = 1.0;
  const auto v = regulariser_terms(r, N, var_only);
  auto g_total = torch::autograd::grad({v.total}, {r.logits})[0];
  auto g_var = torch::autograd::grad({guo_variance(r.logits)}, {r.logits})[0];
  EXPECT_LT(max_abs_diff(g_total, -g_var), 1e-15);
  EXPECT_TRUE(std::isnan(v.load_balance) && std::isnan(v.z_loss) && std::isnan(v.weight_orth) &&
              std::isnan(v.guo_orth));
}

TEST_F(RegularisersTest, CombinedTermsOffAndMissingInputs) {
  RoutingInfo r;
  r.logits = torch::randn({3, 4});
  r.probs = torch::softmax(r.logits, 1);
  const auto none = regulariser_terms(r, 4, RegulariserWeights{});
  EXPECT_EQ(none.total.item<double>(), 0.0);
  EXPECT_EQ(none.total.dim(), 0);
  EXPECT_TRUE(std::isnan(none.load_balance) && std::isnan(none.guo_var));

  RegulariserWeights orth;
  orth.guo_orth = 1e-4;
  EXPECT_THROW(regulariser_terms(r, 4, orth), c10::Error);  // no expert_outputs
  RegulariserWeights wo;
  wo.weight_orth = 1e-2;
  EXPECT_THROW(regulariser_terms(r, 4, wo), c10::Error);  // no expert weights
  EXPECT_THROW(regulariser_terms(RoutingInfo{}, 4, wo), c10::Error);
}

TEST_F(RegularisersTest, CombinedTermsOnSparseMoELayer) {
  const std::int64_t T = 10, d = 6, E = 4;
  SparseMoE layer(SparseMoEOptions(d, E).top_k(2).hidden(8).keep_expert_outputs(true));
  const auto out = layer->forward_moe(torch::randn({2, T / 2, d}));
  RegulariserWeights weights;
  weights.load_balance = 1e-2;
  weights.z_loss = 1e-3;
  weights.weight_orth = 1e-2;
  weights.guo_orth = 1e-4;
  weights.guo_var = 1e-3;
  const auto fc1 = expert_parameters(layer->experts, "fc1.weight");
  const auto terms = regulariser_terms(out.routing, E, weights, fc1);
  EXPECT_NEAR(terms.guo_orth, guo_orth_loops(out.routing.expert_outputs.detach()), 1e-5 * (1.0 + terms.guo_orth));
  EXPECT_NEAR(terms.guo_var, guo_var_loops(out.routing.logits.detach()), 1e-6);
  EXPECT_GT(terms.load_balance, 0.0);
  terms.total.backward();
  EXPECT_TRUE(layer->router->weight.grad().defined());
  EXPECT_TRUE(fc1[0].grad().defined());
  EXPECT_GT(layer->router->weight.grad().abs().sum().item<double>(), 0.0);
}

TEST_F(RegularisersTest, ImportanceCvSquaredClosedForms) {
  const std::int64_t N = 4;
  // Uniform importance: 0. All mass on one expert: importance (T, 0, 0, 0), mean T/N, unbiased variance
  // (T^2 (1 - 1/N)^2 + (N - 1) T^2 / N^2) / (N - 1) = T^2 / N, so CV^2 = (T^2 / N) / (T^2 / N^2) = N.
  EXPECT_NEAR(importance_cv_squared(torch::full({6, N}, 0.25, kDoubleOptions)).item<double>(), 0.0, 1e-15);
  auto onehot = torch::zeros({6, N}, kDoubleOptions);
  onehot.select(1, 2).fill_(1.0);
  EXPECT_NEAR(importance_cv_squared(onehot).item<double>(), static_cast<double>(N), 1e-12);
  // Against numbers worked by hand: importance (0.9, 0.6, 0.3, 0.2), mean 0.5, unbiased var 0.3 / 3 = 0.1.
  const auto p = torch::tensor({{0.5, 0.2, 0.1, 0.2}, {0.4, 0.4, 0.2, 0.0}}, kDoubleOptions);
  EXPECT_NEAR(importance_cv_squared(p).item<double>(), 0.1 / 0.25, 1e-12);
}

}  // namespace
}  // namespace moescope
