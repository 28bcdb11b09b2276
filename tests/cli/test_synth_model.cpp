// `moescope synth FAMILY --model`: a complete tiny Hugging Face model folder that load_hf_model runs.
#include <gtest/gtest.h>

#include "moescope/io/hf_config.hpp"
#include "moescope/model/hf.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::run_moescope;
using testing::TempDir;

TEST(SynthModelCli, WritesALoadableFolder) {
  TempDir dir;
  const std::string out = dir.file("q3");
  const auto r = run_moescope({"synth", "qwen3-moe", "--model", "-o", out, "--layers", "3", "--experts", "6",
                               "--dtype", "BF16", "--shards", "2", "--seed", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"})
    EXPECT_TRUE(testing::file_exists(out + "/" + f)) << f;
  const HFConfig c = read_hf_config(out);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.num_experts, 6);
  HFCausalLM m = load_hf_model(out);
  EXPECT_EQ(m->dtype(), torch::kBFloat16);
  EXPECT_EQ(m->forward(torch::zeros({1, 4}, torch::kLong)).sizes(), (std::vector<std::int64_t>{1, 4, c.vocab_size}));
}

TEST(SynthModelCli, RejectsFamiliesWithoutAModel) {
  TempDir dir;
  const auto r = run_moescope({"synth", "switch", "--model", "-o", dir.file("s")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("switch"), std::string::npos) << r.err;
  EXPECT_EQ(run_moescope({"synth", "olmoe", "--model", "-o", dir.file("o"), "--dtype", "F16"}).exit_code, 2);
  // the weights-only synth still knows only its own families
  EXPECT_EQ(run_moescope({"synth", "qwen3-moe", "-o", dir.file("w.safetensors")}).exit_code, 2);
}

}  // namespace
}  // namespace moescope
