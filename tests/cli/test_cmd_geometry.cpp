// `moescope geometry`: the report, its provenance, reproducibility, atomic writes; the figures drawn from it.
#include <gtest/gtest.h>

#include <cstdlib>

#include "moescope/io/report.hpp"
#include "moescope/util/sha256.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using namespace testing;  // moescope::testing: TempDir, run_moescope, small_checkpoint, ...

TEST(Cli, GeometryWritesReportWithProvenance) {
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir, "mixtral", 1.0);  // rho = 1: identical experts, MSO 1
  const std::string out = dir.file("r.h5");
  auto r = run_moescope({"--threads", "2", "geometry", ckpt, "-o", out, "--matrices", "gate,up", "--layers", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader rep(out);
  EXPECT_FALSE(rep.exists("/geometry/layer_00"));
  EXPECT_NEAR(rep.read_scalar("/geometry/layer_01/mso"), 1.0, 1e-9);
  std::vector<std::size_t> dims;
  rep.read("/geometry/layer_01/overlap", &dims);
  EXPECT_EQ(dims, (std::vector<std::size_t>{4, 4}));
  EXPECT_EQ(std::get<std::string>(rep.attr("/geometry/layer_01", "matrices")), "gate,up");
  EXPECT_EQ(std::get<std::string>(rep.attr("/", "checkpoint_sha256")), sha256_file(ckpt));
  EXPECT_EQ(std::get<std::string>(rep.attr("/", "checkpoint_hash_scope")), "file");
  EXPECT_EQ(std::get<std::int64_t>(rep.attr("/", "threads")), 2);
  const auto cmd = std::get<std::string>(rep.attr("/", "command_line"));
  EXPECT_NE(cmd.find("geometry"), std::string::npos);
  EXPECT_NE(cmd.find("--layers 1"), std::string::npos);
  EXPECT_NE(r.out.find("layer_01"), std::string::npos);  // the summary table
}

TEST(Cli, SameThreadsSameNumbers) {
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir);
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(run_moescope({"--threads", "2", "geometry", ckpt, "-o", dir.file("r" + std::to_string(i) + ".h5")}).exit_code, 0);
  ReportReader a(dir.file("r0.h5")), b(dir.file("r1.h5"));
  EXPECT_EQ(a.read("/geometry/layer_00/gram"), b.read("/geometry/layer_00/gram"));
}

TEST(Cli, FailedRunLeavesTheOldReportUntouched) {
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir);
  const std::string out = dir.file("r.h5");
  ASSERT_EQ(run_moescope({"geometry", ckpt, "-o", out}).exit_code, 0);
  const auto before = read_bytes(out);
  // fails after the report was opened: the experts have no 'fc9' matrix
  const auto r = run_moescope({"geometry", ckpt, "-o", out, "--matrices", "fc9"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("fc9"), std::string::npos) << r.err;
  EXPECT_EQ(read_bytes(out), before);
  EXPECT_FALSE(testing::file_exists(out + ".tmp"));
}

TEST(Cli, PlotDrawsTheGeometryFigures) {
  if (std::system("/usr/bin/python3 -c 'import h5py, matplotlib, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with h5py, matplotlib and numpy is not installed";
  TempDir dir;
  const std::string ckpt = small_checkpoint(dir);
  ASSERT_EQ(run_moescope({"geometry", ckpt, "-o", dir.file("r.h5")}).exit_code, 0);
  auto r = run_moescope({"plot", dir.file("r.h5"), "-o", dir.file("fig")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"geometry_overlap.png", "geometry_overlap.pdf", "geometry_mso.png", "geometry_mso.pdf"})
    EXPECT_GT(testing::read_bytes(dir.file("fig/") + f).size(), 1000u) << f;
  // a missing report: exit 2 and one line naming it
  r = run_moescope({"plot", dir.file("absent.h5"), "-o", dir.file("fig2")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("absent.h5"), std::string::npos) << r.err;
  EXPECT_EQ(line_count(r.err), 1) << r.err;
  r = run_moescope({"plot", "--list-kinds"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("hessian"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace moescope
