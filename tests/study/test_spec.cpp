// study/spec: sweep specs read with every mistake named, grids expanded in order with readable folder names.
#include "moescope/study/spec.hpp"

#include <gtest/gtest.h>

#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

nlohmann::ordered_json good() {
  return nlohmann::ordered_json::parse(R"({
    "name": "s", "base": {"model": {"experts": 4}, "train": {"steps": 3}},
    "axes": {"train.regularisers.weight_orth": [0, 0.001, 0.1], "seed": [0, 1]},
    "analyses": {"hessian": {"split": ["train", "test"], "top-k": 3, "keep-graph": true, "eigenvectors": false},
                 "geometry": {},
                 "router_curvature": {"command": "hessian", "params": "router"}},
    "summary": {"pairs": [["mso_mean", "activation_overlap"]], "reference": {"r": "-0.293"}}})");
}

std::string message_of(const nlohmann::ordered_json& j) {
  try {
    parse_sweep_spec(j, "spec.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SweepSpec, ReadsAxesAndAnalysesInTheirOrder) {
  const SweepSpec s = parse_sweep_spec(good(), "spec.json");
  ASSERT_EQ(s.axes.size(), 2u);
  EXPECT_EQ(s.axes[0].key, "train.regularisers.weight_orth");  // the spec's order, not alphabetical
  EXPECT_EQ(s.axes[0].short_name(), "weight_orth");
  EXPECT_EQ(s.strength, "train.regularisers.weight_orth");  // the first numeric axis that is not the seed
  ASSERT_EQ(s.analyses.size(), 3u);
  EXPECT_EQ(s.analyses[0].name, "hessian");
  EXPECT_EQ(s.analyses[1].name, "geometry");
  EXPECT_EQ(s.analyses[2].command, "hessian");
  EXPECT_EQ(s.analyses[0].arguments(),
            (std::vector<std::string>{"--split", "train,test", "--top-k", "3", "--keep-graph"}));
  EXPECT_EQ(s.analyses[2].arguments(), (std::vector<std::string>{"--params", "router"}));
  ASSERT_EQ(s.pairs.size(), 1u);
  EXPECT_EQ(s.reference["r"], "-0.293");
}

TEST(SweepSpec, MistakesAreNamedBeforeAnythingRuns) {
  auto with = [](const std::string& pointer, const nlohmann::ordered_json& v) {
    nlohmann::ordered_json j = good();
    j[nlohmann::ordered_json::json_pointer(pointer)] = v;
    return message_of(j);
  };
  EXPECT_EQ(with("/axis", 1), "spec.json: axis: unknown key (name, description, base, axes, strength, with, analyses, summary, threads)");
  EXPECT_EQ(with("/axes/seed", nlohmann::ordered_json::array()), "spec.json: axes.seed: the axis is empty");
  EXPECT_EQ(with("/axes/seed", 3), "spec.json: axes.seed: an axis is a list of values");
  EXPECT_EQ(with("/axes/seed", nlohmann::ordered_json::parse(R"([0, "one"])")),
            "spec.json: axes.seed: value \"one\" is a string, the axis's first value a number");
  EXPECT_EQ(with("/axes/seed", nlohmann::ordered_json::parse("[1, 1]")), "spec.json: axes.seed: value 1 twice");
  EXPECT_EQ(with("/analyses/hessain", nlohmann::ordered_json::object()).rfind("spec.json: analyses.hessain: unknown command 'hessain'", 0), 0u);
  EXPECT_EQ(with("/analyses/hessian/o", "x.h5"), "spec.json: analyses.hessian.o: the sweep names the report itself");
  EXPECT_EQ(with("/strength", "seed"), "(no error)");  // a numeric axis may be named the strength
  EXPECT_EQ(with("/strength", "model.head"), "spec.json: strength: 'model.head' is not an axis");
  EXPECT_EQ(with("/summary/pairs", nlohmann::ordered_json::parse(R"([["x"]])")),
            "spec.json: summary.pairs: each pair is [\"X\", \"Y\"], got [\"x\"]");
  EXPECT_EQ(with("/summary/columns", nlohmann::ordered_json::parse(R"(["test_acc", 3])")),
            "spec.json: summary.columns: column names are strings, got 3");
  EXPECT_EQ(with("/summary/columns", "test_acc"), "spec.json: summary.columns: a non-empty list of column names");
  EXPECT_EQ(with("/summary/colums", nlohmann::ordered_json::array()),
            "spec.json: summary.colums: unknown key (columns, pairs, reference)");
  EXPECT_EQ(with("/summary/columns", nlohmann::ordered_json::parse(R"(["test_acc", "lambda_1_train"])")), "(no error)");
  nlohmann::ordered_json no_axes = good();
  no_axes.erase("axes");
  EXPECT_EQ(message_of(no_axes), "spec.json: axes: give at least one axis: {\"KEY\": [values]}");
}

TEST(SweepSpec, AxesAreCheckedAgainstTheResolvedConfig) {
  const SweepSpec s = parse_sweep_spec(good(), "spec.json");
  const nlohmann::json resolved = nlohmann::json::parse(
      R"({"seed": 0, "train": {"steps": 3, "regularisers": {"weight_orth": 0.0, "load_balance": 0.01}}, "model": {}})");
  EXPECT_NO_THROW(check_axes_against(s, resolved));
  nlohmann::ordered_json typo = good();
  typo["axes"] = nlohmann::ordered_json::parse(R"({"train.reg.weight_orth": [0, 1]})");
  try {
    check_axes_against(parse_sweep_spec(typo, "spec.json"), resolved);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "spec.json: axes.train.reg.weight_orth: no such key in the run config (did you mean "
                           "train.regularisers.weight_orth?)");
  }
  nlohmann::ordered_json type = good();
  type["axes"] = nlohmann::ordered_json::parse(R"({"train.steps": ["many"]})");
  try {
    check_axes_against(parse_sweep_spec(type, "spec.json"), resolved);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "spec.json: axes.train.steps: value \"many\" is a string, the run config's train.steps is a "
                           "number (3)");
  }
  EXPECT_EQ(*config_value(resolved, "train.regularisers.load_balance"), 0.01);
  EXPECT_EQ(config_value(resolved, "train.nothing"), nullptr);
}

TEST(SweepSpec, TheGridVariesTheLastAxisFastest) {
  const std::vector<SweepPoint> g = expand_grid(parse_sweep_spec(good(), "spec.json"));
  ASSERT_EQ(g.size(), 6u);
  EXPECT_EQ(g[0].name, "weight_orth=0_seed=0");
  EXPECT_EQ(g[1].name, "weight_orth=0_seed=1");
  EXPECT_EQ(g[2].name, "weight_orth=0.001_seed=0");
  EXPECT_EQ(g[5].name, "weight_orth=0.1_seed=1");
  EXPECT_EQ(g[3].config["train"]["regularisers"]["weight_orth"], 0.001);
  EXPECT_EQ(g[3].config["seed"], 1);
  EXPECT_EQ(g[3].config["train"]["steps"], 3);  // the base is kept
  // Two axes with one short name use their whole keys; characters a folder should not hold are replaced.
  nlohmann::ordered_json j = good();
  j["axes"] = nlohmann::ordered_json::parse(R"({"model.experts": [4], "train.experts": [2], "model.head": ["a b"]})");
  const auto h = expand_grid(parse_sweep_spec(j, "spec.json"));
  EXPECT_EQ(h[0].name, "model.experts=4_train.experts=2_head=a_b");
  j["axes"] = nlohmann::ordered_json::parse(R"({"model.head": ["a b", "a_b"]})");
  EXPECT_THROW(expand_grid(parse_sweep_spec(j, "spec.json")), InputError);
}

TEST(SweepSpec, SettingsGoWithAnAxisValue) {
  // Heads of matched size: the dense head is 8x wider than each expert; the table keeps the head axis alone.
  nlohmann::ordered_json j = good();
  j["axes"] = nlohmann::ordered_json::parse(R"({"model.head": ["dense", "sparse"], "seed": [0, 1]})");
  j["with"] = nlohmann::ordered_json::parse(
      R"({"model.head": {"dense": {"model.head_hidden": 512, "model.dropout": 0.1},
                          "sparse": {"model.noisy": true}},
          "seed": {"1": {"train.steps": 5}}})");
  const SweepSpec s = parse_sweep_spec(j, "spec.json");
  const auto g = expand_grid(s);
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(g[0].name, "head=dense_seed=0");
  EXPECT_EQ(g[0].config["model"]["head_hidden"], 512);
  EXPECT_EQ(g[0].config["model"]["dropout"], 0.1);
  EXPECT_EQ(g[0].config["model"]["experts"], 4);  // the base is kept
  EXPECT_FALSE(g[0].config["model"].contains("noisy"));
  EXPECT_EQ(g[0].config["train"]["steps"], 3);
  EXPECT_EQ(g[1].config["train"]["steps"], 5);  // a numeric value is matched by its text
  EXPECT_EQ(g[2].config["model"]["noisy"], true);
  EXPECT_FALSE(g[2].config["model"].contains("head_hidden"));
  // Its keys are checked like the axes'.
  const nlohmann::json resolved = nlohmann::json::parse(
      R"({"seed": 0, "train": {"steps": 3}, "model": {"head": "sparse", "head_hidden": 64, "dropout": 0.0,
          "noisy": false, "experts": 4}})");
  EXPECT_NO_THROW(check_axes_against(s, resolved));
  j["with"]["model.head"]["dense"]["model.head_hiden"] = 3;
  try {
    check_axes_against(parse_sweep_spec(j, "spec.json"), resolved);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "spec.json: with.model.head.dense.model.head_hiden: no such key in the run config");
  }
  j["with"]["model.head"]["dense"].erase("model.head_hiden");
  j["with"]["model.head"]["dense"]["model.dropout"] = "high";
  try {
    check_axes_against(parse_sweep_spec(j, "spec.json"), resolved);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "spec.json: with.model.head.dense.model.dropout: value \"high\" is a string, the run "
                           "config's model.dropout is a number (0.0)");
  }
  // Structural mistakes.
  auto message = [&](const char* with) {
    nlohmann::ordered_json k = good();
    k["axes"] = nlohmann::ordered_json::parse(R"({"model.head": ["dense", "sparse"], "seed": [0, 1]})");
    k["with"] = nlohmann::ordered_json::parse(with);
    return message_of(k);
  };
  EXPECT_EQ(message(R"({"model.heads": {"dense": {"model.experts": 2}}})"),
            "spec.json: with.model.heads: 'model.heads' is not an axis");
  EXPECT_EQ(message(R"({"model.head": {"soft": {"model.experts": 2}}})"),
            "spec.json: with.model.head.soft: 'soft' is not a value of the axis");
  EXPECT_EQ(message(R"({"model.head": {"dense": {"seed": 2}}})"),
            "spec.json: with.model.head.dense.seed: is an axis: an axis value cannot also be set with another");
  EXPECT_EQ(message(R"({"model.head": {"dense": {}}})"),
            "spec.json: with.model.head.dense: an object {\"KEY\": value, ...} of run-config keys");
  EXPECT_EQ(message(R"({"model.head": {"dense": {"name": "x"}}})"),
            "spec.json: with.model.head.dense.name: the sweep sets this key itself");
}

TEST(SweepSpec, WhenLimitsAnAnalysisToSomeCoordinates) {
  nlohmann::ordered_json j = good();
  j["analyses"]["geometry"]["when"] = nlohmann::ordered_json::parse(R"({"train.regularisers.weight_orth": [0.1, 0]})");
  const SweepSpec s = parse_sweep_spec(j, "spec.json");
  const AnalysisSpec& g = s.analyses[1];
  EXPECT_TRUE(g.arguments().empty());
  const auto grid = expand_grid(s);  // weight_orth 0, 0.001, 0.1 x seed 0, 1
  std::vector<bool> runs;
  for (const auto& p : grid) runs.push_back(analysis_applies(g, s, p));
  EXPECT_EQ(runs, (std::vector<bool>{true, true, false, false, true, true}));
  EXPECT_TRUE(analysis_applies(s.analyses[0], s, grid[2]));  // no "when": everywhere
  auto message = [&](const char* when) {
    nlohmann::ordered_json k = good();
    k["analyses"]["geometry"]["when"] = nlohmann::ordered_json::parse(when);
    return message_of(k);
  };
  EXPECT_EQ(message(R"({"model.head": ["dense"]})"), "spec.json: analyses.geometry.when.model.head: 'model.head' is not an axis");
  EXPECT_EQ(message(R"({"seed": [2]})"), "spec.json: analyses.geometry.when.seed: value 2 is not a value of the axis");
  EXPECT_EQ(message(R"({"seed": []})"), "spec.json: analyses.geometry.when.seed: a non-empty list of the axis's values");
  EXPECT_EQ(message(R"([1])"), "spec.json: analyses.geometry.when: an object {\"AXIS KEY\": [values], ...}");
}

TEST(SweepSpec, AnAxisThatIsNoConfigKeyIsALabel) {
  nlohmann::ordered_json j = good();
  j["axes"] = nlohmann::ordered_json::parse(R"({"optimizer": ["adamw", "omoe-5"], "seed": [0]})");
  j["with"] = nlohmann::ordered_json::parse(
      R"({"optimizer": {"adamw": {"train.optim.name": "adamw"},
                         "omoe-5": {"train.optim.omoe.enabled": true, "train.optim.omoe.skip": 5}}})");
  const SweepSpec s = parse_sweep_spec(j, "spec.json");
  EXPECT_TRUE(s.axes[0].label);
  EXPECT_FALSE(s.axes[1].label);  // seed is a run-config key
  const auto g = expand_grid(s);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[1].name, "optimizer=omoe-5_seed=0");
  EXPECT_FALSE(g[1].config.contains("optimizer"));  // a label sets nothing itself
  EXPECT_EQ(g[1].config["train"]["optim"]["omoe"]["skip"], 5);
  EXPECT_EQ(g[0].config["train"]["optim"]["name"], "adamw");
  const nlohmann::json resolved = nlohmann::json::parse(
      R"({"seed": 0, "train": {"steps": 3, "optim": {"name": "adamw", "omoe": {"enabled": false, "skip": 2}}}})");
  EXPECT_NO_THROW(check_axes_against(s, resolved));
  j["with"]["optimizer"].erase("omoe-5");
  EXPECT_EQ(message_of(j), "spec.json: axes.optimizer: 'optimizer' is no run-config key, so it is a label axis, and "
                           "its value 'omoe-5' needs settings in with.optimizer");
}

}  // namespace
}  // namespace moescope
