// The torch-free reader (io/torch_pickle) on files LibTorch writes with torch::pickle_save (TorchScript's
// pickler: type-tagged dicts and lists, memoized globals): every tensor equals the original, byte for byte; and
// open_checkpoint reads state dicts through it (nested dicts flattened with dots, layouts detected).
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "moescope/io/checkpoint.hpp"
#include "moescope/io/layout.hpp"
#include "moescope/io/synthetic_checkpoint.hpp"
#include "moescope/io/torch_pickle.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;

void save_pickle(const c10::IValue& v, const std::string& path) {
  const std::vector<char> bytes = torch::pickle_save(v);
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Bitwise equality with the original tensor's row-major bytes: no tolerance, nothing is converted.
void expect_equal(const TensorSource& src, const std::string& name, const at::Tensor& original) {
  const TensorInfo& info = src.at(name);
  const at::Tensor t = original.contiguous();
  EXPECT_EQ(info.shape, t.sizes().vec()) << name;
  ASSERT_EQ(info.nbytes(), t.nbytes()) << name;
  const ByteView b = src.raw(name);
  ASSERT_EQ(b.size, t.nbytes()) << name;
  EXPECT_TRUE(b.size == 0 || std::memcmp(b.data, t.data_ptr(), b.size) == 0) << name << " differs";
}

TEST(TorchPickleTorch, ReadsWhatPickleSaveWrote) {
  TempDir dir;
  torch::manual_seed(3);
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", torch::randn({17, 9})},
      {"f64", torch::randn({5}, torch::kFloat64)},
      {"f16", torch::randn({3, 4}).to(torch::kHalf)},
      {"bf16", torch::randn({4, 3}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000000, 1000000, {6}, torch::kLong)},
      {"i32", torch::randint(-1000, 1000, {2, 3}, torch::kInt)},
      {"i16", torch::randint(-1000, 1000, {3}, torch::kShort)},
      {"i8", torch::randint(-100, 100, {4}, torch::kChar)},
      {"u8", torch::randint(0, 255, {4}, torch::kByte)},
      {"bool", torch::randn({5}) > 0},
      {"transposed", torch::randn({6, 7}).t()},
      {"permuted", torch::randn({2, 3, 4}).permute({1, 2, 0})},
      {"scalar", torch::tensor(2.5)},
      {"empty", torch::zeros({0, 4})},
      {"big", torch::randn({256, 128})},
  };
  const at::Tensor base = torch::arange(20, torch::kFloat);
  tensors.push_back({"slice", base.slice(0, 5, 12)});
  tensors.push_back({"strided", base.slice(0, 1, 20, 4)});
  c10::Dict<std::string, at::Tensor> model;
  for (const auto& [k, t] : tensors) model.insert(k, t);
  c10::impl::GenericDict outer(c10::StringType::get(), c10::AnyType::get());
  outer.insert("model", model);
  outer.insert("epoch", int64_t{3});
  outer.insert("lr", 0.5);
  outer.insert("steps", c10::List<int64_t>({1, 2, 3}));
  outer.insert("note", std::string("not a tensor"));
  outer.insert("top", torch::ones({2}));
  const std::string path = dir.file("ckpt.pt");
  save_pickle(outer, path);

  const auto src = read_torch_pickle(path);
  ASSERT_EQ(src->tensors().size(), tensors.size() + 1);
  for (const auto& [k, t] : tensors) expect_equal(*src, "model." + k, t);
  expect_equal(*src, "top", torch::ones({2}));
  EXPECT_EQ(src->at("model.bf16").dtype, DType::BF16);
  EXPECT_EQ(src->at("model.bool").dtype, DType::BOOL);
}

TEST(TorchPickleTorch, AStateDictOfAModule) {
  TempDir dir;
  torch::manual_seed(5);
  torch::nn::Sequential net(torch::nn::Linear(4, 8), torch::nn::BatchNorm1d(8), torch::nn::Linear(8, 2));
  net->train();
  net->forward(torch::randn({16, 4}));
  c10::Dict<std::string, at::Tensor> sd;
  for (const auto& p : net->named_parameters()) sd.insert(p.key(), p.value().detach());
  for (const auto& b : net->named_buffers()) sd.insert(b.key(), b.value());
  const std::string path = dir.file("net.pth");
  save_pickle(sd, path);
  const auto src = read_torch_pickle(path);
  ASSERT_EQ(src->tensors().size(), sd.size());
  for (const auto& kv : sd) expect_equal(*src, kv.key(), kv.value());
  EXPECT_EQ(src->at("1.num_batches_tracked").dtype, DType::I64);
  EXPECT_EQ(src->read_all_f64("1.num_batches_tracked"), (std::vector<double>{1}));
}

TEST(TorchPickleTorch, NotAStateDict) {
  TempDir dir;
  save_pickle(c10::IValue(int64_t{5}), dir.file("five.pt"));
  try {
    read_torch_pickle(dir.file("five.pt"));
    ADD_FAILURE() << "opened";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("five.pt: no tensors found"), std::string::npos) << e.what();
  }
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
