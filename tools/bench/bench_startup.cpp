// bench_startup: how long a command takes to start, as whole processes, against a bare `/usr/bin/python3 -c 0`
// (what a user compares a command-line tool with). Medians of N runs, interleaved so machine drift hits all alike.
// Target (issue "Performance", goal 1): commands that need no LibTorch start in under 2x the bare python3; torch
// commands start once (the front end hands them to moescope-torch with OMP_WAIT_POLICY already set).
//   bench_startup [--runs 21] [--bin DIR]   (DIR holds moescope and moescope-torch; default: beside this program)
#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "moescope/io/synthetic_checkpoint.hpp"


extern char** environ;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Wall seconds of one run of argv (stdout and stderr to /dev/null); exit status in *status.
double run_once(const std::vector<std::string>& argv, int* status) {
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  const auto t0 = Clock::now();
  pid_t pid = 0;
  if (posix_spawn(&pid, a[0], &fa, nullptr, a.data(), environ) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    *status = -1;
    return 0.0;
  }
  waitpid(pid, status, 0);
  posix_spawn_file_actions_destroy(&fa);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  unsetenv("OMP_WAIT_POLICY");  // measure the hand-over, not a policy the caller happens to have
  int runs = 21;
  fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::max(3, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--bin") == 0) bin = argv[i + 1];
  }
  const std::string front = (bin / "moescope").string(), back = (bin / "moescope-torch").string();
  const fs::path tmp = fs::temp_directory_path() / ("bench_startup_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  moescope::SyntheticCheckpointOptions o;
  o.layers = 2;
  o.experts = 4;
  o.hidden = 32;
  o.intermediate = 48;
  const std::string ckpt = (tmp / "small.safetensors").string();
  moescope::write_synthetic_checkpoint(ckpt, o);  // ~60 KB

  struct Case {
    const char* name;
    std::vector<std::string> argv;
    bool torch_free;
    std::vector<double> t;
  };
  std::vector<Case> cases = {
      {"python3 -c 0 (reference)", {"/usr/bin/python3", "-c", "0"}, false, {}},
      {"moescope --version", {front, "--version"}, true, {}},
      {"moescope --help", {front, "--help"}, true, {}},
      {"moescope inspect small.safetensors", {front, "inspect", ckpt}, true, {}},
      {"moescope geometry small.safetensors", {front, "geometry", ckpt, "-o", (tmp / "g.h5").string(), "--hash", "none"}, true, {}},
      {"moescope train --print-config (hand-over)", {front, "train", "--print-config"}, false, {}},
      {"moescope-torch train --print-config (re-exec)", {back, "train", "--print-config"}, false, {}},
  };
  for (int r = 0; r < runs; ++r)
    for (auto& c : cases) {
      int status = 0;
      const double s = run_once(c.argv, &status);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "bench_startup: %s failed (status %d)\n", c.name, status);
        return 1;
      }
      c.t.push_back(s);
    }
  fs::remove_all(tmp);
  const double py = median(cases[0].t);
  std::printf("start-up, median of %d runs (whole process, wall clock)\n", runs);
  std::printf("%-44s %10s %14s\n", "command", "seconds", "/ python3 -c 0");
  for (const auto& c : cases)
    std::printf("%-44s %10.4f %14.2f%s\n", c.name, median(c.t), median(c.t) / py,
                c.torch_free ? (median(c.t) / py < 2.0 ? "  (target < 2: met)" : "  (target < 2: NOT met)") : "");
  std::printf("torch commands start once: through the front end %.3f s, against %.3f s for moescope-torch started\n"
              "without OMP_WAIT_POLICY, which runs itself again to set it (what every torch command did before).\n"
              "Before the front end every command loaded LibTorch: moescope --version took 0.7-1.0 s (18-25x).\n",
              median(cases[5].t), median(cases[6].t));
  return 0;
}
