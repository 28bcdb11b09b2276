#include "moescope/data/clustered_task.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "data/helpers.hpp"

namespace moescope {
namespace {

using testing::expect_input_error;

ClusteredTaskOptions small(std::uint64_t seed) {
  ClusteredTaskOptions o;
  o.samples = 4000;
  o.dim = 8;
  o.clusters = 3;
  o.classes = 5;
  o.seed = seed;
  return o;
}

TEST(ClusteredTask, ShapesAndRanges) {
  const ClusteredTask t = make_clustered_task(small(1));
  EXPECT_EQ(t.n, 4000);
  EXPECT_EQ(t.dim, 8);
  EXPECT_EQ(t.features.size(), 4000u * 8u);
  EXPECT_EQ(t.labels.size(), 4000u);
  EXPECT_EQ(t.cluster.size(), 4000u);
  EXPECT_EQ(t.centres.size(), 3u * 8u);
  EXPECT_EQ(t.maps.size(), 3u * 5u * 8u);
  std::vector<int> per_cluster(3, 0);
  for (std::size_t i = 0; i < 4000; ++i) {
    ASSERT_GE(t.cluster[i], 0);
    ASSERT_LT(t.cluster[i], 3);
    ASSERT_GE(t.labels[i], 0);
    ASSERT_LT(t.labels[i], 5);
    ++per_cluster[static_cast<std::size_t>(t.cluster[i])];
  }
  for (int c : per_cluster) EXPECT_NEAR(c, 4000 / 3, 200);  // Binomial sd ~30
  for (float v : t.features) ASSERT_TRUE(std::isfinite(v));
  // rows of each map have unit norm
  for (std::size_t row = 0; row < 15; ++row) {
    double s = 0;
    for (std::size_t j = 0; j < 8; ++j) s += double{t.maps[row * 8 + j]} * t.maps[row * 8 + j];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
}

TEST(ClusteredTask, DeterministicFromSeed) {
  const ClusteredTask a = make_clustered_task(small(7));
  const ClusteredTask b = make_clustered_task(small(7));
  const ClusteredTask c = make_clustered_task(small(8));
  EXPECT_EQ(a.features, b.features);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.cluster, b.cluster);
  EXPECT_EQ(a.centres, b.centres);
  EXPECT_EQ(a.maps, b.maps);
  EXPECT_NE(a.features, c.features);
  EXPECT_NE(a.centres, c.centres);
}

TEST(ClusteredTask, MoreSamplesExtendTheSameSequence) {
  ClusteredTaskOptions o = small(3);
  const ClusteredTask a = make_clustered_task(o);
  o.samples = 6000;
  const ClusteredTask b = make_clustered_task(o);
  EXPECT_EQ(a.centres, b.centres);
  EXPECT_EQ(a.maps, b.maps);
  EXPECT_TRUE(std::equal(a.features.begin(), a.features.end(), b.features.begin()));
  EXPECT_TRUE(std::equal(a.labels.begin(), a.labels.end(), b.labels.begin()));
}

TEST(ClusteredTask, PerClusterLinearClassifierIsPerfect) {
  // the stated ground truth: label = argmax_c W_k (x - mu_k), recomputed here from the returned arrays
  const ClusteredTask t = make_clustered_task(small(11));
  const auto d = static_cast<std::size_t>(t.dim);
  const auto C = static_cast<std::size_t>(t.classes);
  for (std::size_t i = 0; i < static_cast<std::size_t>(t.n); ++i) {
    const auto k = static_cast<std::size_t>(t.cluster[i]);
    std::size_t best = 0;
    double best_score = -std::numeric_limits<double>::infinity();
    for (std::size_t c = 0; c < C; ++c) {
      double s = 0;
      for (std::size_t j = 0; j < d; ++j) {
        s += double{t.maps[(k * C + c) * d + j]} * (double{t.features[i * d + j]} - double{t.centres[k * d + j]});
      }
      if (s > best_score) {
        best = c;
        best_score = s;
      }
    }
    ASSERT_EQ(t.labels[i], static_cast<std::int64_t>(best)) << "sample " << i;
  }
}

TEST(ClusteredTask, LabelsBalancedAndClustersSeparable) {
  ClusteredTaskOptions o;  // defaults: 10000 samples, d = 16, K = 4, C = 10
  o.seed = 5;
  const ClusteredTask t = make_clustered_task(o);
  std::vector<int> per_class(10, 0);
  for (std::int64_t l : t.labels) ++per_class[static_cast<std::size_t>(l)];
  // by symmetry each class has share ~1/C; allow a wide band (the maps are random)
  for (int c : per_class) {
    EXPECT_GT(c, 10000 / 10 / 3);
    EXPECT_LT(c, 10000 / 10 * 3);
  }
  // nearest centre recovers the cluster: centres ~4 N(0, I) sit ~22 apart, noise radius ~4
  const auto d = static_cast<std::size_t>(t.dim);
  int right = 0;
  for (std::size_t i = 0; i < static_cast<std::size_t>(t.n); ++i) {
    std::size_t best = 0;
    double best_d = std::numeric_limits<double>::infinity();
    for (std::size_t k = 0; k < 4; ++k) {
      double s = 0;
      for (std::size_t j = 0; j < d; ++j) {
        const double z = double{t.features[i * d + j]} - t.centres[k * d + j];
        s += z * z;
      }
      if (s < best_d) {
        best = k;
        best_d = s;
      }
    }
    right += best == static_cast<std::size_t>(t.cluster[i]);
  }
  EXPECT_GT(right, 9900);
}

TEST(ClusteredTask, LabelsDependOnTheCluster) {
  // the same offset from its centre gets different labels in different clusters, so one shared map
  // cannot explain the labels: count samples whose label differs from what cluster 0's map would say
  const ClusteredTask t = make_clustered_task(small(2));
  const auto d = static_cast<std::size_t>(t.dim);
  const auto C = static_cast<std::size_t>(t.classes);
  int differ = 0, others = 0;
  for (std::size_t i = 0; i < static_cast<std::size_t>(t.n); ++i) {
    const auto k = static_cast<std::size_t>(t.cluster[i]);
    if (k == 0) continue;
    ++others;
    std::size_t best = 0;
    double best_score = -std::numeric_limits<double>::infinity();
    for (std::size_t c = 0; c < C; ++c) {
      double s = 0;
      for (std::size_t j = 0; j < d; ++j) {
        s += double{t.maps[c * d + j]} * (double{t.features[i * d + j]} - double{t.centres[k * d + j]});
      }
      if (s > best_score) {
        best = c;
        best_score = s;
      }
    }
    differ += t.labels[i] != static_cast<std::int64_t>(best);
  }
  EXPECT_GT(differ, others / 2);
}

TEST(ClusteredTask, BadOptionsAreInputErrors) {
  ClusteredTaskOptions o;
  o.samples = 0;
  expect_input_error([&] { make_clustered_task(o); }, {"samples"});
  o = {};
  o.classes = 1;
  expect_input_error([&] { make_clustered_task(o); }, {"classes"});
  o = {};
  o.noise = 0;
  expect_input_error([&] { make_clustered_task(o); }, {"noise"});
  o = {};
  o.clusters = 0;
  expect_input_error([&] { make_clustered_task(o); }, {"clusters"});
  o = {};
  o.samples = std::int64_t{1} << 40;
  expect_input_error([&] { make_clustered_task(o); }, {"2^31"});
}

}  // namespace
}  // namespace moescope
