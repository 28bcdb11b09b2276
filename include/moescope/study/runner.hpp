#pragma once
// Running a sweep: every point's commands (train, then each analysis) as `moescope` processes, several points at a
// time, resumable. A point's folder:
//   DIR/points/<name>/run.json         the point's run config (base + coordinates, name "run", out_dir the folder)
//   DIR/points/<name>/run/             the run (config.json, step_N/, log.h5)
//   DIR/points/<name>/<analysis>.h5    one report per analysis
//   DIR/points/<name>/logs/<step>.log  what each command printed (every attempt)
//   DIR/points/<name>/status.json      each step's status, attempts and last error
// A step is done when its command exited 0 (training) or its report exists (analyses: reports are renamed into
// place only when complete). On a restart, done steps are skipped, training resumes from its last checkpoint
// (`train --resume`) and a landscape from its journal (`landscape --resume`). A failed step is tried once more; then it
// is recorded as failed with the last line it printed, and the sweep goes on (a failed training skips the point's
// analyses).
#include <cstdint>
#include <string>
#include <vector>

#include "moescope/study/spec.hpp"
#include "moescope/util/progress.hpp"

namespace moescope {

/// One command of a point.
struct SweepStep {
  std::string name;                ///< "train" or the analysis's name
  std::vector<std::string> argv;   ///< the exact moescope invocation
  std::string report;              ///< the file whose existence means done ("" for train)
};

struct PlannedPoint {
  SweepPoint point;
  std::string dir;
  std::vector<SweepStep> steps;
};

struct SweepPlan {
  SweepSpec spec;
  std::string dir;                 ///< the sweep's output folder (absolute)
  std::vector<PlannedPoint> points;
  int jobs = 1, threads_per_job = 1;
};

struct SweepOptions {
  std::string moescope;            ///< the moescope executable the commands run (absolute)
  int jobs = 1;                    ///< points at a time
  int threads = 0;                 ///< all of them together (0: the spec's, else every core)
};
/// The commands of every point. Throws std::invalid_argument for jobs < 1.
SweepPlan plan_sweep(const SweepSpec& spec, const std::string& dir, const SweepOptions& opts);

/// Writes each point's run.json (atomically), creating the folders.
void write_point_configs(const SweepPlan& plan);

/// One shell command per point: cd into nothing, absolute paths, `train ... && { analysis; analysis; ... }`, so a
/// job array or GNU parallel runs them anywhere the same filesystem is mounted. Atomic.
void emit_jobs(const SweepPlan& plan, const std::string& file);
/// The command line of argv, quoted for a POSIX shell.
std::string shell_command(const std::vector<std::string>& argv);

/// What has happened to a point, from its folder.
struct PointStatus {
  bool complete = false;           ///< every step done
  bool failed = false;             ///< some step failed twice in the last run
  std::vector<std::string> done, failed_steps, pending;
  std::string error;               ///< the first failed step's last line
};
PointStatus point_status(const PlannedPoint& p);

struct SweepRunResult {
  std::int64_t points = 0, skipped = 0, completed = 0, failed = 0;
};
/// Runs every step not done yet, `plan.jobs` points at a time, reporting each finished point. Commands' output goes
/// to the points' logs. Throws InputError when a command cannot be started at all.
SweepRunResult run_sweep(const SweepPlan& plan, const ProgressFn& progress = {});

/// Runs argv and returns its exit code, its standard output and the last non-empty line of its standard error.
struct CommandResult {
  int exit_code = -1;
  std::string out, last_error_line;
};
CommandResult run_command(const std::vector<std::string>& argv);

}  // namespace moescope
