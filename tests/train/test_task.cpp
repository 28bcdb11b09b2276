// train/task: data specs, tensor splits, the model wrapper, evaluation and weight round trips.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "moescope/data/image.hpp"
#include "moescope/train/task.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace fs = std::filesystem;
using namespace moescope;

namespace {

DataSpec small_clustered() {
  DataSpec s;
  s.name = "clustered";
  s.clustered.samples = 500;
  s.clustered.dim = 6;
  s.clustered.clusters = 3;
  s.clustered.classes = 4;
  s.seed = 3;
  return s;
}

nlohmann::json small_classifier(const char* head) {
  return {{"type", "classifier"}, {"backbone", "mlp"},   {"head", head},    {"in_channels", 6},
          {"image_size", 1},      {"num_classes", 4},    {"backbone_widths", {16}}, {"head_hidden", 8},
          {"experts", 4},         {"top_k", 2}};
}

}  // namespace

TEST(TaskData, DataSpecJsonRoundTripAndErrors) {
  DataSpec s = small_clustered();
  s.max_eval = 7;
  nlohmann::json j = s;
  const DataSpec back = j.get<DataSpec>();
  EXPECT_EQ(nlohmann::json(back), j);
  EXPECT_THROW((nlohmann::json{{"name", "mnist"}}.get<DataSpec>()), InputError);
  EXPECT_THROW((nlohmann::json{{"nmae", "cifar10"}}.get<DataSpec>()), InputError);
  EXPECT_THROW((nlohmann::json{{"valid_fraction", 1.0}}.get<DataSpec>()), InputError);
}

TEST(TaskData, ParseDataArg) {
  const DataSpec base = small_clustered();
  EXPECT_EQ(nlohmann::json(parse_data_arg("", base)), nlohmann::json(base));
  const DataSpec c = parse_data_arg("cifar10:/x/y", base);
  EXPECT_EQ(c.name, "cifar10");
  EXPECT_EQ(c.path, "/x/y");
  EXPECT_EQ(c.seed, base.seed);
  EXPECT_THROW(parse_data_arg("imagenet", base), InputError);
  moescope::testing::TempDir dir;
  const std::string f = dir.file("d.json");
  std::ofstream(f) << R"({"name": "text-byte", "path": "corpus.txt", "context": 9})";
  const DataSpec t = parse_data_arg(f, base);
  EXPECT_EQ(t.name, "text-byte");
  EXPECT_EQ(t.context, 9);
  std::ofstream(f) << R"({"name": )";
  EXPECT_THROW(parse_data_arg(f, base), InputError);
}

TEST(TaskData, ClusteredSplitsAreDisjointDeterministicAndSized) {
  DataSpec s = small_clustered();
  const TaskData a = load_task_data(s);
  const TaskData b = load_task_data(s);
  EXPECT_EQ(a.train.size() + a.valid.size(), 500);
  EXPECT_EQ(a.valid.size(), 50);  // round(500 * 0.1)
  EXPECT_EQ(a.test.size(), 100);  // a further 20% generated after train
  EXPECT_EQ(a.input_shape, std::vector<std::int64_t>{6});
  EXPECT_EQ(a.num_classes, 4);
  EXPECT_TRUE(torch::equal(a.train.inputs, b.train.inputs));
  EXPECT_TRUE(a.train.groups.defined());
  EXPECT_LT(a.train.groups.max().item<std::int64_t>(), 3);
  // Test samples are not train samples (distinct rows of a continuous distribution).
  const auto d = torch::cdist(a.test.inputs, a.train.inputs);
  EXPECT_GT(d.min().item<float>(), 1e-6);
  s.max_train = 40;
  s.max_eval = 10;
  const TaskData c = load_task_data(s);
  EXPECT_EQ(c.train.size(), 40);
  EXPECT_EQ(c.valid.size(), 10);
  EXPECT_EQ(c.test.size(), 10);
  EXPECT_TRUE(torch::equal(c.train.inputs, a.train.inputs.slice(0, 0, 40)));
}

TEST(TaskData, TextWindowsShiftTargetsByOne) {
  moescope::testing::TempDir dir;
  const std::string f = dir.file("corpus.txt");
  std::string text;
  for (int i = 0; i < 400; ++i) text += static_cast<char>('a' + i % 26);
  std::ofstream(f) << text;
  DataSpec s;
  s.name = "text-byte";
  s.path = f;
  s.context = 8;
  const TaskData d = load_task_data(s);
  EXPECT_TRUE(d.is_text);
  EXPECT_EQ(d.num_classes, 256);
  ASSERT_GT(d.train.size(), 0);
  // 400 bytes, 5% valid and 5% test at the end: train = 360 bytes -> (360 - 1) / 8 = 44 windows.
  EXPECT_EQ(d.train.size(), 44);
  EXPECT_TRUE(torch::equal(d.train.inputs.reshape({-1}).slice(0, 1), d.train.targets.reshape({-1}).slice(0, 0, -1)));
  EXPECT_EQ(d.train.inputs[0][0].item<std::int64_t>(), 'a');
  EXPECT_EQ(d.train.targets[0][0].item<std::int64_t>(), 'b');
}

TEST(TaskData, FashionMnistIsStandardised) {
  if (!fs::exists(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  DataSpec s;
  s.max_train = 2000;
  s.max_eval = 100;
  const TaskData d = load_task_data(s);
  EXPECT_EQ(d.input_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(d.train.size(), 2000);
  EXPECT_NEAR(d.train.inputs.mean().item<double>(), 0.0, 1e-5);
  EXPECT_NEAR(d.train.inputs.std(false).item<double>(), 1.0, 1e-4);
  EXPECT_GT(d.mean[0], 0.2);  // Fashion-MNIST's mean pixel is about 0.286
  EXPECT_LT(d.mean[0], 0.4);
}

TEST(TaskModel, ClassifierLossMatchesHandComputedCrossEntropy) {
  torch::manual_seed(0);
  const TaskModel m = TaskModel::create(small_classifier("sparse"));
  EXPECT_FALSE(m.is_lm());
  const auto x = torch::randn({5, 6});
  const auto y = torch::tensor({0, 1, 2, 3, 0}, torch::kInt64);
  m.module().eval();
  const BatchResult r = m.batch_loss(x, y);
  const auto logits = m.forward(x).logits;
  const auto logp = torch::log_softmax(logits, 1);
  double ce = 0;
  std::int64_t hits = 0;
  for (int i = 0; i < 5; ++i) {
    ce -= logp[i][y[i].item<std::int64_t>()].item<double>() / 5.0;
    hits += logits[i].argmax().item<std::int64_t>() == y[i].item<std::int64_t>();
  }
  EXPECT_NEAR(r.loss.item<double>(), ce, 1e-6);
  EXPECT_EQ(r.correct, hits);
  EXPECT_EQ(r.count, 5);
  ASSERT_EQ(r.routing.size(), 1u);
  const auto layers = m.moe_layers();
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].prefix, "head");
  EXPECT_EQ(layers[0].experts->size(), 4u);
  EXPECT_EQ(m.config(), TaskModel::create(m.config()).config());
  EXPECT_THROW(TaskModel::create({{"type", "gan"}}), InputError);
}

TEST(TaskModel, LmLayersFollowBlockNumbers) {
  const TaskModel m = TaskModel::create(
      {{"type", "lm"}, {"vocab_size", 20}, {"context", 8}, {"dim", 16}, {"layers", 4}, {"heads", 2},
       {"ffn_hidden", 32}, {"moe_every", 2}, {"experts", 3}, {"top_k", 1}});
  EXPECT_TRUE(m.is_lm());
  const auto layers = m.moe_layers();
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].index, 1);
  EXPECT_EQ(layers[1].prefix, "blocks.3.moe");
  const auto x = torch::randint(0, 20, {2, 8}, torch::kInt64);
  const BatchResult r = m.batch_loss(x, x);
  EXPECT_EQ(r.count, 16);
  EXPECT_EQ(r.routing.size(), 2u);
}

TEST(TaskModel, EvaluateDoesNotDependOnBatchSize) {
  torch::manual_seed(1);
  const TaskModel m = TaskModel::create(small_classifier("gated"));
  const TaskData d = load_task_data(small_clustered());
  m.module().train();
  const EvalResult a = evaluate(m, d.test, 7);
  const EvalResult b = evaluate(m, d.test, 100);
  EXPECT_TRUE(m.module().is_training());  // mode restored
  EXPECT_EQ(a.count, 100);
  // Sums of the same per-sample losses in other groupings: float32 rounding only.
  EXPECT_NEAR(a.loss, b.loss, 1e-6 * std::abs(b.loss));
  EXPECT_DOUBLE_EQ(a.accuracy, b.accuracy);
  EXPECT_NEAR(a.perplexity, std::exp(a.loss), 1e-9 * a.perplexity);
}

TEST(TaskModel, WeightsRoundTripAndLoadRunFindsTheLatestStep) {
  moescope::testing::TempDir dir;
  torch::manual_seed(2);
  nlohmann::json cfg = small_classifier("sparse");
  cfg["backbone"] = "cnn";
  cfg["in_channels"] = 1;
  cfg["image_size"] = 8;
  cfg["backbone_widths"] = {4, 4};
  const TaskModel a = TaskModel::create(cfg);
  const fs::path run = fs::path(dir.path()) / "run";
  fs::create_directories(run / "step_5");
  fs::create_directories(run / "step_12");
  save_weights(a, (run / "step_12" / "model.safetensors").string());
  save_weights(TaskModel::create(cfg), (run / "step_5" / "model.safetensors").string());
  nlohmann::json rc{{"name", "t"}, {"seed", 0}, {"model", cfg}, {"data", small_clustered()}};
  std::ofstream((run / "config.json").string()) << rc.dump();
  ASSERT_TRUE(is_run_path(run.string()));
  const LoadedRun r = load_run(run.string());
  EXPECT_EQ(r.step, 12);
  EXPECT_EQ(r.data.name, "clustered");
  EXPECT_FALSE(r.model.module().is_training());
  const auto pa = a.module().named_parameters();
  const auto pb = r.model.module().named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  const auto ba = a.module().named_buffers();
  const auto bb = r.model.module().named_buffers();
  EXPECT_GT(ba.size(), 0u);  // batch norm statistics travel too
  for (const auto& b : ba) EXPECT_TRUE(torch::equal(b.value(), bb[b.key()])) << b.key();

  // A config that does not fit the weights names the file and the tensor.
  cfg["head_hidden"] = 9;
  std::ofstream((run / "step_12" / "config.json").string()) << nlohmann::json{{"model", cfg}}.dump();
  try {
    load_run((run / "step_12").string());
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shape"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_run((fs::path(dir.path()) / "nothing").string()), InputError);
  EXPECT_FALSE(is_run_path(dir.path()));
}
