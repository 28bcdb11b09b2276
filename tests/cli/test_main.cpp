// The moescope executable as a user meets it: version, help, exit codes of bad usage.
#include <gtest/gtest.h>


#include "support/fixtures.hpp"

namespace moescope {
namespace {

using namespace testing;  // moescope::testing: TempDir, run_moescope, small_checkpoint, ...

TEST(Cli, VersionAndHelp) {
  auto r = run_moescope({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("moescope 0."), std::string::npos) << r.out;
  r = run_moescope({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"inspect", "geometry", "synth"}) EXPECT_NE(r.out.find(sub), std::string::npos) << sub;
  r = run_moescope({"geometry", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--matrices"), std::string::npos);
}

TEST(Cli, BadUsageExitsTwo) {
  EXPECT_EQ(run_moescope({}).exit_code, 2);
  EXPECT_EQ(run_moescope({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(run_moescope({"geometry"}).exit_code, 2);  // missing checkpoint and -o
}

}  // namespace
}  // namespace moescope
