// Tiny Hugging Face model folders: complete, consistent with their config.json, reproducible, and with tokenizers
// built the way the real families' tokenizer.json files are.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "moescope/io/safetensors.hpp"
#include "moescope/io/hf_config.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using nlohmann::json;
using testing::TempDir;

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

class SyntheticModel : public ::testing::TestWithParam<std::string> {};

TEST_P(SyntheticModel, FolderIsCompleteAndConsistent) {
  TempDir dir;
  SyntheticModelOptions o;
  o.family = GetParam();
  o.seed = 4;
  write_synthetic_model(dir.path(), o);
  const HFConfig c = read_hf_config(dir.path());
  EXPECT_EQ(std::string(hf_model_type(c.family)), c.model_type);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_GT(c.num_experts, 3);
  // grouped-query attention in the families that have it (DeepSeek uses full heads or latent attention)
  if (!c.uses_mla() && c.family != HFFamily::DeepSeekMoE) EXPECT_LT(c.num_key_value_heads, c.num_attention_heads);
  // weights: exactly the config's tensors
  const auto src = std::make_unique<SafetensorsFile>(dir.file("model.safetensors"));
  std::set<std::string> have, want;
  for (const auto& t : src->tensors()) have.insert(t.name);
  for (const auto& s : hf_tensor_specs(c)) {
    want.insert(s.name);
    ASSERT_NE(src->find(s.name), nullptr) << s.name;
    EXPECT_EQ(src->find(s.name)->shape, s.shape) << s.name;
  }
  EXPECT_EQ(have, want);
  // the family's distinguishing pieces are there
  std::size_t dense = 0;
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) dense += c.is_moe_layer(l) ? 0 : 1;
  if (c.family == HFFamily::Qwen2MoE || c.family == HFFamily::DeepSeekMoE || c.family == HFFamily::DeepSeekV2 ||
      c.family == HFFamily::DeepSeekV3)
    EXPECT_EQ(dense, 1u);
  if (c.family == HFFamily::Qwen2MoE) EXPECT_TRUE(have.count("model.layers.0.mlp.shared_expert_gate.weight"));
  if (c.family == HFFamily::DeepSeekV3) {
    EXPECT_TRUE(have.count("model.layers.1.mlp.gate.e_score_correction_bias"));
    EXPECT_EQ(src->find("model.layers.1.mlp.gate.e_score_correction_bias")->dtype, DType::F32);
  }

  // tokenizer: ids 0..V-1 once each, V = vocab_size; merges join existing tokens into existing tokens
  const json tok = read_json(dir.file("tokenizer.json"));
  const json& vocab = tok["model"]["vocab"];
  EXPECT_EQ(static_cast<std::int64_t>(vocab.size()), c.vocab_size);
  std::set<std::int64_t> ids;
  for (const auto& kv : vocab.items()) ids.insert(kv.value().get<std::int64_t>());
  EXPECT_EQ(static_cast<std::int64_t>(ids.size()), c.vocab_size);
  EXPECT_EQ(*ids.begin(), 0);
  EXPECT_EQ(*ids.rbegin(), c.vocab_size - 1);
  ASSERT_GT(tok["model"]["merges"].size(), 20u);
  for (const auto& m : tok["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const auto sp = s.find(' ');
    ASSERT_NE(sp, std::string::npos) << s;
    EXPECT_TRUE(vocab.contains(s.substr(0, sp))) << s;
    EXPECT_TRUE(vocab.contains(s.substr(sp + 1))) << s;
    EXPECT_TRUE(vocab.contains(s.substr(0, sp) + s.substr(sp + 1))) << s;
  }
  std::set<std::int64_t> special;
  for (const auto& a : tok["added_tokens"]) {
    EXPECT_EQ(vocab[a["content"].get<std::string>()], a["id"]);
    EXPECT_TRUE(a["special"].get<bool>());
    special.insert(a["id"].get<std::int64_t>());
  }
  for (auto e : c.eos_token_ids) EXPECT_TRUE(special.count(e)) << e;
  if (c.bos_token_id) EXPECT_TRUE(special.count(*c.bos_token_id));
  if (c.pad_token_id) EXPECT_TRUE(special.count(*c.pad_token_id));
  EXPECT_EQ(tok["model"]["type"], "BPE");
  const json tc = read_json(dir.file("tokenizer_config.json"));
  EXPECT_TRUE(tc.contains("eos_token"));
}

INSTANTIATE_TEST_SUITE_P(All, SyntheticModel, ::testing::ValuesIn(synthetic_model_families()), [](const auto& info) {
  std::string s = info.param;
  for (auto& ch : s)
    if (ch == '-') ch = '_';
  return s;
});

// GPT-2's byte-level alphabet: "!" is token 0, the space byte is "Ġ" (U+0120) = token 220, byte 0 is "Ā" = 188.
TEST(SyntheticModel, ByteLevelAlphabetIsGpt2s) {
  const auto tok = synthetic_tokenizer("qwen2-moe");
  const auto& v = tok["model"]["vocab"];
  EXPECT_EQ(v["!"], 0);
  EXPECT_EQ(v[u8"Ġ"], 220);
  EXPECT_EQ(v[u8"Ā"], 188);
  EXPECT_EQ(v[u8"Ġt"], 256);  // the first merge
  EXPECT_EQ(tok["pre_tokenizer"]["pretokenizers"][1]["type"], "ByteLevel");
  EXPECT_EQ(tok["normalizer"]["type"], "NFC");
  // Mixtral: SentencePiece-style byte fallback
  const auto spm = synthetic_tokenizer("mixtral");
  EXPECT_EQ(spm["model"]["vocab"]["<s>"], 1);
  EXPECT_EQ(spm["model"]["vocab"]["<0x00>"], 3);
  EXPECT_EQ(spm["model"]["vocab"]["<0xFF>"], 258);
  EXPECT_TRUE(spm["model"]["byte_fallback"].get<bool>());
  EXPECT_EQ(spm["normalizer"]["normalizers"][0]["prepend"], u8"▁");
  EXPECT_TRUE(spm["pre_tokenizer"].is_null());
}

TEST(SyntheticModel, ReproducibleSeededAndOverridable) {
  TempDir dir;
  SyntheticModelOptions o;
  o.family = "olmoe";
  o.seed = 9;
  write_synthetic_model(dir.file("a"), o);
  write_synthetic_model(dir.file("b"), o);
  EXPECT_EQ(testing::read_bytes(dir.file("a/model.safetensors")), testing::read_bytes(dir.file("b/model.safetensors")));
  o.seed = 10;
  write_synthetic_model(dir.file("c"), o);
  EXPECT_NE(testing::read_bytes(dir.file("a/model.safetensors")), testing::read_bytes(dir.file("c/model.safetensors")));

  o.dtype = DType::BF16;
  o.shards = 2;
  o.config_overrides = {{"num_hidden_layers", 3}, {"clip_qkv", 2.0}};
  write_synthetic_model(dir.file("d"), o);
  EXPECT_TRUE(testing::file_exists(dir.file("d/model-00002-of-00002.safetensors")));
  const auto src = std::make_unique<ShardedSafetensors>(dir.file("d/model.safetensors.index.json"));
  EXPECT_EQ(src->at("model.layers.2.mlp.experts.7.down_proj.weight").dtype, DType::BF16);
  const HFConfig c = read_hf_config(dir.file("d"));
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_DOUBLE_EQ(c.clip_qkv, 2.0);
  EXPECT_EQ(read_json(dir.file("d/config.json"))["torch_dtype"], "bfloat16");
  // norm weights sit around 1, matrices have std 1/sqrt(fan_in)
  const auto norm = src->read_all_f64("model.layers.0.input_layernorm.weight");
  for (double x : norm) EXPECT_NEAR(x, 1.0, 0.5);
}

// The size options land in each family's own fields.
TEST(SyntheticModel, SizesUseTheFamiliesFieldNames) {
  for (const auto& family : synthetic_model_families()) {
    SyntheticModelOptions o;
    o.family = family;
    o.layers = 4;
    o.experts = 12;
    o.hidden = 48;
    o.intermediate = 20;
    const HFConfig c = parse_hf_config(synthetic_model_config(o), "config.json");
    EXPECT_EQ(c.num_hidden_layers, 4) << family;
    EXPECT_EQ(c.num_experts, 12) << family;
    EXPECT_EQ(c.hidden_size, 48) << family;
    EXPECT_EQ(c.moe_intermediate_size, 20) << family;
  }
}

TEST(SyntheticModel, BadOptions) {
  TempDir dir;
  SyntheticModelOptions o;
  o.family = "llama";
  EXPECT_THROW(write_synthetic_model(dir.path(), o), InputError);
  o.family = "mixtral";
  o.dtype = DType::F8_E4M3;
  EXPECT_THROW(write_synthetic_model(dir.path(), o), InputError);
  o.dtype = DType::F32;
  o.config_overrides = {{"num_key_value_heads", 3}};  // does not divide 4 heads
  EXPECT_THROW(write_synthetic_model(dir.path(), o), InputError);
}

}  // namespace
}  // namespace moescope
