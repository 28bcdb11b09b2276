// Synthetic checkpoints end to end: every family is written with its real names, detected by the layout
// code, and its measured geometry matches the construction (expert cosine -> rho, MSO -> rho^2).
#include <gtest/gtest.h>

#include <cmath>

#include "moescope/io/layout.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/metrics/geometry.hpp"
#include "moescope/util/error.hpp"
#include "support/expect_error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;

std::string expected_family(const std::string& f) {
  if (f == "qwen2-moe" || f == "olmoe" || f == "deepseek") return "olmoe-qwen-deepseek";
  return f;
}

class SyntheticFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(SyntheticFamily, DetectedAndGeometryMatchesConstruction) {
  TempDir dir;
  SyntheticCheckpointOptions o;
  o.family = GetParam();
  o.layers = 2;
  o.experts = 6;
  o.hidden = 48;
  o.intermediate = 64;
  o.rho = 0.6;
  o.seed = 5;
  const std::string path = dir.file("ckpt.safetensors");
  write_synthetic_checkpoint(path, o);
  SafetensorsFile f(path);
  const Layout layout = detect_layout(f.tensors());
  EXPECT_EQ(layout.family, expected_family(o.family));
  // DeepSeek's first layer is dense by construction
  const std::size_t moe_layers = o.family == "deepseek" ? 1u : 2u;
  ASSERT_EQ(layout.layers.size(), moe_layers);
  for (const auto& layer : layout.layers) {
    ASSERT_EQ(layer.experts.size(), 6u);
    GeometryOptions g;
    g.roles = {"down"};  // every family has a down projection with D = 48 * 64 = 3072 elements
    const LayerGeometry geo = expert_geometry(f, layer, g);
    EXPECT_EQ(geo.dim, 48 * 64);
    // cos(u_i, u_j) = rho + O(1/sqrt(D)): with D = 3072 the sd of one cosine is about
    // sqrt((1 + rho^2) / D) ~ 0.02, so 0.08 is 4 sd; the mean over 15 pairs is tighter still.
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j)
        if (i != j) EXPECT_NEAR(geo.overlap(i, j), 0.6, 0.08) << layer.key << " " << i << "," << j;
    EXPECT_NEAR(geo.mso, 0.36, 0.05);
  }
}

INSTANTIATE_TEST_SUITE_P(AllFamilies, SyntheticFamily, ::testing::ValuesIn(synthetic_families()),
                         testing::DashFreeName());

TEST(Synthetic, ShardedEqualsSingleFileAndBf16IsClose) {
  TempDir dir;
  SyntheticCheckpointOptions o;
  o.layers = 3;
  o.experts = 4;
  o.seed = 9;
  write_synthetic_checkpoint(dir.file("one.safetensors"), o);
  o.shards = 3;
  write_synthetic_checkpoint(dir.file("sharded"), o);
  o.shards = 1;
  o.dtype = DType::BF16;
  write_synthetic_checkpoint(dir.file("bf16.safetensors"), o);

  SafetensorsFile one(dir.file("one.safetensors"));
  ShardedSafetensors sharded(dir.file("sharded/model.safetensors.index.json"));
  SafetensorsFile bf16(dir.file("bf16.safetensors"));
  ASSERT_EQ(sharded.shard_paths().size(), 3u);
  ASSERT_EQ(one.tensors().size(), sharded.tensors().size());
  const Layout a = detect_layout(one.tensors()), b = detect_layout(sharded.tensors());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    const auto ga = expert_geometry(one, a.layers[l], {});
    const auto gb = expert_geometry(sharded, b.layers[l], {});
    const auto gc = expert_geometry(bf16, detect_layout(bf16.tensors()).layers[l], {});
    EXPECT_EQ(ga.gram, gb.gram);  // same bytes, same order: bit-identical
    // bf16 keeps 8 significant bits: relative rounding <= 2^-9 per element, so cosines move by ~1e-3 at most
    EXPECT_TRUE(gc.overlap.isApprox(ga.overlap, 4e-3));
  }
}

TEST(Synthetic, SameSeedSameBytesDifferentSeedDifferent) {
  TempDir dir;
  SyntheticCheckpointOptions o;
  write_synthetic_checkpoint(dir.file("a.safetensors"), o);
  write_synthetic_checkpoint(dir.file("b.safetensors"), o);
  o.seed = 1;
  write_synthetic_checkpoint(dir.file("c.safetensors"), o);
  EXPECT_EQ(testing::read_bytes(dir.file("a.safetensors")), testing::read_bytes(dir.file("b.safetensors")));
  EXPECT_NE(testing::read_bytes(dir.file("a.safetensors")), testing::read_bytes(dir.file("c.safetensors")));
}

TEST(Synthetic, BadOptionsAreInputErrors) {
  TempDir dir;
  SyntheticCheckpointOptions o;
  o.family = "llama";
  EXPECT_THROW(write_synthetic_checkpoint(dir.file("x.safetensors"), o), InputError);
  o.family = "mixtral";
  o.rho = 1.5;
  EXPECT_THROW(write_synthetic_checkpoint(dir.file("x.safetensors"), o), InputError);
  EXPECT_FALSE(testing::file_exists(dir.file("x.safetensors")));
  EXPECT_FALSE(testing::file_exists(dir.file("x.safetensors.tmp")));
}

}  // namespace
}  // namespace moescope
