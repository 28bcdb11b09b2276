#include "moescope/study/runner.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "moescope/io/run.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"
#include "moescope/util/files.hpp"

extern char** environ;

namespace moescope {

namespace fs = std::filesystem;

SweepPlan plan_sweep(const SweepSpec& spec, const std::string& dir, const SweepOptions& opts) {
  if (opts.jobs < 1) invalid_argument("plan_sweep", "jobs must be >= 1, got " + std::to_string(opts.jobs));
  SweepPlan plan;
  plan.spec = spec;
  plan.dir = fs::absolute(dir).lexically_normal().string();
  plan.jobs = opts.jobs;
  const int total = opts.threads > 0 ? opts.threads
                    : spec.threads > 0 ? spec.threads
                                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  plan.threads_per_job = std::max(1, total / opts.jobs);
  const std::vector<std::string> head = {opts.moescope, "--threads", std::to_string(plan.threads_per_job),
                                         "--log-level", "warn"};
  for (SweepPoint& p : expand_grid(spec)) {
    PlannedPoint pp;
    pp.dir = (fs::path(plan.dir) / "points" / p.name).string();
    p.config["name"] = "run";
    p.config["out_dir"] = pp.dir;
    const std::string run = pp.dir + "/run";
    SweepStep train{"train", head, ""};
    for (const char* a : {"train", "--config"}) train.argv.push_back(a);
    train.argv.push_back(pp.dir + "/run.json");
    train.argv.push_back("--resume");
    pp.steps.push_back(train);
    for (const AnalysisSpec& a : spec.analyses) {
      SweepStep s{a.name, head, pp.dir + "/" + a.name + ".h5"};
      s.argv.push_back(a.command);
      s.argv.push_back(run);
      s.argv.push_back("-o");
      s.argv.push_back(s.report);
      for (auto& f : a.arguments()) s.argv.push_back(f);
      if (a.command == "landscape") s.argv.push_back("--resume");
      pp.steps.push_back(std::move(s));
    }
    pp.point = std::move(p);
    plan.points.push_back(std::move(pp));
  }
  return plan;
}

void write_point_configs(const SweepPlan& plan) {
  for (const PlannedPoint& p : plan.points) {
    fs::create_directories(fs::path(p.dir) / "logs");
    write_json_file(p.dir + "/run.json", p.point.config);
  }
}

std::string shell_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                         "0123456789-_./=:,+@%") == std::string::npos;
    std::string q = plain ? a : "'";
    if (!plain) {
      for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      q += "'";
    }
    out += (out.empty() ? "" : " ") + q;
  }
  return out;
}

void emit_jobs(const SweepPlan& plan, const std::string& file) {
  std::ostringstream s;
  s << "# " << plan.points.size() << " points of sweep '" << plan.spec.name << "' (" << plan.spec.file
    << "): one self-contained command per line. Run them anywhere this folder is mounted, e.g.\n"
    << "#   parallel -j N < " << file << "    or    bash -c \"$(sed -n \"$((SLURM_ARRAY_TASK_ID + 3))p\" " << file
    << ")\"\n# then `moescope sweep SPEC -o DIR --collect` gathers whatever has finished.\n";
  for (const PlannedPoint& p : plan.points) {
    s << shell_command(p.steps[0].argv);
    if (p.steps.size() > 1) {
      s << " && {";
      for (std::size_t i = 1; i < p.steps.size(); ++i) s << " " << shell_command(p.steps[i].argv) << ";";
      s << " }";
    }
    s << "\n";
  }
  write_file_atomic(file, s.str());
}

namespace {

nlohmann::json read_status(const std::string& dir) {
  std::ifstream in(dir + "/status.json");
  if (!in) return nlohmann::json::object();
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

// Training is done when the run's latest checkpoint is its last step (state.json: step == total_steps), however the
// training was run (by this runner or by an emitted job); an analysis when its report exists.
bool step_done(const PlannedPoint& p, const SweepStep& s, const nlohmann::json& status) {
  if (!s.report.empty()) return fs::exists(s.report);
  const auto it = status.find(s.name);
  if (it != status.end() && it->value("status", "") == "complete") return true;
  const std::string last = latest_step_dir(p.dir + "/run", "state.json");
  if (last.empty()) return false;
  std::ifstream in(last + "/state.json");
  const auto state = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return state.is_object() && state.contains("step") && state.contains("total_steps") &&
         state["step"] == state["total_steps"];
}

// The last non-empty line of a file (the error a failed command printed last).
std::string last_line(const std::string& file) {
  std::ifstream in(file);
  std::string line, last;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& out_file, const std::string& err_file,
            bool append) {
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const int flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_file.c_str(), flags, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_file.c_str(), flags, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, a[0], &fa, nullptr, a.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) fail_input(argv[0], std::string("cannot run: ") + std::strerror(rc));
  return pid;
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

PointStatus point_status(const PlannedPoint& p) {
  PointStatus st;
  const nlohmann::json status = read_status(p.dir);
  bool train_ok = true;
  for (const SweepStep& s : p.steps) {
    if (step_done(p, s, status)) {
      st.done.push_back(s.name);
      continue;
    }
    const auto it = status.find(s.name);
    if (it != status.end() && it->value("status", "") == "failed") {
      st.failed_steps.push_back(s.name);
      if (st.error.empty()) st.error = s.name + ": " + it->value("error", std::string());
    } else {
      st.pending.push_back(s.name);
    }
    if (s.name == "train") train_ok = false;
  }
  (void)train_ok;
  st.complete = st.failed_steps.empty() && st.pending.empty();
  st.failed = !st.failed_steps.empty();
  return st;
}

SweepRunResult run_sweep(const SweepPlan& plan, const ProgressFn& progress) {
  SweepRunResult res;
  res.points = static_cast<std::int64_t>(plan.points.size());
  write_point_configs(plan);

  struct Work {
    const PlannedPoint* point;
    nlohmann::json status;
    std::size_t step = 0;
    int attempt = 0;
    bool failed = false;
  };
  std::vector<Work> queue;
  for (const PlannedPoint& p : plan.points) {
    Work w{&p, read_status(p.dir)};
    if (point_status(p).complete) {
      ++res.skipped;
      continue;
    }
    queue.push_back(std::move(w));
  }
  std::int64_t finished = res.skipped;
  auto tell = [&](const std::string& note) {
    report(progress, make_progress("sweep", finished, res.points, "points", std::nan(""), "", "", false, note));
  };
  auto save = [](const Work& w) { write_json_file(w.point->dir + "/status.json", w.status); };
  // Moves w to its next step not done yet; false when the point is finished.
  auto next_step = [&](Work& w) {
    while (w.step < w.point->steps.size()) {
      const SweepStep& s = w.point->steps[w.step];
      if (w.failed && s.name != "train") {  // a failed training: its analyses cannot run
        w.status[s.name] = {{"status", "skipped"}, {"error", "training failed"}};
        ++w.step;
        continue;
      }
      if (!step_done(*w.point, s, w.status)) return true;
      ++w.step;
    }
    return false;
  };
  std::map<pid_t, Work> running;
  std::size_t next = 0;
  auto start = [&](Work w) {
    const SweepStep& s = w.point->steps[w.step];
    const std::string log = w.point->dir + "/logs/" + s.name + ".log";
    const std::string err = w.point->dir + "/logs/" + s.name + ".err";
    {
      std::ofstream l(log, std::ios::app);
      l << "$ " << shell_command(s.argv) << "   # attempt " << (w.attempt + 1) << "\n";
    }
    const pid_t pid = spawn(s.argv, log, err, /*append=*/true);
    running.emplace(pid, std::move(w));
  };
  while (next < queue.size() || !running.empty()) {
    while (running.size() < static_cast<std::size_t>(plan.jobs) && next < queue.size()) {
      Work w = std::move(queue[next++]);
      if (!next_step(w)) {  // nothing left (only failed or skipped steps)
        save(w);
        ++finished;
        continue;
      }
      tell("start " + w.point->point.name);
      start(std::move(w));
    }
    if (running.empty()) break;
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("sweep: waitpid: ") + std::strerror(errno));
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    Work w = std::move(it->second);
    running.erase(it);
    const SweepStep& s = w.point->steps[w.step];
    const int code = exit_code(status);
    const std::string err_file = w.point->dir + "/logs/" + s.name + ".err";
    if (code == 0 && (s.report.empty() || fs::exists(s.report))) {
      w.status[s.name] = {{"status", "complete"}, {"attempts", w.attempt + 1}};
      w.attempt = 0;
      ++w.step;
    } else if (w.attempt == 0) {
      tell(w.point->point.name + ": " + s.name + " failed (exit " + std::to_string(code) + "), trying once more");
      w.attempt = 1;
    } else {
      const std::string line = last_line(err_file);
      w.status[s.name] = {{"status", "failed"}, {"attempts", 2}, {"exit_code", code}, {"error", line}};
      tell(w.point->point.name + ": " + s.name + " failed twice: " + line);
      if (s.name == "train") w.failed = true;
      w.attempt = 0;
      ++w.step;
    }
    save(w);
    if (next_step(w)) {
      start(std::move(w));
      continue;
    }
    save(w);
    ++finished;
    const PointStatus ps = point_status(*w.point);
    if (ps.complete) ++res.completed;
    else ++res.failed;
    report(progress, make_progress("sweep", finished, res.points, "points", std::nan(""), "", w.point->point.name,
                                   finished == res.points));
  }
  return res;
}

CommandResult run_command(const std::vector<std::string>& argv) {
  char out_name[] = "/tmp/moescope-cmd-out-XXXXXX";
  char err_name[] = "/tmp/moescope-cmd-err-XXXXXX";
  const int fo = ::mkstemp(out_name), fe = ::mkstemp(err_name);
  if (fo < 0 || fe < 0) throw std::runtime_error("run_command: cannot create a temporary file");
  ::close(fo);
  ::close(fe);
  CommandResult r;
  const pid_t pid = spawn(argv, out_name, err_name, /*append=*/false);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = exit_code(status);
  {
    std::ifstream in(out_name);
    std::ostringstream ss;
    ss << in.rdbuf();
    r.out = ss.str();
  }
  r.last_error_line = last_line(err_name);
  ::unlink(out_name);
  ::unlink(err_name);
  return r;
}

}  // namespace moescope
