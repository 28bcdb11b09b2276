// `moescope correlate` across reports.
#include <gtest/gtest.h>

#include "moescope/io/report.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using namespace testing;  // moescope::testing: TempDir, run_moescope, small_checkpoint, ...

TEST(Cli, CorrelateAcrossReports) {
  // five checkpoints with rho = 0.1 .. 0.9: the MSO of every layer follows rho^2 (plus noise of order 1/D),
  // so layer 0's and layer 1's MSO rank identically and correlate almost perfectly
  TempDir dir;
  std::vector<std::string> reports;
  for (int i = 0; i < 5; ++i) {
    const std::string ckpt = dir.file("c" + std::to_string(i) + ".safetensors");
    ASSERT_EQ(run_moescope({"synth", "mixtral", "-o", ckpt, "--rho", std::to_string(0.1 + 0.2 * i), "--experts", "3"}).exit_code, 0);
    reports.push_back(dir.file("r" + std::to_string(i) + ".h5"));
    ASSERT_EQ(run_moescope({"geometry", ckpt, "-o", reports.back(), "--hash", "none"}).exit_code, 0);
  }
  std::vector<std::string> args = {"correlate"};
  args.insert(args.end(), reports.begin(), reports.end());
  for (const char* a : {"--x", "/geometry/layer_00/mso", "--y", "/geometry/layer_01/mso", "-o"}) args.push_back(a);
  args.push_back(dir.file("c.h5"));
  const auto r = run_moescope(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader c(dir.file("c.h5"));
  EXPECT_GT(c.read_scalar("/correlation/pearson_r"), 0.95);  // both layers follow rho^2
  EXPECT_NEAR(c.read_scalar("/correlation/spearman_rho"), 1.0, 1e-12);
  EXPECT_EQ(c.read("/correlation/x").size(), 5u);
  EXPECT_LE(c.read_scalar("/correlation/ci_low"), c.read_scalar("/correlation/pearson_r"));
  args[args.size() - 4] = "/geometry/layer_09/mso";  // --y of a layer that is not there
  const auto bad = run_moescope(args);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("layer_09"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace moescope
