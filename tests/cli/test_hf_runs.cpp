// Hugging Face model folders as runs, end to end through the CLI: `activations`, `hessian` and `landscape` on the
// synthetic Mixtral, OLMoE and Qwen2-MoE folders `moescope synth FAMILY --model` writes, with text data encoded by the
// folder's tokenizer.json; their layer keys against `geometry`; `compare-spaces`; interpolation between two
// folders; `plot` drawing every report; and the bad inputs a user can give, each one line and exit 2.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moescope/io/report.hpp"
#include "support/expect_error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

namespace fs = std::filesystem;
using testing::run_moescope;
using testing::TempDir;

std::string write_corpus(const TempDir& dir) {
  std::string t;
  for (int i = 0; i < 80; ++i)
    t += "the cat sat on the mat and then the dog ran to the door; it is an old story " + std::to_string(i) + ".\n";
  const std::string p = dir.file("corpus.txt");
  testing::write_text(p, t);
  return p;
}

std::string synth(const TempDir& dir, const std::string& family, const std::string& name, const std::string& seed) {
  const std::string out = dir.file(name);
  const auto r = run_moescope({"synth", family, "--model", "-o", out, "--seed", seed});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

bool have_plot_python() { return std::system("/usr/bin/python3 -c 'import h5py, matplotlib, numpy' >/dev/null 2>&1") == 0; }

class HFRunsCli : public ::testing::TestWithParam<std::string> {};

TEST_P(HFRunsCli, ActivationsHessianLandscapeAndPlots) {
  const std::string family = GetParam();
  TempDir dir;
  const std::string model = synth(dir, family, "model", "3");
  const std::string text = "text:" + write_corpus(dir);

  // activations with the weight side, and the keys geometry gives the same folder
  const std::string act = dir.file("a.h5");
  auto r = run_moescope({"--threads", "1", "activations", model, "--data", text, "--context", "16", "--max-tokens", "96",
                         "--geometry", "-o", act});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string geo = dir.file("g.h5");
  ASSERT_EQ(run_moescope({"geometry", model, "-o", geo}).exit_code, 0);
  std::vector<std::string> keys;
  {
    ReportReader a(act), g(geo);
    keys = a.list("/activations");
    std::vector<std::string> gkeys = g.list("/geometry");
    ASSERT_FALSE(keys.empty());
    EXPECT_EQ(keys, gkeys);
    EXPECT_EQ(std::get<std::string>(a.attr("/activations", "inputs")), "data");
    EXPECT_NE(std::get<std::string>(a.attr("/activations", "data")).find("\"text\""), std::string::npos);
    for (const auto& k : keys) {
      EXPECT_EQ(a.read_scalar("/activations/" + k + "/tokens"), 96) << k;
      EXPECT_EQ(std::get<std::string>(a.attr("/activations/" + k, "routing_source")), "model");
      EXPECT_EQ(a.exists("/activations/" + k + "/shared_expert/overlap"), family == "qwen2-moe") << k;
      EXPECT_TRUE(a.exists("/compare_spaces/" + k + "/pearson_r")) << k;
    }
  }
  r = run_moescope({"compare-spaces", act, "--geometry", geo, "-o", dir.file("c.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // the Hessian of one expert of the last MoE layer, and a surface over the same expert
  const std::string last = keys.back();  // "layer_NN"
  const std::string expert = "expert:" + std::to_string(std::stoi(last.substr(6))) + ".0";
  const std::string hes = dir.file("h.h5");
  r = run_moescope({"--threads", "1", "hessian", model, "--data", text, "--context", "16", "--max-samples", "4",
                    "--params", expert, "--top-k", "2", "--trace", "hutchinson", "--probes", "4", "-o", hes});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string land = dir.file("l.h5");
  r = run_moescope({"--threads", "1", "landscape", model, "--data", text, "--context", "16", "--max-samples", "4",
                    "--params", expert, "--dirs", "filter", "--x", "-1:1:5", "-o", land});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {
    ReportReader h(hes), l(land);
    EXPECT_EQ(h.read("/hessian/train/eigenvalues").size(), 2u);
    EXPECT_TRUE(h.exists("/hessian/train/trace"));
    const auto names = h.read_strings("/hessian/train/param_names");
    ASSERT_EQ(names.size(), 3u);
    for (const auto& n : names) EXPECT_NE(n.find(".experts.0."), std::string::npos) << n;
    // The surface's centre is the weights' own loss, the loss the Hessian is of (same windows, float32 both).
    const auto loss = l.read("/landscape/train_loss");
    ASSERT_EQ(loss.size(), 5u);
    EXPECT_NEAR(loss[2], h.read_scalar("/hessian/train/loss"), 1e-5 * loss[2]);
    EXPECT_TRUE(l.exists("/landscape/train_ppl"));
    // the surface spans the same parameters as the Hessian
    EXPECT_EQ(std::get<std::int64_t>(l.attr("/landscape", "parameter_count")),
              std::get<std::int64_t>(h.attr("/hessian/train", "parameters")));
  }

  if (!have_plot_python()) GTEST_SKIP() << "/usr/bin/python3 with h5py, matplotlib and numpy is not installed";
  r = run_moescope({"plot", act, hes, land, "-o", dir.file("fig")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::size_t figures = 0;
  for (const auto& e : fs::directory_iterator(dir.file("fig"))) figures += e.path().extension() == ".png";
  EXPECT_GE(figures, 3u);
}

INSTANTIATE_TEST_SUITE_P(Families, HFRunsCli, ::testing::Values("mixtral", "olmoe", "qwen2-moe"),
                         testing::DashFreeName());

// Interpolating all weights from one folder to another: a = 1 is the second model's loss.
TEST(HFRunsCliInterpolation, TheFarEndIsTheOtherModel) {
  TempDir dir;
  const std::string a = synth(dir, "olmoe", "a", "1"), b = synth(dir, "olmoe", "b", "2");
  const std::string text = "text:" + write_corpus(dir);
  auto r = run_moescope({"landscape", a, "--dirs", b, "--x", "0:1:2", "--data", text, "--context", "16",
                         "--max-samples", "3", "-o", dir.file("i.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_moescope({"landscape", b, "--dirs", "random", "--x", "0:0:1", "--data", text, "--context", "16",
                    "--max-samples", "3", "-o", dir.file("b.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ReportReader i(dir.file("i.h5")), c(dir.file("b.h5"));
  EXPECT_EQ(std::get<std::string>(i.attr("/landscape", "dirs")), "interpolation");
  // w_a + 1 * (w_b - w_a) in float32 is w_b to an ulp or so: the losses agree to float32 rounding.
  EXPECT_NEAR(i.read("/landscape/train_loss")[1], c.read("/landscape/train_loss")[0], 1e-5);
  // A folder of another shape is refused.
  const std::string m = synth(dir, "mixtral", "m", "1");
  r = run_moescope({"landscape", a, "--dirs", m, "--x", "0:1:2", "--data", text, "--context", "16",
                    "--max-samples", "3", "-o", dir.file("x.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(testing::line_count(r.err), 1) << r.err;
}

// --dtype converts the weights once: activations say the dtype they ran in; the Hessian's loss in float64 and in its
// float32 default agree to float32 rounding; --tokens gives the ids directly; an unknown dtype is refused.
TEST(HFRunsCliDtype, ActivationsAndHessianInTheRequestedDtype) {
  TempDir dir;
  const std::string model = synth(dir, "olmoe", "model", "5");  // float32 weights
  const std::string text = "text:" + write_corpus(dir);
  for (const auto& [flag, name] : std::vector<std::pair<std::string, std::string>>{{"bf16", "BFloat16"},
                                                                                   {"f64", "Double"}}) {
    const std::string out = dir.file("a_" + flag + ".h5");
    const auto r = run_moescope({"--threads", "1", "activations", model, "--data", text, "--context", "16",
                                 "--max-tokens", "48", "--dtype", flag, "-o", out});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ReportReader a(out);
    EXPECT_NE(std::get<std::string>(a.attr("/activations", "description")).find(name), std::string::npos) << flag;
  }
  std::string ids;
  for (int i = 0; i < 400; ++i) ids += std::to_string((i * 37 + 11) % 200) + (i % 20 == 19 ? "\n" : " ");
  testing::write_text(dir.file("ids.txt"), ids);
  double losses[2] = {0, 0};
  int i = 0;
  for (const std::string flag : {"f32", "f64"}) {
    const std::string out = dir.file("h_" + flag + ".h5");
    std::vector<std::string> args{"--threads", "1", "hessian", model, "--tokens", dir.file("ids.txt"), "--context",
                                  "16", "--max-samples", "3", "--params", "expert:1.0", "--top-k", "1", "-o", out};
    if (flag == "f64") args.insert(args.end() - 2, {"--dtype", "f64"});
    const auto r = run_moescope(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    losses[i++] = ReportReader(out).read_scalar("/hessian/train/loss");
  }
  // float32 forward of float32 weights against the same weights widened to float64: relative rounding ~1e-6
  EXPECT_NEAR(losses[0], losses[1], 1e-5 * losses[1]);
  const auto r = run_moescope({"hessian", model, "--tokens", dir.file("ids.txt"), "--dtype", "f16", "-o",
                               dir.file("x.h5")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(testing::line_count(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--dtype"), std::string::npos) << r.err;
}

// Each bad input is one line naming the file (and the field), exit 2.
TEST(HFRunsCliErrors, OneLineNamingTheFileAndField) {
  TempDir dir;
  const std::string model = synth(dir, "mixtral", "model", "3");
  const std::string text = "text:" + write_corpus(dir);
  auto expect_error = [&](const std::vector<std::string>& args, const std::vector<std::string>& needles) {
    const auto r = run_moescope(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(testing::line_count(r.err), 1) << r.err;
    for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "'" << n << "' not in: " << r.err;
  };
  // no data for a folder
  expect_error({"activations", model, "-o", dir.file("x.h5")}, {model, "--data text:PATH", "--tokens"});
  expect_error({"hessian", model, "-o", dir.file("x.h5")}, {model, "--data text:PATH"});
  // data a folder cannot read, and both --data and --tokens
  expect_error({"landscape", model, "--dirs", "random", "--x", "0:1:2", "--data", "fashion-mnist", "-o",
                dir.file("x.h5")},
               {"fashion-mnist", "Hugging Face"});
  testing::write_text(dir.file("ids.txt"), "1 2 3 4 5 6 7 8 9 10 11 99999 12 13 14 15 16 17 18 19 20");
  expect_error({"activations", model, "--data", text, "--tokens", dir.file("ids.txt"), "-o", dir.file("x.h5")},
               {"--tokens"});
  // token ids out of range
  expect_error({"activations", model, "--tokens", dir.file("ids.txt"), "--context", "4", "-o", dir.file("x.h5")},
               {dir.file("ids.txt"), "id 99999", "vocab_size", model + "/config.json"});
  expect_error({"hessian", model, "--tokens", dir.file("ids.txt"), "--context", "4", "-o", dir.file("x.h5")},
               {dir.file("ids.txt"), "id 99999", "vocab_size"});

  auto edit = [&](const std::string& name, const std::function<void(nlohmann::json&)>& change) {
    const std::string copy = dir.file(name);
    fs::copy(model, copy, fs::copy_options::recursive);
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(copy + "/config.json"));
    change(cfg);
    std::ofstream(copy + "/config.json") << cfg.dump();
    return copy;
  };
  // an unknown architecture
  const std::string llama = edit("llama", [](nlohmann::json& c) { c["architectures"] = {"LlamaForCausalLM"}; });
  expect_error({"activations", llama, "--data", text, "-o", dir.file("x.h5")},
               {llama + "/config.json", "architectures", "LlamaForCausalLM"});
  // shapes that disagree with the weights
  const std::string wide = edit("wide", [](nlohmann::json& c) { c["intermediate_size"] = 50; });
  expect_error({"hessian", wide, "--data", text, "-o", dir.file("x.h5")},
               {wide + "/model.safetensors", "tensor 'model.layers.0.block_sparse_moe.experts.0.w1.weight'",
                "config.json implies [50, 32]"});
  // a missing tensor
  const std::string deep = edit("deep", [](nlohmann::json& c) { c["num_hidden_layers"] = 3; });
  expect_error({"landscape", deep, "--dirs", "random", "--x", "0:1:2", "--data", text, "-o", dir.file("x.h5")},
               {"model.layers.2.", "is missing", deep + "/config.json"});
  // a parameter subset the model does not have
  expect_error({"hessian", model, "--data", text, "--params", "expert:7.0", "-o", dir.file("x.h5")},
               {"expert:7.0"});
}

}  // namespace
}  // namespace moescope
