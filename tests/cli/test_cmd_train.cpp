// `moescope train` end to end: flags over config files, the run directory, what the other commands read back.
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "moescope/io/report.hpp"
#include "support/fixtures.hpp"

namespace {

using moescope::testing::run_moescope;
using moescope::testing::TempDir;
using moescope::testing::write_text;

std::vector<std::string> small_run(const TempDir& dir, const std::string& name) {
  return {"--threads", "1", "--log-level", "warn", "train", "--out-dir", dir.path(), "--name", name,
          "--data", "clustered", "--set", R"(data.clustered={"samples": 300, "dim": 6, "clusters": 3, "classes": 3})",
          "--set", R"(model={"type": "classifier", "backbone": "mlp", "backbone_widths": [16], "head": "sparse",
          "head_hidden": 8, "experts": 4, "top_k": 2})", "--steps", "20", "--batch-size", "32",
          "--checkpoint-every", "10"};
}

}  // namespace

TEST(CliTrain, PrintConfigMergesFileFlagsAndSets) {
  TempDir dir;
  write_text(dir.file("run.json"), R"({"name": "from-file", "train": {"batch_size": 64, "optim": {"lr": 0.5}}})");
  const auto r = run_moescope({"train", "--config", dir.file("run.json"), "--lr", "0.25", "--set",
                               "train.optim.beta2=0.98", "--steps", "7", "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["name"], "from-file");
  EXPECT_EQ(j["train"]["batch_size"], 64);
  EXPECT_EQ(j["train"]["optim"]["lr"], 0.25);     // the flag beats the file
  EXPECT_EQ(j["train"]["optim"]["beta2"], 0.98);  // --set reaches any key
  EXPECT_EQ(j["train"]["steps"], 7);
  EXPECT_EQ(j["train"]["epochs"], 0);
  EXPECT_EQ(j["train"]["optim"]["schedule"], "cosine");  // kept from the defaults
  EXPECT_EQ(j["data"]["name"], "fashion-mnist");
}

TEST(CliTrain, BadConfigsExitTwoWithOneLine) {
  TempDir dir;
  write_text(dir.file("bad.json"), R"({"train": {"optim": {"name": "adagrad"}}})");
  auto r = run_moescope({"train", "--config", dir.file("bad.json"), "--print-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad.json"), std::string::npos) << r.err;
  r = run_moescope({"train", "--set", "train.sptes=3", "--print-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("sptes"), std::string::npos) << r.err;
  r = run_moescope({"train", "--data", "imagenet", "--print-config"});
  EXPECT_EQ(r.exit_code, 2);
  // Regression: a model that cannot be built (LibTorch's check in the module) reached main as an internal error,
  // exit 1, with a C++ backtrace. Now the config key is named, on one line, before anything is trained.
  for (const bool print : {true, false}) {
    std::vector<std::string> args = small_run(dir, "bad-top-k");
    args.insert(args.end(), {"--set", "model.top_k=8"});  // after small_run's model: 4 experts
    if (print) args.push_back("--print-config");
    r = run_moescope(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("field 'top_k' must be between 1 and experts (4), got 8"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_FALSE(moescope::testing::file_exists(dir.file("bad-top-k")));
}

TEST(CliTrain, RunDirectoryIsReadByInspectAndGeometryAndResumes) {
  TempDir dir;
  auto args = small_run(dir, "r");
  auto r = run_moescope(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("steps      20 of 20"), std::string::npos) << r.out;
  for (const char* f : {"/r/config.json", "/r/log.h5", "/r/step_0/model.safetensors", "/r/step_10/optimizer.pt",
                        "/r/step_20/state.json"}) {
    EXPECT_TRUE(moescope::testing::file_exists(dir.path() + f)) << f;
  }
  // Starting again over a finished run needs --resume; with it, nothing is left to do.
  EXPECT_EQ(run_moescope(args).exit_code, 2);
  args.push_back("--resume");
  r = run_moescope(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;

  r = run_moescope({"inspect", dir.path() + "/r/step_20/model.safetensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("moescope"), std::string::npos) << r.out;
  r = run_moescope({"geometry", dir.path() + "/r/step_20/model.safetensors", "-o", dir.file("g.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const moescope::ReportReader g(dir.file("g.h5"));
  EXPECT_FALSE(g.list("/geometry").empty());
}

// --threads bounds OpenBLAS's own pool too (it starts one thread per core whatever LibTorch's intra-op count is):
// `sweep --jobs N` gives each job --threads cores/N, and two jobs' BLAS threads spinning on every core slowed both.
TEST(CliTrain, ThreadsFlagBoundsOpenBlas) {
  TempDir dir;
  for (const char* n : {"1", "2"}) {
    std::vector<std::string> args = small_run(dir, std::string("t") + n);
    args[1] = n;         // --threads N
    args[3] = "debug";   // --log-level debug: the BLAS line
    const auto r = run_moescope(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string all = r.out + r.err;
    const auto at = all.find("BLAS: ");
    ASSERT_NE(at, std::string::npos) << all;
    const std::string line = all.substr(at, all.find('\n', at) - at);
    if (line.find("no OpenBLAS") != std::string::npos) GTEST_SKIP() << "LibTorch here uses another BLAS: " << line;
    EXPECT_NE(line.find(std::string(", ") + n + " threads"), std::string::npos) << line;
  }
}
