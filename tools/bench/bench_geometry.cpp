// Benchmark (not a test): `moescope geometry` on a generated multi-GB bf16 checkpoint.
// Prints, from one run: throughput of geometry as a ratio to a plain sequential read of the same file
// (target >= 0.5), and the peak RSS of the geometry process as a ratio to one layer's expert bytes in
// float32 (target < 2).
//
// Usage: bench_geometry [--dir D] [--layers 4] [--experts 8] [--hidden 2048] [--intermediate 5632]
//                       [--threads N] [--moescope PATH] [--keep]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "moescope/io/synthetic_checkpoint.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Drops the file's pages from the page cache (clean pages; no privileges needed), so the next read is cold.
void evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Reads the whole file sequentially into a reused 8 MiB buffer; returns seconds.
double sequential_read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::vector<char> buf(8 << 20);
  const auto t0 = Clock::now();
  std::uint64_t sum = 0;
  for (ssize_t n; (n = ::read(fd, buf.data(), buf.size())) > 0;) sum += static_cast<unsigned char>(buf[0]);
  const double s = seconds_since(t0);
  ::close(fd);
  if (sum == 1) std::puts("");  // keeps the loop from being optimised away
  return s;
}

struct ChildRun {
  double seconds = 0;
  long max_rss_kb = 0;
  int status = -1;
};

// Runs a command with stdout to /dev/null; wall time and the child's peak RSS.
ChildRun run_child(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const auto t0 = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  ChildRun r;
  struct rusage ru {};
  wait4(pid, &r.status, 0, &ru);
  r.seconds = seconds_since(t0);
  r.max_rss_kb = ru.ru_maxrss;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  moescope::SyntheticCheckpointOptions o;
  o.family = "mixtral";
  o.layers = 4;
  o.experts = 8;
  o.hidden = 2048;
  o.intermediate = 5632;
  o.dtype = moescope::DType::BF16;
  o.rho = 0.3;
  std::string dir = (fs::temp_directory_path() / "moescope-bench").string();
  std::string bin = (fs::canonical("/proc/self/exe").parent_path() / "moescope").string();
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--dir") dir = next();
    else if (a == "--layers") o.layers = std::stoi(next());
    else if (a == "--experts") o.experts = std::stoi(next());
    else if (a == "--hidden") o.hidden = std::stoll(next());
    else if (a == "--intermediate") o.intermediate = std::stoll(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--moescope") bin = next();
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "bench_geometry: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  fs::create_directories(dir);
  const std::string ckpt = dir + "/bench.safetensors", report = dir + "/bench.h5";
  const double layer_f32 = 3.0 * o.experts * static_cast<double>(o.hidden) * static_cast<double>(o.intermediate) * 4.0;
  if (!fs::exists(ckpt)) {
    std::printf("generating %s ...\n", ckpt.c_str());
    std::fflush(stdout);
    const auto t0 = Clock::now();
    moescope::write_synthetic_checkpoint(ckpt, o);
    std::printf("generated in %.1f s\n", seconds_since(t0));
  }
  const double bytes = static_cast<double>(fs::file_size(ckpt));
  const std::vector<std::string> geometry = {bin, "--threads", std::to_string(threads), "--log-level", "warn",
                                             "geometry", ckpt, "-o", report, "--hash", "none"};
  const ChildRun start = run_child({bin, "--version"});  // process start-up: loading LibTorch dominates
  std::printf("checkpoint: %.2f GB bf16, %d layers x %d experts, H=%lld I=%lld, threads=%d\n", bytes / 1e9, o.layers,
              o.experts, static_cast<long long>(o.hidden), static_cast<long long>(o.intermediate), threads);
  std::printf("process start-up (moescope --version): %.3f s\n", start.seconds);
  for (const bool cold : {true, false}) {
    if (cold) evict(ckpt); else sequential_read(ckpt);
    const double t_read = sequential_read(ckpt);
    fs::remove(report);
    if (cold) evict(ckpt);
    const ChildRun g = run_child(geometry);
    if (!WIFEXITED(g.status) || WEXITSTATUS(g.status) != 0) {
      std::fprintf(stderr, "bench_geometry: %s failed (status %d)\n", bin.c_str(), g.status);
      return 1;
    }
    const double work = std::max(1e-9, g.seconds - start.seconds);
    std::printf("[%s cache] sequential read %6.3f s %6.2f GB/s | geometry %6.3f s %6.2f GB/s (%.2f GB/s after start-up)\n",
                cold ? "cold" : "warm", t_read, bytes / t_read / 1e9, g.seconds, bytes / g.seconds / 1e9,
                bytes / work / 1e9);
    std::printf("[%s cache] throughput ratio geometry/read: %.2f whole process, %.2f after start-up   (target >= 0.5)\n",
                cold ? "cold" : "warm", t_read / g.seconds, t_read / work);
    const double rss = g.max_rss_kb * 1024.0;
    std::printf("[%s cache] peak RSS %.0f MB = %.2f x one layer's experts in float32 (%.0f MB)   (target < 2)\n",
                cold ? "cold" : "warm", rss / 1e6, rss / layer_f32, layer_f32 / 1e6);
  }
  if (!keep) fs::remove_all(dir);
  return 0;
}
