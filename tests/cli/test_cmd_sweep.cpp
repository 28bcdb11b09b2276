// `moescope sweep` end to end on a tiny grid (2 strengths x 2 seeds, a small MLP on the clustered task): the whole
// study; a sweep killed part way and run again finishes only what is missing and gives the same table as an
// uninterrupted run (bit for bit: training resumes exactly at equal thread counts, analyses are seeded); the
// emitted jobs, run one by one by a shell loop, then --collect, give the same table as --jobs 2; bad specs exit 2
// naming the key before anything is trained.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "moescope/io/report.hpp"
#include "moescope/study/collect.hpp"
#include "support/fixtures.hpp"

extern char** environ;

namespace moescope {
namespace {

namespace fs = std::filesystem;
using namespace testing;

const char* kSpec = R"({
  "name": "tiny", "description": "a test sweep",
  "base": {"data": {"name": "clustered", "clustered": {"samples": 400, "dim": 6, "clusters": 3, "classes": 3}},
           "model": {"type": "classifier", "backbone": "mlp", "backbone_widths": [12], "head": "sparse",
                     "head_hidden": 6, "experts": 4, "top_k": 2},
           "train": {"steps": 30, "batch_size": 32, "log_every": 5, "checkpoint_every": 10}},
  "axes": {"train.regularisers.weight_orth": [0, 0.5], "seed": [0, 1]},
  "analyses": {"geometry": {}, "hessian": {"split": "train,test", "top-k": 2, "trace": "hutch++", "probes": 9,
                                           "max-samples": 100}},
  "summary": {"reference": {"what": "nothing, a test"}}})";

// Every column of two tables equal, bit for bit (NaN where the other is NaN).
void expect_same_table(const std::string& a, const std::string& b) {
  const SweepTable x = read_sweep_table(ReportReader(a), a), y = read_sweep_table(ReportReader(b), b);
  EXPECT_EQ(x.points, y.points);
  EXPECT_EQ(x.status, y.status);
  ASSERT_EQ(x.metric_names, y.metric_names);
  for (const auto& m : x.metric_names)
    for (std::size_t i = 0; i < x.rows(); ++i) {
      const double u = x.metrics.at(m)[i], v = y.metrics.at(m)[i];
      EXPECT_TRUE((std::isnan(u) && std::isnan(v)) || u == v) << m << " row " << i << ": " << u << " vs " << v;
    }
}

TEST(CliSweep, WholeStudyKillAndResumeAndEmittedJobs_Slow) {
  TempDir dir;
  write_text(dir.file("spec.json"), kSpec);
  const std::string full = dir.file("full"), killed = dir.file("killed"), emitted = dir.file("emitted");

  auto r = run_moescope({"--threads", "2", "sweep", dir.file("spec.json"), "-o", full, "--jobs", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("4 complete, 0 failed"), std::string::npos) << r.out;
  for (const char* f : {"sweep.h5", "sweep.csv", "summary.md", "summary.h5"}) EXPECT_TRUE(file_exists(full + "/" + f)) << f;
  {
    const ReportReader rep(full + "/sweep.h5");
    const SweepTable t = read_sweep_table(rep, full);
    ASSERT_EQ(t.rows(), 4u);
    for (const char* m : {"test_acc", "valid_loss", "mso_mean", "param_variance", "lambda_1_train", "lambda_2_test",
                          "trace_test", "trace_test_stderr"})
      for (std::size_t i = 0; i < 4; ++i) EXPECT_TRUE(std::isfinite(t.metrics.at(m)[i])) << m << " " << i;
    EXPECT_EQ(t.points[2], "weight_orth=0.5_seed=0");
    EXPECT_TRUE(rep.has_attr("/", "command_line"));
  }
  // `correlate` reads the table's columns.
  r = run_moescope({"correlate", full + "/sweep.h5", "--x", "weight_orth", "--y", "mso_mean"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("n = 4"), std::string::npos) << r.out;

  // Killed once its first point's training has written a checkpoint, then run again.
  {
    std::vector<std::string> args{MOESCOPE_BIN_PATH, "--threads", "2", "sweep", dir.file("spec.json"), "-o", killed,
                                  "--jobs", "2"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // its own process group: the kill reaches every child
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, &attr, argv.data(), environ), 0);
    posix_spawnattr_destroy(&attr);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(killed + "/points/weight_orth=0_seed=0/run/step_10") &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ::kill(-pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_FALSE(file_exists(killed + "/sweep.h5"));
  }
  r = run_moescope({"--threads", "2", "sweep", dir.file("spec.json"), "-o", killed, "--jobs", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_table(full + "/sweep.h5", killed + "/sweep.h5");
  // Run once more: nothing left to do, the same table.
  r = run_moescope({"--threads", "2", "sweep", dir.file("spec.json"), "-o", killed, "--jobs", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_table(full + "/sweep.h5", killed + "/sweep.h5");

  // The emitted jobs, one by one in a shell loop, then --collect.
  r = run_moescope({"--threads", "2", "sweep", dir.file("spec.json"), "-o", emitted, "--jobs", "2", "--emit-jobs",
                    dir.file("jobs.sh")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string loop = "grep -v '^#' " + dir.file("jobs.sh") + " | while read -r cmd; do sh -c \"$cmd\" >/dev/null 2>&1; done";
  ASSERT_EQ(std::system(loop.c_str()), 0);
  r = run_moescope({"sweep", dir.file("spec.json"), "-o", emitted, "--collect"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The table is made from the reports; a point's status differs only in how it is known (both complete here).
  expect_same_table(full + "/sweep.h5", emitted + "/sweep.h5");
}

TEST(CliSweep, BadSpecsExitTwoNamingTheKeyBeforeTraining) {
  TempDir dir;
  auto bad = [&](const std::string& from, const std::string& to, const std::string& needle) {
    std::string spec = kSpec;
    const auto at = spec.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    spec.replace(at, from.size(), to);
    write_text(dir.file("bad.json"), spec);
    const auto r = run_moescope({"sweep", dir.file("bad.json"), "-o", dir.file("out")});
    EXPECT_EQ(r.exit_code, 2) << needle << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(line_count(r.err), 1) << r.err;
    EXPECT_FALSE(fs::exists(dir.file("out/points/weight_orth=0_seed=0/run"))) << needle;
  };
  bad("\"train.regularisers.weight_orth\"", "\"train.reg.weight_orth\"",
      "bad.json: axes.train.reg.weight_orth: no such key in the run config (did you mean train.regularisers.weight_orth?)");
  bad("\"seed\": [0, 1]", "\"seed\": []", "bad.json: axes.seed: the axis is empty");
  bad("\"seed\": [0, 1]", "\"seed\": [\"zero\", \"one\"]", "bad.json: axes.seed: value \"zero\" is a string, the run config's seed is a number");
  bad("\"top-k\": 2", "\"top-kk\": 2", "bad.json: analyses.hessian: The following arguments were not expected");
  bad("\"seed\": [0, 1]", "\"seed\": [0, 1], \"model.top_k\": [2, 9]",
      "bad.json: point weight_orth=0_seed=0_top_k=9: ");
  bad("\"seed\": [0, 1]", "\"seed\": [0, 1], \"model.top_k\": [2, 9]",
      "run.json: classifier config: field 'top_k' must be between 1 and experts (4), got 9");
  bad("\"name\": \"tiny\"", "\"nmae\": \"tiny\"", "bad.json: nmae: unknown key");
}

}  // namespace
}  // namespace moescope
