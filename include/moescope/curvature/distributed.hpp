#pragma once
// Data-parallel Hessian-vector products over processes with torch.distributed's c10d: each rank holds a shard of
// the evaluation set, and every product's local sample-weighted sum and sample count are summed over the ranks
// (Gloo all-reduce) before the division, so every rank gets the HVP of the whole set. All ranks then run the same
// solver with the same seed on the same products, in lockstep.
//
// Built when LibTorch's c10d Gloo headers and gloo's own headers (Debian: libgloo-dev) are present
// (MOESCOPE_HAVE_GLOO); otherwise distributed_available() is false and creating a group throws InputError.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace moescope {

/// How a process joins its group.
struct DistributedOptions {
  int world_size = 1;
  int rank = 0;
  /// "tcp://HOST:PORT": rank 0 serves a c10d TCPStore on PORT, the others connect to HOST:PORT;
  /// "file://PATH": a c10d FileStore at PATH (a shared file system; the file must not survive from an earlier
  /// run, so use a fresh path). Unused when world_size is 1.
  std::string init;
  /// How long to wait for the other ranks (store rendezvous and every collective).
  double timeout_s = 300.0;
};

/// Whether this build has c10d's Gloo backend.
bool distributed_available();

/// A c10d process group (Gloo) for summing tensors over ranks. Non-copyable; share it by pointer.
class DataParallelGroup {
 public:
  /// Joins the group (blocks until every rank has joined). Throws InputError naming the option (world_size, rank,
  /// init) for bad options or a build without Gloo, and c10::Error when the rendezvous fails.
  explicit DataParallelGroup(const DistributedOptions& opts);
  ~DataParallelGroup();
  DataParallelGroup(const DataParallelGroup&) = delete;
  DataParallelGroup& operator=(const DataParallelGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  /// t <- sum over ranks of t, in place; every rank must call it with a tensor of the same shape and dtype.
  /// CUDA tensors go through a CPU copy (this build reduces with Gloo; NCCL would keep them on the GPU).
  void all_reduce_sum(torch::Tensor& t) const;
  /// The hook for HvpOptions::all_reduce (keeps a pointer to this group).
  std::function<void(torch::Tensor&)> hook() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int world_size_ = 1;
};

/// Rank r's share [begin, end) of n samples: contiguous blocks whose sizes differ by at most one, the first
/// n % world_size ranks one larger. Throws std::invalid_argument for world_size < 1 or rank outside [0, world_size).
std::pair<std::int64_t, std::int64_t> shard_range(std::int64_t n, int rank, int world_size);

}  // namespace moescope
