// study/collect: the scalars of a point's reports (written here by hand, as the commands write them), the table,
// and sweep.h5 / sweep.csv round trips.
#include "moescope/study/collect.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "moescope/io/report.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

namespace fs = std::filesystem;

SweepPlan plan(const testing::TempDir& dir) {
  const SweepSpec s = parse_sweep_spec(nlohmann::ordered_json::parse(R"({
    "name": "c", "axes": {"train.regularisers.weight_orth": [0, 0.5], "model.head": ["sparse"]},
    "analyses": {"geometry": {}, "activations": {}, "hessian": {}, "landscape": {"dirs": "filter", "x": "-1:1:3"},
                 "hessian_router": {"command": "hessian", "params": "router"}}})"),
                                       "spec.json");
  return plan_sweep(s, dir.file("out"), SweepOptions{"/m", 1, 1});
}

void write_reports(const PlannedPoint& p) {
  fs::create_directories(p.dir + "/run");
  {
    ReportWriter w(p.dir + "/run/log.h5");
    w.write_int("/train/step", {0, 10, 19}, {3});
    w.write("/train/loss", {2.0, 1.0, 0.5}, {3});
    w.write("/train/val_loss", {0.8, 0.6}, {2});
    w.write("/train/val_acc", {0.7, 0.75}, {2});
    w.write("/train/val_perplexity", {2.2, 1.8}, {2});
    w.write_scalar("/train/test_loss", 0.65);
    w.write_scalar("/train/test_acc", 0.74);
    w.write_scalar("/train/test_perplexity", 1.9);
    w.write_scalar("/train/test_ms_per_sample", 0.25);
    w.commit();
  }
  {
    ReportWriter w(p.dir + "/geometry.h5");
    for (const auto& [layer, mso] : {std::pair<const char*, double>{"layer_00", 0.01}, {"layer_01", 0.03}}) {
      const std::string b = std::string("/geometry/") + layer;
      w.write_scalar(b + "/mso", mso);
      w.write_scalar(b + "/param_variance", 10 * mso);
      w.write_scalar(b + "/param_variance_normalized", mso / 10);
    }
    w.commit();
  }
  {
    ReportWriter w(p.dir + "/activations.h5");
    const std::string b = "/activations/layer_00";
    w.write_scalar(b + "/mean_overlap", 0.6);
    w.write_scalar(b + "/mso", 0.4);
    w.write_scalar(b + "/routed_mean_overlap", 0.5);
    w.write_scalar(b + "/router_entropy", 1.2);
    w.write_scalar(b + "/routing_variance", 0.05);
    w.write(b + "/load", {0.1, 0.2, 0.3, 0.4}, {4});  // mean 0.25, population sd sqrt(0.0125)
    w.write(b + "/importance", {0.25, 0.25, 0.25, 0.25}, {4});
    w.write_scalar(b + "/dropped_fraction", 0.0);
    w.commit();
  }
  for (const char* name : {"hessian", "hessian_router"}) {
    ReportWriter w(p.dir + "/" + name + ".h5");
    w.write_scalar("/hessian/train/loss", 0.5);
    w.write("/hessian/train/eigenvalues", {3.0, 2.0}, {2});
    w.write("/hessian/train/residuals", {1e-7, 2e-7}, {2});
    w.write_scalar("/hessian/train/trace", 40.0);
    w.write_scalar("/hessian/train/trace_stderr", 1.5);
    w.write("/hessian/train/expert_0_0/eigenvalues", {0.5}, {1});
    w.write("/hessian/train/expert_0_1/eigenvalues", {1.5}, {1});
    w.commit();
  }
  {
    ReportWriter w(p.dir + "/landscape.h5");
    w.write("/landscape/sharpness/radius", {0.05, 0.1}, {2});
    w.write("/landscape/sharpness/mean_increase", {0.01, 0.04}, {2});
    w.write("/landscape/sharpness/stderr_increase", {0.001, 0.002}, {2});
    w.write_scalar("/landscape/sharpness/base_loss", 0.5);
    w.commit();
  }
}

TEST(SweepCollect, EveryScalarOfAPointsReports) {
  testing::TempDir dir;
  const SweepPlan p = plan(dir);
  write_reports(p.points[0]);
  const auto m = point_metrics(p.points[0], p.spec);
  EXPECT_DOUBLE_EQ(m.at("train_loss"), 0.5);
  EXPECT_DOUBLE_EQ(m.at("valid_loss"), 0.6);  // the last evaluation
  EXPECT_DOUBLE_EQ(m.at("test_ppl"), 1.9);
  EXPECT_DOUBLE_EQ(m.at("steps"), 20);
  EXPECT_DOUBLE_EQ(m.at("mso_mean"), 0.02);
  EXPECT_DOUBLE_EQ(m.at("mso_layer_01"), 0.03);
  EXPECT_DOUBLE_EQ(m.at("param_variance"), 0.2);
  EXPECT_DOUBLE_EQ(m.at("activation_overlap"), 0.6);
  EXPECT_NEAR(m.at("load_cv"), std::sqrt(0.0125) / 0.25, 1e-15);
  EXPECT_DOUBLE_EQ(m.at("importance_cv"), 0.0);
  EXPECT_DOUBLE_EQ(m.at("routing_variance"), 0.05);
  EXPECT_DOUBLE_EQ(m.at("test_ms_per_sample"), 0.25);
  EXPECT_DOUBLE_EQ(m.at("lambda_2_train"), 2.0);
  EXPECT_DOUBLE_EQ(m.at("lambda_1_train_residual"), 1e-7);
  EXPECT_DOUBLE_EQ(m.at("trace_train_stderr"), 1.5);
  EXPECT_DOUBLE_EQ(m.at("lambda_1_train_expert_mean"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("lambda_1_train_expert_max"), 1.5);
  EXPECT_DOUBLE_EQ(m.at("hessian_router.trace_train"), 40.0);  // an analysis named apart prefixes its columns
  EXPECT_DOUBLE_EQ(m.at("sharpness_0.05"), 0.01);
  EXPECT_DOUBLE_EQ(m.at("sharpness_0.1_stderr"), 0.002);
}

TEST(SweepCollect, TimingColumnsAreNamedByTheirUnit) {
  EXPECT_TRUE(is_timing_column("test_ms_per_sample"));
  EXPECT_TRUE(is_timing_column("hessian_router.eval_ms"));
  EXPECT_FALSE(is_timing_column("test_acc"));
  EXPECT_FALSE(is_timing_column("mso_mean"));
  EXPECT_FALSE(is_timing_column("ms"));  // no unit suffix: a column named "ms" is not known to be a time
}

// Surfaces: per split the loss at the origin, the largest and mean rise over the grid, and the second difference
// at the origin (a quadratic's exact second derivative); no curvature without symmetric neighbours, nothing
// without the origin on the grid.
TEST(SweepCollect, SurfaceScalarsOfOneAndTwoDimensionalGrids) {
  testing::TempDir dir;
  const SweepSpec s = parse_sweep_spec(nlohmann::ordered_json::parse(R"({
    "name": "c", "axes": {"seed": [0]},
    "analyses": {"l1": {"command": "landscape", "dirs": "filter", "x": "-1:1:5"},
                 "l2": {"command": "landscape", "dirs": "filter", "x": "-1:1:3", "y": "-2:4:4"},
                 "interp": {"command": "landscape", "dirs": "filter", "x": "0:1:3"},
                 "off": {"command": "landscape", "dirs": "filter", "x": "0.1:0.2:2"}}})"),
                                       "spec.json");
  const PlannedPoint p = plan_sweep(s, dir.file("out"), SweepOptions{"/m", 1, 1}).points[0];
  fs::create_directories(p.dir);
  {
    ReportWriter w(p.dir + "/l1.h5");
    w.write("/landscape/xcoordinates", {-1, -0.5, 0, 0.5, 1}, {5});
    w.write("/landscape/train_loss", {3.0, 1.5, 1.0, 1.25, 2.0}, {5});
    w.write("/landscape/train_acc", {0.1, 0.5, 0.9, 0.6, 0.2}, {5});  // not a loss: no columns
    w.commit();
  }
  {
    ReportWriter w(p.dir + "/l2.h5");  // 1 + x^2 + y^2 / 2 on x in {-1, 0, 1}, y in {-2, 0, 2, 4}
    const std::vector<double> x{-1, 0, 1}, y{-2, 0, 2, 4};
    std::vector<double> v;
    for (double xi : x)
      for (double yj : y) v.push_back(1 + xi * xi + 0.5 * yj * yj);
    w.write("/landscape/xcoordinates", x, {3});
    w.write("/landscape/ycoordinates", y, {4});
    w.write("/landscape/test_loss", v, {3, 4});
    w.commit();
  }
  for (const char* name : {"interp", "off"}) {
    ReportWriter w(p.dir + "/" + name + ".h5");
    const bool interp = std::string(name) == "interp";
    w.write("/landscape/xcoordinates", interp ? std::vector<double>{0, 0.5, 1} : std::vector<double>{0.1, 0.2},
            {interp ? 3u : 2u});
    w.write("/landscape/train_loss", interp ? std::vector<double>{0.5, 2.5, 0.75} : std::vector<double>{1, 2},
            {interp ? 3u : 2u});
    w.commit();
  }
  const auto m = point_metrics(p, s);
  EXPECT_DOUBLE_EQ(m.at("l1.surface_train_centre_loss"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("l1.surface_train_max_increase"), 2.0);
  EXPECT_DOUBLE_EQ(m.at("l1.surface_train_mean_increase"), 0.75);
  EXPECT_DOUBLE_EQ(m.at("l1.surface_train_curvature"), 3.0);  // (1.25 + 1.5 - 2) / 0.5^2
  EXPECT_EQ(m.count("l1.surface_train_acc_centre_loss") + m.count("l1.surface_train_acc_curvature"), 0u);
  EXPECT_DOUBLE_EQ(m.at("l2.surface_test_centre_loss"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("l2.surface_test_max_increase"), 9.0);                // x = +-1, y = 4
  EXPECT_NEAR(m.at("l2.surface_test_mean_increase"), 2.0 / 3.0 + 3.0, 1e-15);  // mean x^2 + mean y^2 / 2
  EXPECT_DOUBLE_EQ(m.at("l2.surface_test_curvature"), 1.5);                    // (2 + 1) / 2
  EXPECT_DOUBLE_EQ(m.at("interp.surface_train_centre_loss"), 0.5);
  EXPECT_DOUBLE_EQ(m.at("interp.surface_train_max_increase"), 2.0);
  EXPECT_TRUE(std::isnan(m.at("interp.surface_train_curvature")));  // the origin is the grid's edge
  for (const auto& [k, v] : m) EXPECT_NE(k.rfind("off.", 0), 0u) << k;  // no origin on the grid
}

// A classifier's log gives no perplexity columns; a language model's does.
TEST(SweepCollect, PerplexityOnlyForLanguageModels) {
  testing::TempDir dir;
  const SweepPlan p = plan(dir);
  for (const char* type : {"classifier", "lm"}) {
    SCOPED_TRACE(type);
    fs::create_directories(p.points[0].dir + "/run");
    {
      ReportWriter w(p.points[0].dir + "/run/log.h5");
      w.write_int("/train/step", {0, 9}, {2});
      w.write("/train/val_perplexity", {2.2, 1.8}, {2});
      w.write_scalar("/train/test_perplexity", 1.9);
      w.set_attr("/train", "config", std::string(R"({"model": {"type": ")") + type + "\"}}");
      w.commit();
    }
    const auto m = point_metrics(p.points[0], p.spec);
    EXPECT_EQ(m.count("valid_ppl") + m.count("test_ppl") + m.count("train_ppl"), type == std::string("lm") ? 3u : 0u);
  }
}

TEST(SweepCollect, TableRoundTripsThroughHdf5AndCsv) {
  testing::TempDir dir;
  const SweepPlan p = plan(dir);
  write_reports(p.points[1]);
  const SweepTable t = collect_sweep(p);
  ASSERT_EQ(t.rows(), 2u);
  EXPECT_EQ(t.status[0], "partial");
  EXPECT_TRUE(std::isnan(t.metrics.at("mso_mean")[0]));  // point 0 has no reports
  EXPECT_DOUBLE_EQ(t.metrics.at("mso_mean")[1], 0.02);
  EXPECT_EQ(t.numeric("weight_orth"), &t.numeric_coords.at("train.regularisers.weight_orth"));  // by last component
  EXPECT_EQ((*t.text("head"))[1], "sparse");
  {
    ReportWriter w(dir.file("sweep.h5"));
    write_sweep_table(w, t);
    w.commit();
  }
  const ReportReader r(dir.file("sweep.h5"));
  const SweepTable back = read_sweep_table(r, dir.file("sweep.h5"));
  EXPECT_EQ(back.points, t.points);
  EXPECT_EQ(back.axes, t.axes);
  EXPECT_EQ(back.strength, "train.regularisers.weight_orth");
  EXPECT_EQ(back.text_coords.at("model.head"), t.text_coords.at("model.head"));
  EXPECT_EQ(back.numeric_coords.at("train.regularisers.weight_orth")[1], 0.5);
  EXPECT_DOUBLE_EQ(back.metrics.at("trace_train")[1], 40.0);
  EXPECT_EQ(back.metric_source.at("trace_train"), "hessian.h5");
  write_sweep_csv(dir.file("sweep.csv"), t);
  std::ifstream in(dir.file("sweep.csv"));
  std::string header, row0, row1;
  std::getline(in, header);
  std::getline(in, row0);
  std::getline(in, row1);
  EXPECT_EQ(header.rfind("point,status,train.regularisers.weight_orth,model.head,", 0), 0u) << header;
  EXPECT_EQ(row1.rfind(p.points[1].point.name + ",partial,0.5,sparse,", 0), 0u) << row1;
  EXPECT_NE(row0.find(",,"), std::string::npos);  // missing values are empty fields
  EXPECT_EQ(number_text(3.0), "3");
  EXPECT_EQ(number_text(0.001), "0.001");
  {
    ReportWriter w(dir.file("other.h5"));
    w.write_scalar("/x", 1.0);
    w.commit();
  }
  EXPECT_THROW(read_sweep_table(ReportReader(dir.file("other.h5")), dir.file("other.h5")), InputError);
}

}  // namespace
}  // namespace moescope
