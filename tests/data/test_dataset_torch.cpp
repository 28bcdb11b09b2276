// data/dataset_torch: data specs loaded into tensor splits.
#include "moescope/data/dataset_torch.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "moescope/data/image.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace fs = std::filesystem;
using namespace moescope;

namespace {

DataSpec small_clustered() { return moescope::testing::clustered_data(500, 6, 3, 4, 3); }

}  // namespace

TEST(Dataset, ClusteredSplitsAreDisjointDeterministicAndSized) {
  DataSpec s = small_clustered();
  const Dataset a = load_dataset(s);
  const Dataset b = load_dataset(s);
  EXPECT_EQ(a.train.size() + a.valid.size(), 500);
  EXPECT_EQ(a.valid.size(), 50);  // round(500 * 0.1)
  EXPECT_EQ(a.test.size(), 100);  // a further 20% generated after train
  EXPECT_EQ(a.input_shape, std::vector<std::int64_t>{6});
  EXPECT_EQ(a.num_classes, 4);
  EXPECT_TRUE(torch::equal(a.train.inputs, b.train.inputs));
  EXPECT_TRUE(a.train.groups.defined());
  EXPECT_LT(a.train.groups.max().item<std::int64_t>(), 3);
  // Test samples are not train samples (distinct rows of a continuous distribution).
  const auto d = torch::cdist(a.test.inputs, a.train.inputs);
  EXPECT_GT(d.min().item<float>(), 1e-6);
  s.max_train = 40;
  s.max_eval = 10;
  const Dataset c = load_dataset(s);
  EXPECT_EQ(c.train.size(), 40);
  EXPECT_EQ(c.valid.size(), 10);
  EXPECT_EQ(c.test.size(), 10);
  EXPECT_TRUE(torch::equal(c.train.inputs, a.train.inputs.slice(0, 0, 40)));
}

TEST(Dataset, TextWindowsShiftTargetsByOne) {
  moescope::testing::TempDir dir;
  const std::string f = dir.file("corpus.txt");
  std::string text;
  for (int i = 0; i < 400; ++i) text += static_cast<char>('a' + i % 26);
  std::ofstream(f) << text;
  DataSpec s;
  s.name = "text-byte";
  s.path = f;
  s.context = 8;
  const Dataset d = load_dataset(s);
  EXPECT_TRUE(d.is_text);
  EXPECT_EQ(d.num_classes, 256);
  ASSERT_GT(d.train.size(), 0);
  // 400 bytes, 5% valid and 5% test at the end: train = 360 bytes -> (360 - 1) / 8 = 44 windows.
  EXPECT_EQ(d.train.size(), 44);
  EXPECT_TRUE(torch::equal(d.train.inputs.reshape({-1}).slice(0, 1), d.train.targets.reshape({-1}).slice(0, 0, -1)));
  EXPECT_EQ(d.train.inputs[0][0].item<std::int64_t>(), 'a');
  EXPECT_EQ(d.train.targets[0][0].item<std::int64_t>(), 'b');
}

TEST(Dataset, FashionMnistPixelsAndTheirStatistics) {
  if (!fs::exists(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  DataSpec s;
  s.max_train = 2000;
  s.max_eval = 100;
  const Dataset d = load_dataset(s);
  EXPECT_EQ(d.input_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(d.train.size(), 2000);
  // Pixels / 255: the standardisation is the model's (ClassifierOptions::input_mean / input_std).
  EXPECT_GE(d.train.inputs.min().item<double>(), 0.0);
  EXPECT_LE(d.train.inputs.max().item<double>(), 1.0);
  const ChannelStatistics st = channel_statistics(d.train.inputs);
  EXPECT_GT(st.mean[0], 0.2);  // Fashion-MNIST's mean pixel is about 0.286
  EXPECT_LT(st.mean[0], 0.4);
  EXPECT_NEAR(st.mean[0], d.train.inputs.to(torch::kFloat64).mean().item<double>(), 1e-12);
  EXPECT_NEAR(st.stddev[0], d.train.inputs.to(torch::kFloat64).std(false).item<double>(), 1e-12);
}

