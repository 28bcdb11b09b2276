#include "moescope/data/clustered_task.hpp"

#include <cmath>
#include <string>

#include "moescope/util/random.hpp"
#include "moescope/util/error.hpp"

namespace moescope {

namespace {

constexpr std::int64_t kMaxElements = std::int64_t{1} << 31;

void require(bool ok, const std::string& what) {
  if (!ok) fail_input("", "clustered task: " + what);
}

}  // namespace

ClusteredTask make_clustered_task(const ClusteredTaskOptions& o) {
  require(o.samples >= 1, "samples must be >= 1, got " + std::to_string(o.samples));
  require(o.dim >= 1, "dim must be >= 1, got " + std::to_string(o.dim));
  require(o.clusters >= 1, "clusters must be >= 1, got " + std::to_string(o.clusters));
  require(o.classes >= 2, "classes must be >= 2, got " + std::to_string(o.classes));
  require(o.noise > 0.0 && std::isfinite(o.noise), "noise must be > 0, got " + std::to_string(o.noise));
  require(o.centre_scale >= 0.0 && std::isfinite(o.centre_scale),
          "centre_scale must be >= 0, got " + std::to_string(o.centre_scale));
  require(o.samples <= kMaxElements / o.dim, "samples x dim exceeds 2^31");
  require(o.clusters <= kMaxElements / o.classes / o.dim, "clusters x classes x dim exceeds 2^31");

  const auto n = static_cast<std::size_t>(o.samples);
  const auto d = static_cast<std::size_t>(o.dim);
  const auto k_count = static_cast<std::size_t>(o.clusters);
  const auto c_count = static_cast<std::size_t>(o.classes);

  ClusteredTask t;
  t.n = o.samples;
  t.dim = o.dim;
  t.clusters = o.clusters;
  t.classes = o.classes;

  Rng structure(derive_seed(o.seed, 0));
  t.centres.resize(k_count * d);
  for (float& v : t.centres) v = static_cast<float>(o.centre_scale * structure.gaussian());
  t.maps.resize(k_count * c_count * d);
  for (std::size_t row = 0; row < k_count * c_count; ++row) {
    float* w = &t.maps[row * d];
    double norm2 = 0.0;
    for (std::size_t j = 0; j < d; ++j) {
      const double v = structure.gaussian();
      w[j] = static_cast<float>(v);
      norm2 += v * v;
    }
    // unit rows: each class's share then depends on angles only, which keeps classes balanced
    const double inv = norm2 > 0.0 ? 1.0 / std::sqrt(norm2) : 1.0;
    for (std::size_t j = 0; j < d; ++j) w[j] = static_cast<float>(w[j] * inv);
  }

  Rng samples(derive_seed(o.seed, 1));
  t.features.resize(n * d);
  t.labels.resize(n);
  t.cluster.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t k = static_cast<std::size_t>(samples.below(k_count));
    const float* mu = &t.centres[k * d];
    float* x = &t.features[i * d];
    for (std::size_t j = 0; j < d; ++j) x[j] = static_cast<float>(mu[j] + o.noise * samples.gaussian());
    // labels from the stored floats, so they are exactly reproducible from the returned arrays
    std::size_t best = 0;
    double best_score = 0.0;
    for (std::size_t c = 0; c < c_count; ++c) {
      const float* w = &t.maps[(k * c_count + c) * d];
      double score = 0.0;
      for (std::size_t j = 0; j < d; ++j) score += double{w[j]} * (double{x[j]} - double{mu[j]});
      if (c == 0 || score > best_score) {
        best = c;
        best_score = score;
      }
    }
    t.cluster[i] = static_cast<std::int64_t>(k);
    t.labels[i] = static_cast<std::int64_t>(best);
  }
  return t;
}

}  // namespace moescope
