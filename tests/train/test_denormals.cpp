// Training with denormals flushed: the calling thread and its intra-op pool.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <vector>

#include "moescope/train/denormals.hpp"

namespace moescope {
namespace {

volatile float g_small = 1e-30f, g_tiny = 1e-10f;

// Each thread of a two-thread parallel loop computes 1e-30 * 1e-10 (a denormal in IEEE arithmetic) and says
// whether its result came out zero and which thread it was.
struct Seen {
  std::vector<int> flushed, thread;
};
Seen products_in_pool() {
  Seen s{std::vector<int>(64, -1), std::vector<int>(64, -1)};
  at::parallel_for(0, 64, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      s.flushed[static_cast<std::size_t>(i)] = g_small * g_tiny == 0.0f ? 1 : 0;
      s.thread[static_cast<std::size_t>(i)] = at::get_thread_num();
    }
  });
  return s;
}

TEST(FlushDenormalsInPool, ReachesEveryIntraOpThreadAndRestores) {
  const int before = torch::get_num_threads();
  torch::set_num_threads(2);
  if (torch::get_num_threads() < 2) GTEST_SKIP() << "one intra-op thread only";
  const Seen ieee = products_in_pool();
  Seen flushed;
  bool active = false;
  {
    const ScopedFlushDenormalsInPool flush(true);
    active = flush.active();
    flushed = products_in_pool();
  }
  const Seen after = products_in_pool();
  {
    const ScopedFlushDenormalsInPool off(false);
    EXPECT_FALSE(off.active());
    EXPECT_EQ(products_in_pool().flushed, ieee.flushed);
  }
  torch::set_num_threads(before);
  if (!active) GTEST_SKIP() << "no denormal flushing mode on this CPU";
  ASSERT_NE(flushed.thread.front(), flushed.thread.back()) << "the loop ran on one thread";
  for (std::size_t i = 0; i < 64; ++i) {
    EXPECT_EQ(ieee.flushed[i], 0) << "element " << i;
    EXPECT_EQ(flushed.flushed[i], 1) << "element " << i << " on thread " << flushed.thread[i];
    EXPECT_EQ(after.flushed[i], 0) << "element " << i << " on thread " << after.thread[i];
  }
}

}  // namespace
}  // namespace moescope
