// curvature/analysis: the Hessian analysis of a run as a library call, and its report group. The reference is the
// dense Hessian assembled from unit-vector products and diagonalised by Eigen; eigenvalues must lie within the
// reported Ritz residual (a rigorous bound for a symmetric matrix) plus float32 rounding of the products.
#include "moescope/curvature/analysis.hpp"

#include <gtest/gtest.h>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>

#include "moescope/io/report.hpp"
#include "moescope/model/params.hpp"
#include "support/fixtures.hpp"
#include "support/runs.hpp"

namespace moescope {
namespace {

DataSpec clustered() { return testing::clustered_data(200, 5, 2, 3); }

nlohmann::json model() {
  return {{"type", "classifier"}, {"backbone", "mlp"}, {"head", "gated"},       {"in_channels", 5},
          {"image_size", 1},      {"num_classes", 3},   {"backbone_widths", {8}}, {"head_hidden", 4},
          {"experts", 3},         {"activation", "gelu"}};
}

// The dense Hessian of the run's train loss over one expert, column by column.
Eigen::MatrixXd dense_hessian(LoadedRun& run, const std::string& params, std::int64_t samples) {
  const EvalData d = load_eval_data(run, EvalSpec{"", {"train"}, samples, 64});
  std::vector<torch::Tensor> ps;
  for (const auto& p : select_parameters(run.model.module(), params)) ps.push_back(p.second);
  const TensorSplit s = d.splits[0];
  const TaskModel m = run.model;
  const HessianOperator op(ps, [&](std::int64_t) { const auto r = m.batch_loss(s.inputs, s.targets); return BatchLoss{r.loss, r.count}; }, 1);
  Eigen::MatrixXd h(op.size(), op.size());
  for (std::int64_t i = 0; i < op.size(); ++i) h.col(i) = op.apply(Eigen::VectorXd::Unit(op.size(), i));
  return (h + h.transpose()) / 2;
}

TEST(HessianAnalysis, EverySolverFindsTheDenseTopEigenvalues) {
  testing::TempDir dir;
  LoadedRun run = load_run(testing::write_untrained_run(dir.path(), "r", model(), clustered(), 5));
  const Eigen::VectorXd la = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(dense_hessian(run, "expert:0.1", 120))
                                 .eigenvalues()
                                 .reverse();
  // Power iteration finds the largest magnitudes.
  std::vector<double> by_magnitude(la.data(), la.data() + la.size());
  std::sort(by_magnitude.begin(), by_magnitude.end(), [](double a, double b) { return std::abs(a) > std::abs(b); });
  for (const char* solver : {"lanczos", "spectra", "power"}) {
    const bool power = std::string(solver) == "power";
    const Eigen::VectorXd want = power ? Eigen::Map<const Eigen::VectorXd>(by_magnitude.data(), la.size()) : la;
    HessianRequest r;
    r.eval = EvalSpec{"", {"train"}, 120, 32};  // other batches than the dense reference: the mean is the same
    r.params = "expert:0.1";
    r.eigen.solver = solver;
    r.eigen.k = 2;
    if (power) {
      r.eigen.tol = 1e-10;
      r.eigen.max_steps = 2000;
    }
    r.trace = "hutch++";
    r.probes = 3 * static_cast<std::int64_t>(want.size());  // Hutch++ with m >= 3n is exact (Q spans the space)
    const HessianAnalysis a = analyse_hessian(run, r);
    ASSERT_EQ(a.splits.size(), 1u);
    const HessianGroup& g = a.splits[0].groups.at(0);
    EXPECT_EQ(g.n, want.size());
    for (int i = 0; i < 2; ++i) {
      // Ritz residual bound, plus float32 products (~1e-6 relative to the largest eigenvalue).
      EXPECT_NEAR(g.eigen.eigenvalues(i), want(i), g.eigen.residuals(i) + 1e-5 * std::abs(want(0)))
          << solver << " pair " << i;
    }
    EXPECT_NEAR(g.trace->estimate, want.sum(), 1e-4 * want.cwiseAbs().sum()) << solver;
  }
}

TEST(HessianAnalysis, EachExpertGroupsAreWrittenAsTheReportSays) {
  testing::TempDir dir;
  LoadedRun run = load_run(testing::write_untrained_run(dir.path(), "r", model(), clustered(), 6));
  HessianRequest r;
  r.eval = EvalSpec{"", {"train", "test"}, 40, 16};
  r.params = "each-expert";
  r.density = true;
  r.slq.steps = 10;
  r.density_bins = 50;
  const HessianAnalysis a = analyse_hessian(run, r);
  ASSERT_EQ(a.splits.size(), 2u);
  ASSERT_EQ(a.splits[0].groups.size(), 3u);  // 3 experts in the one MoE layer
  const std::string f = dir.file("h.h5");
  {
    ReportWriter w(f);
    write_hessian(w, a, r);
    w.commit();
  }
  const ReportReader rep(f);
  for (const char* split : {"train", "test"}) {
    const std::string base = std::string("/hessian/") + split;
    EXPECT_TRUE(rep.exists(base + "/loss"));
    for (int e = 0; e < 3; ++e) {
      const std::string g = base + "/expert_0_" + std::to_string(e);
      EXPECT_EQ(rep.read(g + "/eigenvalues").size(), 1u) << g;
      EXPECT_EQ(rep.read(g + "/density/values").size(), 50u) << g;
      EXPECT_EQ(std::get<std::string>(rep.attr(g, "params")), "expert:0." + std::to_string(e));
    }
  }
  EXPECT_EQ(std::get<std::string>(rep.attr("/hessian/train", "layout")), "expert_L_E per expert");
}

}  // namespace
}  // namespace moescope
