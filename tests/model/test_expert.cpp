#include "moescope/model/expert.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/seeded.hpp"

namespace moescope {
namespace {

using testing::max_abs_diff;
using testing::parameter_count;
using testing::parameter_shapes;

class FFNTest : public testing::SeededTest {};

TEST_F(FFNTest, MLPNamesShapesAndForward) {
  FFN ffn(FFNOptions(6, 4).out_dim(3));
  const auto s = parameter_shapes(*ffn);
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
  const auto s = parameter_shapes(*ffn);
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
  const auto s = parameter_shapes(*list);
  EXPECT_EQ(s.count("0.fc1.weight"), 1u);
  EXPECT_EQ(s.count("1.fc2.bias"), 1u);
  EXPECT_EQ(s.size(), 8u);
}

TEST_F(FFNTest, ParameterCountsMatchModules) {
  for (const auto& o : {FFNOptions(512, 64).out_dim(10), FFNOptions(16, 48).kind(FFNKind::SwiGLU),
                        FFNOptions(16, 48).kind(FFNKind::SwiGLU).bias(false)}) {
    FFN ffn(o);
    EXPECT_EQ(ffn_params(o), parameter_count(*ffn));
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
    const std::int64_t n = parameter_count(*ffn);
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


// ---------------------------------------------------------------------------------------------- BatchedExperts

class BatchedExpertsTest : public testing::SeededTest {};

// The reference: each expert's own FFN::forward on every token, [T, E, O].
torch::Tensor each_expert(const torch::nn::ModuleList& experts, const torch::Tensor& x) {
  std::vector<torch::Tensor> ys;
  for (std::size_t e = 0; e < experts->size(); ++e) ys.push_back(detail::run_expert(experts, static_cast<std::int64_t>(e), x));
  return torch::stack(ys, 1);
}

// Every expert kind, activation and bias setting; out_dim 0 (= dim) once.
std::vector<FFNOptions> expert_configs() {
  return {FFNOptions(6, 5).out_dim(3),
          FFNOptions(6, 5).out_dim(3).activation(Activation::GELU),
          FFNOptions(6, 5).activation(Activation::SiLU).bias(false),
          FFNOptions(6, 5).out_dim(3).kind(FFNKind::SwiGLU),
          FFNOptions(6, 5).out_dim(3).kind(FFNKind::SwiGLU).bias(false)};
}

// Float64 experts, packed again after to() (so the tests below run the uncopied stacking; PackedParameters*
// compares it with the copying one).
torch::nn::ModuleList double_experts(const FFNOptions& o, std::int64_t n) {
  auto experts = make_experts(o, n);
  experts->to(torch::kDouble);
  pack_expert_parameters(experts);
  return experts;
}

std::vector<torch::Tensor> params_of(const torch::nn::ModuleList& experts) { return experts->parameters(); }

// Gradients of sum(y * r) with respect to `inputs`.
std::vector<torch::Tensor> grads(const torch::Tensor& y, const torch::Tensor& r, const std::vector<torch::Tensor>& inputs) {
  return torch::autograd::grad({(y * r).sum()}, inputs, {}, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true);
}

void expect_all_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, double tol,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].defined(), b[i].defined()) << what << " #" << i;
    if (a[i].defined()) EXPECT_LT(max_abs_diff(a[i], b[i]), tol) << what << " #" << i;
  }
}

// Float64 tolerance: values and gradients are O(1) sums of at most a few dozen O(1) products, so the two
// summation orders differ by a few units of 1.1e-16; 1e-12 leaves three orders of magnitude.
constexpr double kTol64 = 1e-12;

TEST_F(BatchedExpertsTest, AllEqualsEachExpertWithGradients) {
  for (const auto& o : expert_configs()) {
    const auto experts = double_experts(o, 4);
    const BatchedExperts bank(experts);
    const auto x = torch::randn({9, 6}, torch::kDouble).requires_grad_(true);
    const auto y = bank.all(x);
    const auto ref = each_expert(experts, x);
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_EQ(y.size(2), o.output_dim());
    EXPECT_LT(max_abs_diff(y, ref), kTol64) << ffn_kind_name(o.kind()) << " " << activation_name(o.activation());
    auto inputs = params_of(experts);
    inputs.push_back(x);
    const auto r = torch::randn_like(ref);
    expect_all_close(grads(y, r, inputs), grads(ref, r, inputs), kTol64, "all() gradients");
  }
}

TEST_F(BatchedExpertsTest, MixEqualsWeightedSumWithGradients) {
  for (const auto& o : expert_configs()) {
    const auto experts = double_experts(o, 4);
    const auto x = torch::randn({9, 6}, torch::kDouble).requires_grad_(true);
    const auto w = torch::softmax(torch::randn({9, 4}, torch::kDouble), -1).requires_grad_(true);
    const auto y = BatchedExperts(experts).mix(x, w);
    const auto ref = (w.unsqueeze(-1) * each_expert(experts, x)).sum(1);
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_LT(max_abs_diff(y, ref), kTol64);
    auto inputs = params_of(experts);
    inputs.push_back(x);
    inputs.push_back(w);
    const auto r = torch::randn_like(ref);
    expect_all_close(grads(y, r, inputs), grads(ref, r, inputs), kTol64, "mix() gradients");
  }
}

TEST_F(BatchedExpertsTest, PerExpertRowsEqualEachExpert) {
  for (const auto& o : expert_configs()) {
    const auto experts = double_experts(o, 3);
    const auto xs = torch::randn({3, 5, 6}, torch::kDouble).requires_grad_(true);
    const auto y = BatchedExperts(experts).per_expert(xs);
    std::vector<torch::Tensor> rows;
    for (std::int64_t e = 0; e < 3; ++e) rows.push_back(detail::run_expert(experts, e, xs[e]));
    const auto ref = torch::stack(rows);
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_LT(max_abs_diff(y, ref), kTol64);
    auto inputs = params_of(experts);
    inputs.push_back(xs);
    const auto r = torch::randn_like(ref);
    expect_all_close(grads(y, r, inputs), grads(ref, r, inputs), kTol64, "per_expert() gradients");
  }
}

TEST_F(BatchedExpertsTest, GroupedPaddedAndLoopedEqualEachExpert) {
  // Balanced groups pad into one batched product (4 experts x 4 rows <= 2 x 12); one dominant group runs expert
  // by expert (4 x 9 > 2 x 10). Empty groups in both.
  const std::vector<std::vector<std::int64_t>> cases{{3, 2, 4, 3}, {3, 0, 4, 3}, {9, 0, 1, 0}, {0, 0, 0, 1}};
  const std::vector<bool> padded{true, true, false, false};
  for (const auto& o : expert_configs()) {
    for (std::size_t c = 0; c < cases.size(); ++c) {
      const auto& counts = cases[c];
      ASSERT_EQ(BatchedExperts::grouped_uses_padding(counts), padded[c]) << c;
      const auto experts = double_experts(o, 4);
      std::int64_t n = 0;
      for (const auto k : counts) n += k;
      const auto x = torch::randn({7, 6}, torch::kDouble).requires_grad_(true);
      const auto tokens = torch::randint(0, 7, {n}, torch::kLong);  // repeats allowed, as with top-k > 1
      const auto y = BatchedExperts(experts).grouped(x, tokens, counts);
      std::vector<torch::Tensor> pieces;
      std::int64_t start = 0;
      for (std::int64_t e = 0; e < 4; ++e) {
        const auto k = counts[static_cast<std::size_t>(e)];
        if (k > 0) pieces.push_back(detail::run_expert(experts, e, x.index_select(0, tokens.narrow(0, start, k))));
        start += k;
      }
      const auto ref = torch::cat(pieces);
      ASSERT_EQ(y.sizes(), ref.sizes());
      EXPECT_LT(max_abs_diff(y, ref), kTol64) << "case " << c;
      auto inputs = params_of(experts);
      inputs.push_back(x);
      const auto r = torch::randn_like(ref);
      const auto g = grads(y, r, inputs), gr = grads(ref, r, inputs);
      // An expert without rows gets no gradient from the reference (unused) and zeros from the padded product.
      for (std::size_t i = 0; i < g.size(); ++i) {
        const auto a = g[i].defined() ? g[i] : torch::zeros_like(inputs[i]);
        const auto b = gr[i].defined() ? gr[i] : torch::zeros_like(inputs[i]);
        EXPECT_LT(max_abs_diff(a, b), kTol64) << "case " << c << " gradient #" << i;
      }
    }
  }
  const auto experts = make_experts(FFNOptions(6, 5), 2);
  EXPECT_EQ(BatchedExperts(experts).grouped(torch::randn({3, 6}), torch::empty({0}, torch::kLong), {0, 0}).sizes(),
            (std::vector<std::int64_t>{0, 6}));
  EXPECT_THROW(BatchedExperts(experts).grouped(torch::randn({3, 6}), torch::zeros({2}, torch::kLong), {1, 2}),
               c10::Error);
}

// The experts' parameters of make_experts lie in one storage per stacked group; BatchedExperts then stacks them
// without copying, and their gradients arrive in one storage. Values, gradients and HVPs are the same bits as
// with parameters of their own storage (a clone, stacked by torch::stack): the same products of the same numbers.
TEST_F(BatchedExpertsTest, PackedParametersStackWithoutCopies) {
  for (const auto& o : expert_configs()) {
    SCOPED_TRACE(std::string(ffn_kind_name(o.kind())) + (o.bias() ? " with bias" : " without bias"));
    const auto packed = double_experts(o, 3);
    const torch::nn::ModuleList copied(std::dynamic_pointer_cast<torch::nn::ModuleListImpl>(packed->clone()));
    ASSERT_TRUE(copied.ptr());
    const auto w_in = [&](const torch::nn::ModuleList& m, std::size_t e) {
      auto* f = m->ptr(e)->as<FFNImpl>();
      return o.kind() == FFNKind::MLP ? f->fc1->weight : f->w_gate->weight;
    };
    const std::int64_t per = w_in(packed, 0).numel();
    const std::int64_t stride = o.kind() == FFNKind::MLP ? per : 2 * per;  // SwiGLU: gate, up, next gate
    for (std::size_t e = 1; e < 3; ++e) {
      EXPECT_EQ(w_in(packed, e).data_ptr<double>(), w_in(packed, 0).data_ptr<double>() + e * stride);
      EXPECT_FALSE(w_in(copied, e).storage().is_alias_of(w_in(copied, 0).storage()));
    }
    const auto x = torch::randn({7, 6}, torch::kDouble);
    const auto w = torch::softmax(torch::randn({7, 3}, torch::kDouble), -1);
    const auto target = torch::randn({7, o.output_dim()}, torch::kDouble);
    const auto run = [&](const torch::nn::ModuleList& m) {
      const auto params = m->parameters();
      const auto y = BatchedExperts(m).mix(x, w);
      const auto loss = (y - target).pow(2).sum() + y.pow(3).sum();
      const auto g = torch::autograd::grad({loss}, params, {}, true, true);
      torch::Tensor gv = torch::zeros({}, torch::kDouble);
      for (const auto& gi : g) gv = gv + (gi * gi.detach().sin()).sum();
      std::vector<torch::Tensor> out{y.detach()};
      for (const auto& gi : g) out.push_back(gi.detach());
      for (const auto& h : torch::autograd::grad({gv}, params)) out.push_back(h);
      return out;
    };
    const auto a = run(packed), b = run(copied);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "output/grad/HVP #" << i;
    // backward(): the packed experts' input-weight gradients share one storage (nothing was copied into them)
    BatchedExperts(packed).mix(x, w).pow(2).sum().backward();
    for (std::size_t e = 1; e < 3; ++e)
      EXPECT_TRUE(w_in(packed, e).grad().storage().is_alias_of(w_in(packed, 0).grad().storage()));
  }
}

TEST_F(BatchedExpertsTest, HessianVectorProductsEqualEachExpert) {
  // Double backward through the stacked weights: the curvature module's HVPs see the same function.
  for (const auto& o : {FFNOptions(6, 5).out_dim(3).activation(Activation::GELU),
                        FFNOptions(6, 5).out_dim(3).kind(FFNKind::SwiGLU)}) {
    const auto experts = double_experts(o, 3);
    const auto x = torch::randn({8, 6}, torch::kDouble);
    const auto w = torch::softmax(torch::randn({8, 3}, torch::kDouble), -1);
    const auto target = torch::randn({8, 3}, torch::kDouble);
    const auto params = params_of(experts);
    std::vector<torch::Tensor> v;
    for (const auto& p : params) v.push_back(torch::randn_like(p));
    const auto hvp = [&](const torch::Tensor& out) {
      const auto loss = (out - target).pow(2).sum() + out.pow(3).sum();
      const auto g = torch::autograd::grad({loss}, params, {}, true, true);
      torch::Tensor gv = torch::zeros({}, torch::kDouble);
      for (std::size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * v[i]).sum();
      return torch::autograd::grad({gv}, params);
    };
    const auto batched = hvp(BatchedExperts(experts).mix(x, w));
    const auto reference = hvp((w.unsqueeze(-1) * each_expert(experts, x)).sum(1));
    expect_all_close(batched, reference, 1e-10, "HVP");  // O(10) entries: sums of more, larger terms
  }
}

TEST_F(BatchedExpertsTest, Float32HessianVectorProductsEqualEachExpert) {
  // Regression: in float32 LibTorch 1.13's GELU on the batched [E, N, H] activations had a wrong second derivative
  // (a landscape along an expert's top eigenvector reported lambda ~ 1e18). Grouped rows (the top-k path) and the
  // mixture, batch sizes 5..8 (the failure changed with them). Float32 HVP entries are sums of O(100) terms of
  // size O(10): agreement to 1e-4 relative to the largest entry is rounding; the failure was off by 100%.
  const FFNOptions o = FFNOptions(6, 8).out_dim(3).activation(Activation::GELU);
  for (const std::int64_t n : {5, 6, 7, 8}) {
    const auto experts = make_experts(o, 4);
    const auto x = torch::randn({4 * n, 6});
    const auto target = torch::randn({4 * n, 3});
    const auto params = params_of(experts);
    std::vector<torch::Tensor> v;
    for (const auto& p : params) v.push_back(torch::randn_like(p));
    const auto hvp = [&](const torch::Tensor& out) {
      const auto g = torch::autograd::grad({(out - target).pow(2).sum()}, params, {}, true, true);
      torch::Tensor gv = torch::zeros({});
      for (std::size_t i = 0; i < g.size(); ++i) gv = gv + (g[i] * v[i]).sum();
      return torch::autograd::grad({gv}, params);
    };
    // Expert e on rows [e n, (e + 1) n): grouped() pads them into one [4, n, 6] batch.
    const auto tokens = torch::arange(4 * n, torch::kLong);
    const std::vector<std::int64_t> counts(4, n);
    ASSERT_TRUE(BatchedExperts::grouped_uses_padding(counts));
    const auto grouped = hvp(BatchedExperts(experts).grouped(x, tokens, counts));
    std::vector<torch::Tensor> pieces;
    for (std::int64_t e = 0; e < 4; ++e) pieces.push_back(detail::run_expert(experts, e, x.narrow(0, e * n, n)));
    const auto reference = hvp(torch::cat(pieces, 0));
    for (std::size_t i = 0; i < params.size(); ++i) {
      const double scale = reference[i].abs().max().item<double>();
      ASSERT_TRUE(std::isfinite(scale));
      EXPECT_LE(max_abs_diff(grouped[i], reference[i]), 1e-4 * scale + 1e-6) << "n " << n << " param #" << i;
    }
  }
}

// |W2| (|W1| |x| + |b1|) + |b2| per token and expert [T, E, O], in float64: the magnitude that float32 rounding
// errors of a ReLU MLP expert scale with.
torch::Tensor rounding_scale(const torch::nn::ModuleList& experts, const torch::Tensor& x) {
  std::vector<torch::Tensor> m;
  const auto ax = x.to(torch::kDouble).abs();
  for (std::size_t e = 0; e < experts->size(); ++e) {
    const auto* f = experts->ptr(e)->as<FFNImpl>();
    const auto a = [](const torch::Tensor& t) { return t.detach().to(torch::kDouble).abs(); };
    const auto h = torch::matmul(ax, a(f->fc1->weight).t()) + a(f->fc1->bias);
    m.push_back(torch::matmul(h, a(f->fc2->weight).t()) + a(f->fc2->bias));
  }
  return torch::stack(m, 1);
}

TEST_F(BatchedExpertsTest, Float32WithinRoundingOfFloat64) {
  // The vision study's expert shape (512-64-10), 8 experts, 64 tokens. The classic bound for a dot product of
  // n terms, |fl(s) - s| <= n u sum|terms| (u = 2^-24), through both layers: error <= (D + H + 2) u * scale.
  // Both the batched and the per-expert float32 results must stay inside it (they differ only in summation order).
  const auto experts = make_experts(FFNOptions(512, 64).out_dim(10), 8);
  auto experts64 = make_experts(FFNOptions(512, 64).out_dim(10), 8);
  {
    torch::NoGradGuard ng;
    for (std::size_t i = 0; i < experts->parameters().size(); ++i) experts64->parameters()[i].copy_(experts->parameters()[i]);
  }
  experts64->to(torch::kDouble);
  const auto x = torch::randn({64, 512});
  const auto exact = each_expert(experts64, x.to(torch::kDouble));
  const double u = std::ldexp(1.0, -24);
  const auto bound = (512 + 64 + 2) * u * rounding_scale(experts, x);
  const auto w = torch::softmax(torch::randn({64, 8}), -1);
  const BatchedExperts bank(experts);
  torch::NoGradGuard ng;
  const auto excess = [&](const torch::Tensor& got, const torch::Tensor& want, const torch::Tensor& b) {
    return ((got.to(torch::kDouble) - want).abs() - b).max().item<double>();
  };
  EXPECT_LE(excess(bank.all(x), exact, bound), 0.0);
  EXPECT_LE(excess(each_expert(experts, x), exact, bound), 0.0);
  const auto w64 = w.to(torch::kDouble);
  // The mixture adds an 8-term weighted sum (weights in [0, 1], summing to 1) on top.
  const auto mix_bound = ((w64.unsqueeze(-1) * bound).sum(1) + 10 * u * (w64.unsqueeze(-1) * exact.abs()).sum(1));
  EXPECT_LE(excess(bank.mix(x, w), (w64.unsqueeze(-1) * exact).sum(1), mix_bound), 0.0);
  // And the errors are rounding-sized, not just inside a loose bound: median relative error a few ulps.
  const auto rel = ((bank.all(x).to(torch::kDouble) - exact).abs() / exact.abs().clamp_min(1e-3)).flatten();
  EXPECT_LT(std::get<0>(rel.sort()).select(0, rel.size(0) / 2).item<double>(), 8 * u);
}

TEST_F(BatchedExpertsTest, DropoutOnlyInTrainingAndRejectsMismatches) {
  auto experts = make_experts(FFNOptions(8, 32).dropout(0.5), 3);
  const auto x = torch::randn({4, 8});
  experts->eval();
  EXPECT_LT(max_abs_diff(BatchedExperts(experts).all(x), each_expert(experts, x)), 1e-5);
  experts->train();
  const auto a = BatchedExperts(experts).all(x), b = BatchedExperts(experts).all(x);
  EXPECT_FALSE(torch::equal(a, b));

  EXPECT_THROW(BatchedExperts(torch::nn::ModuleList()), std::invalid_argument);
  torch::nn::ModuleList mixed;
  mixed->push_back(FFN(FFNOptions(4, 3)));
  mixed->push_back(FFN(FFNOptions(4, 5)));
  EXPECT_THROW(BatchedExperts{mixed}, std::invalid_argument);
  torch::nn::ModuleList other;
  other->push_back(torch::nn::Linear(4, 3));
  EXPECT_THROW(BatchedExperts{other}, std::invalid_argument);
  EXPECT_THROW(BatchedExperts(make_experts(FFNOptions(4, 3), 2)).all(torch::randn({2, 5})), c10::Error);
}

}  // namespace
}  // namespace moescope
