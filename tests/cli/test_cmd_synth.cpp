// `moescope synth`: every family it writes is read back by geometry.
#include <gtest/gtest.h>

#include "moescope/io/report.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using namespace testing;  // moescope::testing: TempDir, run_moescope, small_checkpoint, ...

TEST(Cli, SynthWritesEveryFamilyThatGeometryReads) {
  TempDir dir;
  for (const auto& fam : synthetic_families()) {
    const std::string p = dir.file(fam + ".safetensors");
    ASSERT_EQ(run_moescope({"synth", fam, "-o", p, "--experts", "3", "--dtype", "BF16"}).exit_code, 0) << fam;
    const auto r = run_moescope({"geometry", p, "-o", dir.file(fam + ".h5"), "--hash", "none"});
    EXPECT_EQ(r.exit_code, 0) << fam << ": " << r.err;
  }
  const auto r = run_moescope({"synth", "mixtral", "-o", dir.file("s"), "--shards", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(run_moescope({"geometry", dir.file("s"), "-o", dir.file("s.h5")}).exit_code, 0);
  ReportReader rep(dir.file("s.h5"));
  EXPECT_EQ(std::get<std::string>(rep.attr("/", "checkpoint_hash_scope")), "index");
}

}  // namespace
}  // namespace moescope
