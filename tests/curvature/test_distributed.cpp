// Data-parallel HVPs: two processes on loopback (this test binary started twice, each running the DISABLED_
// worker below, joined through a c10d FileStore in a temporary folder) give the HVP, gradient and loss of the
// one-process operator over the whole evaluation set.
#include "moescope/curvature/distributed.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "moescope/curvature/hvp.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

extern char** environ;

namespace moescope {
namespace {

// A float32 model and data that every process rebuilds identically from the seed.
struct Problem {
  torch::nn::Sequential net{torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 4)};
  torch::Tensor x, y, v;
  Problem() {
    torch::manual_seed(4242);
    net = torch::nn::Sequential(torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 4));
    net->eval();
    x = torch::randn({53, 6});
    y = torch::randint(0, 4, {53}, torch::kLong);
    std::int64_t n = 0;
    for (const auto& p : net->parameters()) n += p.numel();
    v = torch::randn({n});
  }
  // The operator over samples [begin, end) in batches of 8 (the last one shorter).
  HessianOperator op(std::int64_t begin, std::int64_t end, HvpOptions o = {}) {
    const std::int64_t batches = (end - begin + 7) / 8;
    auto loss = [this, begin, end](std::int64_t b) {
      const std::int64_t lo = begin + 8 * b, hi = std::min(end, lo + 8);
      return BatchLoss{torch::nn::functional::cross_entropy(net->forward(x.slice(0, lo, hi)), y.slice(0, lo, hi)),
                       hi - lo};
    };
    return HessianOperator(net->parameters(), loss, batches, o);
  }
};

void write_tensor(const std::string& path, const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat64).contiguous();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(c.data_ptr<double>()), static_cast<std::streamsize>(c.numel() * 8));
}

torch::Tensor read_tensor(const std::string& path, std::int64_t n) {
  torch::Tensor t = torch::zeros({n}, torch::kFloat64);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(t.data_ptr<double>()), static_cast<std::streamsize>(n * 8));
  EXPECT_EQ(f.gcount(), n * 8) << path;
  return t;
}

// Started by TwoProcessesGiveTheOneProcessHvp with MOESCOPE_DP_{RANK,INIT,OUT} set; not run on its own.
TEST(DataParallelHvp, DISABLED_Worker) {
  const char* rank_env = std::getenv("MOESCOPE_DP_RANK");
  if (rank_env == nullptr) GTEST_SKIP() << "a worker of TwoProcessesGiveTheOneProcessHvp";
  DistributedOptions d;
  d.world_size = 2;
  d.rank = std::atoi(rank_env);
  d.init = std::getenv("MOESCOPE_DP_INIT");
  d.timeout_s = 60;
  const std::string out = std::getenv("MOESCOPE_DP_OUT");
  DataParallelGroup group(d);
  Problem p;
  const auto [begin, end] = shard_range(p.x.size(0), d.rank, d.world_size);
  HvpOptions o;
  o.all_reduce = group.hook();
  HessianOperator op = p.op(begin, end, o);
  write_tensor(out + ".hvp", op.hvp(p.v));
  write_tensor(out + ".grad", op.gradient());
  write_tensor(out + ".loss", torch::tensor({op.loss()}, torch::kFloat64));
  // A second product with kept graphs too: the hook runs once per product, in the same order on both ranks.
  HvpOptions kept = o;
  kept.keep_graph = true;
  HessianOperator op2 = p.op(begin, end, kept);
  op2.hvp(p.v);
  write_tensor(out + ".hvp2", op2.hvp(2.0 * p.v));
}

pid_t spawn_worker(int rank, const std::string& init, const std::string& out) {
  std::vector<std::string> env_strings = {"MOESCOPE_DP_RANK=" + std::to_string(rank), "MOESCOPE_DP_INIT=" + init,
                                          "MOESCOPE_DP_OUT=" + out};
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", filter = "--gtest_filter=DataParallelHvp.DISABLED_Worker",
              disabled = "--gtest_also_run_disabled_tests";
  std::vector<char*> argv = {exe.data(), filter.data(), disabled.data(), nullptr};
  pid_t pid = -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // Quiet children: their gtest output would interleave with ours.
  posix_spawn_file_actions_addopen(&fa, 1, (out + ".log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  const int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("posix_spawn failed: " + std::to_string(rc));
  return pid;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST(DataParallelHvp, TwoProcessesGiveTheOneProcessHvp) {
  if (!distributed_available()) GTEST_SKIP() << "built without c10d Gloo (libgloo-dev)";
  testing::TempDir dir;
  const std::string init = "file://" + dir.file("store");
  const pid_t a = spawn_worker(0, init, dir.file("rank0"));
  const pid_t b = spawn_worker(1, init, dir.file("rank1"));
  int sa = 0, sb = 0;
  waitpid(a, &sa, 0);
  waitpid(b, &sb, 0);
  ASSERT_TRUE(WIFEXITED(sa) && WEXITSTATUS(sa) == 0) << slurp(dir.file("rank0.log"));
  ASSERT_TRUE(WIFEXITED(sb) && WEXITSTATUS(sb) == 0) << slurp(dir.file("rank1.log"));

  Problem p;
  HessianOperator whole = p.op(0, p.x.size(0));
  const torch::Tensor hv = whole.hvp(p.v).to(torch::kFloat64);
  const torch::Tensor g = whole.gradient().to(torch::kFloat64);
  const std::int64_t n = hv.numel();
  for (const char* r : {"rank0", "rank1"}) {
    SCOPED_TRACE(r);
    // float32 sums taken in another order (per-shard sums, then the all-reduce): agreement to a few float32 ulps
    // of the largest entry, 1e-5 relative.
    const torch::Tensor dhv = read_tensor(dir.file(std::string(r) + ".hvp"), n);
    EXPECT_LT((dhv - hv).abs().max().item<double>(), 1e-5 * hv.abs().max().item<double>());
    const torch::Tensor dg = read_tensor(dir.file(std::string(r) + ".grad"), n);
    EXPECT_LT((dg - g).abs().max().item<double>(), 1e-5 * g.abs().max().item<double>());
    // The loss is summed in float64 from float32 batch means: 1e-6 relative.
    const double dl = read_tensor(dir.file(std::string(r) + ".loss"), 1).item<double>();
    EXPECT_NEAR(dl, whole.loss(), 1e-6 * whole.loss());
    const torch::Tensor dhv2 = read_tensor(dir.file(std::string(r) + ".hvp2"), n);
    EXPECT_LT((dhv2 - 2.0 * hv).abs().max().item<double>(), 2e-5 * hv.abs().max().item<double>());
  }
  // Both ranks hold the same all-reduced bits, so their solvers run in lockstep.
  EXPECT_TRUE(torch::equal(read_tensor(dir.file("rank0.hvp"), n), read_tensor(dir.file("rank1.hvp"), n)));
}

TEST(DataParallelHvp, ShardsCoverTheSetOnce) {
  for (int w : {1, 2, 3, 7}) {
    std::int64_t next = 0;
    for (int r = 0; r < w; ++r) {
      const auto [b, e] = shard_range(53, r, w);
      EXPECT_EQ(b, next);
      EXPECT_GE(e - b, 53 / w);
      EXPECT_LE(e - b, 53 / w + 1);
      next = e;
    }
    EXPECT_EQ(next, 53);
  }
  EXPECT_THROW(shard_range(10, 2, 2), std::invalid_argument);
  EXPECT_THROW(shard_range(10, 0, 0), std::invalid_argument);
}

TEST(DataParallelHvp, BadOptionsNameTheOption) {
  auto message = [](DistributedOptions o) {
    try {
      DataParallelGroup g(o);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  DistributedOptions o;
  o.world_size = 0;
  EXPECT_NE(message(o).find("world_size"), std::string::npos);
  o.world_size = 2;
  o.rank = 2;
  EXPECT_NE(message(o).find("rank"), std::string::npos);
  o.rank = 0;
  EXPECT_NE(message(o).find("init"), std::string::npos);  // missing
  o.init = "udp://x:1";
  EXPECT_NE(message(o).find("init"), std::string::npos);
  if (distributed_available()) {
    o.init = "tcp://localhost:99999";
    EXPECT_NE(message(o).find("port"), std::string::npos);
  }
  // One process needs no rendezvous: the reduction is the identity.
  DistributedOptions single;
  DataParallelGroup g(single);
  torch::Tensor t = torch::arange(4.0);
  g.all_reduce_sum(t);
  EXPECT_TRUE(torch::equal(t, torch::arange(4.0)));
}

}  // namespace
}  // namespace moescope
