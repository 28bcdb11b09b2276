// `moescope landscape` end to end on runs made here (TaskModel::create + save_module_weights, the trainer's layout):
// the grid's centre and an interpolation's ends against evaluate(), resume after a stop, the loss-landscape
// file, reusable direction files, Hessian eigen-directions against the surface's curvature, bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "moescope/io/report.hpp"
#include "moescope/model/task.hpp"
#include "support/fixtures.hpp"
#include "support/runs.hpp"

namespace moescope {
namespace {

namespace fs = std::filesystem;
using testing::run_moescope;
using testing::TempDir;

DataSpec small_data() { return testing::clustered_data(300, 6, 3, 4, 2); }

nlohmann::json small_model() {
  return {{"type", "classifier"}, {"backbone", "mlp"}, {"head", "sparse"}, {"in_channels", 6},
          {"image_size", 1},      {"num_classes", 4},  {"backbone_widths", {12}}, {"head_hidden", 8},
          {"experts", 4},         {"top_k", 2},        {"activation", "gelu"}};
}

// runs/NAME/{config.json, step_0/model.safetensors} with weights from torch seed `seed`.
std::string make_run(const TempDir& dir, const std::string& name, std::uint64_t seed) {
  return testing::write_untrained_run(dir.path(), name, small_model(), small_data(), seed);
}

double eval_loss(const std::string& run, const std::string& split, std::int64_t n, double* acc = nullptr) {
  const LoadedRun r = load_run(run);
  const Dataset d = load_dataset(r.data);
  const EvalResult e = evaluate(r.model, d.split(split).head(n), 512);
  if (acc) *acc = e.accuracy;
  return e.loss;
}

TEST(CliLandscape, TwoDimensionalGridCentreIsTheRunsLoss) {
  TempDir dir;
  const std::string a = make_run(dir, "a", 1);
  const std::string out = dir.file("r.h5");
  const auto r = run_moescope({"landscape", a, "--dirs", "filter", "--x", "-1:1:3", "--y", "0:0.5:2", "--split",
                               "train,test", "--max-samples", "64", "--seed", "5", "--sharpness", "0.1,0.2",
                               "--sharpness-dirs", "2", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(testing::file_exists(out + ".partial"));
  ReportReader rep(out);
  std::vector<std::size_t> dims;
  const auto loss = rep.read("/landscape/train_loss", &dims);
  EXPECT_EQ(dims, (std::vector<std::size_t>{3, 2}));
  EXPECT_EQ(rep.read("/landscape/xcoordinates"), (std::vector<double>{-1, 0, 1}));
  EXPECT_EQ(rep.read("/landscape/ycoordinates"), (std::vector<double>{0, 0.5}));
  // (x[1], y[0]) = (0, 0): w0 + 0 dx + 0 dy is w0 bit for bit, so the loss is evaluate()'s exactly
  double acc = 0;
  EXPECT_DOUBLE_EQ(loss[1 * 2 + 0], eval_loss(a, "train", 64, &acc));
  EXPECT_DOUBLE_EQ(rep.read("/landscape/train_acc")[2], acc);
  EXPECT_DOUBLE_EQ(rep.read("/landscape/test_loss")[2], eval_loss(a, "test", 64));
  // a filter-normalised step of size 1 changes the loss
  EXPECT_GT(std::abs(loss[0] - loss[2]), 1e-6);
  EXPECT_EQ(std::get<std::int64_t>(rep.attr("/", "seed")), 5);
  EXPECT_EQ(std::get<std::string>(rep.attr("/landscape", "x_direction_normalization")), "filter");
  EXPECT_EQ(rep.read("/landscape/sharpness/mean_increase").size(), 2u);
  EXPECT_DOUBLE_EQ(rep.read_scalar("/landscape/sharpness/base_loss"), loss[2]);
}

TEST(CliLandscape, InterpolationReproducesBothCheckpoints) {
  TempDir dir;
  const std::string a = make_run(dir, "a", 1), b = make_run(dir, "b", 2);
  const std::string out = dir.file("i.h5");
  const auto r = run_moescope({"landscape", a, "--dirs", b, "--x", "0:1:2", "--split", "valid", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto loss = ReportReader(out).read("/landscape/valid_loss");
  ASSERT_EQ(loss.size(), 2u);
  EXPECT_DOUBLE_EQ(loss[0], eval_loss(a, "valid", 0));
  // a = 1 gives w_a + (w_b - w_a), within an ulp of w_b per float32 weight: the loss agrees to ~1e-6 relative
  const double lb = eval_loss(b, "valid", 0);
  EXPECT_NEAR(loss[1], lb, 1e-5 * lb);
  EXPECT_GT(std::abs(loss[0] - loss[1]), 1e-4);  // the two runs really differ
  EXPECT_EQ(std::get<std::string>(ReportReader(out).attr("/landscape", "dirs")), "interpolation");
}

TEST(CliLandscape, StoppedRunResumesWithoutRecomputing) {
  TempDir dir;
  const std::string a = make_run(dir, "a", 1);
  const std::string out = dir.file("r.h5"), fresh = dir.file("fresh.h5");
  const std::vector<std::string> base{"landscape", a, "--dirs", "layer", "--x", "-1:1:3", "--y", "-1:1:2",
                                      "--split", "train,test", "--max-samples", "50"};
  auto with = [&](std::vector<std::string> extra, const std::string& o) {
    auto v = base;
    v.insert(v.end(), extra.begin(), extra.end());
    v.push_back("-o");
    v.push_back(o);
    return run_moescope(v);
  };
  auto r = with({"--max-points", "2"}, out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(testing::file_exists(out));
  EXPECT_TRUE(testing::file_exists(out + ".partial"));
  EXPECT_NE(r.out.find("--resume"), std::string::npos) << r.out;
  r = with({}, out);  // an unfinished journal is not overwritten silently
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
  r = with({"--resume"}, out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("6 points, 4 evaluated"), std::string::npos) << r.out;
  EXPECT_FALSE(testing::file_exists(out + ".partial"));
  r = with({}, fresh);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* m : {"/landscape/train_loss", "/landscape/train_acc", "/landscape/test_loss"})
    EXPECT_EQ(ReportReader(out).read(m), ReportReader(fresh).read(m)) << m;
}

TEST(CliLandscape, LossLandscapeFileAndReusableDirections) {
  TempDir dir;
  const std::string a = make_run(dir, "a", 1);
  const std::string out = dir.file("r.h5"), dirs = dir.file("dirs.h5");
  auto r = run_moescope({"landscape", a, "--dirs", "filter", "--x", "-1:1:3", "--y", "-0.5:0.5:2", "--split", "train",
                         "--max-samples", "40", "--format", "loss-landscape", "--save-dirs", dirs, "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ours = ReportReader(out).read("/landscape/train_loss");
  const auto ours_acc = ReportReader(out).read("/landscape/train_acc");
  ReportReader ll(dir.file("r.loss-landscape.h5"));
  std::vector<std::size_t> dims;
  const auto z = ll.read("/train_loss", &dims);
  EXPECT_EQ(dims, (std::vector<std::size_t>{2, 3}));  // [ny, nx]: Z[i, j] at (x[j], y[i])
  const auto zacc = ll.read("/train_acc");
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 2; ++j) {
      EXPECT_EQ(z[j * 3 + i], ours[i * 2 + j]);
      EXPECT_DOUBLE_EQ(zacc[j * 3 + i], 100.0 * ours_acc[i * 2 + j]);
    }
  // The saved directions give the same surface again.
  r = run_moescope({"landscape", a, "--dirs", dirs, "--x", "-1:1:3", "--y", "-0.5:0.5:2", "--split", "train",
                    "--max-samples", "40", "-o", dir.file("again.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReportReader(dir.file("again.h5")).read("/landscape/train_loss"), ours);
}

TEST(CliLandscape, EigenDirectionCurvatureMatchesItsEigenvalue) {
  TempDir dir;
  const std::string a = make_run(dir, "a", 3);
  const std::string out = dir.file("e.h5");
  const double h = 0.1;
  const auto r = run_moescope({"landscape", a, "--dirs", "eigen", "--x", "-0.1:0.1:3", "--split", "train",
                               "--max-samples", "128", "--params", "expert:0.0", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader rep(out);
  const auto l = rep.read("/landscape/train_loss");
  const auto lambda = rep.read("/landscape/eigenvalues");
  ASSERT_EQ(lambda.size(), 1u);
  ASSERT_GT(lambda[0], 0.0);
  // Along a unit eigenvector v of expert 0's block (GELU: the loss is smooth in it; routing does not depend on
  // the expert's weights): L(h v) + L(-h v) - 2 L(0) = lambda h^2 + O(h^4) (the cubic terms cancel); float32
  // losses add ~1e-7 absolute. A 10% band covers the quartic term at h = 0.1 for this small net.
  const double second = (l[0] + l[2] - 2 * l[1]) / (h * h);
  EXPECT_NEAR(second, lambda[0], 0.1 * lambda[0]) << "residual " << rep.read("/landscape/eigen_residuals")[0];
}

// Regression: --dirs eigen threw a plain runtime error (exit 1) when Lanczos did not converge, with its own
// tolerance and step limit. It now solves as `hessian` does and records the status; a direction from an
// unconverged Ritz vector is still a direction.
TEST(CliLandscape, EigenDirectionsFromAnUnconvergedSolveAreKeptWithTheirStatus) {
  TempDir dir;
  const std::string a = make_run(dir, "a", 3);
  const std::string out = dir.file("e.h5");
  const auto r = run_moescope({"landscape", a, "--dirs", "eigen", "--x", "-0.1:0.1:3", "--y", "-0.1:0.1:2",
                               "--max-samples", "64", "--eigen-max-steps", "2", "--eigen-tol", "1e-14", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("not_converged"), std::string::npos) << r.err;
  ReportReader rep(out);
  EXPECT_EQ(std::get<std::string>(rep.attr("/landscape", "eigen_status")), "not_converged");
  EXPECT_EQ(rep.read("/landscape/eigenvalues").size(), 2u);
}

TEST(CliLandscape, BadInputExitsTwoNamingTheFlag) {
  TempDir dir;
  const std::string a = make_run(dir, "a", 1);
  auto r = run_moescope({"landscape", a, "--dirs", "filter", "--x", "1:-1:3", "-o", dir.file("r.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--x"), std::string::npos) << r.err;
  r = run_moescope({"landscape", a, "--dirs", dir.file("nosuch"), "--x", "-1:1:3", "-o", dir.file("r.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--dirs"), std::string::npos) << r.err;
  r = run_moescope({"landscape", a, "--dirs", "filter", "--x", "-1:1:3", "--params", "expert:9.9", "-o",
                    dir.file("r.h5")});
  EXPECT_EQ(r.exit_code, 2);
  r = run_moescope({"landscape", dir.file("norun"), "--dirs", "filter", "--x", "-1:1:3", "-o", dir.file("r.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_FALSE(testing::file_exists(dir.file("r.h5")));
}

}  // namespace
}  // namespace moescope
