// io/run: opening a run from its folder, a step folder or a step's weights, and telling runs from other files.
#include "moescope/io/run.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace fs = std::filesystem;
using namespace moescope;
using moescope::testing::TempDir;
using moescope::testing::write_text;

namespace {

void write_weights(const std::string& path) { moescope::testing::write_small_safetensors(path); }

// NAME/config.json and NAME/step_N/model.safetensors for each N.
std::string make_run(const TempDir& dir, const std::vector<int>& steps) {
  const fs::path run = fs::path(dir.path()) / "r";
  for (int s : steps) {
    fs::create_directories(run / ("step_" + std::to_string(s)));
    write_weights((run / ("step_" + std::to_string(s)) / "model.safetensors").string());
  }
  write_text((run / "config.json").string(), R"({"name": "r", "model": {"type": "classifier"}})");
  return run.string();
}

}  // namespace

TEST(Run, OpensFromTheRunFolderAStepFolderOrItsWeights) {
  TempDir dir;
  const std::string run = make_run(dir, {0, 7, 12});
  fs::create_directories(fs::path(run) / "step_20.tmp");  // a checkpoint being written is not a step
  write_weights(run + "/step_20.tmp/model.safetensors");

  const moescope::Run latest = moescope::Run::open(run);
  EXPECT_EQ(latest.step(), 12);
  EXPECT_EQ(latest.directory(), run);
  EXPECT_EQ(latest.weights_file(), run + "/step_12/model.safetensors");
  EXPECT_EQ(latest.config_file(), run + "/config.json");
  EXPECT_EQ(latest.model_config().at("type"), "classifier");
  EXPECT_EQ(latest.steps(), (std::vector<std::int64_t>{0, 7, 12}));

  EXPECT_EQ(moescope::Run::open(run + "/step_7").step(), 7);
  EXPECT_EQ(moescope::Run::open(run + "/step_7/model.safetensors").weights_file(), run + "/step_7/model.safetensors");
  EXPECT_EQ(moescope::Run::open(run + "/step_7").directory(), run);
  EXPECT_TRUE(moescope::Run::is_run(run));
  EXPECT_TRUE(moescope::Run::is_run(run + "/step_0/model.safetensors"));
}

// Regression: any file inside a run folder counted as the run (`landscape --dirs runs/X/dirs.h5` then opened the
// directions file as a second run).
TEST(Run, OtherFilesInsideARunAreNotRuns) {
  TempDir dir;
  const std::string run = make_run(dir, {3});
  write_text(run + "/dirs.h5", "not a run");
  write_text(run + "/step_3/notes.txt", "not a run either");
  EXPECT_FALSE(moescope::Run::is_run(run + "/dirs.h5"));
  EXPECT_FALSE(moescope::Run::is_run(run + "/step_3/notes.txt"));
  EXPECT_FALSE(moescope::Run::is_run(run + "/config.json"));
  EXPECT_THROW(moescope::Run::open(run + "/dirs.h5"), InputError);
}

// Regression: `hessian model.safetensors` on a checkpoint that is not a run said ".: no config.json here or in the
// parent directory"; it must name the file the user gave and say what a run is.
TEST(Run, ACheckpointThatIsNotARunIsNamedAndExplained) {
  TempDir dir;
  const std::string file = dir.file("model.safetensors");
  write_weights(file);
  EXPECT_FALSE(moescope::Run::is_run(file));
  try {
    moescope::Run::open(file);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind(file + ": not a moescope run", 0), 0u) << m;
    EXPECT_NE(m.find("step_N/model.safetensors"), std::string::npos) << m;
  }
  // A config.json without a model is not a run config: the message names config.json.
  write_text(dir.file("config.json"), R"({"architectures": ["MixtralForCausalLM"]})");
  try {
    moescope::Run::open(file);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(moescope::Run::open(dir.file("nothing")), InputError);
}

TEST(Run, StepNumbers) {
  EXPECT_EQ(step_number("runs/a/step_42"), 42);
  EXPECT_EQ(step_number("step_0"), 0);
  EXPECT_EQ(step_number("step_"), -1);
  EXPECT_EQ(step_number("step_4.tmp"), -1);
  EXPECT_EQ(step_number("step_x"), -1);
  EXPECT_EQ(step_number("step_99999999999999999999999"), -1);  // too long for an int64: not a step
}
