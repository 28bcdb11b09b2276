// landscape/analysis: the surface of a run as a library call. Its centre is the run's own loss (the grid is
// w0 + a dx + b dy and a = b = 0 lies on it), the weights are restored bit for bit, and the report group holds what
// the README says.
#include "moescope/landscape/analysis.hpp"

#include <gtest/gtest.h>

#include "moescope/io/report.hpp"
#include "moescope/io/weights_torch.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"
#include "support/runs.hpp"

namespace moescope {
namespace {

TEST(LandscapeAnalysis, CentreIsTheRunsLossAndWeightsAreRestored) {
  testing::TempDir dir;
  DataSpec data;
  data.name = "clustered";
  data.clustered.samples = 300;
  data.clustered.dim = 5;
  data.clustered.clusters = 2;
  data.clustered.classes = 3;
  const nlohmann::json model = {{"type", "classifier"}, {"backbone", "mlp"},      {"head", "sparse"},
                                {"in_channels", 5},     {"image_size", 1},        {"num_classes", 3},
                                {"backbone_widths", {8}}, {"head_hidden", 4},    {"experts", 4},   {"top_k", 2}};
  LoadedRun run = load_run(testing::write_untrained_run(dir.path(), "r", model, data, 9));
  NamedTensors before;
  for (const auto& [k, v] : state_entries(run.model.module())) before.emplace_back(k, v.clone());

  LandscapeRequest r;
  r.eval = EvalSpec{"", {"train", "test"}, 100, 32};
  r.dirs = "filter";
  r.x = parse_axis("-1:1:3", "x");
  r.y = parse_axis("-0.5:0.5:5", "y");
  r.sharpness = {0.05};
  r.sharpness_dirs = 2;
  const LandscapeAnalysis a = compute_landscape(run, r, Provenance{});
  ASSERT_TRUE(a.complete());
  EXPECT_EQ(a.dirs.size(), 2u);
  const EvalData d = load_eval_data(run, r.eval);
  const double train = evaluate(run.model, d.splits[0]).loss, test = evaluate(run.model, d.splits[1]).loss;
  // values[m][i * ny + j]: the centre is i = 1, j = 2 of a 3 x 5 grid.
  EXPECT_NEAR(a.surface.metric("train_loss")[1 * 5 + 2], train, 1e-6 * train);
  EXPECT_NEAR(a.surface.metric("test_loss")[1 * 5 + 2], test, 1e-6 * test);
  ASSERT_TRUE(a.sharpness.has_value());
  EXPECT_NEAR(a.sharpness->base_loss, train, 1e-6 * train);
  const auto after = state_entries(run.model.module());
  for (std::size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(torch::equal(before[i].second, after[i].second)) << before[i].first;

  const std::string f = dir.file("l.h5");
  {
    ReportWriter w(f);
    write_landscape(w, a, r);
    w.commit();
  }
  const ReportReader rep(f);
  std::vector<std::size_t> dims;
  rep.read("/landscape/train_loss", &dims);
  EXPECT_EQ(dims, (std::vector<std::size_t>{3, 5}));
  EXPECT_EQ(rep.read("/landscape/ycoordinates").size(), 5u);
  EXPECT_EQ(std::get<std::string>(rep.attr("/landscape", "splits")), "train,test");
  EXPECT_EQ(rep.read("/landscape/sharpness/radius").size(), 1u);
}

TEST(LandscapeAnalysis, BadDirectionsAreInputErrors) {
  testing::TempDir dir;
  DataSpec data;
  data.name = "clustered";
  data.clustered.samples = 100;
  data.clustered.dim = 5;
  data.clustered.clusters = 2;
  data.clustered.classes = 4;
  const nlohmann::json model = {{"type", "classifier"}, {"backbone", "mlp"}, {"head", "dense"}, {"in_channels", 5},
                                {"image_size", 1}, {"num_classes", 4}, {"backbone_widths", {8}}, {"head_hidden", 4}};
  LoadedRun run = load_run(testing::write_untrained_run(dir.path(), "r", model, data, 9));
  LandscapeRequest r;
  r.x = parse_axis("-1:1:3", "x");
  r.dirs = dir.file("missing.h5");
  EXPECT_THROW(compute_landscape(run, r, Provenance{}), InputError);
  r.dirs = "filter";
  r.params = "expert:0.0";  // a dense head has no experts
  EXPECT_THROW(compute_landscape(run, r, Provenance{}), InputError);
}

}  // namespace
}  // namespace moescope
