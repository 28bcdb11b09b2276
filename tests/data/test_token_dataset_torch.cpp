// data/token_dataset_torch: text encoded by a tokenizer.json or ids from a file, split contiguously (90/5/5) and cut
// into windows with next-token targets; ids range-checked against the model's vocabulary with the field named.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "moescope/data/dataset_torch.hpp"
#include "moescope/data/token_dataset_torch.hpp"
#include "moescope/data/tokenizer.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/util/error.hpp"
#include "support/expect_error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::input_error_of;
using testing::TempDir;
using testing::write_text;

std::string ids_text(std::int64_t n, std::int64_t offset = 0) {
  std::string s;
  for (std::int64_t i = 0; i < n; ++i) s += std::to_string(i + offset) + (i % 10 == 9 ? "\n" : " ");
  return s;
}

TEST(TokenWindows, NonOverlappingWithNextTokenTargets) {
  std::vector<std::int32_t> ids(21);
  for (int i = 0; i < 21; ++i) ids[static_cast<std::size_t>(i)] = 100 + i;
  const TensorSplit s = token_windows(ids, 4);
  ASSERT_EQ(s.size(), 5);  // floor((21 - 1) / 4)
  for (std::int64_t w = 0; w < 5; ++w)
    for (std::int64_t j = 0; j < 4; ++j) {
      EXPECT_EQ(s.inputs[w][j].item<std::int64_t>(), 100 + 4 * w + j);
      EXPECT_EQ(s.targets[w][j].item<std::int64_t>(), 100 + 4 * w + j + 1);
    }
  EXPECT_EQ(s.inputs.scalar_type(), torch::kLong);
  EXPECT_EQ(token_windows(ids, 4, 2).size(), 2);
  EXPECT_EQ(token_windows(std::vector<std::int32_t>(20), 4).size(), 4);  // the 20th id is only a target
  EXPECT_EQ(token_windows({}, 4).size(), 0);
  EXPECT_THROW(token_windows(ids, 0), std::invalid_argument);
}

TEST(TokenDataset, IdFileSplitsContiguously) {
  TempDir dir;
  write_text(dir.file("ids.txt"), ids_text(200));
  DataSpec spec = parse_data_arg("tokens:" + dir.file("ids.txt"));
  spec.context = 8;
  const Dataset d = load_token_dataset(spec, {"", 300, "config.json"});
  EXPECT_TRUE(d.is_text);
  EXPECT_EQ(d.num_classes, 300);
  EXPECT_EQ(d.input_shape, (std::vector<std::int64_t>{8}));
  // 200 ids: valid = round(200 * 0.05) = 10, test = 10, train = 180 (split_contiguous), then floor((n - 1) / 8) windows
  ASSERT_EQ(d.train.size(), 22);
  ASSERT_EQ(d.valid.size(), 1);
  ASSERT_EQ(d.test.size(), 1);
  EXPECT_EQ(d.train.inputs[0][0].item<std::int64_t>(), 0);
  EXPECT_EQ(d.train.targets[21][7].item<std::int64_t>(), 176);
  EXPECT_EQ(d.valid.inputs[0][0].item<std::int64_t>(), 180);
  EXPECT_EQ(d.valid.targets[0][7].item<std::int64_t>(), 188);
  EXPECT_EQ(d.test.inputs[0][0].item<std::int64_t>(), 190);
  // Without a vocabulary the largest id decides; max_train / max_eval cut windows.
  spec.max_train = 3;
  const Dataset u = load_token_dataset(spec, {});
  EXPECT_EQ(u.num_classes, 200);
  EXPECT_EQ(u.train.size(), 3);
  // load_dataset reads token files too (no vocabulary check there).
  EXPECT_EQ(load_dataset(spec).train.size(), 3);
}

TEST(TokenDataset, OutOfRangeIdNamesFilePositionAndField) {
  TempDir dir;
  write_text(dir.file("ids.txt"), "1 2 3 300 4");
  DataSpec spec = parse_data_arg("tokens:" + dir.file("ids.txt"));
  const std::string e = input_error_of([&] { load_token_dataset(spec, {"", 300, "m/config.json"}); });
  EXPECT_NE(e.find(dir.file("ids.txt")), std::string::npos) << e;
  EXPECT_NE(e.find("id 300 at position 3"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab_size of m/config.json"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  write_text(dir.file("neg.txt"), "1 -2");
  EXPECT_NE(input_error_of([&] { load_token_dataset(parse_data_arg("tokens:" + dir.file("neg.txt")), {}); }).find("neg.txt"),
            std::string::npos);
}

TEST(TokenDataset, TextIsEncodedByTheTokenizer) {
  TempDir dir;
  {
    std::ofstream f(dir.file("tokenizer.json"));
    f << synthetic_tokenizer("mixtral").dump();
  }
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the cat sat on the mat and the dog ran to it " + std::to_string(i) + "\n";
  write_text(dir.file("t.txt"), text);
  DataSpec spec = parse_data_arg("text:" + dir.file("t.txt"));
  spec.context = 16;
  const Tokenizer tok = Tokenizer::from_file(dir.file("tokenizer.json"));
  const std::vector<std::int32_t> ids = tok.encode(text, true);
  ASSERT_EQ(ids.front(), 1);  // Mixtral's "<s>" in front
  const Dataset d = load_token_dataset(spec, {dir.file("tokenizer.json"), tok.vocab_size(), "config.json"});
  const auto n = static_cast<std::int64_t>(ids.size());
  const std::int64_t train_ids = n - 2 * static_cast<std::int64_t>(std::floor(n * 0.05 + 0.5));
  ASSERT_EQ(d.train.size(), (train_ids - 1) / 16);
  for (std::int64_t w = 0; w < d.train.size(); ++w)
    for (std::int64_t j = 0; j < 16; ++j)
      ASSERT_EQ(d.train.inputs[w][j].item<std::int64_t>(), ids[static_cast<std::size_t>(16 * w + j)]);
  EXPECT_EQ(read_token_data(spec, {dir.file("tokenizer.json"), 0, ""}), ids);

  // Text needs a tokenizer; the model's vocabulary bounds the tokenizer's ids too.
  EXPECT_NE(input_error_of([&] { load_token_dataset(spec, {}); }).find("tokenizer.json"), std::string::npos);
  EXPECT_THROW(load_dataset(spec), InputError);
  const std::string e = input_error_of([&] { load_token_dataset(spec, {dir.file("tokenizer.json"), 5, "c.json"}); });
  EXPECT_NE(e.find("vocab_size of c.json"), std::string::npos) << e;
  EXPECT_NE(e.find("t.txt"), std::string::npos) << e;
  // Too little text for one window of the context.
  spec.context = 100000;
  EXPECT_NE(input_error_of([&] { load_token_dataset(spec, {dir.file("tokenizer.json"), 0, ""}); }).find("--context"),
            std::string::npos);
  write_text(dir.file("empty.txt"), "");
  EXPECT_NE(input_error_of([&] { load_token_dataset(parse_data_arg("text:" + dir.file("empty.txt")),
                                              {dir.file("tokenizer.json"), 0, ""}); })
                .find("empty.txt"),
            std::string::npos);
  EXPECT_NE(input_error_of([&] { load_token_dataset(parse_data_arg("tokens"), {}); }).find("needs a path"),
            std::string::npos);
}

}  // namespace
}  // namespace moescope
