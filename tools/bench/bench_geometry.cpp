// Benchmark (not a test): `moescope geometry` on a generated multi-GB bf16 checkpoint.
// Prints, from one run (medians over --repeat runs, with min-max):
//  - the throughput of the geometry process as a ratio to a plain sequential read() of the same file, cold
//    (pages dropped with posix_fadvise) and warm, for the whole process and after its start-up (measured as
//    `moescope --version`), against the targets (cold >= 0.8, warm >= 0.5) and the previous figures;
//  - the process's peak RSS as a ratio to one layer's expert bytes in float32 (target <= 2);
//  - the Gram kernel's own speed in this process (GramKernel on bf16 in memory, one kernel per thread), with the
//    data in cache and streamed from memory, next to the machine's memory bandwidth (a streaming sum over the
//    same buffer), so the kernel's figure reads against the limit a streamed checkpoint cannot beat.
// CPU seconds (user + sys) are printed beside wall times: on a shared machine they move less than wall times.
//
// Usage: bench_geometry [--dir D] [--layers 4] [--experts 8] [--hidden 2048] [--intermediate 5632]
//                       [--threads N] [--repeat 3] [--moescope PATH] [--keep] [--no-process] [--no-kernel]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/metrics/gram_kernel.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double cpu_seconds(const struct rusage& ru) {
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

double self_cpu_seconds() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return cpu_seconds(ru);
}

// Drops the file's pages from the page cache (clean pages; no privileges needed), so the next read is cold.
void evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct Timed {
  double seconds = 0, cpu = 0;
  long max_rss_kb = 0;
  int status = 0;
};

// Reads the whole file sequentially into a reused 8 MiB buffer.
Timed sequential_read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::vector<char> buf(8 << 20);
  const double cpu0 = self_cpu_seconds();
  const auto t0 = Clock::now();
  std::uint64_t sum = 0;
  for (ssize_t n; (n = ::read(fd, buf.data(), buf.size())) > 0;) sum += static_cast<unsigned char>(buf[0]);
  Timed r;
  r.seconds = seconds_since(t0);
  r.cpu = self_cpu_seconds() - cpu0;
  ::close(fd);
  if (sum == 1) std::puts("");  // keeps the loop from being optimised away
  return r;
}

// Runs a command with stdout to /dev/null; wall time, the child's CPU time and peak RSS.
Timed run_child(const std::vector<std::string>& args) {
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
  Timed r;
  struct rusage ru {};
  wait4(pid, &r.status, 0, &ru);
  r.seconds = seconds_since(t0);
  r.cpu = cpu_seconds(ru);
  r.max_rss_kb = ru.ru_maxrss;
  return r;
}

struct Stat {
  double median = 0, lo = 0, hi = 0;
};

// Median and range of the finite values.
Stat stat_of(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  std::sort(v.begin(), v.end());
  Stat s;
  if (v.empty()) return s;
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  s.lo = v.front();
  s.hi = v.back();
  return s;
}

std::string show(const Stat& s, const char* fmt = "%.2f") {
  char a[32], b[32], c[32];
  std::snprintf(a, sizeof a, fmt, s.median);
  std::snprintf(b, sizeof b, fmt, s.lo);
  std::snprintf(c, sizeof c, fmt, s.hi);
  return std::string(a) + " (" + b + "-" + c + ")";
}

// Runs fn(t) on `threads` threads at once; wall seconds.
template <typename Fn>
double parallel(int threads, Fn&& fn) {
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back([&fn, t] { fn(t); });
  for (auto& th : pool) th.join();
  return seconds_since(t0);
}

// The kernel's speed (G elements/s, all threads together) on bf16 strips of `n` coordinates per expert per
// thread, each thread with its own kernel and data; best of `reps` passes. Also fills `bandwidth` (GB/s) with a
// streaming 64-bit sum over the same bytes, best of `reps`.
double kernel_speed(int experts, std::int64_t n, int threads, int reps, double* bandwidth,
                    moescope::GramIsa isa = moescope::GramIsa::Auto) {
  std::vector<std::vector<std::uint8_t>> data(static_cast<std::size_t>(threads));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> f(std::size_t{1} << 16);
  for (auto& x : f) x = nd(rng);
  const std::size_t elements = static_cast<std::size_t>(n) * static_cast<std::size_t>(experts);
  for (auto& d : data) {
    d.resize(elements * 2);
    for (std::size_t at = 0; at < elements; at += f.size()) {
      const std::size_t m = std::min(f.size(), elements - at);
      std::shuffle(f.begin(), f.end(), rng);
      moescope::convert_from_f32(moescope::DType::BF16, f.data(), m, d.data() + 2 * at);
    }
  }
  double best = 1e300;
  for (int r = 0; r < reps; ++r)
    best = std::min(best, parallel(threads, [&](int t) {
                      moescope::GramKernel k(experts, 0, isa);
                      std::vector<const std::uint8_t*> rows;
                      for (int e = 0; e < experts; ++e)
                        rows.push_back(data[static_cast<std::size_t>(t)].data() + 2 * static_cast<std::size_t>(n) * e);
                      // several passes over data that fits in cache, one over data that does not
                      const int passes = n <= (1 << 17) ? 200 : 1;
                      for (int p = 0; p < passes; ++p) k.add(moescope::DType::BF16, rows.data(), n);
                      volatile double sink = k.take().sq_dev;
                      (void)sink;
                    }) / (n <= (1 << 17) ? 200 : 1));
  if (bandwidth) {
    double bw_best = 1e300;
    std::vector<std::uint64_t> sums(static_cast<std::size_t>(threads));
    for (int r = 0; r < reps; ++r)
      bw_best = std::min(bw_best, parallel(threads, [&](int t) {
                           const auto& d = data[static_cast<std::size_t>(t)];
                           const auto* p = reinterpret_cast<const std::uint64_t*>(d.data());
                           std::uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                           for (std::size_t i = 0; i + 4 <= d.size() / 8; i += 4)
                             s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
                           sums[static_cast<std::size_t>(t)] = s0 + s1 + s2 + s3;
                         }));
    *bandwidth = static_cast<double>(data.front().size()) * threads / bw_best / 1e9;
  }
  return static_cast<double>(experts) * static_cast<double>(n) * threads / best / 1e9;
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
  int repeat = 3;
  bool keep = false, process = true, kernel = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--dir") dir = next();
    else if (a == "--layers") o.layers = std::stoi(next());
    else if (a == "--experts") o.experts = std::stoi(next());
    else if (a == "--hidden") o.hidden = std::stoll(next());
    else if (a == "--intermediate") o.intermediate = std::stoll(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--repeat") repeat = std::max(1, std::stoi(next()));
    else if (a == "--moescope") bin = next();
    else if (a == "--keep") keep = true;
    else if (a == "--no-process") process = false;
    else if (a == "--no-kernel") kernel = false;
    else {
      std::fprintf(stderr, "bench_geometry: unknown argument %s\n", a.c_str());
      return 2;
    }
  }

  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {  // a shared machine's figures need their context
    char line[128] = {};
    if (std::fgets(line, sizeof line, f)) std::printf("load average: %s", line);
    std::fclose(f);
  }
  if (kernel) {
    const auto isa = moescope::gram_isa_name(moescope::gram_isa_auto());
    double bw = 0;
    const double cached = kernel_speed(o.experts, 1 << 16, threads, 3, nullptr);
    const std::int64_t big = (std::int64_t{256} << 20) / (2 * o.experts);  // 256 MiB of bf16 per thread
    const double streamed = kernel_speed(o.experts, big, threads, 3, &bw);
    std::printf("Gram kernel (%.*s, E=%d, %d threads): %.2f G elements/s on data in cache, %.2f G elements/s "
                "(%.2f GB/s of bf16) streamed from memory\n",
                static_cast<int>(isa.size()), isa.data(), o.experts, threads, cached, streamed, 2 * streamed);
    std::printf("memory bandwidth (streaming sum, %d threads): %.2f GB/s; kernel streamed / bandwidth: %.2f; "
                "kernel in cache / bandwidth: %.2f\n",
                threads, bw, 2 * streamed / bw, 2 * cached / bw);
    for (auto other : {moescope::GramIsa::Portable, moescope::GramIsa::Avx2, moescope::GramIsa::Avx512})
      if (other != moescope::gram_isa_auto() && moescope::gram_isa_available(other)) {
        const auto name = moescope::gram_isa_name(other);
        std::printf("  the %.*s path: %.2f G elements/s on data in cache\n", static_cast<int>(name.size()),
                    name.data(), kernel_speed(o.experts, 1 << 16, threads, 3, nullptr, other));
      }
    std::fflush(stdout);
  }
  if (!process) return 0;

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
  std::printf("checkpoint: %.2f GB bf16, %d layers x %d experts, H=%lld I=%lld, threads=%d, %d runs\n", bytes / 1e9,
              o.layers, o.experts, static_cast<long long>(o.hidden), static_cast<long long>(o.intermediate), threads,
              repeat);
  std::vector<double> startup;
  struct Series {
    std::vector<double> read_s, read_cpu, geo_s, geo_cpu, whole, after, rss;
  } series[2];  // 0 cold, 1 warm
  for (int r = 0; r < repeat; ++r) {
    const Timed start = run_child({bin, "--version"});  // process start-up: loading LibTorch dominates
    startup.push_back(start.seconds);
    for (const bool cold : {true, false}) {
      Series& s = series[cold ? 0 : 1];
      if (cold) evict(ckpt);
      else sequential_read(ckpt);
      const Timed rd = sequential_read(ckpt);
      fs::remove(report);
      if (cold) evict(ckpt);
      const Timed g = run_child(geometry);
      if (!WIFEXITED(g.status) || WEXITSTATUS(g.status) != 0) {
        std::fprintf(stderr, "bench_geometry: %s failed (status %d)\n", bin.c_str(), g.status);
        return 1;
      }
      s.read_s.push_back(rd.seconds);
      s.read_cpu.push_back(rd.cpu);
      s.geo_s.push_back(g.seconds);
      s.geo_cpu.push_back(g.cpu);
      s.whole.push_back(rd.seconds / g.seconds);
      // a start-up slower than the whole run (a busy machine) leaves no estimate
      const double work = g.seconds - start.seconds;
      s.after.push_back(work > 0.05 * g.seconds ? rd.seconds / work : std::nan(""));
      s.rss.push_back(g.max_rss_kb * 1024.0 / layer_f32);
    }
  }
  const Stat st = stat_of(startup);
  std::printf("process start-up (moescope --version): %s s\n", show(st, "%.3f").c_str());
  // previous figures: README "Benchmarks" before the Gram kernel (medians of three runs on the 2-core machine)
  const double prev_whole[2] = {0.32, 0.09}, prev_after[2] = {0.44, 0.13}, target[2] = {0.8, 0.5};
  for (int c = 0; c < 2; ++c) {
    const Series& s = series[c];
    const char* name = c == 0 ? "cold" : "warm";
    std::vector<double> read_gbs, geo_gbs;
    for (double t : s.read_s) read_gbs.push_back(bytes / t / 1e9);
    for (double t : s.geo_s) geo_gbs.push_back(bytes / t / 1e9);
    std::printf("[%s] sequential read %s s = %s GB/s, CPU %s s | geometry %s s = %s GB/s, CPU %s s\n", name,
                show(stat_of(s.read_s), "%.3f").c_str(), show(stat_of(read_gbs)).c_str(),
                show(stat_of(s.read_cpu), "%.3f").c_str(), show(stat_of(s.geo_s), "%.3f").c_str(),
                show(stat_of(geo_gbs)).c_str(), show(stat_of(s.geo_cpu), "%.3f").c_str());
    std::printf("[%s] geometry/read throughput: whole process %s (target >= %.1f, previously %.2f); after start-up "
                "%s (previously %.2f)\n",
                name, show(stat_of(s.whole)).c_str(), target[c], prev_whole[c], show(stat_of(s.after)).c_str(),
                prev_after[c]);
    std::printf("[%s] peak RSS / one layer's experts in float32 (%.0f MB): %s (target <= 2, previously 0.33)\n", name,
                layer_f32 / 1e6, show(stat_of(s.rss)).c_str());
  }
  if (!keep) fs::remove_all(dir);
  return 0;
}
