#include "moescope/train/denormals.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace moescope {

ScopedFlushDenormalsInPool::ScopedFlushDenormalsInPool(bool enable) : caller_(enable) {
#ifdef _OPENMP
  if (!caller_.active()) return;
  // One region as wide as the pool: its threads are the ones the next regions of at most that width reuse.
  previous_.assign(static_cast<std::size_t>(omp_get_max_threads()), 0);
#pragma omp parallel num_threads(static_cast<int>(previous_.size()))
  {
    const int t = omp_get_thread_num();
    if (t != 0) previous_[static_cast<std::size_t>(t)] = set_flushing_denormals(true) ? 1 : 0;
  }
#endif
}

ScopedFlushDenormalsInPool::~ScopedFlushDenormalsInPool() {
#ifdef _OPENMP
  if (previous_.empty()) return;
#pragma omp parallel num_threads(static_cast<int>(previous_.size()))
  {
    const int t = omp_get_thread_num();
    if (t != 0) set_flushing_denormals(previous_[static_cast<std::size_t>(t)] != 0);
  }
#endif
}

}  // namespace moescope
