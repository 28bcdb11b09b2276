// `moescope hessian` end to end on a run made with the library (a small gated-MoE classifier on the clustered
// task): the report's eigenvalues and trace against a dense eigendecomposition of the Hessian assembled column by
// column with HVPs, per-expert groups against the dense Hessian's diagonal blocks, bad flags exit 2, and two
// data-parallel processes against one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "moescope/curvature/distributed.hpp"
#include "moescope/curvature/hvp.hpp"
#include "moescope/model/params.hpp"
#include "moescope/io/report.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/model/task.hpp"
#include "support/fixtures.hpp"
#include "support/runs.hpp"

namespace moescope {
namespace {

namespace fs = std::filesystem;
using testing::run_moescope;
using testing::TempDir;

constexpr std::int64_t kSamples = 200;  // --max-samples of every run below

DataSpec small_data() { return testing::clustered_data(300, 6, 2, 3, 5); }

// RUN/config.json + RUN/step_0/model.safetensors, as the trainer writes them; returns RUN.
std::string make_run(const TempDir& dir) {
  const nlohmann::json model{{"type", "classifier"},    {"backbone", "mlp"},  {"head", "gated"},
                             {"in_channels", 6},        {"image_size", 1},    {"num_classes", 3},
                             {"backbone_widths", {8}},  {"batch_norm", false}, {"head_hidden", 4},
                             {"experts", 2}};
  return testing::write_untrained_run(dir.path(), "run", model, small_data(), 31);
}

// The Hessian of the mean loss over the split's first kSamples samples, one HVP per column (float32 model), in
// named_parameters order, symmetrised; names and offsets of the parameters alongside.
struct DenseHessian {
  Eigen::MatrixXd h;
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> where;  // name -> (offset, size)
};
DenseHessian dense_hessian(const std::string& run_path, const std::string& split) {
  const LoadedRun run = load_run(run_path);
  const Dataset data = load_dataset(run.data);
  const TensorSplit s = data.split(split).head(kSamples);
  const auto chosen = select_parameters(run.model.module(), "all");
  DenseHessian d;
  std::vector<torch::Tensor> params;
  std::int64_t at = 0;
  for (const auto& [name, t] : chosen) {
    params.push_back(t);
    d.where[name] = {at, t.numel()};
    at += t.numel();
  }
  const TaskModel model = run.model;
  HessianOperator op(params, [&](std::int64_t) {
    const BatchResult r = model.batch_loss(s.inputs, s.targets);
    return BatchLoss{r.loss, r.count};
  }, 1);
  const std::int64_t n = op.size();
  d.h.resize(n, n);
  for (std::int64_t j = 0; j < n; ++j) d.h.col(j) = op.apply(Eigen::VectorXd::Unit(n, j));
  d.h = (0.5 * (d.h + d.h.transpose())).eval();  // eval: the transpose aliases d.h
  return d;
}

Eigen::VectorXd descending_eigenvalues(const Eigen::MatrixXd& h) {
  return Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(h, Eigen::EigenvaluesOnly).eigenvalues().reverse();
}

std::string attr_string(const ReportReader& r, const std::string& obj, const std::string& name) {
  return std::get<std::string>(r.attr(obj, name));
}

// Eigenvalues from a float32 HVP: the assembled H and every product carry float32 rounding, ~1e-7 relative per
// sum of a few hundred terms; with Ritz residuals at tol 1e-6 the eigenvalues agree to 1e-4 * |lambda_1| plus the
// reported residual (Krylov-Bogoliubov), a bound float32 noise cannot reach and a wrong Hessian cannot meet.
void expect_eigs_match(const std::vector<double>& got, const std::vector<double>& resid, const Eigen::VectorXd& want) {
  ASSERT_LE(got.size(), static_cast<std::size_t>(want.size()));
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_LE(std::abs(got[i] - want(static_cast<Eigen::Index>(i))), resid[i] + 1e-4 * std::abs(want(0))) << i;
}

TEST(CliHessian, TopEigenvaluesAndTraceMatchTheDenseHessian) {
  TempDir dir;
  const std::string run = make_run(dir);
  const DenseHessian train = dense_hessian(run, "train"), test = dense_hessian(run, "test");
  const std::int64_t n = train.h.rows();
  const std::string out = dir.file("h.h5");
  // Hutch++ with 3n probes spans the whole space: its estimate is the exact trace.
  const auto r = run_moescope({"hessian", run, "--split", "train,test", "--top-k", "3", "--max-samples",
                               std::to_string(kSamples), "--batch-size", "64", "--trace", "hutch++", "--probes",
                               std::to_string(3 * n), "--seed", "3", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader rep(out);
  for (const auto& [split, dense] : {std::pair<std::string, const DenseHessian*>{"train", &train}, {"test", &test}}) {
    SCOPED_TRACE(split);
    const std::string base = "/hessian/" + split;
    const auto ev = rep.read(base + "/eigenvalues");
    const auto res = rep.read(base + "/residuals");
    ASSERT_EQ(ev.size(), 3u);
    ASSERT_EQ(res.size(), 3u);
    const Eigen::VectorXd want = descending_eigenvalues(dense->h);
    expect_eigs_match(ev, res, want);
    // The trace: exact up to float32 rounding of the products, 1e-4 of sum |lambda|.
    EXPECT_NEAR(rep.read_scalar(base + "/trace"), dense->h.trace(), 1e-4 * want.cwiseAbs().sum());
    EXPECT_TRUE(rep.exists(base + "/trace_stderr"));
    EXPECT_EQ(attr_string(rep, base, "method"), "device_lanczos");
    EXPECT_EQ(attr_string(rep, base, "status"), "converged");
    EXPECT_EQ(attr_string(rep, base, "params"), "all");
    EXPECT_EQ(attr_string(rep, base, "trace_method"), "hutch++");
    EXPECT_EQ(std::get<std::int64_t>(rep.attr(base, "probes")), 3 * n);
    EXPECT_EQ(std::get<double>(rep.attr(base, "tol")), 1e-6);
    EXPECT_EQ(std::get<std::int64_t>(rep.attr(base, "parameters")), n);
    // Every product is counted: the eigensolver's and the trace's 3n.
    EXPECT_EQ(rep.read_scalar(base + "/matvecs"),
              static_cast<double>(std::get<std::int64_t>(rep.attr(base, "eigen_matvecs")) + 3 * n));
    // The clustered task's test split has samples / 5 = 60 samples, fewer than --max-samples.
    EXPECT_EQ(std::get<std::int64_t>(rep.attr(base, "samples")), split == "train" ? kSamples : 60);
  }
  EXPECT_EQ(attr_string(rep, "/", "device"), "cpu");

  // Spectra (the reference solver), a different batch size and kept graphs give the same top eigenvalue.
  const std::string out2 = dir.file("spectra.h5");
  const auto r2 = run_moescope({"hessian", run, "--solver", "spectra", "--top-k", "2", "--max-samples",
                                std::to_string(kSamples), "--batch-size", "7", "--keep-graph", "-o", out2});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  ReportReader rep2(out2);
  expect_eigs_match(rep2.read("/hessian/train/eigenvalues"), rep2.read("/hessian/train/residuals"),
                    descending_eigenvalues(train.h));
  EXPECT_EQ(attr_string(rep2, "/hessian/train", "method"), "spectra");
}

TEST(CliHessian, EachExpertGroupsMatchDiagonalBlocksAndDensityIsSaved) {
  TempDir dir;
  const std::string run = make_run(dir);
  const DenseHessian dense = dense_hessian(run, "train");
  const std::string out = dir.file("experts.h5");
  const auto r = run_moescope({"hessian", run, "--params", "each-expert", "--top-k", "2", "--max-samples",
                               std::to_string(kSamples), "--density", "--density-steps", "30",
                               "--eigenvectors", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader rep(out);
  const auto groups = rep.list("/hessian/train");
  for (const std::string g : {"expert_0_0", "expert_0_1"}) {
    SCOPED_TRACE(g);
    ASSERT_NE(std::find(groups.begin(), groups.end(), g), groups.end());
    const std::string base = "/hessian/train/" + g;
    // The expert's block of the full Hessian: rows and columns of its parameters, in the report's order.
    std::vector<std::int64_t> idx;
    for (const auto& name : rep.read_strings(base + "/param_names")) {
      ASSERT_TRUE(dense.where.count(name)) << name;
      EXPECT_NE(name.find("experts." + g.substr(g.size() - 1)), std::string::npos) << name;
      const auto [off, size] = dense.where.at(name);
      for (std::int64_t i = 0; i < size; ++i) idx.push_back(off + i);
    }
    const auto m = static_cast<Eigen::Index>(idx.size());
    Eigen::MatrixXd block(m, m);
    for (Eigen::Index i = 0; i < m; ++i)
      for (Eigen::Index j = 0; j < m; ++j) block(i, j) = dense.h(idx[i], idx[j]);
    expect_eigs_match(rep.read(base + "/eigenvalues"), rep.read(base + "/residuals"), descending_eigenvalues(block));
    // Each group names the subset that selected it; the split names the whole request.
    EXPECT_EQ(attr_string(rep, base, "params"), "expert:0." + g.substr(g.size() - 1));
    EXPECT_EQ(attr_string(rep, "/hessian/train", "params"), "each-expert");
    // Eigenvectors [2, m], unit rows.
    std::vector<std::size_t> dims;
    const auto vecs = rep.read(base + "/eigenvectors", &dims);
    ASSERT_EQ(dims, (std::vector<std::size_t>{2, static_cast<std::size_t>(m)}));
    double norm0 = 0;
    for (Eigen::Index i = 0; i < m; ++i) norm0 += vecs[static_cast<std::size_t>(i)] * vecs[static_cast<std::size_t>(i)];
    EXPECT_NEAR(norm0, 1.0, 1e-6);
    // The density: 10000 points (the default), non-negative, integrating to 1 up to the kernel tails cut by the grid.
    const auto grid = rep.read(base + "/density/grid"), values = rep.read(base + "/density/values");
    ASSERT_EQ(grid.size(), 10000u);
    ASSERT_EQ(values.size(), 10000u);
    EXPECT_TRUE(std::all_of(values.begin(), values.end(), [](double v) { return v >= 0; }));
    EXPECT_NEAR(std::get<double>(rep.attr(base + "/density", "mass")), 1.0, 1e-2);
  }
}

TEST(CliHessian, BadFlagsExitTwoWithOneLineAndNoReport) {
  TempDir dir;
  const std::string run = make_run(dir);
  const std::string out = dir.file("bad.h5");
  auto bad = [&](std::vector<std::string> extra, const std::string& needle) {
    std::vector<std::string> args = {"hessian", run, "--max-samples", "50", "-o", out};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_moescope(args);
    EXPECT_EQ(r.exit_code, 2) << needle << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_FALSE(testing::file_exists(out)) << needle;
    EXPECT_FALSE(testing::file_exists(out + ".tmp")) << needle;
  };
  bad({"--split", "bogus"}, "--split");
  bad({"--top-k", "0"}, "--top-k");
  bad({"--params", "expert:7.7"}, "params 'expert:7.7'");
  bad({"--solver", "spectra", "--top-k", "100000"}, "--solver spectra");
  bad({"--trace", "xtrace", "--probes", "100000"}, "--trace xtrace");
  bad({"--world-size", "2"}, "--init");
  if (!torch::cuda::is_available()) bad({"--device", "cuda"}, "--device cuda");
  const auto missing = run_moescope({"hessian", dir.file("nowhere"), "-o", out});
  EXPECT_EQ(missing.exit_code, 2) << missing.err;
  EXPECT_NE(missing.err.find("nowhere"), std::string::npos) << missing.err;
  // Regression: a checkpoint that is not a run said ".: no config.json here or in the parent directory".
  SyntheticCheckpointOptions so;
  so.experts = 4;
  so.hidden = 8;
  so.intermediate = 8;
  const std::string ckpt = dir.file("model.safetensors");
  write_synthetic_checkpoint(ckpt, so);
  const auto foreign = run_moescope({"hessian", ckpt, "-o", out});
  EXPECT_EQ(foreign.exit_code, 2) << foreign.err;
  EXPECT_EQ(foreign.err.rfind("moescope: error: " + ckpt + ": not a moescope run", 0), 0u) << foreign.err;
  EXPECT_NE(foreign.err.find("a run is the folder `moescope train` writes"), std::string::npos) << foreign.err;
}

// Two processes, each with half of the evaluation set, joined through a FileStore: rank 0's report equals the
// one-process report to float32 rounding of the reordered sums (1e-4 relative after Lanczos), rank 1 writes none.
TEST(CliHessian, TwoDataParallelProcessesMatchOne) {
  if (!distributed_available()) GTEST_SKIP() << "built without c10d Gloo (libgloo-dev)";
  TempDir dir;
  const std::string run = make_run(dir);
  const std::vector<std::string> common = {"hessian", run, "--top-k", "2", "--max-samples", std::to_string(kSamples),
                                           "--trace", "hutchinson", "--probes", "10"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const auto one = run_moescope(with({"-o", dir.file("one.h5")}));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const std::string init = "file://" + dir.file("store");
  auto r0 = std::async(std::launch::async, [&] {
    return run_moescope(with({"--world-size", "2", "--rank", "0", "--init", init, "-o", dir.file("dp.h5")}));
  });
  auto r1 = std::async(std::launch::async, [&] {
    return run_moescope(with({"--world-size", "2", "--rank", "1", "--init", init, "-o", dir.file("dp1.h5")}));
  });
  const auto a = r0.get(), b = r1.get();
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_FALSE(testing::file_exists(dir.file("dp1.h5")));
  ReportReader x(dir.file("one.h5")), y(dir.file("dp.h5"));
  const auto ex = x.read("/hessian/train/eigenvalues"), ey = y.read("/hessian/train/eigenvalues");
  ASSERT_EQ(ex.size(), ey.size());
  for (std::size_t i = 0; i < ex.size(); ++i) EXPECT_NEAR(ex[i], ey[i], 1e-4 * std::abs(ex[0])) << i;
  // Same probes (same seed) on the same Hessian: the Hutchinson estimates agree to float32 rounding too.
  EXPECT_NEAR(x.read_scalar("/hessian/train/trace"), y.read_scalar("/hessian/train/trace"),
              1e-4 * std::abs(x.read_scalar("/hessian/train/trace")) + 1e-6);
  EXPECT_NEAR(x.read_scalar("/hessian/train/loss"), y.read_scalar("/hessian/train/loss"), 1e-6);
  EXPECT_EQ(std::get<std::int64_t>(y.attr("/hessian", "world_size")), 2);
}

}  // namespace
}  // namespace moescope
