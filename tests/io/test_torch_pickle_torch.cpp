// PyTorch state dicts (zip-format torch.save files) and checkpoint resolution.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "moescope/io/checkpoint.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/sha256.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;

void save_pickle(const c10::IValue& v, const std::string& path) {
  const std::vector<char> bytes = torch::pickle_save(v);
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(TorchStateDict, ReadsTensorsOfEveryDtypeAndNestedDicts) {
  TempDir dir;
  torch::manual_seed(0);
  c10::Dict<std::string, at::Tensor> inner;
  const at::Tensor w = torch::randn({3, 4});
  inner.insert("experts.0.fc1.weight", w);
  inner.insert("experts.0.fc1.bias", torch::arange(3, torch::kFloat64));
  inner.insert("half", torch::ones({2}, torch::kHalf));
  inner.insert("bf", torch::full({2}, 1.5, torch::kBFloat16));
  inner.insert("steps", torch::tensor({7}, torch::kLong));
  inner.insert("strided", torch::arange(6, torch::kFloat).reshape({2, 3}).t());  // non-contiguous
  c10::impl::GenericDict outer(c10::StringType::get(), c10::AnyType::get());
  outer.insert("model", inner);
  outer.insert("epoch", 3);
  const std::string path = dir.file("ckpt.pt");
  save_pickle(outer, path);

  const auto src = open_checkpoint(path);
  ASSERT_EQ(src->tensors().size(), 6u);
  EXPECT_EQ(src->at("model.experts.0.fc1.weight").dtype, DType::F32);
  const auto v = src->read_all_f64("model.experts.0.fc1.weight");
  for (int i = 0; i < 12; ++i) EXPECT_EQ(v[i], w.flatten()[i].item<float>());
  EXPECT_EQ(src->read_all_f64("model.experts.0.fc1.bias"), (std::vector<double>{0, 1, 2}));
  EXPECT_EQ(src->read_all_f64("model.half"), (std::vector<double>{1, 1}));
  EXPECT_EQ(src->read_all_f64("model.bf"), (std::vector<double>{1.5, 1.5}));
  EXPECT_EQ(src->at("model.steps").dtype, DType::I64);
  // the transposed view is stored in logical (row-major) order
  EXPECT_EQ(src->read_all_f64("model.strided"), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

TEST(TorchStateDict, LayoutDetectedFromAStateDict) {
  TempDir dir;
  c10::Dict<std::string, at::Tensor> sd;
  for (int e = 0; e < 3; ++e) {
    const std::string p = "model.layers.0.block_sparse_moe.experts." + std::to_string(e) + ".";
    sd.insert(p + "w1.weight", torch::randn({6, 4}));
    sd.insert(p + "w3.weight", torch::randn({6, 4}));
    sd.insert(p + "w2.weight", torch::randn({4, 6}));
  }
  sd.insert("model.layers.0.block_sparse_moe.gate.weight", torch::randn({3, 4}));
  save_pickle(sd, dir.file("m.pth"));
  const auto src = open_checkpoint(dir.path());  // a folder holding one .pth
  const Layout l = detect_layout(src->tensors());
  EXPECT_EQ(l.family, "mixtral");
  ASSERT_EQ(l.layers.size(), 1u);
  EXPECT_EQ(l.layers[0].experts.size(), 3u);
}

TEST(TorchStateDict, BadFilesAreInputErrorsNamingTheFile) {
  TempDir dir;
  testing::write_text(dir.file("legacy.pt"), "\x80\x02not a zip");
  testing::write_text(dir.file("broken.pt"), std::string("PK\x03\x04", 4) + "garbage");
  save_pickle(c10::IValue(int64_t{5}), dir.file("notdict.pt"));
  for (const char* name : {"legacy.pt", "broken.pt", "notdict.pt", "absent.pt"}) {
    try {
      open_checkpoint(dir.file(name));
      ADD_FAILURE() << name << " opened";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace moescope
