// study/summary: settings over seeds, changes against strength 0, correlations as scipy computes them. Expected
// values from scipy 1.10.1 (stats.pearsonr, stats.spearmanr) and numpy (mean, std with ddof=1).
#include "moescope/study/summary.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "moescope/io/report.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

// Strength 0, 1, 2 x seeds 0, 1; y = [0.9, 1.1 | 1.2, 1.8 | 3.0, 4.0]; x doubles y with a NaN at one point.
SweepTable table() {
  SweepTable t;
  t.points = {"a", "b", "c", "d", "e", "f"};
  t.status = {"complete", "complete", "complete", "complete", "complete", "failed"};
  t.axes = {"train.reg.w", "seed"};
  t.strength = "train.reg.w";
  t.seed = "seed";
  t.numeric_coords["train.reg.w"] = {0, 0, 1, 1, 2, 2};
  t.numeric_coords["seed"] = {0, 1, 0, 1, 0, 1};
  t.metric_names = {"y", "x"};
  t.metrics["y"] = {0.9, 1.1, 1.2, 1.8, 3.0, 4.0};
  t.metrics["x"] = {1.8, 2.2, 2.4, 3.6, 6.0, std::nan("")};
  return t;
}

TEST(SweepSummary, SettingsChangesAndCorrelations) {
  const SweepTable t = table();
  const SweepSummary s = summarise_sweep(t, {{"strength", "y"}, {"x", "y"}}, BootstrapOptions{200, 0.95, 1});
  EXPECT_EQ(s.complete, 5);
  EXPECT_EQ(s.failed, 1);
  ASSERT_EQ(s.settings.size(), 3u);
  EXPECT_EQ(s.settings[0].labels, (std::vector<std::string>{"train.reg.w=0"}));
  EXPECT_NEAR(s.settings[0].mean.at("y"), 1.0, 1e-15);
  EXPECT_NEAR(s.settings[0].sd.at("y"), 0.14142135623730953, 1e-15);
  EXPECT_EQ(s.settings[2].n.at("x"), 1);  // the NaN is left out
  EXPECT_TRUE(std::isnan(s.settings[2].sd.at("x")));
  // Change against strength 0: y means 1.0, 1.5, 3.5.
  const auto& change = s.change_percent.at("").at("y");
  EXPECT_NEAR(change[1], 50.0, 1e-12);
  EXPECT_NEAR(change[2], 250.0, 1e-12);
  // strength vs y over the settings' means (x = 0, 1, 2; y = 1.0, 1.5, 3.5) and over the six points.
  const auto find = [&](const std::string& x, const std::string& over) {
    for (const auto& c : s.correlations)
      if (c.x == x && c.y == "y" && c.over == over) return c;
    ADD_FAILURE() << x << " " << over;
    return SweepCorrelation{};
  };
  const SweepCorrelation means = find("train.reg.w", "settings");
  EXPECT_EQ(means.n, 3);
  EXPECT_NEAR(means.pearson.r, 0.944911182523068, 1e-12);
  EXPECT_NEAR(means.pearson.p, 0.21229561500965666, 1e-10);
  EXPECT_NEAR(means.spearman.r, 1.0, 1e-12);
  const SweepCorrelation points = find("train.reg.w", "points");
  EXPECT_EQ(points.n, 6);
  EXPECT_NEAR(points.pearson.r, 0.900937462695559, 1e-12);
  EXPECT_NEAR(points.pearson.p, 0.014234009972716302, 1e-10);
  EXPECT_LE(points.pearson.ci_low, points.pearson.r);
  // x = 2 y exactly where both exist (5 points): r = 1; over settings x's last mean is its one value.
  EXPECT_NEAR(find("x", "points").pearson.r, 1.0, 1e-12);
  EXPECT_EQ(find("x", "points").n, 5);
}

TEST(SweepSummary, UndefinedCorrelationsSayWhy) {
  SweepTable t = table();
  t.metrics["y"] = {1, 1, 1, 1, 1, 1};  // constant
  const SweepSummary s = summarise_sweep(t, {{"strength", "y"}});
  ASSERT_FALSE(s.correlations.empty());
  EXPECT_EQ(s.correlations[0].note, "a variable is constant (all its values are equal)");
  EXPECT_TRUE(std::isnan(s.correlations[0].pearson.r));
}

// Without a strength axis (a head-type comparison) every setting is its own series; correlations are then taken
// across all settings (3 heads x 2 seeds here): over the three means and over the six points.
TEST(SweepSummary, WithoutAStrengthAxisCorrelationsRunAcrossSettings) {
  SweepTable t = table();
  t.axes = {"model.head", "seed"};
  t.strength.clear();
  t.numeric_coords.erase("train.reg.w");
  t.text_coords["model.head"] = {"dense", "dense", "gated", "gated", "soft", "soft"};
  const SweepSummary s = summarise_sweep(t, {{"x", "y"}}, BootstrapOptions{200, 0.95, 1});
  ASSERT_EQ(s.settings.size(), 3u);
  EXPECT_EQ(s.settings[1].series, "model.head=gated");
  EXPECT_TRUE(s.change_percent.empty());
  ASSERT_EQ(s.correlations.size(), 2u);
  const SweepCorrelation& means = s.correlations[0];
  EXPECT_EQ(means.over, "settings");
  EXPECT_EQ(means.series, "");
  // Setting means: x = 2.0, 3.0, 6.0 (the NaN left out); y = 1.0, 1.5, 3.5: scipy pearsonr r = 0.9986254289035242.
  EXPECT_EQ(means.n, 3);
  EXPECT_NEAR(means.pearson.r, 0.9986254289035242, 1e-12);
  EXPECT_EQ(s.correlations[1].n, 5);  // the five points where both exist
  EXPECT_NEAR(s.correlations[1].pearson.r, 1.0, 1e-12);
}

// The spec's summary.columns choose the page's table, in their order, by full name or last dotted component;
// columns the sweep does not have are named under it.
TEST(SweepSummary, PageShowsTheSpecsColumns) {
  testing::TempDir dir;
  SweepTable t = table();
  t.metric_names.push_back("landscape_1d.surface_train_curvature");
  t.metrics["landscape_1d.surface_train_curvature"] = {4, 6, 8, 8, 1, 1};
  SweepSummary s = summarise_sweep(t, {});
  s.columns = {"surface_train_curvature", "y", "lambda_1_train"};
  const std::string md = dir.file("summary.md");
  write_summary_markdown(md, s, t, {}, {}, dir.file("none"));
  const std::string page = testing::file_text(md);
  EXPECT_NE(page.find("| setting | landscape_1d.surface_train_curvature | y |\n"), std::string::npos) << page;
  EXPECT_NE(page.find("| train.reg.w=0 | 5 ± 1.4 (2) | 1 ± 0.14 (2) |"), std::string::npos) << page;
  EXPECT_NE(page.find("Not in this sweep (no finished report has them): `lambda_1_train`."), std::string::npos) << page;
}

TEST(SweepSummary, PageAndReport) {
  testing::TempDir dir;
  const SweepTable t = table();
  SweepSummary s = summarise_sweep(t, {});
  s.name = "demo";
  const std::string md = dir.file("summary.md");
  write_summary_markdown(md, s, t, {"moescope sweep spec.json -o out"},
                         nlohmann::ordered_json{{"pearson r", "-0.293 (p = 0.523)"}}, dir.file("none"));
  const std::string page = testing::file_text(md);
  EXPECT_NE(page.find("# Sweep: demo"), std::string::npos);
  EXPECT_NE(page.find("6 (5 complete, 1 failed, 0 not finished)"), std::string::npos) << page;
  EXPECT_NE(page.find("moescope sweep spec.json -o out"), std::string::npos);
  EXPECT_NE(page.find("| train.reg.w=1 | 1.5 ± 0.42 (2) |"), std::string::npos) << page;
  EXPECT_NE(page.find("- pearson r: -0.293 (p = 0.523)"), std::string::npos);
  {
    ReportWriter w(dir.file("s.h5"));
    write_summary(w, s);
    w.commit();
  }
  const ReportReader r(dir.file("s.h5"));
  EXPECT_DOUBLE_EQ(r.read_scalar("/summary/settings/001/mean/y"), 1.5);
  EXPECT_EQ(std::get<std::string>(r.attr("/summary/settings/001", "setting")), "train.reg.w=1");
}

}  // namespace
}  // namespace moescope
