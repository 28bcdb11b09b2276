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
using moescope::testing::write_small_safetensors;
using moescope::testing::write_text;

namespace {

// NAME/config.json and NAME/step_N/model.safetensors for each N.
std::string make_run(const TempDir& dir, const std::vector<int>& steps) {
  const fs::path run = fs::path(dir.path()) / "r";
  for (int s : steps) {
    fs::create_directories(run / ("step_" + std::to_string(s)));
    write_small_safetensors((run / ("step_" + std::to_string(s)) / "model.safetensors").string());
  }
  write_text((run / "config.json").string(), R"({"name": "r", "model": {"type": "classifier"}})");
  return run.string();
}

}  // namespace

TEST(Run, OpensFromTheRunFolderAStepFolderOrItsWeights) {
  TempDir dir;
  const std::string run = make_run(dir, {0, 7, 12});
  fs::create_directories(fs::path(run) / "step_20.tmp");  // a checkpoint being written is not a step
  write_small_safetensors(run + "/step_20.tmp/model.safetensors");

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
  write_small_safetensors(file);
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

// Runs record the format and version that wrote them (state.json); a newer major format is refused with a message
// that says who wrote it and what to do, older and unmarked runs open as before.
TEST(Run, RefusesARunOfANewerFormat) {
  TempDir dir;
  const std::string run = make_run(dir, {0, 5});
  const std::string state = run + "/step_5/state.json";
  write_text(state, R"({"step": 5, "moescope_version": "7.2.0", "run_format": 9})");
  try {
    moescope::Run::open(run);
    FAIL() << "a run of format 9 was opened";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind(state + ": the run was written by moescope 7.2.0 in run format 9; this moescope (", 0), 0u) << m;
    EXPECT_NE(m.find("reads run format 1 and older: open it with a newer moescope"), std::string::npos) << m;
  }
  // the older step of the same run has no state.json: opening it directly still works
  EXPECT_NO_THROW(moescope::Run::open(run + "/step_0"));
  write_text(state, R"({"step": 5, "moescope_version": "0.1.0", "run_format": 1})");
  EXPECT_NO_THROW(moescope::Run::open(run));
  write_text(state, R"({"step": 5, "moescope_version": "0.0.9+gabc"})");  // written before run_format existed
  EXPECT_NO_THROW(moescope::Run::open(run));
  write_text(state, R"({"step": 5, "moescope_version": "3.0.0"})");  // no format, but a newer major version
  EXPECT_THROW(moescope::Run::open(run), InputError);
  write_text(state, R"({"step": 5, "run_format": "one"})");
  EXPECT_THROW(moescope::Run::open(run), InputError);
  write_text(state, R"([1, 2])");
  EXPECT_THROW(moescope::Run::open(run), InputError);
}

TEST(Run, CheckRunFormat) {
  EXPECT_NO_THROW(check_run_format(nlohmann::json::object(), "s.json"));
  EXPECT_NO_THROW(check_run_format({{"run_format", kRunFormat}}, "s.json"));
  EXPECT_THROW(check_run_format({{"run_format", kRunFormat + 1}}, "s.json"), InputError);
  EXPECT_THROW(check_run_format({{"run_format", 0}}, "s.json"), InputError);
  EXPECT_THROW(check_run_format({{"moescope_version", "99.0.0"}}, "s.json"), InputError);
  EXPECT_NO_THROW(check_run_format({{"moescope_version", "garbage"}}, "s.json"));
}
