// model/task: the model wrapper, evaluation, opening a run and its evaluation data.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "moescope/io/weights_torch.hpp"
#include "moescope/model/task.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace fs = std::filesystem;
using namespace moescope;

namespace {

DataSpec small_clustered() { return moescope::testing::clustered_data(500, 6, 3, 4, 3); }

nlohmann::json small_classifier(const char* head) {
  return {{"type", "classifier"}, {"backbone", "mlp"},   {"head", head},    {"in_channels", 6},
          {"image_size", 1},      {"num_classes", 4},    {"backbone_widths", {16}}, {"head_hidden", 8},
          {"experts", 4},         {"top_k", 2}};
}

}  // namespace

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
  const Dataset d = load_dataset(small_clustered());
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
  save_module_weights(a.module(), (run / "step_12" / "model.safetensors").string());
  save_module_weights(TaskModel::create(cfg).module(), (run / "step_5" / "model.safetensors").string());
  nlohmann::json rc{{"name", "t"}, {"seed", 0}, {"model", cfg}, {"data", small_clustered()}};
  std::ofstream((run / "config.json").string()) << rc.dump();
  ASSERT_TRUE(moescope::Run::is_run(run.string()));
  const LoadedRun r = load_run(run.string());
  EXPECT_EQ(r.run.step(), 12);
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
  EXPECT_FALSE(moescope::Run::is_run(dir.path()));
}
