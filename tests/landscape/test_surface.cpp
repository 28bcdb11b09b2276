// Loss surfaces: axes, in-place perturbation with exact restore, quadratic surfaces against their closed form,
// non-square grid orientation in both file formats, resumable journals, and sharpness.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <fstream>
#include <sstream>

#include "moescope/curvature/hvp.hpp"
#include "moescope/io/report.hpp"
#include "moescope/landscape/surface.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

// L(w) = 0.5 (w - c)^T A (w - c) over parameters of shapes [3,4] and [5] (n = 17), float64.
struct Quadratic {
  std::vector<NamedParameter> params;
  Eigen::MatrixXd A;
  Eigen::VectorXd c;

  explicit Quadratic(std::uint64_t seed, bool at_origin) {
    Rng rng(seed);
    const Eigen::MatrixXd B = rng.gaussian_matrix(17, 17);
    A = B * B.transpose() / 17.0 + Eigen::MatrixXd::Identity(17, 17);
    c = at_origin ? Eigen::VectorXd::Zero(17) : Eigen::VectorXd(rng.gaussian_matrix(17, 1));
    auto o = torch::TensorOptions().dtype(torch::kFloat64);
    params.emplace_back("layer.weight", torch::zeros({3, 4}, o).requires_grad_(true));
    params.emplace_back("layer.bias", torch::zeros({5}, o).requires_grad_(true));
    if (!at_origin) {
      // w0 away from the minimum c, so the surface has a linear term
      torch::NoGradGuard g;
      params[0].second.copy_(torch::randn({3, 4}, o));
      params[1].second.copy_(torch::randn({5}, o));
    }
  }
  Eigen::VectorXd w() const {
    std::vector<torch::Tensor> ts;
    for (const auto& p : params) ts.push_back(p.second.detach());
    const auto f = flatten_tensors(ts).contiguous();
    return Eigen::Map<const Eigen::VectorXd>(f.data_ptr<double>(), f.numel());
  }
  double loss() const {
    const Eigen::VectorXd r = w() - c;
    return 0.5 * r.dot(A * r);
  }
};

Eigen::VectorXd flat(const Direction& d) {
  std::vector<torch::Tensor> ts;
  for (const auto& p : d.parts) ts.push_back(p.second);
  const auto f = flatten_tensors(ts).to(torch::kFloat64).contiguous();
  return Eigen::Map<const Eigen::VectorXd>(f.data_ptr<double>(), f.numel());
}

TEST(LandscapeAxis, ValuesAndParsing) {
  const Axis a = parse_axis("-1:1:51", "--x");
  const auto v = a.values();
  ASSERT_EQ(v.size(), 51u);
  EXPECT_EQ(v.front(), -1.0);
  EXPECT_EQ(v.back(), 1.0);
  EXPECT_NEAR(v[25], 0.0, 1e-15);
  EXPECT_NEAR(v[1] - v[0], 0.04, 1e-15);
  EXPECT_EQ(parse_axis("0.5:0.5:1", "--y").values(), std::vector<double>{0.5});
  EXPECT_EQ(parse_axis("-2:3:3", "--y").values(), (std::vector<double>{-2.0, 0.5, 3.0}));
  EXPECT_EQ(parse_axis(a.text(), "--x").values(), v);
  for (const char* bad : {"1:-1:5", "-1:1:0", "-1:1:2.5", "a:1:3", "-1:1", "-1:1:3:4", "nan:1:3", "-1:inf:3",
                          "1:1:3", "-1:1:-3", "-1:1:", ""}) {
    try {
      parse_axis(bad, "--x");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("--x", 0), 0u) << e.what();
    }
  }
}

TEST(LandscapePerturbation, InPlaceWithoutReallocationAndExactRestore) {
  torch::manual_seed(11);
  std::vector<NamedParameter> ps;
  ps.emplace_back("w", (torch::randn({6, 7}) * 3.3).requires_grad_(true));
  ps.emplace_back("b", torch::randn({7}).requires_grad_(true));
  const auto w0 = ps[0].second.detach().clone(), b0 = ps[1].second.detach().clone();
  const void* storage = ps[0].second.data_ptr();
  RandomDirectionOptions o;
  o.small = SmallTensorRule::Normalize;
  o.seed = 1;
  const Direction dx = random_direction(ps, o);
  o.seed = 2;
  const Direction dy = random_direction(ps, o);
  {
    Perturbation p(ps, {dx, dy});
    p.set(0.37, -1.91);
    EXPECT_EQ(ps[0].second.data_ptr(), storage);  // written in place
    // float32: w0 + a dx + b dy within a few ulps of the float64 sum
    const auto want = w0.to(torch::kFloat64) + 0.37 * dx.parts[0].second.to(torch::kFloat64) -
                      1.91 * dy.parts[0].second.to(torch::kFloat64);
    EXPECT_LE((ps[0].second.detach().to(torch::kFloat64) - want).abs().max().item<double>(),
              4 * 1.2e-7 * want.abs().max().item<double>());
    EXPECT_TRUE(ps[0].second.requires_grad());
    p.set(-0.2, 0.9);
    p.restore();
    EXPECT_TRUE(torch::equal(ps[0].second.detach(), w0));  // bit for bit
    p.set(1.0, 1.0);
  }  // the destructor restores too
  EXPECT_TRUE(torch::equal(ps[0].second.detach(), w0));
  EXPECT_TRUE(torch::equal(ps[1].second.detach(), b0));
  EXPECT_THROW(Perturbation(ps, {}), std::invalid_argument);
  Perturbation one(ps, {dx});
  EXPECT_THROW(one.set(0.1, 0.2), std::invalid_argument);
}

TEST(LandscapeSurface, QuadraticOneDimensionalSurfaceIsHalfASquaredDAD) {
  // L(w) = 0.5 w^T A w with w0 = 0: L(a d) = 0.5 a^2 d^T A d.
  Quadratic q(5, /*at_origin=*/true);
  Rng rng(9);
  const Eigen::VectorXd dv = rng.gaussian_matrix(17, 1);
  const auto dt = torch::from_blob(const_cast<double*>(dv.data()), {17}, torch::kFloat64).clone();
  Perturbation p(q.params, {direction_from_flat(q.params, dt)});
  SurfaceOptions o;
  o.x = parse_axis("-2:2:21", "--x");
  o.metrics = {"train_loss"};
  const Surface s = compute_surface(p, [&] { return std::vector<double>{q.loss()}; }, o);
  ASSERT_TRUE(s.complete());
  const double dad = dv.dot(q.A * dv);
  for (std::size_t i = 0; i < s.nx(); ++i) {
    const double a = s.x[i], want = 0.5 * a * a * dad;
    // w = fl(a d) differs from a d by one rounding per entry; the quadratic form then differs by a few eps
    // relative to 0.5 a^2 |d|^T |A| |d| (here about dad).
    EXPECT_NEAR(s.values[0][i], want, 1e-14 * (1.0 + want)) << "a = " << a;
  }
  EXPECT_EQ(q.w().norm(), 0.0);  // restored to w0 = 0
}

TEST(LandscapeSurface, QuadraticTwoDimensionalSurfaceMatchesTheExpansion) {
  // General form, w0 != c: L(w0 + a dx + b dy) = L0 + g.(a dx + b dy) + 0.5 (a dx + b dy)^T A (a dx + b dy),
  // g = A (w0 - c); filter-normalised random directions.
  Quadratic q(6, /*at_origin=*/false);
  const double L0 = q.loss();
  const Eigen::VectorXd g = q.A * (q.w() - q.c);
  RandomDirectionOptions ro;
  ro.seed = 1;
  const Direction dx = random_direction(q.params, ro);
  ro.seed = 2;
  const Direction dy = random_direction(q.params, ro);
  const Eigen::VectorXd fx = flat(dx), fy = flat(dy);
  Perturbation p(q.params, {dx, dy});
  SurfaceOptions o;
  o.x = parse_axis("-1:1:5", "--x");
  o.y = parse_axis("-0.5:1.5:3", "--y");
  o.metrics = {"train_loss"};
  const Surface s = compute_surface(p, [&] { return std::vector<double>{q.loss()}; }, o);
  for (std::size_t i = 0; i < s.nx(); ++i)
    for (std::size_t j = 0; j < s.ny(); ++j) {
      const Eigen::VectorXd step = s.x[i] * fx + s.y[j] * fy;
      const double want = L0 + g.dot(step) + 0.5 * step.dot(q.A * step);
      EXPECT_NEAR(s.values[0][i * s.ny() + j], want, 1e-12 * (1.0 + std::abs(want)));
    }
}

// loss = f(a) + g(b) with distinct f, g on w = (a, b) and dx = e1, dy = e2: a transposed grid cannot pass.
struct Separable {
  std::vector<NamedParameter> params{{"w", torch::zeros({2}, torch::kFloat64).requires_grad_(true)}};
  static double f(double a) { return a * a + 0.25 * a; }
  static double g(double b) { return std::sin(b) + 3.0 * b; }
  std::vector<double> eval() const {
    const auto w = params[0].second.detach();
    const double a = w[0].item<double>(), b = w[1].item<double>();
    return {f(a) + g(b), 0.5 + 0.1 * a - 0.05 * b};  // a loss and an "accuracy"
  }
  std::vector<Direction> dirs() const {
    return {direction_from_flat(params, torch::tensor({1.0, 0.0}, torch::kFloat64), "e1"),
            direction_from_flat(params, torch::tensor({0.0, 1.0}, torch::kFloat64), "e2")};
  }
};

TEST(LandscapeSurface, NonSquareGridAxesInBothFileFormats) {
  Separable m;
  Perturbation p(m.params, m.dirs());
  SurfaceOptions o;
  o.x = parse_axis("-1:1:3", "--x");
  o.y = parse_axis("0:2:5", "--y");
  o.metrics = {"train_loss", "train_acc"};
  const Surface s = compute_surface(p, [&] { return m.eval(); }, o);
  ASSERT_EQ(s.nx(), 3u);
  ASSERT_EQ(s.ny(), 5u);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 5; ++j)
      EXPECT_DOUBLE_EQ(s.metric("train_loss")[i * 5 + j], Separable::f(s.x[i]) + Separable::g(s.y[j]));

  testing::TempDir dir;
  {
    ReportWriter w(dir.file("r.h5"));
    write_surface(w, s);
    w.commit();
  }
  write_loss_landscape_surface(dir.file("ll.h5"), s, Provenance{});
  ReportReader r(dir.file("r.h5"));
  std::vector<std::size_t> dims;
  const auto loss = r.read("/landscape/train_loss", &dims);
  EXPECT_EQ(dims, (std::vector<std::size_t>{3, 5}));
  const auto x = r.read("/landscape/xcoordinates"), y = r.read("/landscape/ycoordinates");
  EXPECT_EQ(x, (std::vector<double>{-1, 0, 1}));
  EXPECT_EQ(y.size(), 5u);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 5; ++j) EXPECT_DOUBLE_EQ(loss[i * 5 + j], Separable::f(x[i]) + Separable::g(y[j]));
  EXPECT_EQ(std::get<std::string>(r.attr("/landscape", "index_order")),
            "values[i, j] at (xcoordinates[i], ycoordinates[j])");

  // loss-landscape's plot_2D: X, Y = meshgrid(x, y) -> Z[i, j] at (x[j], y[i]), Z of shape [ny, nx].
  ReportReader l(dir.file("ll.h5"));
  const auto z = l.read("/train_loss", &dims);
  EXPECT_EQ(dims, (std::vector<std::size_t>{5, 3}));
  const auto zacc = l.read("/train_acc");
  for (std::size_t i = 0; i < 5; ++i)
    for (std::size_t j = 0; j < 3; ++j) {
      EXPECT_DOUBLE_EQ(z[i * 3 + j], Separable::f(x[j]) + Separable::g(y[i]));
      EXPECT_NEAR(zacc[i * 3 + j], 100.0 * (0.5 + 0.1 * x[j] - 0.05 * y[i]), 1e-12);  // percent, as theirs
    }
  EXPECT_EQ(l.read("/xcoordinates"), x);
  EXPECT_EQ(l.read("/ycoordinates"), y);
}

TEST(LandscapeSurface, OneDimensionalFilesHaveNoYAxis) {
  Separable m;
  Perturbation p(m.params, {m.dirs()[1]});
  SurfaceOptions o;
  o.x = parse_axis("-1:1:4", "--x");
  o.metrics = {"test_loss", "test_acc"};
  const Surface s = compute_surface(p, [&] { return m.eval(); }, o);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(s.values[0][i], Separable::f(0) + Separable::g(s.x[i]));
  testing::TempDir dir;
  {
    ReportWriter w(dir.file("r.h5"));
    write_surface(w, s);
    w.commit();
  }
  write_loss_landscape_surface(dir.file("ll.h5"), s, Provenance{});
  ReportReader r(dir.file("r.h5"));
  std::vector<std::size_t> dims;
  r.read("/landscape/test_loss", &dims);
  EXPECT_EQ(dims, std::vector<std::size_t>{4});
  EXPECT_FALSE(r.exists("/landscape/ycoordinates"));
  ReportReader l(dir.file("ll.h5"));
  EXPECT_EQ(l.read("/test_loss"), s.values[0]);
  EXPECT_FALSE(l.exists("/ycoordinates"));
}

int count_lines(const std::string& path) {
  std::ifstream f(path);
  int n = 0;
  for (std::string line; std::getline(f, line);) ++n;
  return n;
}

TEST(LandscapeSurface, ResumeSkipsFinishedPointsAndRecomputesTornOnes) {
  testing::TempDir dir;
  Separable m;
  int calls = 0;
  const PointEvaluator eval = [&] {
    ++calls;
    return m.eval();
  };
  SurfaceOptions o;
  o.x = parse_axis("-1:1:4", "--x");
  o.y = parse_axis("-1:2:3", "--y");
  o.metrics = {"train_loss", "train_acc"};
  o.settings = "dirs=e1,e2";

  Surface full;
  {
    Perturbation p(m.params, m.dirs());
    full = compute_surface(p, eval, o);
  }
  EXPECT_EQ(calls, 12);

  // A run stopped after 5 points ("killed"): the journal holds 2 header lines and 5 points.
  o.journal = dir.file("r.h5.partial");
  calls = 0;
  {
    Perturbation p(m.params, m.dirs());
    o.max_points = 5;
    const Surface part = compute_surface(p, eval, o);
    EXPECT_FALSE(part.complete());
    EXPECT_EQ(part.evaluated, 5);
  }
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(count_lines(o.journal), 2 + 5);

  // A run killed while writing its 6th line leaves a torn line: append one by hand.
  {
    std::ofstream f(o.journal, std::ios::app);
    f << "p 1 2 0.12345";
  }
  calls = 0;
  o.max_points = 0;
  o.resume = true;
  Surface resumed;
  {
    Perturbation p(m.params, m.dirs());
    resumed = compute_surface(p, eval, o);
  }
  EXPECT_EQ(calls, 12 - 5);  // nothing finished is evaluated again; the torn point is
  EXPECT_EQ(resumed.resumed, 5);
  EXPECT_EQ(resumed.evaluated, 7);
  ASSERT_TRUE(resumed.complete());
  // %.17g round-trips doubles exactly, so resumed values equal a fresh run's bit for bit
  EXPECT_EQ(resumed.values, full.values);

  // Resuming a finished journal evaluates nothing.
  calls = 0;
  {
    Perturbation p(m.params, m.dirs());
    EXPECT_TRUE(compute_surface(p, eval, o).complete());
  }
  EXPECT_EQ(calls, 0);

  // Other settings: refused, naming the journal.
  o.settings = "dirs=other";
  {
    Perturbation p(m.params, m.dirs());
    try {
      compute_surface(p, eval, o);
      ADD_FAILURE() << "resumed a journal with other settings";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("r.h5.partial"), std::string::npos);
    }
  }
  // Without resume the journal is replaced.
  o.resume = false;
  calls = 0;
  {
    Perturbation p(m.params, m.dirs());
    compute_surface(p, eval, o);
  }
  EXPECT_EQ(calls, 12);
}

TEST(LandscapeSurface, EvaluatorFailureKeepsFinishedPointsAndRestoresWeights) {
  testing::TempDir dir;
  torch::manual_seed(4);
  std::vector<NamedParameter> ps{{"w", torch::randn({3, 3}).requires_grad_(true)}};
  const auto w0 = ps[0].second.detach().clone();
  RandomDirectionOptions ro;
  ro.seed = 3;
  const Direction d = random_direction(ps, ro);
  SurfaceOptions o;
  o.x = parse_axis("-1:1:9", "--x");
  o.metrics = {"train_loss"};
  o.journal = dir.file("j");
  int calls = 0;
  const auto loss = [&] { return std::vector<double>{ps[0].second.detach().square().sum().item<double>()}; };
  {
    Perturbation p(ps, {d});
    EXPECT_THROW(compute_surface(p,
                                 [&] {
                                   if (++calls == 4) throw std::runtime_error("killed");
                                   return loss();
                                 },
                                 o),
                 std::runtime_error);
    EXPECT_TRUE(torch::equal(ps[0].second.detach(), w0));  // restored although the evaluation threw
  }
  o.resume = true;
  calls = 0;
  Perturbation p(ps, {d});
  const Surface s = compute_surface(p,
                                    [&] {
                                      ++calls;
                                      return loss();
                                    },
                                    o);
  EXPECT_EQ(calls, 9 - 3);
  EXPECT_TRUE(s.complete());
}

TEST(LandscapeSharpness, QuadraticIncreaseMatchesClosedForm) {
  // L(w0 + r d) - L(w0) = r g.d + 0.5 r^2 d^T A d per direction, averaged over M directions drawn as documented
  // (random_direction with seed + m, filter-normalised, biasbn).
  Quadratic q(8, /*at_origin=*/false);
  const Eigen::VectorXd g = q.A * (q.w() - q.c);
  const Eigen::VectorXd w0 = q.w();
  SharpnessOptions o;
  o.radii = {0.05, 0.5};
  o.directions = 6;
  o.seed = 100;
  const SharpnessResult r = sharpness(q.params, [&] { return q.loss(); }, o);
  EXPECT_NEAR(r.base_loss, 0.5 * (w0 - q.c).dot(q.A * (w0 - q.c)), 1e-12);
  for (std::size_t k = 0; k < 2; ++k) {
    std::vector<double> want;
    for (std::int64_t m = 1; m <= 6; ++m) {
      RandomDirectionOptions ro;
      ro.seed = 100 + static_cast<std::uint64_t>(m);
      const Eigen::VectorXd d = flat(random_direction(q.params, ro));
      const double rr = o.radii[k];
      want.push_back(rr * g.dot(d) + 0.5 * rr * rr * d.dot(q.A * d));
    }
    double mean = 0, mx = -1e300;
    for (std::size_t m = 0; m < want.size(); ++m) {
      EXPECT_NEAR(r.increases[k][m], want[m], 1e-11 * (1.0 + r.base_loss));
      mean += want[m] / 6.0;
      mx = std::max(mx, want[m]);
    }
    EXPECT_NEAR(r.mean_increase[k], mean, 1e-11 * (1.0 + r.base_loss));
    EXPECT_NEAR(r.max_increase[k], mx, 1e-11 * (1.0 + r.base_loss));
    EXPECT_GT(r.stderr_increase[k], 0.0);
  }
  EXPECT_TRUE((q.w() - w0).cwiseAbs().maxCoeff() == 0.0);  // restored exactly
  o.directions = 0;
  EXPECT_THROW(sharpness(q.params, [&] { return q.loss(); }, o), std::invalid_argument);
}

}  // namespace
}  // namespace moescope
