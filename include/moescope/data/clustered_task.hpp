#pragma once
// A synthetic classification task with known expert structure: samples come from K clusters and each
// cluster labels its samples with its own linear map, so the ideal mixture routes by cluster and each
// expert learns one map. The true cluster of every sample is returned as ground truth.
#include <cstdint>
#include <vector>

namespace moescope {

/// Sizes and scales of a clustered task.
struct ClusteredTaskOptions {
  std::int64_t samples = 10000;  // N
  std::int64_t dim = 16;         // d
  std::int64_t clusters = 4;     // K
  std::int64_t classes = 10;     // C
  double centre_scale = 4.0;     // centres ~ centre_scale * N(0, I)
  double noise = 1.0;            // x = centre + noise * N(0, I)
  std::uint64_t seed = 0;
};

/// The generated task. With mu_k = centres[k], W_k = maps[k] (C x d, unit-norm rows), a sample of cluster
/// k has label = argmax_c (W_k (x - mu_k))_c (lowest c on a tie), computed in double from the stored
/// float x, mu_k and W_k summing over j = 0..d-1 in order: an exact function of cluster and x, and an
/// affine classifier per cluster is perfect. Centring at mu_k is what keeps classes balanced; without it
/// W_k mu_k would dominate and each cluster would be nearly one class.
struct ClusteredTask {
  std::int64_t n = 0;
  std::int64_t dim = 0;
  std::int64_t clusters = 0;
  std::int64_t classes = 0;
  std::vector<float> features;         // N x d, row-major
  std::vector<std::int64_t> labels;    // N values in [0, C)
  std::vector<std::int64_t> cluster;   // N values in [0, K): the true cluster of each sample
  std::vector<float> centres;          // K x d
  std::vector<float> maps;             // K x C x d
};

/// Generates the task, deterministically from options.seed (util/random.hpp's Rng: integer draws bit for bit,
/// normals to the rounding of std::log). Centres and maps come from stream derive_seed(seed, 0) and samples from
/// derive_seed(seed, 1), so a larger N with the same seed extends the same sample sequence. Per sample:
/// cluster = below(K), then d normals for the noise. Throws InputError unless N, d, K >= 1, C >= 2,
/// noise > 0, centre_scale >= 0 and N * d, K * C * d are at most 2^31.
ClusteredTask make_clustered_task(const ClusteredTaskOptions& options);

}  // namespace moescope
