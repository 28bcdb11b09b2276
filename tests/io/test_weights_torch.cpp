// io/weights_torch: a module's state dict to safetensors and back, strictly.
#include "moescope/io/weights_torch.hpp"

#include <gtest/gtest.h>

#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

struct NetImpl : torch::nn::Module {
  NetImpl(std::int64_t in, std::int64_t out) {
    fc = register_module("fc", torch::nn::Linear(in, out));
    bn = register_module("bn", torch::nn::BatchNorm1d(out));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};
TORCH_MODULE(Net);

struct FcOnlyImpl : torch::nn::Module {
  FcOnlyImpl() { fc = register_module("fc", torch::nn::Linear(3, 4)); }
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(FcOnly);

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Weights, StateDictRoundTripsParametersAndBuffers) {
  testing::TempDir dir;
  torch::manual_seed(1);
  Net a(3, 4), b(3, 4);
  a->bn->running_mean.fill_(0.25);
  a->bn->num_batches_tracked.fill_(7);
  const std::string f = dir.file("w.safetensors");
  save_module_weights(*a, f, {{"step", "9"}});
  const SafetensorsFile file(f);
  EXPECT_EQ(file.at("bn.num_batches_tracked").dtype, DType::I64);
  EXPECT_EQ(file.at("fc.weight").dtype, DType::F32);
  bool has_step = false;
  for (const auto& [k, v] : file.metadata()) has_step = has_step || (k == "step" && v == "9");
  EXPECT_TRUE(has_step);
  load_module_weights(*b, f);
  for (const auto& [name, t] : state_entries(*a)) {
    const auto other = state_entries(*b);
    const auto it = std::find_if(other.begin(), other.end(), [&](const auto& e) { return e.first == name; });
    ASSERT_NE(it, other.end()) << name;
    EXPECT_TRUE(torch::equal(t, it->second)) << name;
  }
}

TEST(Weights, LoadingIsStrictAndNamesTheFileAndTensor) {
  testing::TempDir dir;
  Net a(3, 4);
  const std::string f = dir.file("w.safetensors");
  save_module_weights(*a, f);
  Net wider(3, 5);
  const std::string shape = message_of([&] { load_module_weights(*wider, f); });
  EXPECT_EQ(shape.rfind(f + ": tensor '", 0), 0u) << shape;
  EXPECT_NE(shape.find("has shape [4, 3], the model expects [5, 3]"), std::string::npos) << shape;

  FcOnly only;  // the file holds bn.* too: extra tensors are an error
  EXPECT_NE(message_of([&] { load_module_weights(*only, f); }).find("is not part of the model"), std::string::npos);

  NamedTensors partial;
  for (auto& e : state_entries(*a))
    if (e.first != "bn.running_var") partial.push_back(e);
  const std::string g = dir.file("partial.safetensors");
  write_tensor_map(g, partial, /*float64=*/false);
  EXPECT_NE(message_of([&] { load_module_weights(*a, g); }).find("'bn.running_var' is missing"), std::string::npos);
  a->bn->running_var.fill_(3.0);
  EXPECT_EQ(message_of([&] { load_module_weights(*a, g, {"bn.running_var"}); }), "(no error)");
  EXPECT_EQ(a->bn->running_var[0].item<double>(), 3.0);  // kept its value
}

}  // namespace
}  // namespace moescope
