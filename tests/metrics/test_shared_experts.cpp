// metrics/shared_experts: the shared expert's statistics are plain means over tokens, skipping undefined cosines,
// and the report group holds them.
#include <gtest/gtest.h>

#include <cmath>

#include "moescope/io/report.hpp"
#include "moescope/metrics/shared_experts.hpp"
#include "moescope/util/numbers.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

TEST(SharedExperts, MeansOverTokensSkipUndefinedCosines) {
  SharedExpertAccumulator acc("layer_02", "gated", 3);
  const double t0[3] = {0.5, -0.25, kNaN};
  const double t1[3] = {0.25, 0.75, 1.0};
  acc.add_token(t0, 0.5, 2.0, 1.0, 0.25);
  acc.add_token(t1, kNaN, 4.0, 3.0, 0.75);
  const SharedExpertActivations r = acc.result();
  EXPECT_EQ(r.key, "layer_02");
  EXPECT_EQ(r.kind, "gated");
  EXPECT_EQ(r.tokens, 2);
  ASSERT_EQ(r.overlap.size(), 3u);
  EXPECT_DOUBLE_EQ(r.overlap[0], 0.375);
  EXPECT_DOUBLE_EQ(r.overlap[1], 0.25);
  EXPECT_DOUBLE_EQ(r.overlap[2], 1.0);  // the one token where it is defined
  EXPECT_EQ(r.overlap_tokens, (std::vector<double>{2, 2, 1}));
  EXPECT_DOUBLE_EQ(r.mixture_overlap, 0.5);
  EXPECT_DOUBLE_EQ(r.mean_norm, 3.0);
  EXPECT_DOUBLE_EQ(r.mixture_norm, 2.0);
  EXPECT_DOUBLE_EQ(r.mean_gate, 0.5);

  SharedExpertAccumulator ungated("layer_01", "ungated", 2);
  const double c[2] = {0.1, 0.2};
  ungated.add_token(c, 0.3, 1.0, 1.0, kNaN);
  EXPECT_TRUE(std::isnan(ungated.result().mean_gate));
  EXPECT_THROW(SharedExpertAccumulator("x", "gated", 0), std::invalid_argument);
  EXPECT_TRUE(std::isnan(SharedExpertAccumulator("x", "gated", 2).result().overlap[0]));  // no tokens
}

TEST(SharedExperts, ReportGroup) {
  testing::TempDir dir;
  SharedExpertAccumulator acc("layer_00", "ungated", 2);
  const double c[2] = {0.5, -0.5};
  acc.add_token(c, 0.25, 2.0, 1.5, kNaN);
  {
    ReportWriter w(dir.file("r.h5"));
    w.create_group("/activations/layer_00");
    write_shared_experts(w, {acc.result()});
    w.commit();
  }
  ReportReader r(dir.file("r.h5"));
  const std::string b = "/activations/layer_00/shared_expert";
  EXPECT_EQ(r.read(b + "/overlap"), (std::vector<double>{0.5, -0.5}));
  EXPECT_DOUBLE_EQ(r.read_scalar(b + "/mixture_overlap"), 0.25);
  EXPECT_DOUBLE_EQ(r.read_scalar(b + "/mean_norm"), 2.0);
  EXPECT_DOUBLE_EQ(r.read_scalar(b + "/mixture_norm"), 1.5);
  EXPECT_TRUE(std::isnan(r.read_scalar(b + "/mean_gate")));
  EXPECT_EQ(r.read_scalar(b + "/tokens"), 1);
  EXPECT_EQ(std::get<std::string>(r.attr(b, "kind")), "ungated");
}

}  // namespace
}  // namespace moescope
