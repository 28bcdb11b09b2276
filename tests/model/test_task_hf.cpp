// model/task with a Hugging Face model folder as the run: opening it, the LM loss of a batch of windows against a
// hand computation, routing, the model's identity for interpolation, and its evaluation data (text through the
// folder's tokenizer.json, or token ids) with the errors a user can make.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "moescope/data/tokenizer.hpp"
#include "moescope/io/synthetic_model.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/error.hpp"
#include "support/expect_error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::input_error_of;
using testing::TempDir;
using testing::write_text;

std::string write_model(const TempDir& dir, const std::string& family, DType dtype = DType::F64,
                        const std::string& name = "model", std::uint64_t seed = 5) {
  SyntheticModelOptions o;
  o.family = family;
  o.dtype = dtype;
  o.seed = seed;
  const std::string path = dir.file(name);
  write_synthetic_model(path, o);
  return path;
}

std::string sample_text() {
  std::string t;
  for (int i = 0; i < 60; ++i) t += "the cat sat on the mat; then it ran to the door and out " + std::to_string(i) + ".\n";
  return t;
}

TEST(TaskModelHF, LoadRunOpensAFolder) {
  TempDir dir;
  const std::string path = write_model(dir, "mixtral");
  EXPECT_TRUE(is_loadable_run(path));
  const LoadedRun r = load_run(path);
  EXPECT_TRUE(r.is_hf());
  EXPECT_TRUE(r.model.is_hf());
  EXPECT_TRUE(r.model.is_lm());
  EXPECT_EQ(r.model.kind(), TaskModel::Kind::HF);
  EXPECT_EQ(r.weights_file(), path);
  EXPECT_EQ(r.data.name, "text");
  EXPECT_EQ(r.data.context, 128);
  EXPECT_TRUE(r.model.moe_layers().empty());
  EXPECT_EQ(r.model.hf().dtype(), torch::kDouble);
  // Every parameter trainable by default, as a moescope run; a subset when asked.
  for (const auto& p : r.model.module().parameters()) EXPECT_TRUE(p.requires_grad());
  RunLoadOptions o;
  o.trainable = "expert:1.2";
  o.dtype = HFDType::F32;
  const LoadedRun s = load_run(path, o);
  EXPECT_EQ(s.model.hf().dtype(), torch::kFloat);
  EXPECT_EQ(s.options.trainable, "expert:1.2");
  int trainable = 0;
  for (const auto& p : s.model.module().named_parameters())
    if (p.value().requires_grad()) {
      ++trainable;
      EXPECT_NE(p.key().find("layers.1.block_sparse_moe.experts.2."), std::string::npos) << p.key();
    }
  EXPECT_EQ(trainable, 3);
  const TaskModel plain = TaskModel::create({{"type", "lm"}, {"vocab_size", 20}, {"context", 8}, {"dim", 16},
                                             {"layers", 1}, {"heads", 2}, {"ffn_hidden", 32}, {"experts", 2}});
  EXPECT_THROW(plain.hf(), std::logic_error);
}

// The batch loss is the mean next-token cross-entropy over all B * S positions, from the logits of the forward pass.
// float64 throughout: agreement to 1e-12 relative (a sum of 12 log-softmax terms).
TEST(TaskModelHF, BatchLossIsMeanTokenCrossEntropy) {
  TempDir dir;
  const LoadedRun r = load_run(write_model(dir, "qwen2-moe"));
  const std::int64_t V = r.model.hf().config().vocab_size;
  const auto inputs = torch::randint(0, V, {2, 6}, torch::kLong);
  const auto targets = torch::randint(0, V, {2, 6}, torch::kLong);
  const BatchResult b = r.model.batch_loss(inputs, targets);
  const auto logits = r.model.hf().forward(inputs);
  double ce = 0;
  std::int64_t hits = 0;
  for (std::int64_t i = 0; i < 2; ++i)
    for (std::int64_t s = 0; s < 6; ++s) {
      const auto row = logits[i][s];
      const std::int64_t y = targets[i][s].item<std::int64_t>();
      ce -= torch::log_softmax(row, 0)[y].item<double>() / 12.0;
      hits += row.argmax().item<std::int64_t>() == y;
    }
  EXPECT_NEAR(b.loss.item<double>(), ce, 1e-12 * std::abs(ce));
  EXPECT_EQ(b.count, 12);
  EXPECT_EQ(b.correct, hits);
  EXPECT_TRUE(b.routing.empty());
  // forward() carries the routing of each MoE layer (layers 0 and 2: layer 1 is dense).
  const TaskForward f = r.model.forward(inputs);
  ASSERT_EQ(f.routing.size(), 2u);
  EXPECT_EQ(f.routing[0].topk_indices.sizes(), (std::vector<std::int64_t>{12, 2}));
  EXPECT_EQ(f.routing[0].probs.sizes(), (std::vector<std::int64_t>{12, 6}));
  EXPECT_TRUE(torch::equal(f.logits, logits));
  EXPECT_THROW(r.model.batch_loss(inputs, targets.narrow(1, 0, 5)), std::invalid_argument);
}

TEST(TaskModelHF, Bf16LossIsComputedInFloat32) {
  TempDir dir;
  const LoadedRun r = load_run(write_model(dir, "olmoe", DType::BF16));
  EXPECT_EQ(r.model.hf().dtype(), torch::kBFloat16);
  const auto ids = torch::randint(0, r.model.hf().config().vocab_size, {1, 5}, torch::kLong);
  const BatchResult b = r.model.batch_loss(ids, ids);
  EXPECT_EQ(b.loss.scalar_type(), torch::kFloat);
  const auto want = torch::nn::functional::cross_entropy(r.model.hf().forward(ids)[0].to(torch::kFloat), ids[0]);
  EXPECT_EQ(b.loss.item<float>(), want.item<float>());
}

TEST(TaskModelHF, ConfigIdentifiesTheShapeNotTheValues) {
  TempDir dir;
  const auto a = load_run(write_model(dir, "olmoe", DType::F32, "a", 1)).model.config();
  const auto b = load_run(write_model(dir, "olmoe", DType::F32, "b", 2)).model.config();
  const auto c = load_run(write_model(dir, "mixtral", DType::F32, "c", 1)).model.config();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a["type"], "hf");
  EXPECT_EQ(a["architecture"], "OlmoeForCausalLM");
  EXPECT_TRUE(a["tensors"].contains("model.layers.1.mlp.experts.7.down_proj.weight"));
}

TEST(TaskModelHF, EvalDataFromTextAndTokenIds) {
  TempDir dir;
  const std::string path = write_model(dir, "olmoe");
  const LoadedRun r = load_run(path);
  write_text(dir.file("t.txt"), sample_text());
  EvalSpec es;
  es.data = "text:" + dir.file("t.txt");
  es.splits = {"train", "test"};
  es.context = 16;
  es.max_samples = 5;
  const EvalData e = load_eval_data(r, es);
  EXPECT_EQ(e.spec.name, "text");
  EXPECT_EQ(e.spec.context, 16);
  ASSERT_EQ(e.splits.size(), 2u);
  EXPECT_EQ(e.splits[0].size(), 5);
  EXPECT_EQ(e.data.num_classes, r.model.hf().config().vocab_size);
  const auto ids = Tokenizer::from_file(path + "/tokenizer.json").encode(sample_text(), true);
  for (std::int64_t j = 0; j < 16; ++j) {
    EXPECT_EQ(e.splits[0].inputs[1][j].item<std::int64_t>(), ids[static_cast<std::size_t>(16 + j)]);
    EXPECT_EQ(e.splits[0].targets[1][j].item<std::int64_t>(), ids[static_cast<std::size_t>(17 + j)]);
  }
  // The context defaults to 128 for a folder (the text's test split is shorter than one such window).
  es.splits = {"train"};
  es.context = 0;
  es.max_samples = 0;
  EXPECT_EQ(load_eval_data(r, es).spec.context, 128);
  EXPECT_EQ(hf_default_batch_size(es.data, 0), 8);
  EXPECT_EQ(hf_default_batch_size(es.data, 16), 64);
  EXPECT_EQ(hf_default_batch_size(es.data, 4096), 1);

  // Token ids: the same windows from a file.
  std::string txt;
  for (auto id : ids) txt += std::to_string(id) + " ";
  write_text(dir.file("ids.txt"), txt);
  EvalSpec ts;
  ts.data = "tokens:" + dir.file("ids.txt");
  ts.context = 16;
  const EvalData t = load_eval_data(r, ts);
  EXPECT_TRUE(torch::equal(t.splits[0].inputs.narrow(0, 0, 5), e.splits[0].inputs));
}

TEST(TaskModelHF, EvalDataErrorsNameWhatIsWrong) {
  TempDir dir;
  const std::string path = write_model(dir, "mixtral");
  const LoadedRun r = load_run(path);
  EvalSpec es;
  std::string e = input_error_of([&] { load_eval_data(r, es); });  // no data given
  EXPECT_NE(e.find("--data text:PATH"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
  es.data = "fashion-mnist";
  e = input_error_of([&] { load_eval_data(r, es); });
  EXPECT_NE(e.find("Hugging Face model"), std::string::npos) << e;
  write_text(dir.file("ids.txt"), "1 2 3 99999 4");
  es.data = "tokens:" + dir.file("ids.txt");
  e = input_error_of([&] { load_eval_data(r, es); });
  EXPECT_NE(e.find("ids.txt"), std::string::npos) << e;
  EXPECT_NE(e.find("id 99999"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab_size of " + path + "/config.json"), std::string::npos) << e;
  write_text(dir.file("few.txt"), "1 2 3 4 5 6 7 8 9 10");
  es.data = "tokens:" + dir.file("few.txt");
  es.context = 4;
  es.splits = {"valid"};  // round(10 * 0.05) = 1 id: no window
  e = input_error_of([&] { load_eval_data(r, es); });
  EXPECT_NE(e.find("valid split"), std::string::npos) << e;
  // A folder without tokenizer.json reads token ids only.
  std::filesystem::remove(path + "/tokenizer.json");
  write_text(dir.file("t.txt"), sample_text());
  es.data = "text:" + dir.file("t.txt");
  es.splits = {"train"};
  e = input_error_of([&] { load_eval_data(r, es); });
  EXPECT_NE(e.find("--tokens"), std::string::npos) << e;
  // --context on non-text data
  const LoadedRun own_like = r;
  es.data = "clustered";
  e = input_error_of([&] { load_eval_data(own_like, es); });
  EXPECT_NE(e.find("not text"), std::string::npos) << e;
}

TEST(TaskModelHF, BadFoldersAreInputErrorsNamingTheField) {
  TempDir dir;
  const std::string path = write_model(dir, "olmoe");
  auto cfg = nlohmann::json::parse(std::ifstream(path + "/config.json"));
  cfg["architectures"] = {"LlamaForCausalLM"};
  std::ofstream(path + "/config.json") << cfg.dump();
  std::string e = input_error_of([&] { load_run(path); });
  EXPECT_NE(e.find("architectures"), std::string::npos) << e;
  EXPECT_NE(e.find("LlamaForCausalLM"), std::string::npos) << e;
  cfg["architectures"] = {"OlmoeForCausalLM"};
  cfg["intermediate_size"] = 17;
  std::ofstream(path + "/config.json") << cfg.dump();
  e = input_error_of([&] { load_run(path); });
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("config.json implies"), std::string::npos) << e;
  RunLoadOptions o;
  o.trainable = "expert:9.9";
  cfg["intermediate_size"] = 16;
  std::ofstream(path + "/config.json") << cfg.dump();
  e = input_error_of([&] { load_run(path, o); });
  EXPECT_NE(e.find("expert:9.9"), std::string::npos) << e;
}

}  // namespace
}  // namespace moescope
