// io/checkpoint: resolving checkpoint paths (files, folders, shard indexes) and hashing them for reports.
#include "moescope/io/checkpoint.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "moescope/io/safetensors.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/sha256.hpp"
#include "support/fixtures.hpp"

namespace fs = std::filesystem;

namespace moescope {
namespace {

using testing::TempDir;

void write_weights(const std::string& path) { testing::write_small_safetensors(path); }

TEST(Checkpoint, ResolveAndHash) {
  TempDir dir;
  SyntheticCheckpointOptions o;
  o.shards = 2;
  write_synthetic_checkpoint(dir.file("sharded"), o);
  EXPECT_EQ(resolve_checkpoint(dir.file("sharded")).kind, ResolvedCheckpoint::Kind::ShardIndex);
  const auto h = hash_checkpoint(dir.file("sharded"), "auto");
  EXPECT_EQ(h.scope, "index");
  EXPECT_EQ(h.sha256, sha256_file(dir.file("sharded/model.safetensors.index.json")));
  const auto hh = hash_checkpoint(dir.file("sharded"), "header");
  EXPECT_EQ(hh.scope, "header");
  EXPECT_EQ(hh.sha256.size(), 64u);
  EXPECT_EQ(hash_checkpoint(dir.file("sharded"), "none").scope, "none");
  EXPECT_THROW(hash_checkpoint(dir.file("sharded"), "md5"), InputError);
  // two candidate files and no index: ambiguous
  o.shards = 1;
  std::filesystem::create_directories(dir.file("two"));
  write_synthetic_checkpoint(dir.file("two/a.safetensors"), o);
  write_synthetic_checkpoint(dir.file("two/b.safetensors"), o);
  EXPECT_THROW(resolve_checkpoint(dir.file("two")), InputError);
}

// Regression: `geometry runs/X/step_N` on an OMoE run failed with "2 candidate checkpoint files" (omoe.safetensors
// beside model.safetensors), though step folders open as checkpoints.
TEST(Checkpoint, AStepFolderWithOmoeStateOpensAsItsModelCheckpoint) {
  TempDir dir;
  const std::string run = dir.path() + "/r";
  fs::create_directories(run + "/step_5");
  write_weights(run + "/step_5/model.safetensors");
  write_weights(run + "/step_5/omoe.safetensors");
  const ResolvedCheckpoint r = resolve_checkpoint(run + "/step_5");
  EXPECT_EQ(r.kind, ResolvedCheckpoint::Kind::Safetensors);
  EXPECT_EQ(r.path, run + "/step_5/model.safetensors");
  // Without model.safetensors, two candidates are still ambiguous and named.
  TempDir other;
  write_weights(other.file("a.safetensors"));
  write_weights(other.file("b.safetensors"));
  EXPECT_THROW(resolve_checkpoint(other.path()), InputError);
}

}  // namespace
}  // namespace moescope
