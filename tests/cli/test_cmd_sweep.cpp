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

#include <regex>
#include <set>

#include "moescope/io/report.hpp"
#include "moescope/model/classifier.hpp"
#include "moescope/study/collect.hpp"
#include "moescope/train/trainer.hpp"
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

// Every column of two tables equal, bit for bit (NaN where the other is NaN), but the timing columns
// (is_timing_column: wall-clock measurements such as test_ms_per_sample), which only have to be there.
void expect_same_table(const std::string& a, const std::string& b) {
  const SweepTable x = read_sweep_table(ReportReader(a), a), y = read_sweep_table(ReportReader(b), b);
  EXPECT_EQ(x.points, y.points);
  EXPECT_EQ(x.status, y.status);
  ASSERT_EQ(x.metric_names, y.metric_names);
  for (const auto& m : x.metric_names)
    for (std::size_t i = 0; i < x.rows(); ++i) {
      if (is_timing_column(m)) continue;
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
                          "trace_test", "trace_test_stderr", "test_ms_per_sample"})
      for (std::size_t i = 0; i < 4; ++i) EXPECT_TRUE(std::isfinite(t.metrics.at(m)[i])) << m << " " << i;
    EXPECT_EQ(t.points[2], "weight_orth=0.5_seed=0");
    EXPECT_TRUE(rep.has_attr("/", "command_line"));
  }
  // `correlate` reads the table's columns.
  r = run_moescope({"correlate", full + "/sweep.h5", "--x", "weight_orth", "--y", "mso_mean"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("n = 4"), std::string::npos) << r.out;
  // Collecting again redraws the figures: one of a column the table no longer has goes, and summary.md does not
  // link it; a column equal at every point (steps) gets no figure.
  fs::create_directories(full + "/figures");
  write_text(full + "/figures/sweep_gone.png", "stale");
  r = run_moescope({"sweep", dir.file("spec.json"), "-o", full, "--collect"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(file_exists(full + "/figures/sweep_gone.png"));
  EXPECT_EQ(file_text(full + "/summary.md").find("sweep_gone"), std::string::npos);
  EXPECT_FALSE(file_exists(full + "/figures/sweep_steps.png"));

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

// ------------------------------------------------------------------------------------------ the seed studies

// The specs in data/studies (the seed studies at both sizes) and data/studies/fixtures (the notebooks' tests).
std::vector<std::string> study_specs() {
  std::vector<std::string> out;
  for (const char* dir : {"/data/studies", "/data/studies/fixtures"})
    for (const auto& e : fs::directory_iterator(std::string(MOESCOPE_SOURCE_DIR) + dir))
      if (e.path().extension() == ".json") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// What `moescope sweep` checks before it trains anything, in process: the base resolves (as train --print-config
// resolves it), axis and "with" keys exist with the right types, every point's run config is accepted (model, data
// and train fields, values the model can be built with); and every analysis's flags parse (moescope --check-args).
TEST(SeedStudies, EverySpecIsAcceptedBeforeTraining) {
  const auto specs = study_specs();
  ASSERT_GE(specs.size(), 15u);  // 5 studies x (small, paper, fixture)
  TempDir dir;
  std::set<std::vector<std::string>> analyses;
  const nlohmann::json defaults = default_run_config();
  for (const auto& file : specs) {
    SCOPED_TRACE(file);
    const SweepSpec s = read_sweep_spec(file);
    EXPECT_FALSE(s.description.empty());
    const nlohmann::json resolved = merge_run_config(defaults, s.base).get<RunConfig>();
    EXPECT_NO_THROW(check_axes_against(s, resolved));
    for (const SweepPoint& p : expand_grid(s)) {
      nlohmann::json c = merge_run_config(defaults, p.config);
      c["name"] = "run";
      EXPECT_NO_THROW(c.get<RunConfig>()) << p.name;
    }
    for (const AnalysisSpec& a : s.analyses) {
      std::vector<std::string> args{"--check-args", a.command, dir.path(), "-o", dir.file("check.h5")};
      for (const auto& f : a.arguments()) args.push_back(f);
      analyses.insert(args);
    }
  }
  for (const auto& args : analyses) {
    const auto r = run_moescope(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
}

// The committed fixture sweeps (data/studies/fixtures/sweeps/<study>/sweep.h5, made by make_sweeps.sh with the real
// binary) were made from their specs as they are now, and every point finished.
TEST(SeedStudies, FixtureSweepsMatchTheirSpecs) {
  for (const char* study : {"kim2026-lm", "kim2026-fmnist", "vision-moe", "omoe", "guo2025"}) {
    SCOPED_TRACE(study);
    const std::string base = std::string(MOESCOPE_SOURCE_DIR) + "/data/studies/fixtures/";
    const SweepSpec s = read_sweep_spec(base + study + ".json");
    const std::string h5 = base + "sweeps/" + study + "/sweep.h5";
    ASSERT_TRUE(file_exists(h5)) << "run data/studies/fixtures/make_sweeps.sh";
    const SweepTable t = read_sweep_table(ReportReader(h5), h5);
    EXPECT_EQ(nlohmann::json::parse(t.spec_json), s.json) << "the fixture spec changed: run make_sweeps.sh";
    EXPECT_EQ(t.rows(), expand_grid(s).size());
    for (const auto& st : t.status) EXPECT_EQ(st, "complete");
  }
}

// The vision study's heads are of matched size: each MoE head within 3.5% of the dense head's parameters, and the
// counts its description states are the model's own (the classifier built from each point's config, on
// Fashion-MNIST's 1 x 28 x 28 images and 10 classes).
TEST(SeedStudies, VisionHeadsHaveTheParameterCountsTheirSpecsState) {
  for (const char* name : {"vision-moe.small.json", "vision-moe.paper.json"}) {
    SCOPED_TRACE(name);
    const SweepSpec s = read_sweep_spec(std::string(MOESCOPE_SOURCE_DIR) + "/data/studies/" + name);
    std::map<std::string, std::int64_t> head, backbone;  // by "<backbone>/<head>"
    for (const SweepPoint& p : expand_grid(s)) {
      nlohmann::json m = merge_run_config(nlohmann::json(default_run_config()), p.config)["model"];
      m["in_channels"] = 1;
      m["image_size"] = 28;
      m["num_classes"] = 10;
      ClassifierOptions o;
      from_json(m, o);
      const std::string key = std::string(backbone_kind_name(o.backbone())) + "/" + head_kind_name(o.head());
      if (head.count(key)) continue;
      torch::manual_seed(0);
      Classifier c(o);
      std::int64_t h = 0, b = 0;
      for (const auto& np : c->named_parameters()) (np.key().rfind("head.", 0) == 0 ? h : b) += np.value().numel();
      head[key] = h;
      backbone[key] = b;
    }
    auto with_commas = [](std::int64_t v) {
      std::string d = std::to_string(v), out;
      for (std::size_t i = 0; i < d.size(); ++i) out += (i && (d.size() - i) % 3 == 0 ? "," : "") + d.substr(i, 1);
      return out;
    };
    for (const auto& [key, n] : head) {
      SCOPED_TRACE(key);
      const std::string dense = key.substr(0, key.find('/')) + "/dense";
      ASSERT_TRUE(head.count(dense));
      EXPECT_LT(std::abs(static_cast<double>(n - head.at(dense))) / static_cast<double>(head.at(dense)), 0.035);
      EXPECT_NE(s.description.find(with_commas(n)), std::string::npos) << "head " << n;
      EXPECT_NE(s.description.find(with_commas(backbone.at(key))), std::string::npos) << "backbone " << backbone.at(key);
    }
  }
}

}  // namespace
}  // namespace moescope
