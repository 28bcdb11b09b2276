// Expert geometry against closed forms. Tolerances: the quantities are computed exactly in float64 from
// float32 inputs, so 1e-12 relative (summation rounding over <= 1e4 terms) unless said otherwise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "moescope/io/safetensors.hpp"
#include "moescope/metrics/geometry.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::f32_bytes;

// Builds a layer whose expert e has matrices "up" [rows_up x cols] and "down" [rows_down x cols] holding
// the values of vecs[e] (first rows_up*cols elements in up, the rest in down).
struct Fixture {
  MemoryTensorSource src{"memory"};
  MoELayerLayout layer;
  Fixture(const std::vector<std::vector<float>>& vecs, std::int64_t up_rows, std::int64_t down_rows, std::int64_t cols) {
    layer.key = "layer_00";
    for (std::size_t e = 0; e < vecs.size(); ++e) {
      ExpertLayout ex;
      ex.index = static_cast<int>(e);
      const std::int64_t nu = up_rows * cols;
      std::vector<float> up(vecs[e].begin(), vecs[e].begin() + nu), down(vecs[e].begin() + nu, vecs[e].end());
      for (auto [role, rows, data] : {std::tuple{std::string("down"), down_rows, down}, std::tuple{std::string("up"), up_rows, up}}) {
        const std::string name = "e." + std::to_string(e) + "." + role;
        src.add(TensorInfo{name, DType::F32, {rows, cols}}, f32_bytes(data));
        ex.matrices.push_back(MatrixView{role, name, rows, cols, 0, cols, 1});
      }
      layer.experts.push_back(ex);
    }
  }
};

TEST(Geometry, OrthonormalExpertsHaveZeroOverlap) {
  // 4 experts = the standard basis e_0..e_3 of R^8, split 2x2 (up) + 2x2 (down)
  std::vector<std::vector<float>> v(4, std::vector<float>(8, 0.f));
  for (int e = 0; e < 4; ++e) v[e][2 * e + 1] = 3.f;  // scaled: normalisation must remove the scale
  Fixture f(v, 2, 2, 2);
  const auto g = expert_geometry(f.src, f.layer, {});
  EXPECT_EQ(g.dim, 8);
  EXPECT_DOUBLE_EQ(g.mso, 0.0);
  EXPECT_TRUE(g.overlap.isIdentity(1e-15));
  EXPECT_DOUBLE_EQ(g.mean_norm, 3.0);
}

TEST(Geometry, IdenticalExpertsHaveMsoOne) {
  std::vector<float> x = {1, -2, 3, 0.5f, 7, -1};
  Fixture f({x, x, x}, 1, 1, 3);
  const auto g = expert_geometry(f.src, f.layer, {});
  EXPECT_NEAR(g.mso, 1.0, 1e-15);
  EXPECT_NEAR(g.param_variance, 0.0, 1e-15);
  EXPECT_NEAR(g.param_variance_normalized, 0.0, 1e-15);
}

TEST(Geometry, TwoExpertsAtAngleGiveCosSquared) {
  for (double t : {0.1, 0.7, M_PI / 3, 1.5}) {
    // in R^4: a = (1,0,0,0)*2, b = (cos t, sin t, 0, 0)*5
    std::vector<float> a = {2, 0, 0, 0}, b = {float(5 * std::cos(t)), float(5 * std::sin(t)), 0, 0};
    Fixture f({a, b}, 1, 1, 2);
    const auto g = expert_geometry(f.src, f.layer, {});
    const double c = double(float(5 * std::cos(t))) / std::hypot(double(float(5 * std::cos(t))), double(float(5 * std::sin(t))));
    EXPECT_NEAR(g.overlap(0, 1), c, 1e-12) << t;
    EXPECT_NEAR(g.mso, c * c, 1e-12) << t;
  }
}

TEST(Geometry, ParameterVarianceMatchesDirectComputation) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.3f, 2.f);
  const int E = 5, D = 24;
  std::vector<std::vector<float>> v(E, std::vector<float>(D));
  for (auto& x : v)
    for (auto& y : x) y = n(rng);
  Fixture f(v, 2, 2, 6);
  const auto g = expert_geometry(f.src, f.layer, {});
  // direct two-pass computation, raw and on unit vectors
  double var = 0, var_u = 0;
  std::vector<double> norm(E, 0.0);
  for (int e = 0; e < E; ++e)
    for (int c = 0; c < D; ++c) norm[e] += double(v[e][c]) * v[e][c];
  for (auto& x : norm) x = std::sqrt(x);
  for (int c = 0; c < D; ++c) {
    double m = 0, mu = 0;
    for (int e = 0; e < E; ++e) m += v[e][c] / double(E), mu += v[e][c] / norm[e] / E;
    for (int e = 0; e < E; ++e) {
      var += (v[e][c] - m) * (v[e][c] - m) / (E - 1);
      var_u += (v[e][c] / norm[e] - mu) * (v[e][c] / norm[e] - mu) / (E - 1);
    }
  }
  EXPECT_NEAR(g.param_variance, var / D, 1e-12 * var / D);
  EXPECT_NEAR(g.param_variance_normalized, var_u / D, 1e-10 * var_u / D);
}

TEST(Geometry, ChunkingAndThreadsDoNotChangeTheAnswer) {
  std::mt19937 rng(11);
  std::normal_distribution<float> n;
  std::vector<std::vector<float>> v(6, std::vector<float>(70 * 9));
  for (auto& x : v)
    for (auto& y : x) y = n(rng);
  Fixture f(v, 40, 30, 9);
  const auto ref = expert_geometry(f.src, f.layer, {});
  for (int threads : {1, 2, 3})
    for (std::int64_t chunk : {1, 7, 64, 100000}) {
      GeometryOptions o;
      o.threads = threads;
      o.chunk = chunk;
      const auto g = expert_geometry(f.src, f.layer, o);
      EXPECT_TRUE(g.gram.isApprox(ref.gram, 1e-13)) << threads << " " << chunk;
      EXPECT_NEAR(g.param_variance, ref.param_variance, 1e-13 * ref.param_variance);
    }
}

TEST(Geometry, RandomExpertsHaveMsoNearOneOverD) {
  // E[cos^2] = 1/D for independent isotropic vectors; with 2016 pairs the mean's relative sd is about
  // sqrt(2/2016) ~ 3% (pairs are weakly dependent), so 20% is > 6 sd.
  const int E = 64, D = 500;
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  std::vector<std::vector<float>> v(E, std::vector<float>(D));
  for (auto& x : v)
    for (auto& y : x) y = n(rng);
  Fixture f(v, 10, 15, 20);
  const auto g = expert_geometry(f.src, f.layer, {});
  EXPECT_NEAR(g.mso * D, 1.0, 0.2);
}

TEST(Geometry, RoleSelectionAndAliases) {
  // up parts orthogonal, down parts identical: MSO over up is 0, over down is 1
  std::vector<float> a = {1, 0, 5, 5}, b = {0, 1, 5, 5};
  Fixture f({a, b}, 1, 1, 2);
  GeometryOptions o;
  o.roles = {"fc1"};  // alias of up
  EXPECT_NEAR(expert_geometry(f.src, f.layer, o).mso, 0.0, 1e-15);
  o.roles = {"w2"};  // alias of down
  EXPECT_NEAR(expert_geometry(f.src, f.layer, o).mso, 1.0, 1e-15);
  o.roles = {"gate"};
  EXPECT_THROW(expert_geometry(f.src, f.layer, o), InputError);
}

TEST(Geometry, StridedViewsReadTheRightElements) {
  // One fused tensor [2 experts, 2 rows, 4 cols] whose columns interleave gate (even) and up (odd).
  std::vector<float> data = {1, 10, 2, 20, 3, 30, 4, 40,    // expert 0
                             1, -10, 2, -20, 3, -30, 4, -40};  // expert 1: same gate, up negated
  MemoryTensorSource src("memory");
  src.add(TensorInfo{"fused", DType::F32, {2, 2, 4}}, f32_bytes(data));
  MoELayerLayout layer;
  layer.key = "layer_00";
  for (int e = 0; e < 2; ++e) {
    ExpertLayout ex;
    ex.index = e;
    ex.matrices.push_back(MatrixView{"gate", "fused", 2, 2, e * 8, 4, 2});
    ex.matrices.push_back(MatrixView{"up", "fused", 2, 2, e * 8 + 1, 4, 2});
    layer.experts.push_back(ex);
  }
  GeometryOptions o;
  o.roles = {"gate"};
  EXPECT_NEAR(expert_geometry(src, layer, o).overlap(0, 1), 1.0, 1e-15);
  o.roles = {"up"};
  EXPECT_NEAR(expert_geometry(src, layer, o).overlap(0, 1), -1.0, 1e-15);
}

TEST(Geometry, MeanSquaredOverlapFormula) {
  Eigen::MatrixXd o(3, 3);
  o << 1, 0.5, -0.2, 0.5, 1, 0.1, -0.2, 0.1, 1;
  EXPECT_NEAR(mean_squared_overlap(o), (0.25 + 0.04 + 0.01) / 3.0, 1e-15);
  EXPECT_THROW(mean_squared_overlap(Eigen::MatrixXd::Ones(1, 1)), std::invalid_argument);
}


// Bad weights (issue 15). A zero expert has no direction: NaN cosines, left out of the MSO and of the variance on
// unit vectors, with a note naming its tensors; the MSO of the others is then the closed form of those alone.
TEST(Geometry, ZeroExpertIsLeftOutOfTheMsoWithANote) {
  // experts 0 and 1 at 60 degrees (cos 0.5), expert 2 all zeros
  const float s3 = std::sqrt(3.0f) / 2;
  Fixture f({{1, 0, 0, 0}, {0.5f, s3, 0, 0}, {0, 0, 0, 0}}, 1, 1, 2);
  const auto g = expert_geometry(f.src, f.layer, {});
  ASSERT_EQ(g.zero_experts, std::vector<int>{2});
  EXPECT_NEAR(g.mso, 0.25, 1e-7);  // cos^2 of the one remaining pair; the float32 sqrt(3)/2 limits it to ~1e-7
  EXPECT_TRUE(std::isnan(g.overlap(2, 0)) && std::isnan(g.overlap(0, 2)) && std::isnan(g.overlap(2, 2)));
  // on the 2 unit vectors: (K - sum overlap / K) / ((K - 1) D) = (2 - (2 + 2 * 0.5) / 2) / (1 * 4)
  EXPECT_NEAR(g.param_variance_normalized, (2.0 - 3.0 / 2.0) / 4.0, 1e-7);
  // on v_e every expert counts: per coordinate unbiased variance over 3 experts, summed over coordinates / D
  const double c0 = (1.0 + 0.25 + 0.0 - (1.5 * 1.5) / 3.0) / 2.0, c1 = (0.75 - 0.75 / 3.0) / 2.0;
  EXPECT_NEAR(g.param_variance, (c0 + c1) / 4.0, 1e-7);
  ASSERT_EQ(g.notes.size(), 1u);
  EXPECT_NE(g.notes[0].find("expert 2 is all zeros (e.2.down, e.2.up)"), std::string::npos) << g.notes[0];
}

TEST(Geometry, OneExpertLeftGivesNanMso) {
  Fixture f({{1, 2, 3, 4}, {0, 0, 0, 0}, {0, 0, 0, 0}}, 1, 1, 2);
  const auto g = expert_geometry(f.src, f.layer, {});
  EXPECT_EQ(g.zero_experts, (std::vector<int>{1, 2}));
  EXPECT_TRUE(std::isnan(g.mso));
  EXPECT_TRUE(std::isnan(g.param_variance_normalized));
  EXPECT_EQ(g.notes.size(), 2u);
}

TEST(Geometry, NonFiniteWeightIsRefusedNamingTensorAndElement) {
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    std::vector<float> e1 = {1, 2, 3, 4, 5, 6};
    e1[4] = bad;  // down [1 x 3] holds elements 3..5: element [0, 1] of e.1.down
    Fixture f({{1, 0, 0, 0, 0, 1}, e1}, 1, 1, 3);
    try {
      expert_geometry(f.src, f.layer, {});
      FAIL() << "accepted " << bad;
    } catch (const InputError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("tensor 'e.1.down' (layer_00, expert 1, down): element [0, 1]"), std::string::npos) << m;
      EXPECT_NE(m.find(std::isnan(bad) ? "is nan" : (bad > 0 ? "is inf" : "is -inf")), std::string::npos) << m;
    }
  }
}

TEST(Geometry, MeanSquaredOverlapLeavingExpertsOut) {
  Eigen::MatrixXd o(3, 3);
  o << 1, 0.5, 0.1, 0.5, 1, 0.2, 0.1, 0.2, 1;
  EXPECT_DOUBLE_EQ(mean_squared_overlap(o, {}), mean_squared_overlap(o));
  EXPECT_DOUBLE_EQ(mean_squared_overlap(o, {0}), 0.04);
  EXPECT_TRUE(std::isnan(mean_squared_overlap(o, {0, 2})));
}

// ---------------------------------------------------------------------------------------------------------
// Streaming and threading (metrics/gram_kernel.hpp): the result's bits depend on nothing but the data.

// E experts, each with "up" [up_rows x cols] and "down" [down_rows x cols] of dtype t, values from `draw`.
struct TypedLayer {
  MemoryTensorSource src{"memory"};
  MoELayerLayout layer;
  std::vector<std::vector<double>> values;  // decoded, per expert, in role order (down, up)
  template <typename Draw>
  TypedLayer(int E, std::int64_t up_rows, std::int64_t down_rows, std::int64_t cols, DType t, Draw&& draw) {
    layer.key = "layer_00";
    values.resize(static_cast<std::size_t>(E));
    for (int e = 0; e < E; ++e) {
      ExpertLayout ex;
      ex.index = e;
      for (auto [role, rows] : {std::pair{std::string("down"), down_rows}, std::pair{std::string("up"), up_rows}}) {
        std::vector<float> f(static_cast<std::size_t>(rows * cols));
        for (auto& x : f) x = draw();
        std::vector<std::uint8_t> bytes(f.size() * dtype_size(t));
        convert_from_f32(t, f.data(), f.size(), bytes.data());
        std::vector<double> v(f.size());
        convert_to_f64(t, bytes.data(), v.size(), v.data());
        values[static_cast<std::size_t>(e)].insert(values[static_cast<std::size_t>(e)].end(), v.begin(), v.end());
        const std::string name = "e." + std::to_string(e) + "." + role;
        src.add(TensorInfo{name, t, {rows, cols}}, std::move(bytes));
        ex.matrices.push_back(MatrixView{role, name, rows, cols, 0, cols, 1});
      }
      layer.experts.push_back(ex);
    }
  }
};

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void expect_same_bits(const LayerGeometry& a, const LayerGeometry& b, const std::string& what) {
  ASSERT_EQ(a.gram.rows(), b.gram.rows()) << what;
  for (Eigen::Index i = 0; i < a.gram.rows(); ++i)
    for (Eigen::Index j = 0; j < a.gram.cols(); ++j)
      EXPECT_TRUE(same_bits(a.gram(i, j), b.gram(i, j))) << what << " gram(" << i << "," << j << ")";
  EXPECT_TRUE(same_bits(a.mso, b.mso)) << what;
  EXPECT_TRUE(same_bits(a.param_variance, b.param_variance)) << what;
  EXPECT_EQ(a.dim, b.dim) << what;
}

TEST(Geometry, ThreadCountAndBlockSizeDoNotChangeTheBits) {
  // 170,000 coordinates: three tasks of 65,536 and more across the two roles, so the in-order reduction matters.
  std::mt19937 rng(21);
  std::normal_distribution<float> n(0.1f, 1.f);
  TypedLayer f(5, 300, 200, 340, DType::BF16, [&] { return n(rng); });
  const auto ref = expert_geometry(f.src, f.layer, {});
  EXPECT_EQ(ref.dim, 170000);
  for (int threads : {1, 2, 3, 4, 8})
    for (std::int64_t chunk : {0, 8, 200, 5000}) {
      GeometryOptions o;
      o.threads = threads;
      o.chunk = chunk;
      expect_same_bits(expert_geometry(f.src, f.layer, o), ref,
                       "threads " + std::to_string(threads) + " chunk " + std::to_string(chunk));
    }
}

TEST(Geometry, MatchesALongDoubleReferenceWithACommonOffset) {
  // float32 experts 3 + 0.05 z over 125,000 coordinates: tolerances are the kernel's bound (gram_kernel.hpp),
  // depth = 512 + 31 + 3 -> 6e-14 relative, plus the few roundings of the final formulas: 1e-12 relative.
  std::mt19937 rng(8);
  std::normal_distribution<float> n(0.f, 1.f);
  const int E = 6;
  TypedLayer f(E, 250, 250, 250, DType::F32, [&] { return 3.f + 0.05f * n(rng); });
  GeometryOptions o;
  o.threads = 2;
  const auto g = expert_geometry(f.src, f.layer, o);
  const auto D = static_cast<std::size_t>(g.dim);
  long double var = 0;
  std::vector<std::vector<long double>> gram(E, std::vector<long double>(E, 0));
  for (std::size_t c = 0; c < D; ++c) {
    long double m = 0;
    for (int e = 0; e < E; ++e) m += f.values[e][c];
    m /= E;
    for (int e = 0; e < E; ++e) {
      var += (f.values[e][c] - m) * (f.values[e][c] - m);
      for (int k = 0; k < E; ++k) gram[e][k] += static_cast<long double>(f.values[e][c]) * f.values[k][c];
    }
  }
  const double ref_var = static_cast<double>(var / (E - 1) / static_cast<long double>(D));
  EXPECT_NEAR(g.param_variance, ref_var, 1e-12 * ref_var);
  for (int i = 0; i < E; ++i)
    for (int j = 0; j < E; ++j) EXPECT_NEAR(g.gram(i, j), static_cast<double>(gram[i][j]), 1e-12 * g.gram(i, j));
}

TEST(Geometry, StagedAndInPlaceReadsGiveTheSameBits) {
  // The same bf16 values as per-expert tensors (read in place) and as one fused tensor whose columns interleave
  // gate and up (strided views: staged through read_view_f64): products are exact, so the bits agree.
  const int E = 3;
  const std::int64_t rows = 150, cols = 500;  // 75,000 coordinates: two tasks
  std::mt19937 rng(5);
  std::normal_distribution<float> n;
  std::vector<float> fused(static_cast<std::size_t>(E * rows * 2 * cols));
  for (auto& x : fused) x = n(rng);
  MemoryTensorSource fused_src("fused"), plain_src("plain");
  fused_src.add(TensorInfo{"gate_up", DType::BF16, {E, rows, 2 * cols}}, testing::bf16_bytes(fused));
  MoELayerLayout fused_layer, plain_layer;
  fused_layer.key = plain_layer.key = "layer_00";
  for (int e = 0; e < E; ++e) {
    ExpertLayout fe, pe;
    fe.index = pe.index = e;
    for (int k = 0; k < 2; ++k) {
      const std::string role = k == 0 ? "gate" : "up";
      fe.matrices.push_back(MatrixView{role, "gate_up", rows, cols, e * rows * 2 * cols + k, 2 * cols, 2});
      std::vector<float> part(static_cast<std::size_t>(rows * cols));
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c)
          part[static_cast<std::size_t>(r * cols + c)] =
              fused[static_cast<std::size_t>(e * rows * 2 * cols + r * 2 * cols + 2 * c + k)];
      const std::string name = "e." + std::to_string(e) + "." + role;
      plain_src.add(TensorInfo{name, DType::BF16, {rows, cols}}, testing::bf16_bytes(part));
      pe.matrices.push_back(MatrixView{role, name, rows, cols, 0, cols, 1});
    }
    fused_layer.experts.push_back(fe);
    plain_layer.experts.push_back(pe);
  }
  GeometryOptions o;
  o.threads = 2;
  expect_same_bits(expert_geometry(fused_src, fused_layer, o), expert_geometry(plain_src, plain_layer, o), "fused");
}

TEST(Geometry, SafetensorsAtOddByteOffsetsMatchMemory) {
  // A 3-byte tensor first puts every expert tensor of the file at an odd offset: the kernel reads unaligned.
  std::mt19937 rng(13);
  std::normal_distribution<float> n;
  TypedLayer f(4, 70, 60, 33, DType::BF16, [&] { return n(rng); });
  std::vector<std::vector<std::uint8_t>> keep;
  std::vector<TensorToWrite> tensors;
  const std::vector<std::uint8_t> pad = {1, 2, 3};
  tensors.push_back(TensorToWrite{TensorInfo{"a.pad", DType::U8, {3}}, pad.data()});
  for (const auto& t : f.src.tensors()) tensors.push_back(TensorToWrite{t, f.src.raw(t.name).data});
  testing::TempDir dir;
  const std::string path = dir.file("odd.safetensors");
  write_safetensors(path, tensors);
  SafetensorsFile file(path);
  for (const auto& e : file.header().entries)
    if (e.info.name != "a.pad") {
      EXPECT_EQ(e.begin % 2, 1u) << e.info.name;
    }
  GeometryOptions o;
  o.threads = 3;
  expect_same_bits(expert_geometry(file, f.layer, o), expert_geometry(f.src, f.layer, {}), "file");
}

TEST(Geometry, MixedDtypesAndScaledFp8AreReadThroughFloat64) {
  // Expert 0 stored as float32, the others as bf16 (the same values): the layer is read through read_view_f64.
  // And an FP8 E4M3 expert with DeepSeek block scales must be dequantised. References: read_f64's values.
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  const std::int64_t rows = 130, cols = 140;  // two 128-row scale blocks
  MemoryTensorSource src("mixed");
  MoELayerLayout layer;
  layer.key = "layer_00";
  std::vector<std::vector<float>> vals(3, std::vector<float>(static_cast<std::size_t>(rows * cols)));
  for (auto& v : vals)
    for (auto& x : v) x = n(rng);
  for (int e = 0; e < 3; ++e) {
    const std::string name = "e." + std::to_string(e) + ".up";
    if (e == 0) {
      src.add(TensorInfo{name, DType::F32, {rows, cols}}, testing::f32_bytes(vals[0]));
    } else if (e == 1) {
      src.add(TensorInfo{name, DType::BF16, {rows, cols}}, testing::bf16_bytes(vals[1]));
    } else {
      std::vector<std::uint8_t> q(static_cast<std::size_t>(rows * cols));
      for (std::size_t k = 0; k < q.size(); ++k) q[k] = static_cast<std::uint8_t>(rng() & 0x77u);  // finite
      src.add(TensorInfo{name, DType::F8_E4M3, {rows, cols}}, q);
      src.add(TensorInfo{name + "_scale_inv", DType::F32, {2, 2}}, testing::f32_bytes({0.5f, 3.f, 1.25f, 7.f}));
    }
    ExpertLayout ex;
    ex.index = e;
    ex.matrices.push_back(MatrixView{"up", name, rows, cols, 0, cols, 1});
    layer.experts.push_back(ex);
  }
  const auto g = expert_geometry(src, layer, {});
  std::vector<std::vector<double>> v;
  for (int e = 0; e < 3; ++e) v.push_back(src.read_all_f64("e." + std::to_string(e) + ".up"));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      long double s = 0, a = 0;
      for (std::size_t c = 0; c < v[0].size(); ++c) {
        s += static_cast<long double>(v[i][c]) * v[j][c];
        a += std::fabs(static_cast<long double>(v[i][c]) * v[j][c]);
      }
      // kernel bound: depth (512 + 5 + 3) u of sum |x_i x_j| (scaled FP8 products need not be exact: + 1 u)
      EXPECT_NEAR(g.gram(i, j), static_cast<double>(s), 521 * 1.2e-16 * static_cast<double>(a)) << i << "," << j;
    }
}

TEST(Geometry, AViewOutsideItsTensorFailsFromAnyThread) {
  std::vector<std::vector<float>> v(3, std::vector<float>(100000, 1.f));
  Fixture f(v, 500, 500, 100);
  f.layer.experts[2].matrices[1].offset = 10;  // "up" of expert 2 now reaches past its tensor's end
  GeometryOptions o;
  o.threads = 3;
  EXPECT_THROW(expert_geometry(f.src, f.layer, o), InputError);
}

}  // namespace
}  // namespace moescope
