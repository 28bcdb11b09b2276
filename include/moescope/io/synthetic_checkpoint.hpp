#pragma once
// Synthetic MoE checkpoints with the real tensor names of each family and a known expert geometry:
// every expert matrix is W_e = sqrt(rho) S + sqrt(1 - rho) N_e with S shared by the layer's experts and
// S, N_e independent Gaussian (std 1/sqrt(fan_in)), so the cosine of two experts tends to rho and the MSO to rho^2
// as the dimension grows. Used by the demo, the tests and the benchmarks.
#include <cstdint>
#include <string>
#include <vector>

#include "moescope/io/tensor.hpp"

namespace moescope {

struct SyntheticCheckpointOptions {
  /// mixtral, qwen2-moe, olmoe, deepseek, switch, fused-v5, gpt-oss, moescope
  std::string family = "mixtral";
  int layers = 2;
  int experts = 8;
  std::int64_t hidden = 64;
  std::int64_t intermediate = 96;
  DType dtype = DType::F32;  // F32, F64, F16 or BF16
  double rho = 0.5;          // shared fraction of each expert matrix's variance, in [0, 1]
  std::uint64_t seed = 0;
  int shards = 1;            // > 1: a folder with model-0000k-of-0000n.safetensors and model.safetensors.index.json
};

/// The families write_synthetic_checkpoint knows.
std::vector<std::string> synthetic_families();

/// The tensors (names, shapes) the options describe, in file order.
std::vector<TensorInfo> synthetic_tensors(const SyntheticCheckpointOptions& opts);

/// Writes the checkpoint: a .safetensors file at `path` (shards == 1) or a folder `path` of shards.
/// Streams tensor by tensor: memory stays about one tensor. Throws InputError on bad options or I/O errors.
void write_synthetic_checkpoint(const std::string& path, const SyntheticCheckpointOptions& opts);

}  // namespace moescope
