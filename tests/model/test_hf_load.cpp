// Loading Hugging Face model folders: names, dtypes, sharding, copy-on-write mapping, FP8 block scales, trainable
// subsets, and one-line errors for folders that do not match their config.json.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "moescope/model/params.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/model/hf.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"
#include "support/expect_error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::input_error_of;
using testing::TempDir;

std::string write_hf_checkpoint(const TempDir& dir, const std::string& family, DType dtype = DType::F32, int shards = 1,
                        const std::string& overrides = "{}", const std::string& name = "model") {
  SyntheticModelOptions o;
  o.family = family;
  o.dtype = dtype;
  o.seed = 3;
  o.shards = shards;
  o.config_overrides = nlohmann::json::parse(overrides);
  const std::string path = dir.file(name);
  write_synthetic_model(path, o);
  return path;
}

torch::Tensor ids_for(const HFCausalLM& m, std::int64_t B = 2, std::int64_t S = 6) {
  Rng rng(17);
  auto ids = torch::empty({B, S}, torch::kLong);
  for (std::int64_t i = 0; i < B * S; ++i)
    ids.view({-1})[i] = static_cast<std::int64_t>(rng.uniform() * m->config().vocab_size);
  return ids;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void write_json(const std::string& path, const nlohmann::json& j) { testing::write_text(path, j.dump(2)); }

// Rewrites a safetensors file through `edit` (a map from name to (info, bytes)).
using TensorMap = std::map<std::string, std::pair<TensorInfo, std::vector<std::uint8_t>>>;
void rewrite(const std::string& file, const std::function<void(TensorMap&)>& edit) {
  TensorMap m;
  {
    SafetensorsFile f(file);
    for (const auto& t : f.tensors()) {
      const ByteView b = f.raw(t.name);
      m[t.name] = {t, std::vector<std::uint8_t>(b.data, b.data + b.size)};
    }
  }
  edit(m);
  std::vector<TensorToWrite> out;
  for (auto& kv : m) out.push_back({kv.second.first, kv.second.second.data()});
  write_safetensors(file, out);
}

class HFLoadFamilies : public ::testing::TestWithParam<std::string> {};

// The module's parameters and buffers are exactly the checkpoint's tensors, with their shapes.
TEST_P(HFLoadFamilies, NamesAreTheCheckpointNames) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, GetParam());
  HFCausalLM m = load_hf_model(path);
  std::map<std::string, std::vector<std::int64_t>> have;
  for (const auto& p : m->named_parameters()) have[p.key()] = p.value().sizes().vec();
  for (const auto& b : m->named_buffers()) have[b.key()] = b.value().sizes().vec();
  std::map<std::string, std::vector<std::int64_t>> want;
  SafetensorsFile f(path + "/model.safetensors");
  for (const auto& t : f.tensors()) want[t.name] = t.shape;
  EXPECT_EQ(have, want);
  for (const auto& p : m->parameters()) EXPECT_FALSE(p.requires_grad());
  EXPECT_EQ(m->dtype(), torch::kFloat);
}

INSTANTIATE_TEST_SUITE_P(All, HFLoadFamilies, ::testing::ValuesIn(synthetic_model_families()), testing::DashFreeName());

TEST(HFLoad, ShardedCheckpointGivesTheSameModel) {
  TempDir dir;
  HFCausalLM one = load_hf_model(write_hf_checkpoint(dir, "qwen2-moe", DType::F32, 1, "{}", "one"));
  HFCausalLM three = load_hf_model(write_hf_checkpoint(dir, "qwen2-moe", DType::F32, 3, "{}", "three"));
  EXPECT_TRUE(testing::file_exists(dir.file("three/model.safetensors.index.json")));
  const auto ids = ids_for(one);
  EXPECT_TRUE(torch::equal(one->forward(ids), three->forward(ids)));
}

// bf16 weights computed in bf16 against the same weights widened to float32: close to bf16 rounding.
TEST(HFLoad, Bf16KeptOrWidened) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "olmoe", DType::BF16);
  HFCausalLM keep = load_hf_model(path);
  HFLoadOptions f32;
  f32.dtype = HFDType::F32;
  HFCausalLM wide = load_hf_model(path, f32);
  HFLoadOptions f64;
  f64.dtype = HFDType::F64;
  HFCausalLM exact = load_hf_model(path, f64);
  EXPECT_EQ(keep->dtype(), torch::kBFloat16);
  for (const auto& p : keep->parameters()) EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(wide->dtype(), torch::kFloat);
  // the same numbers: bf16 widens exactly
  const auto kp = keep->named_parameters(), wp = wide->named_parameters();
  for (const auto& p : kp) EXPECT_TRUE(torch::equal(p.value().to(torch::kFloat), wp[p.key()])) << p.key();
  const auto ids = ids_for(keep);
  const auto lb = keep->forward(ids).to(torch::kDouble), lf = wide->forward(ids).to(torch::kDouble),
             ld = exact->forward(ids);
  const double scale = ld.abs().max().item<double>();
  // float32 against float64 on the same weights: float32 rounding (6e-8) grown over two layers.
  EXPECT_LT((lf - ld).abs().max().item<double>(), 1e-5 * scale);
  // bf16 keeps 8 significant bits: each operation rounds by up to 2^-9 = 2e-3 relative; over two layers the logits
  // move by a few 1e-3 of their range, and certainly by more than float32 rounding.
  const double bf = (lb - ld).abs().max().item<double>() / scale;
  EXPECT_LT(bf, 5e-2);
  EXPECT_GT(bf, 1e-4);
}

// Weights already in the target dtype are mapped from the file privately: changing them in place changes the model,
// never the file.
TEST(HFLoad, InPlaceChangesStayPrivate) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "mixtral");
  const auto before = testing::read_bytes(path + "/model.safetensors");
  HFCausalLM m = load_hf_model(path);
  const auto ids = ids_for(m);
  const auto base = m->forward(ids);
  {
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.add_(0.25);
  }
  EXPECT_FALSE(torch::equal(m->forward(ids), base));
  EXPECT_EQ(testing::read_bytes(path + "/model.safetensors"), before);
  HFCausalLM again = load_hf_model(path);
  EXPECT_TRUE(torch::equal(again->forward(ids), base));
}

// Resident memory in bytes (/proc/self/statm), or -1 where unreadable.
long resident_bytes() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = -1;
  if (!(f >> pages >> resident)) return -1;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// Loading in the file's dtype maps the weights (nothing is read until used); converting to another dtype reads every
// weight once into its final tensor. A 2-layer Mixtral with H = 256 and 8 experts of width 512 holds 27 MB of
// float32 weights: mapped, resident memory grows by well under a tenth of that; converted to float64, by about
// twice that.
TEST(HFLoad, WeightsInTheFileDtypeAreMappedNotCopied) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "mixtral", DType::F32, 1,
                                       R"({"hidden_size": 256, "intermediate_size": 512, "num_local_experts": 8})");
  const long file = static_cast<long>(std::filesystem::file_size(path + "/model.safetensors"));
  ASSERT_GT(file, 20'000'000);
  if (resident_bytes() < 0) GTEST_SKIP() << "/proc/self/statm is not readable";
  // a first load pages in the loader's code and LibTorch's lazy set-up; measure the second
  load_hf_model(path);
  const long before = resident_bytes();
  HFCausalLM mapped = load_hf_model(path);
  const long after_mapped = resident_bytes();
  EXPECT_LT(after_mapped - before, file / 10) << "mapped load grew resident memory by " << after_mapped - before;
  HFLoadOptions f64;
  f64.dtype = HFDType::F64;
  HFCausalLM converted = load_hf_model(path, f64);
  EXPECT_GT(resident_bytes() - after_mapped, file * 3 / 2);
  // and the mapped model still computes (its pages come in on use)
  EXPECT_TRUE(torch::isfinite(mapped->forward(ids_for(mapped))).all().item<bool>());
}

TEST(HFLoad, OnlyTheTrainableSubsetRequiresGrad) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "qwen2-moe");
  HFLoadOptions o;
  o.trainable = "router";
  HFCausalLM m = load_hf_model(path, o);
  std::set<std::string> grad;
  for (const auto& p : m->named_parameters())
    if (p.value().requires_grad()) grad.insert(p.key());
  // the routers of the MoE layers 0 and 2; not the shared expert's gate, not gate_proj
  EXPECT_EQ(grad, (std::set<std::string>{"model.layers.0.mlp.gate.weight", "model.layers.2.mlp.gate.weight"}));
  o.trainable = "expert:2.5";
  m = load_hf_model(path, o);
  grad.clear();
  for (const auto& p : m->named_parameters())
    if (p.value().requires_grad()) grad.insert(p.key());
  EXPECT_EQ(grad, (std::set<std::string>{"model.layers.2.mlp.experts.5.gate_proj.weight",
                                         "model.layers.2.mlp.experts.5.up_proj.weight",
                                         "model.layers.2.mlp.experts.5.down_proj.weight"}));
  o.trainable = "expert:1.0";  // layer 1 is dense
  EXPECT_NE(input_error_of([&] { load_hf_model(path, o); }).find("selects no parameters"), std::string::npos);
}

// FP8 (E4M3) expert weights with 128x128 block scales are dequantised on load.
TEST(HFLoad, Fp8WeightsWithBlockScales) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "deepseek-v3");
  const std::string name = "model.layers.1.mlp.experts.3.up_proj.weight";
  const float scale = 0.0625f;
  std::vector<float> want;
  rewrite(path + "/model.safetensors", [&](TensorMap& m) {
    auto& [info, bytes] = m.at(name);
    std::vector<float> w(static_cast<std::size_t>(info.numel()));
    convert_to_f32(info.dtype, bytes.data(), w.size(), w.data());
    // nearest E4M3 code of w / scale, by trying all 256 codes
    std::vector<float> codes(256);
    std::vector<std::uint8_t> all(256);
    for (int c = 0; c < 256; ++c) all[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(c);
    convert_to_f32(DType::F8_E4M3, all.data(), 256, codes.data());
    std::vector<std::uint8_t> q(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      int best = 0;
      for (int c = 0; c < 256; ++c)
        if (std::isfinite(codes[static_cast<std::size_t>(c)]) &&
            std::fabs(codes[static_cast<std::size_t>(c)] - w[i] / scale) <
                std::fabs(codes[static_cast<std::size_t>(best)] - w[i] / scale))
          best = c;
      q[i] = static_cast<std::uint8_t>(best);
      want.push_back(codes[static_cast<std::size_t>(best)] * scale);
    }
    info.dtype = DType::F8_E4M3;
    bytes = q;
    std::vector<std::uint8_t> s(4);
    std::memcpy(s.data(), &scale, 4);
    m[name + "_scale_inv"] = {TensorInfo{name + "_scale_inv", DType::F32, {1, 1}}, s};
  });
  HFCausalLM m = load_hf_model(path);
  const auto got = m->named_parameters()[name].contiguous();
  ASSERT_EQ(got.numel(), static_cast<std::int64_t>(want.size()));
  for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got.view({-1})[static_cast<std::int64_t>(i)].item<float>(), want[i]);
  EXPECT_TRUE(torch::isfinite(m->forward(ids_for(m))).all().item<bool>());
}

// --------------------------------------------------------------------------------------------------- errors

TEST(HFLoadErrors, UnknownArchitectureNamesTheValue) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "mixtral");
  auto cfg = read_json(path + "/config.json");
  cfg["architectures"] = {"LlamaForCausalLM"};
  write_json(path + "/config.json", cfg);
  const std::string msg = input_error_of([&] { load_hf_model(path); });
  EXPECT_NE(msg.find(path + "/config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("LlamaForCausalLM"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

TEST(HFLoadErrors, ShapeDisagreeingWithConfigNamesFileTensorAndShapes) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "mixtral");
  auto cfg = read_json(path + "/config.json");
  cfg["intermediate_size"] = 40;
  write_json(path + "/config.json", cfg);
  const std::string msg = input_error_of([&] { load_hf_model(path); });
  EXPECT_NE(msg.find(path + "/model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model.layers.0.block_sparse_moe.experts.0.w1.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[48, 32]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[40, 32]"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

TEST(HFLoadErrors, MissingAndExtraTensors) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "olmoe");
  const std::string file = path + "/model.safetensors";
  const auto original = testing::read_bytes(file);
  rewrite(file, [](TensorMap& m) { m.erase("model.layers.1.self_attn.k_norm.weight"); });
  std::string msg = input_error_of([&] { load_hf_model(path); });
  EXPECT_NE(msg.find("'model.layers.1.self_attn.k_norm.weight' is missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[16]"), std::string::npos) << msg;  // kv heads 2 x head_dim 8

  testing::write_bytes(file, original);
  rewrite(file, [](TensorMap& m) {
    std::vector<std::uint8_t> b(8 * 4, 0);
    m["model.layers.0.self_attn.extra.weight"] = {TensorInfo{"model.layers.0.self_attn.extra.weight", DType::F32, {8}}, b};
  });
  msg = input_error_of([&] { load_hf_model(path); });
  EXPECT_NE(msg.find("unexpected tensor 'model.layers.0.self_attn.extra.weight'"), std::string::npos) << msg;

  // rotary buffers some checkpoints carry are fine
  testing::write_bytes(file, original);
  rewrite(file, [](TensorMap& m) {
    std::vector<std::uint8_t> b(4 * 4, 0);
    m["model.layers.0.self_attn.rotary_emb.inv_freq"] = {
        TensorInfo{"model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {4}}, b};
  });
  EXPECT_NO_THROW(load_hf_model(path));

  testing::write_bytes(file, original);
  rewrite(file, [](TensorMap& m) {
    auto& [info, bytes] = m.at("model.norm.weight");
    info.dtype = DType::I32;
  });
  msg = input_error_of([&] { load_hf_model(path); });
  EXPECT_NE(msg.find("'model.norm.weight' has dtype I32"), std::string::npos) << msg;
}

TEST(HFLoadErrors, UnsupportedConfigValuesNameTheField) {
  TempDir dir;
  const std::string path = write_hf_checkpoint(dir, "mixtral");
  auto cfg = read_json(path + "/config.json");
  cfg["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32}};
  write_json(path + "/config.json", cfg);
  std::string msg = input_error_of([&] { load_hf_model(path); });
  EXPECT_NE(msg.find("'rope_scaling'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not supported yet"), std::string::npos) << msg;
  cfg.erase("rope_scaling");
  cfg["hidden_act"] = "gelu";
  write_json(path + "/config.json", cfg);
  msg = input_error_of([&] { load_hf_model(path); });
  EXPECT_NE(msg.find("'hidden_act'"), std::string::npos) << msg;
}

TEST(HFLoadErrors, MissingFolderOrConfig) {
  TempDir dir;
  EXPECT_NE(input_error_of([&] { load_hf_model(dir.file("nothing")); }), "");
  const std::string path = write_hf_checkpoint(dir, "mixtral");
  std::remove((path + "/config.json").c_str());
  EXPECT_NE(input_error_of([&] { load_hf_model(path); }).find("config.json"), std::string::npos);
}

TEST(HFLoad, DTypeNames) {
  EXPECT_EQ(parse_hf_dtype("keep"), HFDType::Keep);
  EXPECT_EQ(parse_hf_dtype("bf16"), HFDType::BF16);
  EXPECT_EQ(parse_hf_dtype("f64"), HFDType::F64);
  EXPECT_EQ(parse_hf_dtype("f32"), HFDType::F32);
  EXPECT_THROW(parse_hf_dtype("fp16"), InputError);
}

}  // namespace
}  // namespace moescope
