// The torch-free reader (io/torch_pickle) on files LibTorch writes with torch::pickle_save (TorchScript's
// pickler: type-tagged dicts and lists, memoized globals): every tensor equals the original, and the reader
// agrees with the LibTorch-backed read_torch_state_dict on names, dtypes, shapes and bytes.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "moescope/io/checkpoint.hpp"
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

  // The LibTorch reader sees the same names, dtypes, shapes and bytes.
  const auto ref = read_torch_state_dict(path);
  ASSERT_EQ(ref->tensors().size(), src->tensors().size());
  for (std::size_t i = 0; i < ref->tensors().size(); ++i) {
    const TensorInfo& a = ref->tensors()[i];
    const TensorInfo& b = src->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype) << a.name;
    EXPECT_EQ(a.shape, b.shape) << a.name;
    const ByteView x = ref->raw(a.name), y = src->raw(b.name);
    ASSERT_EQ(x.size, y.size) << a.name;
    EXPECT_TRUE(x.size == 0 || std::memcmp(x.data, y.data, x.size) == 0) << a.name;
  }
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

}  // namespace
}  // namespace moescope
