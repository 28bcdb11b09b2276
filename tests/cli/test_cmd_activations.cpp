// `moescope activations` and `moescope compare-spaces` end to end: own runs made with the library, synthetic
// checkpoints of other families with recorded and random inputs, and bad input exiting 2 with the file named.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "moescope/io/report.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/metrics/activations_torch.hpp"
#include "moescope/model/task.hpp"
#include "support/fixtures.hpp"
#include "support/runs.hpp"

namespace moescope {
namespace {

namespace fs = std::filesystem;
using testing::run_moescope;
using testing::TempDir;

DataSpec clustered() { return testing::clustered_data(400, 6, 3, 4); }

// A run folder as the trainer writes it: RUN/config.json and RUN/step_0/model.safetensors.
std::string make_run(const TempDir& dir, const char* head) {
  const nlohmann::json cfg = {{"type", "classifier"}, {"backbone", "mlp"}, {"head", head}, {"in_channels", 6},
                              {"image_size", 1}, {"num_classes", 4}, {"backbone_widths", {16}}, {"head_hidden", 8},
                              {"experts", 4}, {"top_k", 2}};
  return testing::write_untrained_run(dir.path(), "run", cfg, clustered(), 11);
}

std::string synth(const TempDir& dir, const std::string& family) {
  SyntheticCheckpointOptions o;
  o.family = family;
  o.experts = 4;
  o.hidden = 16;
  o.intermediate = 12;
  const std::string p = dir.file(family + ".safetensors");
  write_synthetic_checkpoint(p, o);
  return p;
}

TEST(CliActivations, OwnRunReportMatchesLibraryAndComparesSpaces) {
  TempDir dir;
  const std::string run = make_run(dir, "sparse");
  const std::string out = dir.file("a.h5");
  auto r = run_moescope({"--threads", "1", "activations", run, "--max-tokens", "70", "--batch-size", "32",
                         "--geometry", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader rep(out);
  const auto layers = rep.list("/activations");
  ASSERT_EQ(layers.size(), 1u);
  const std::string base = "/activations/" + layers[0];
  for (const char* name : {"overlap", "mean_overlap", "mso", "routed_overlap", "routed_mean_overlap", "load",
                           "router_entropy", "importance", "dropped_fraction", "source_overlap", "tokens"})
    EXPECT_TRUE(rep.exists(base + "/" + name)) << name;
  EXPECT_EQ(std::get<std::string>(rep.attr("/activations", "inputs")), "data");
  const auto load = rep.read(base + "/load");
  EXPECT_NEAR(std::accumulate(load.begin(), load.end(), 0.0), 1.0, 1e-12);
  EXPECT_EQ(rep.read_scalar(base + "/tokens"), 70);

  // The same numbers as the library on the same run, data and batches.
  const LoadedRun lr = load_run(run);
  const Dataset data = load_dataset(lr.data);
  ActivationsOptions o;
  o.max_tokens = 70;
  o.batch_size = 32;
  const ActivationsResult lib = model_activations(lr.model, data.train, o);  // --split train, the default
  std::vector<std::size_t> dims;
  const auto ov = rep.read(base + "/overlap", &dims);
  ASSERT_EQ(dims, (std::vector<std::size_t>{4, 4}));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(ov[static_cast<std::size_t>(i * 4 + j)], lib.layers[0].overlap.overlap(i, j), 1e-12);
  EXPECT_NEAR(rep.read_scalar(base + "/mso"), lib.layers[0].overlap.mso, 1e-12);

  // --geometry put the weight side in the same report; compare-spaces recomputes the same correlation.
  ASSERT_TRUE(rep.exists("/geometry/" + layers[0] + "/overlap"));
  ASSERT_TRUE(rep.exists("/compare_spaces/pearson_r"));
  EXPECT_EQ(rep.read_scalar("/compare_spaces/pairs"), 6);
  const std::string cmp = dir.file("c.h5");
  r = run_moescope({"compare-spaces", out, "-o", cmp});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader c(cmp);
  EXPECT_DOUBLE_EQ(c.read_scalar("/compare_spaces/pearson_r"), rep.read_scalar("/compare_spaces/pearson_r"));
  EXPECT_EQ(c.read("/compare_spaces/" + layers[0] + "/weight_overlap").size(), 6u);

  // A geometry report from `moescope geometry` works as the weight side too, and holds the same /geometry
  // layer as --geometry wrote (one writer for both). Tolerance 1e-12: float64 sums whose order may differ.
  const std::string geo = dir.file("g.h5");
  ASSERT_EQ(run_moescope({"geometry", lr.weights_file(), "-o", geo}).exit_code, 0);
  {
    ReportReader g(geo);
    const std::string base = "/geometry/" + layers[0] + "/";
    for (const char* name : {"overlap", "gram", "norms", "mso", "param_variance", "param_variance_normalized",
                             "mean_norm"}) {
      const auto want = g.read(base + name), got = rep.read(base + name);
      ASSERT_EQ(got.size(), want.size()) << name;
      for (std::size_t i = 0; i < want.size(); ++i)
        EXPECT_NEAR(got[i], want[i], 1e-12 * (1 + std::abs(want[i]))) << name << "[" << i << "]";
    }
  }
  const std::string act_only = dir.file("a2.h5");
  ASSERT_EQ(run_moescope({"activations", run, "--max-tokens", "30", "-o", act_only}).exit_code, 0);
  r = run_moescope({"compare-spaces", act_only, "--geometry", geo, "-o", dir.file("c2.h5")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_moescope({"compare-spaces", act_only, "-o", dir.file("c3.h5")});  // no /geometry in it
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("a2.h5"), std::string::npos) << r.err;
}

// Regression: the report recorded the run's own data name while the statistics came from --data.
TEST(CliActivations, TheReportRecordsTheDataItUsed) {
  TempDir dir;
  const std::string run = make_run(dir, "sparse");
  DataSpec other = clustered();
  other.seed = 5;
  other.clustered.noise = 0.25;
  const std::string spec = dir.file("other.json");
  std::ofstream(spec) << nlohmann::json(other).dump();
  const std::string out = dir.file("a.h5");
  const auto r = run_moescope({"activations", run, "--data", spec, "--split", "test", "--max-tokens", "40", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const ReportReader rep(out);
  const auto used = nlohmann::json::parse(std::get<std::string>(rep.attr("/activations", "data")));
  EXPECT_EQ(used, nlohmann::json(other));
  EXPECT_EQ(std::get<std::string>(rep.attr("/activations", "split")), "test");
}

TEST(CliActivations, OtherCheckpointsWithRandomAndRecordedInputs) {
  TempDir dir;
  const std::string ckpt = synth(dir, "mixtral");
  auto r = run_moescope({"activations", ckpt, "--probe", "random", "--max-tokens", "100", "-o", dir.file("r.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {
    ReportReader rep(dir.file("r.h5"));
    EXPECT_EQ(std::get<std::string>(rep.attr("/activations", "inputs")), "random");
    EXPECT_NE(std::get<std::string>(rep.attr("/activations", "description")).find("Gaussian"), std::string::npos);
    EXPECT_EQ(rep.list("/activations").size(), 2u);
    EXPECT_EQ(std::get<std::string>(rep.attr("/activations/layer_00", "routing_source")), "router");
    EXPECT_EQ(std::get<std::int64_t>(rep.attr("/activations/layer_00", "top_k")), 2);
  }
  // Recorded inputs for layer 1 only.
  const auto x = torch::randn({50, 16});
  write_safetensors(dir.file("acts.safetensors"),
                    {{TensorInfo{"layer_01.inputs", DType::F32, {50, 16}}, x.data_ptr<float>()}});
  r = run_moescope({"activations", ckpt, "--activations", dir.file("acts.safetensors"), "-o", dir.file("rec.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {
    ReportReader rep(dir.file("rec.h5"));
    EXPECT_EQ(rep.list("/activations"), (std::vector<std::string>{"layer_01"}));
    EXPECT_EQ(rep.read_scalar("/activations/layer_01/tokens"), 50);
  }
  // Switch: top-1 by default, ReLU experts.
  const std::string sw = synth(dir, "switch");
  r = run_moescope({"activations", sw, "--probe", "random", "--max-tokens", "64", "--geometry", "-o", dir.file("s.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader s(dir.file("s.h5"));
  const auto keys = s.list("/activations");
  ASSERT_FALSE(keys.empty());
  EXPECT_EQ(std::get<std::int64_t>(s.attr("/activations/" + keys[0], "top_k")), 1);
  EXPECT_EQ(std::get<std::string>(s.attr("/activations/" + keys[0], "expert_function")), "relu");
  EXPECT_TRUE(std::isnan(s.read_scalar("/activations/" + keys[0] + "/routed_mean_overlap")));  // top-1
  EXPECT_TRUE(s.exists("/compare_spaces/pearson_r"));
}

TEST(CliActivations, BadInputExitsTwoNamingTheProblem) {
  TempDir dir;
  const std::string ckpt = synth(dir, "mixtral");
  auto r = run_moescope({"activations", ckpt, "-o", dir.file("x.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--probe random"), std::string::npos) << r.err;
  EXPECT_FALSE(testing::file_exists(dir.file("x.h5")));

  const auto x = torch::randn({5, 16});
  write_safetensors(dir.file("bad.safetensors"), {{TensorInfo{"layer_09.inputs", DType::F32, {5, 16}}, x.data_ptr<float>()}});
  r = run_moescope({"activations", ckpt, "--activations", dir.file("bad.safetensors"), "-o", dir.file("x.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad.safetensors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("layer_09.inputs"), std::string::npos) << r.err;

  r = run_moescope({"activations", ckpt, "--probe", "random", "--activations", dir.file("bad.safetensors"), "-o",
                    dir.file("x.h5")});
  EXPECT_EQ(r.exit_code, 2);
  r = run_moescope({"activations", ckpt, "--probe", "random", "--layers", "7", "-o", dir.file("x.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("layer 7"), std::string::npos) << r.err;

  const std::string run = make_run(dir, "dense");
  r = run_moescope({"activations", run, "-o", dir.file("x.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no MoE layers"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moescope
