// The measured statement: on the synthetic clustered task, training a softmax-gated mixture of K experts
// makes the experts' outputs on the same tokens less alike than at initialisation.
#include <gtest/gtest.h>

#include <iostream>

#include "moescope/metrics/activations_torch.hpp"
#include "moescope/train/trainer.hpp"
#include "support/fixtures.hpp"

using namespace moescope;

// Gated head (every expert sees every token, so the comparison is not confounded by routing), 4 experts for 4
// clusters, 600 AdamW steps (test accuracy 0.65 over 10 classes, chance 0.1). Measured here: activation MSO (mean
// squared cosine of two experts' outputs on the same token, the statistic the geometry papers use) 0.130 at
// initialisation, 0.092 trained. The assertion is the direction of that change, not a fixed number. The mean
// signed cosine moves the other way (0.016 -> 0.135): at initialisation the cosines scatter around 0 with a large
// spread, after training they are fewer in magnitude but biased positive, so "lower overlap" holds for MSO and not
// for the signed mean; both are printed. In another setup (16-d, 15 epochs, no backbone) a helper measured both
// falling for the gated head and both rising for a top-2 sparse head: the statement is made for MSO and the gated
// head only.
TEST(ActivationsTrained, GatedExpertsDivergeOnTheClusteredTask) {
  moescope::testing::TempDir dir;
  RunConfig c;
  c.name = "spec";
  c.out_dir = dir.path();
  c.seed = 3;
  c.data.name = "clustered";
  c.data.clustered.samples = 3000;
  c.data.clustered.dim = 16;
  c.data.clustered.clusters = 4;
  c.data.clustered.classes = 10;
  c.model = {{"type", "classifier"}, {"backbone", "mlp"}, {"backbone_widths", {64}}, {"head", "gated"},
             {"head_hidden", 32},    {"experts", 4}};
  c.train.steps = 600;
  c.train.batch_size = 64;
  c.train.optim.lr = 3e-3;
  TrainOptions o;
  o.progress_seconds = -1;
  const TrainResult r = train_run(c, o);
  ASSERT_TRUE(r.finished);
  EXPECT_GT(r.test.accuracy, 0.4);

  ActivationsOptions ao;
  ao.batch_size = 256;
  const LoadedRun init = load_run(r.run_dir + "/step_0");
  const LoadedRun trained = load_run(r.last_checkpoint);
  const TaskData data = load_task_data(trained.data);
  const ActivationsResult a0 = model_activations(init.model, data.test, ao);
  const ActivationsResult a1 = model_activations(trained.model, data.test, ao);
  ASSERT_EQ(a0.layers.size(), 1u);
  ASSERT_EQ(a1.layers.size(), 1u);
  EXPECT_LT(a1.layers[0].overlap.mso, a0.layers[0].overlap.mso)
      << "init " << a0.layers[0].overlap.mso << " trained " << a1.layers[0].overlap.mso;
  std::cout << "activation MSO init " << a0.layers[0].overlap.mso << " trained " << a1.layers[0].overlap.mso
            << "; mean overlap init " << a0.layers[0].overlap.mean_overlap << " trained "
            << a1.layers[0].overlap.mean_overlap << "\n";
}
