// curvature/analysis on a Hugging Face model folder opened as a run: the Hessian of the LM loss over one expert, as
// analyse_hessian computes it from `--tokens` data in several batches, equals the dense Hessian assembled by central
// differences of gradients of a loss written out here (the forward's logits, log-softmax, next-token targets).
#include <gtest/gtest.h>

#include <Eigen/Dense>

#include <cmath>
#include <fstream>

#include "moescope/curvature/analysis.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/model/params.hpp"
#include "moescope/util/random.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;

// Central differences with h = 1e-4 in float64: truncation h^2/6 |d^3 L| ~ 1e-9 and rounding eps |g| / h ~ 1e-12
// against entries of order 1e-2 .. 1, so 1e-6 of the largest entry bounds the difference; eigenvalues of two
// symmetric matrices differ by at most the spectral norm of their difference (Weyl), <= n * max entry.
TEST(HessianAnalysisHF, ExpertHessianEqualsFiniteDifferencesOfTheLoss) {
  TempDir dir;
  SyntheticModelOptions so;
  so.family = "mixtral";
  so.dtype = DType::F64;
  so.seed = 4;
  so.config_overrides = nlohmann::json::parse(
      R"({"hidden_size": 16, "intermediate_size": 6, "num_attention_heads": 2, "num_key_value_heads": 1})");
  const std::string path = dir.file("m");
  write_synthetic_model(path, so);

  const std::int64_t C = 8, N = 3;
  Rng rng(5);
  std::vector<std::int64_t> ids;
  {
    std::ofstream f(dir.file("ids.txt"));
    for (int i = 0; i < 200; ++i) {
      ids.push_back(static_cast<std::int64_t>(rng.below(250)));
      f << ids.back() << ' ';
    }
  }
  auto inputs = torch::empty({N, C}, torch::kLong), targets = inputs.clone();
  for (std::int64_t w = 0; w < N; ++w)
    for (std::int64_t j = 0; j < C; ++j) {
      inputs[w][j] = ids[static_cast<std::size_t>(w * C + j)];
      targets[w][j] = ids[static_cast<std::size_t>(w * C + j + 1)];
    }

  // The expert of the last layer with the most tokens (no routing downstream of it can flip under the differences).
  std::int64_t e = 0;
  {
    HFCausalLM probe = load_hf_model(path);
    HFForwardOptions fo;
    fo.moe_trace = true;
    e = torch::bincount(probe->forward_with(inputs, fo).moe.back().topk_experts.reshape({-1}), {}, 4)
            .argmax()
            .item<std::int64_t>();
  }
  const std::string spec = "expert:1." + std::to_string(e);
  RunLoadOptions lo;
  lo.dtype = HFDType::F64;
  lo.trainable = spec;
  LoadedRun run = load_run(path, lo);

  HessianRequest r;
  r.eval.data = "tokens:" + dir.file("ids.txt");
  r.eval.context = C;
  r.eval.max_samples = N;
  r.eval.batch_size = 2;  // batches of 2 and 1 windows, token-weighted
  r.params = spec;
  r.eigen.k = 3;
  r.eigen.tol = 1e-10;
  r.eigenvectors = true;
  r.trace = "hutchinson";
  r.probes = 40;
  const HessianAnalysis a = analyse_hessian(run, r);
  ASSERT_EQ(a.splits.size(), 1u);
  const HessianGroup& g = a.splits[0].groups.at(0);
  ASSERT_EQ(g.n, 3 * 6 * 16);
  EXPECT_EQ(g.param_names.size(), 3u);

  // The loss written out: mean over the N * C positions of -log softmax(logits)[target].
  HFCausalLMImpl& m = run.model.hf();
  auto loss = [&]() {
    const auto logp = torch::log_softmax(m.forward(inputs), -1);
    return -logp.gather(-1, targets.unsqueeze(-1)).mean();
  };
  {
    torch::NoGradGuard ng;
    EXPECT_NEAR(a.splits[0].loss, loss().item<double>(), 1e-12);
  }
  std::vector<torch::Tensor> params;
  for (const auto& p : select_parameters(m, spec)) params.push_back(p.second);
  auto grad = [&]() {
    const auto gs = torch::autograd::grad({loss()}, params);
    std::vector<torch::Tensor> flat;
    for (const auto& t : gs) flat.push_back(t.reshape({-1}));
    return torch::cat(flat);
  };
  const std::int64_t n = g.n;
  Eigen::MatrixXd F(n, n);
  const double h = 1e-4;
  std::int64_t col = 0;
  for (auto& p : params) {
    auto flat = p.view({-1});
    for (std::int64_t i = 0; i < flat.size(0); ++i, ++col) {
      const double v = flat[i].item<double>();
      auto set = [&](double x) {
        torch::NoGradGuard ng;
        flat[i] = x;
      };
      set(v + h);
      const auto gp = grad();
      set(v - h);
      const auto gm = grad();
      set(v);
      const auto d = ((gp - gm) / (2 * h)).contiguous();
      F.col(col) = Eigen::Map<const Eigen::VectorXd>(d.data_ptr<double>(), n);
    }
  }
  const double scale = F.cwiseAbs().maxCoeff();
  ASSERT_GT(scale, 1e-3);
  const Eigen::MatrixXd S = (F + F.transpose()) / 2;
  EXPECT_LT((F - S).cwiseAbs().maxCoeff(), 1e-6 * scale);
  const Eigen::VectorXd want = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(S).eigenvalues().reverse();
  const double bound = 1e-6 * scale * static_cast<double>(n);
  ASSERT_EQ(g.eigen.eigenvalues.size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(g.eigen.eigenvalues(i), want(i), bound + g.eigen.residuals(i)) << i;
    // Each reported pair is an eigenpair of the finite-difference matrix up to the same bound.
    const Eigen::VectorXd v = g.eigen.eigenvectors.col(i);
    EXPECT_LT((S * v - g.eigen.eigenvalues(i) * v).norm(), bound + g.eigen.residuals(i)) << i;
  }
  // Hutchinson's estimate is within 5 of its standard errors of the trace (fixed seed: deterministic).
  ASSERT_TRUE(g.trace.has_value());
  EXPECT_LT(std::abs(g.trace->estimate - S.trace()), 5 * g.trace->std_error + bound);
}

}  // namespace
}  // namespace moescope
