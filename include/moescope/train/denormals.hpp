#pragma once
// Denormal floats flushed to zero while a model trains (train config "flush_denormals", on by default).
#include <vector>

#include "moescope/util/cpu.hpp"

namespace moescope {

/// ScopedFlushDenormals on the calling thread and on each thread of its intra-op pool (OpenMP: the threads that
/// ATen's parallel loops and moescope's own run on), each restored when it ends. Threads the pool starts meanwhile
/// inherit the calling thread's mode. OpenBLAS's worker threads (a pool of its own, started when the library loads)
/// are out of reach: the part of a matrix product they compute keeps IEEE denormals, so a product's bits can
/// depend on OpenBLAS's thread count where denormals occur (they are reproducible for a given count).
class ScopedFlushDenormalsInPool {
 public:
  explicit ScopedFlushDenormalsInPool(bool enable);
  ~ScopedFlushDenormalsInPool();
  ScopedFlushDenormalsInPool(const ScopedFlushDenormalsInPool&) = delete;
  ScopedFlushDenormalsInPool& operator=(const ScopedFlushDenormalsInPool&) = delete;
  bool active() const { return caller_.active(); }

 private:
  ScopedFlushDenormals caller_;
  std::vector<char> previous_;  // by thread number in the pool (0, the caller, is restored by caller_)
};

}  // namespace moescope
