// io/hf_folder: a Hugging Face model folder is told from a moescope run (and from anything else) by config.json.
#include <gtest/gtest.h>

#include <filesystem>

#include "moescope/io/hf_folder.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;
using testing::write_text;

TEST(HFFolder, SyntheticModelFolderAndItsConfigAreModels) {
  TempDir dir;
  SyntheticModelOptions o;
  o.family = "olmoe";
  write_synthetic_model(dir.file("m"), o);
  EXPECT_TRUE(is_hf_model_folder(dir.file("m")));
  EXPECT_TRUE(is_hf_model_folder(dir.file("m/config.json")));
  EXPECT_EQ(hf_model_folder(dir.file("m")), dir.file("m"));
  EXPECT_EQ(hf_model_folder(dir.file("m/config.json")), dir.file("m"));
  EXPECT_FALSE(is_hf_model_folder(dir.file("m/model.safetensors")));  // a weights file is not the folder
}

TEST(HFFolder, RunConfigsAndOtherFilesAreNot) {
  TempDir dir;
  std::filesystem::create_directories(dir.file("run"));
  // A moescope run config may carry a model_type-like key; its "model" object makes it a run.
  write_text(dir.file("run/config.json"), R"({"name": "r", "model": {"type": "lm"}, "architectures": ["X"]})");
  EXPECT_FALSE(is_hf_model_folder(dir.file("run")));
  std::filesystem::create_directories(dir.file("plain"));
  write_text(dir.file("plain/config.json"), R"({"hidden_size": 8})");
  EXPECT_FALSE(is_hf_model_folder(dir.file("plain")));
  std::filesystem::create_directories(dir.file("broken"));
  write_text(dir.file("broken/config.json"), "{\"architectures\": [");
  EXPECT_FALSE(is_hf_model_folder(dir.file("broken")));
  std::filesystem::create_directories(dir.file("list"));
  write_text(dir.file("list/config.json"), "[1, 2]");
  EXPECT_FALSE(is_hf_model_folder(dir.file("list")));
  // An unknown architecture is still a model folder: the loader names it.
  std::filesystem::create_directories(dir.file("llama"));
  write_text(dir.file("llama/config.json"), R"({"architectures": ["LlamaForCausalLM"]})");
  EXPECT_TRUE(is_hf_model_folder(dir.file("llama")));
  EXPECT_FALSE(is_hf_model_folder(dir.file("missing")));
  EXPECT_FALSE(is_hf_model_folder(dir.path()));  // no config.json
}

}  // namespace
}  // namespace moescope
