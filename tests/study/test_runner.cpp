// study/runner: a sweep's commands, its jobs file, and running them with retries and statuses. A fake `moescope`
// (a shell script) stands in for the real one, so that exit codes and failures are chosen by the test.
#include "moescope/study/runner.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "moescope/util/json.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

namespace fs = std::filesystem;

SweepSpec spec() {
  return parse_sweep_spec(nlohmann::ordered_json::parse(R"({
    "name": "t", "base": {"train": {"steps": 2}},
    "axes": {"train.regularisers.weight_orth": [0, 0.5], "seed": [0, 1]},
    "analyses": {"geometry": {}, "hessian": {"top-k": 2, "split": ["train", "test"]},
                 "landscape": {"dirs": "filter", "x": "-1:1:3"}}})"),
                          "spec.json");
}

// A fake moescope: "train" succeeds; an analysis writes its report (the argument after -o) unless a file FAIL_<name>
// in the report's folder (the point's) says how many more times it fails (then it prints "boom <name>").
std::string fake_moescope(const testing::TempDir& dir) {
  const std::string path = dir.file("moescope");
  testing::write_text(path, R"(#!/bin/sh
while [ "$1" != "train" ] && [ "$1" != "geometry" ] && [ "$1" != "hessian" ] && [ "$1" != "landscape" ]; do shift; done
cmd=$1
[ "$cmd" = train ] && exit 0
out=""
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out=$2; shift; done
fail="$(dirname "$out")/FAIL_$cmd"
if [ -f "$fail" ]; then
  n=$(cat "$fail")
  if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$fail"; echo "working" >&2; echo "boom $cmd" >&2; exit 2; fi
fi
echo report > "$out"
)");
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(SweepRunner, PlansTheExactCommands) {
  testing::TempDir dir;
  SweepOptions o;
  o.moescope = "/opt/bin/moescope";
  o.jobs = 2;
  o.threads = 4;
  const SweepPlan plan = plan_sweep(spec(), dir.file("out"), o);
  EXPECT_EQ(plan.threads_per_job, 2);
  ASSERT_EQ(plan.points.size(), 4u);
  const PlannedPoint& p = plan.points[1];
  EXPECT_EQ(p.point.name, "weight_orth=0_seed=1");
  EXPECT_EQ(p.dir, dir.file("out") + "/points/weight_orth=0_seed=1");
  ASSERT_EQ(p.steps.size(), 4u);
  EXPECT_EQ(shell_command(p.steps[0].argv),
            "/opt/bin/moescope --threads 2 --log-level warn train --config " + p.dir + "/run.json --resume");
  EXPECT_EQ(shell_command(p.steps[2].argv), "/opt/bin/moescope --threads 2 --log-level warn hessian " + p.dir +
                                                "/run -o " + p.dir + "/hessian.h5 --top-k 2 --split train,test");
  EXPECT_EQ(p.steps[3].argv.back(), "--resume");  // a landscape continues its journal
  EXPECT_EQ(p.point.config["out_dir"], p.dir);
  EXPECT_EQ(p.point.config["name"], "run");
  EXPECT_EQ(shell_command({"a b", "it's", "x=1,2"}), "'a b' 'it'\\''s' x=1,2");
  EXPECT_THROW(plan_sweep(spec(), dir.file("out"), SweepOptions{"m", 0, 1}), std::invalid_argument);
}

TEST(SweepRunner, JobsFileHasOneSelfContainedCommandPerPoint) {
  testing::TempDir dir;
  const SweepPlan plan = plan_sweep(spec(), dir.file("out"), SweepOptions{"/m", 1, 1});
  emit_jobs(plan, dir.file("jobs.sh"));
  std::ifstream in(dir.file("jobs.sh"));
  std::vector<std::string> commands;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') commands.push_back(line);
  ASSERT_EQ(commands.size(), 4u);
  const PlannedPoint& p = plan.points[0];
  EXPECT_EQ(commands[0], shell_command(p.steps[0].argv) + " && { " + shell_command(p.steps[1].argv) + "; " +
                             shell_command(p.steps[2].argv) + "; " + shell_command(p.steps[3].argv) + "; }");
}

TEST(SweepRunner, RetriesOnceRecordsFailuresAndSkipsWhatIsDone) {
  testing::TempDir dir;
  const std::string bin = fake_moescope(dir);
  const SweepPlan plan = plan_sweep(spec(), dir.file("out"), SweepOptions{bin, 2, 2});
  for (const PlannedPoint& p : plan.points) {
    fs::create_directories(p.dir);
    testing::write_text(p.dir + "/FAIL_hessian", "1");  // fails once: the retry succeeds
  }
  testing::write_text(plan.points[2].dir + "/FAIL_landscape", "2");  // fails twice: the point records it
  std::vector<std::string> notes;
  const SweepRunResult r = run_sweep(plan, [&](const Progress& p) {
    if (!p.note.empty()) notes.push_back(p.note);
  });
  EXPECT_EQ(r.points, 4);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.completed, 3);
  int failed_points = 0;
  for (const PlannedPoint& p : plan.points) {
    const PointStatus st = point_status(p);
    EXPECT_TRUE(fs::exists(p.dir + "/run.json"));
    if (!st.failed) {
      EXPECT_TRUE(st.complete) << p.point.name;
      continue;
    }
    ++failed_points;
    EXPECT_EQ(st.failed_steps, (std::vector<std::string>{"landscape"}));
    EXPECT_EQ(st.error, "landscape: boom landscape");  // the last line the command printed
    const nlohmann::json status = read_json_file(p.dir + "/status.json", "status");
    EXPECT_EQ(status["landscape"]["attempts"], 2);
    EXPECT_EQ(status["landscape"]["exit_code"], 2);
  }
  EXPECT_EQ(failed_points, 1);
  EXPECT_TRUE(point_status(plan.points[2]).failed);
  EXPECT_TRUE(std::any_of(notes.begin(), notes.end(), [](const std::string& n) {
    return n.find("failed twice: boom landscape") != std::string::npos;
  }));

  // Again: the complete points are skipped, the failed step is tried again (and now succeeds).
  const SweepRunResult again = run_sweep(plan);
  EXPECT_EQ(again.skipped, 3);
  EXPECT_EQ(again.completed, 1);
  for (const PlannedPoint& p : plan.points) EXPECT_TRUE(point_status(p).complete) << p.point.name;
}

TEST(SweepRunner, AFailedTrainingSkipsItsAnalyses) {
  testing::TempDir dir;
  const std::string bin = dir.file("moescope");
  testing::write_text(bin, "#!/bin/sh\necho 'moescope: error: no data' >&2\nexit 2\n");
  ::chmod(bin.c_str(), 0755);
  const SweepPlan plan = plan_sweep(spec(), dir.file("out"), SweepOptions{bin, 1, 1});
  const SweepRunResult r = run_sweep(plan);
  EXPECT_EQ(r.failed, 4);
  const nlohmann::json status = read_json_file(plan.points[0].dir + "/status.json", "status");
  EXPECT_EQ(status["train"]["status"], "failed");
  EXPECT_EQ(status["train"]["error"], "moescope: error: no data");
  EXPECT_EQ(status["hessian"]["status"], "skipped");
  EXPECT_FALSE(fs::exists(plan.points[0].dir + "/hessian.h5"));
}

TEST(SweepRunner, RunCommandCapturesOutputAndTheLastErrorLine) {
  const CommandResult r = run_command({"/bin/sh", "-c", "echo out; echo first >&2; echo last >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.last_error_line, "last");
}

}  // namespace
}  // namespace moescope
