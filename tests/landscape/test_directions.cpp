// Directions for loss surfaces: Gaussian draws from the project's Rng, filter and layer normalisation checked
// against per-row norms of the weights, flat vectors, checkpoint differences, and the HDF5 round trip.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cmath>

#include "moescope/curvature/hvp.hpp"
#include "moescope/landscape/directions.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

// A small "network": a Linear weight, a conv filter bank, a bias and a 0-dim scale.
std::vector<NamedParameter> make_params(torch::ScalarType dtype, std::uint64_t seed = 3) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(dtype);
  std::vector<NamedParameter> ps;
  ps.emplace_back("fc.weight", torch::randn({5, 3}, o).mul_(2.0).requires_grad_(true));
  ps.emplace_back("conv.weight", torch::randn({4, 2, 3, 3}, o).requires_grad_(true));
  ps.emplace_back("fc.bias", torch::randn({5}, o).requires_grad_(true));
  ps.emplace_back("scale", torch::tensor(0.7, o).requires_grad_(true));
  return ps;
}

std::vector<double> row_norms(const torch::Tensor& t) {
  const auto r = t.to(torch::kFloat64).reshape({t.size(0), -1}).norm(2, {1});
  return std::vector<double>(r.data_ptr<double>(), r.data_ptr<double>() + r.numel());
}

TEST(LandscapeDirections, RandomDrawsTheRngStreamInParameterOrder) {
  const auto ps = make_params(torch::kFloat64);
  RandomDirectionOptions o;
  o.normalization = Normalization::None;
  o.small = SmallTensorRule::Normalize;  // with None: the raw draws everywhere
  o.seed = 42;
  const Direction d = random_direction(ps, o);
  // Independent reference: the same Rng, filled in the parameters' order, row-major.
  Rng rng(42);
  for (const auto& [name, t] : d.parts) {
    std::vector<double> want(static_cast<std::size_t>(t.numel()));
    rng.fill_gaussian(want.data(), t.numel());
    const auto c = t.contiguous();
    for (std::int64_t k = 0; k < t.numel(); ++k) ASSERT_EQ(c.data_ptr<double>()[k], want[k]) << name << " " << k;
  }
  EXPECT_EQ(d.seed, 42u);
  EXPECT_EQ(d.kind, "random");
  EXPECT_FALSE(d.parts[0].second.requires_grad());
}

TEST(LandscapeDirections, RandomIsTheSameForAnyThreadCount) {
  const auto ps = make_params(torch::kFloat32);
  RandomDirectionOptions o;
  o.seed = 7;
  const int before = torch::get_num_threads();
  torch::set_num_threads(1);
  const Direction a = random_direction(ps, o);
  torch::set_num_threads(2);
  const Direction b = random_direction(ps, o);
  torch::set_num_threads(before);
  for (std::size_t i = 0; i < a.parts.size(); ++i) EXPECT_TRUE(torch::equal(a.parts[i].second, b.parts[i].second));
  o.seed = 8;
  EXPECT_FALSE(torch::equal(random_direction(ps, o).parts[0].second, a.parts[0].second));
}

TEST(LandscapeDirections, FilterNormalisationGivesEachRowTheWeightsRowNorm) {
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const auto ps = make_params(dtype);
    RandomDirectionOptions o;
    o.normalization = Normalization::Filter;
    o.small = SmallTensorRule::Zero;
    o.seed = 1;
    const Direction d = random_direction(ps, o);
    o.normalization = Normalization::None;
    o.small = SmallTensorRule::Normalize;
    const Direction raw = random_direction(ps, o);
    // |d_i| = |w_i| |r_i| / (|r_i| + 1e-10): relative error 1e-10 / |r_i| (rows of >= 3 normals, |r_i| ~ 1) plus
    // rounding of the dtype (a few ulps).
    const double tol = dtype == torch::kFloat64 ? 1e-9 : 1e-5;
    for (std::size_t p = 0; p < 2; ++p) {
      const auto dn = row_norms(d.parts[p].second), wn = row_norms(ps[p].second.detach());
      ASSERT_EQ(dn.size(), wn.size());
      for (std::size_t i = 0; i < dn.size(); ++i) EXPECT_NEAR(dn[i], wn[i], tol * wn[i]) << ps[p].first << " row " << i;
      // Each row keeps the raw draw's direction: d_i = c_i r_i with c_i > 0.
      const auto d2 = d.parts[p].second.to(torch::kFloat64).reshape({static_cast<std::int64_t>(dn.size()), -1});
      const auto r2 = raw.parts[p].second.to(torch::kFloat64).reshape({static_cast<std::int64_t>(dn.size()), -1});
      const auto cos = (d2 * r2).sum(1) / (d2.norm(2, {1}) * r2.norm(2, {1}));
      EXPECT_NEAR(cos.min().item<double>(), 1.0, tol);
    }
    // biasbn: dim <= 1 tensors are not perturbed
    EXPECT_EQ(d.parts[2].second.abs().max().item<double>(), 0.0);
    EXPECT_EQ(d.parts[3].second.item<double>(), 0.0);
    EXPECT_EQ(d.normalization, Normalization::Filter);
  }
}

TEST(LandscapeDirections, SmallTensorRules) {
  const auto ps = make_params(torch::kFloat64);
  RandomDirectionOptions o;
  o.small = SmallTensorRule::CopyWeights;  // loss-landscape without biasbn: d = w
  const Direction copy = random_direction(ps, o);
  EXPECT_TRUE(torch::equal(copy.parts[2].second, ps[2].second.detach()));
  EXPECT_TRUE(torch::equal(copy.parts[3].second, ps[3].second.detach()));
  o.small = SmallTensorRule::Normalize;  // filter on a 1-D tensor: per element, |d_i| = |w_i|
  const Direction norm = random_direction(ps, o);
  const auto a = norm.parts[2].second.abs(), b = ps[2].second.detach().abs();
  EXPECT_LE((a - b).abs().max().item<double>(), 1e-9 * b.max().item<double>());
  EXPECT_NEAR(norm.parts[3].second.abs().item<double>(), 0.7, 1e-9);
}

TEST(LandscapeDirections, LayerNormalisationMatchesTheWholeTensor) {
  const auto ps = make_params(torch::kFloat64);
  RandomDirectionOptions o;
  o.normalization = Normalization::Layer;
  o.small = SmallTensorRule::Normalize;
  const Direction d = random_direction(ps, o);
  for (std::size_t p = 0; p < ps.size(); ++p) {
    const double want = ps[p].second.detach().norm().item<double>();
    EXPECT_NEAR(d.parts[p].second.norm().item<double>(), want, 1e-12 * want) << ps[p].first;
  }
  // Rows are not equalised by layer normalisation (unlike filter): the conv's row norms vary.
  const auto rn = row_norms(d.parts[1].second);
  EXPECT_GT(*std::max_element(rn.begin(), rn.end()) - *std::min_element(rn.begin(), rn.end()), 1e-3);
}

TEST(LandscapeDirections, FromFlatUsesTheFlattenLayout) {
  const auto ps = make_params(torch::kFloat32);
  std::int64_t n = 0;
  for (const auto& p : ps) n += p.second.numel();
  const auto flat = torch::arange(n, torch::kFloat64).div_(7.0);
  const Direction d = direction_from_flat(ps, flat);
  std::vector<torch::Tensor> parts;
  for (const auto& p : d.parts) parts.push_back(p.second);
  EXPECT_EQ(d.parts[0].second.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(flatten_tensors(parts).to(torch::kFloat64), flat, 0, 1e-6));
  EXPECT_EQ(d.kind, "eigen");
  EXPECT_THROW(direction_from_flat(ps, torch::zeros({n + 1})), std::invalid_argument);
}

TEST(LandscapeDirections, DifferenceLeadsFromOneCheckpointToTheOther) {
  const auto a = make_params(torch::kFloat64, 1), b = make_params(torch::kFloat64, 2);
  const Direction d = difference_direction(a, b);
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto reached = a[i].second.detach() + d.parts[i].second;
    // (b - a) + a equals b up to one rounding of each operation: |error| <= 2 eps (|a| + |b|).
    const auto bound = 4.5e-16 * (a[i].second.detach().abs() + b[i].second.detach().abs());
    EXPECT_TRUE(((reached - b[i].second.detach()).abs() <= bound).all().item<bool>()) << a[i].first;
  }
  auto c = b;
  c[1].first = "other.weight";
  EXPECT_THROW(difference_direction(a, c, "run2"), InputError);
  auto e = b;
  e[0].second = torch::zeros({3, 5}, torch::kFloat64);
  EXPECT_THROW(difference_direction(a, e, "run2"), InputError);
}

TEST(LandscapeDirections, SaveAndLoadRoundTrip) {
  testing::TempDir dir;
  const std::string path = dir.file("dirs.h5");
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    const auto ps = make_params(dtype);
    RandomDirectionOptions o;
    o.seed = 0xfedcba9876543210ULL;  // above 2^63: stored in an int64 attribute, read back bit for bit
    const Direction x = random_direction(ps, o);
    o.seed = 5;
    o.normalization = Normalization::Layer;
    o.small = SmallTensorRule::CopyWeights;
    const Direction y = random_direction(ps, o);
    save_directions(path, {x, y}, {"x", "y"}, Provenance{});
    std::vector<std::string> labels;
    const auto back = load_directions(path, ps, &labels);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(labels, (std::vector<std::string>{"x", "y"}));
    for (std::size_t k = 0; k < 2; ++k) {
      const Direction& want = k == 0 ? x : y;
      EXPECT_EQ(back[k].seed, want.seed);
      EXPECT_EQ(back[k].normalization, want.normalization);
      EXPECT_EQ(back[k].small, want.small);
      EXPECT_EQ(back[k].kind, "random");
      for (std::size_t i = 0; i < ps.size(); ++i) {
        EXPECT_EQ(back[k].parts[i].first, ps[i].first);
        EXPECT_EQ(back[k].parts[i].second.scalar_type(), dtype);
        // float32 -> float64 -> float32 is exact, so the values come back bit for bit
        EXPECT_TRUE(torch::equal(back[k].parts[i].second, want.parts[i].second)) << ps[i].first;
      }
    }
  }
}

TEST(LandscapeDirections, LoadRejectsDirectionsThatDoNotFit) {
  testing::TempDir dir;
  const std::string path = dir.file("dirs.h5");
  const auto ps = make_params(torch::kFloat32);
  save_directions(path, {random_direction(ps, {})}, {"x"}, Provenance{});
  // another shape
  auto other = ps;
  other[0].second = torch::zeros({3, 5});
  try {
    load_directions(path, other);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("fc.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  // a subset of the parameters (--params router while the file covers all)
  EXPECT_THROW(load_directions(path, {ps[0]}), InputError);
  // a parameter the file lacks
  auto more = ps;
  more.emplace_back("extra", torch::zeros({2}));
  EXPECT_THROW(load_directions(path, more), InputError);
  // not a directions file
  testing::write_text(dir.file("junk.h5"), "not hdf5");
  EXPECT_THROW(load_directions(dir.file("junk.h5"), ps), InputError);
}

TEST(LandscapeDirections, ParseNames) {
  EXPECT_EQ(parse_normalization("filter", "--norm"), Normalization::Filter);
  EXPECT_EQ(parse_small_tensor_rule("biasbn", "--ignore"), SmallTensorRule::Zero);
  EXPECT_THROW(parse_normalization("weight", "--norm"), InputError);
  EXPECT_THROW(parse_small_tensor_rule("bn", "--ignore"), InputError);
}

}  // namespace
}  // namespace moescope
