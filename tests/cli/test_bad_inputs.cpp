// Bad inputs through the command line, as a new user meets them (issue 15): each row runs `moescope` on one broken
// input and checks the exit code and the one line the user sees ("moescope: error: ..." for a refusal, a warning
// line for input that is analysed anyway). Every message must be one line naming the file, flag or key.
// With MOESCOPE_ROBUSTNESS_TABLE=FILE the rows are also written to FILE as the Markdown table of docs/robustness.md,
// with the test's temporary folder shown as DIR.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moescope/io/report.hpp"
#include "moescope/io/safetensors.hpp"
#include "support/fixtures.hpp"
#include "support/runs.hpp"

namespace moescope {
namespace {

namespace fs = std::filesystem;
using namespace testing;  // TempDir, run_moescope, small_checkpoint, write_text, ...

// Rewrites a checkpoint as float32 with `edit(name, values)` applied to each tensor (its shape kept).
void rewrite(const std::string& from, const std::string& to,
             const std::function<void(const std::string&, std::vector<float>&)>& edit) {
  std::vector<TensorInfo> infos;
  std::vector<std::vector<float>> data;
  {
    const SafetensorsFile f(from);
    for (const TensorInfo& t : f.tensors()) {
      std::vector<float> v(static_cast<std::size_t>(t.numel()));
      f.read_f32(t.name, 0, t.numel(), v.data());
      edit(t.name, v);
      infos.push_back(TensorInfo{t.name, DType::F32, t.shape});
      data.push_back(std::move(v));
    }
  }
  std::vector<TensorToWrite> out;
  for (std::size_t i = 0; i < infos.size(); ++i) out.push_back({infos[i], data[i].data()});
  write_safetensors(to, out);
}

// Mixtral-named experts of layer 0 with the given w1 shapes (w2, w3 and the router fitted to the first).
std::string experts_with_shapes(const TempDir& dir, const std::string& name,
                                const std::vector<std::vector<std::int64_t>>& w1_shapes) {
  std::vector<TensorInfo> infos;
  std::vector<std::vector<float>> data;
  const auto add = [&](const std::string& n, std::vector<std::int64_t> shape) {
    infos.push_back(TensorInfo{n, DType::F32, shape});
    data.emplace_back(static_cast<std::size_t>(infos.back().numel()), 0.5f);
  };
  const std::string p = "model.layers.0.block_sparse_moe.";
  add(p + "gate.weight", {static_cast<std::int64_t>(w1_shapes.size()), w1_shapes[0][1]});
  for (std::size_t e = 0; e < w1_shapes.size(); ++e) {
    const std::string ex = p + "experts." + std::to_string(e) + ".";
    add(ex + "w1.weight", w1_shapes[e]);
    add(ex + "w3.weight", w1_shapes[e]);
    add(ex + "w2.weight", {w1_shapes[e][1], w1_shapes[e][0]});
  }
  std::vector<TensorToWrite> out;
  for (std::size_t i = 0; i < infos.size(); ++i) out.push_back({infos[i], data[i].data()});
  const std::string path = dir.file(name);
  write_safetensors(path, out);
  return path;
}

// A small gated-MoE classifier run on the clustered task (as the hessian tests make it).
std::string make_run(const TempDir& dir, const std::string& name) {
  const nlohmann::json model{{"type", "classifier"},   {"backbone", "mlp"},   {"head", "gated"},
                             {"in_channels", 6},       {"image_size", 1},     {"num_classes", 3},
                             {"backbone_widths", {8}}, {"batch_norm", false}, {"head_hidden", 4},
                             {"experts", 2}};
  return write_untrained_run(dir.path(), name, model, clustered_data(300, 6, 2, 3, 5), 31);
}

// A child process holding `path`.tmp open for writing through a ReportWriter until finish() (pipes order the two).
class ReportBeingWritten {
 public:
  explicit ReportBeingWritten(const std::string& path) {
    if (::pipe(ready_) != 0 || ::pipe(go_) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      int code = 0;
      try {
        ReportWriter w(path);
        w.write_scalar("/x", 1.0);
        char c = 1;
        if (::write(ready_[1], &c, 1) != 1 || ::read(go_[0], &c, 1) != 1) code = 3;
      } catch (...) {
        code = 4;
      }
      ::_exit(code);
    }
    char c = 0;
    if (::read(ready_[0], &c, 1) != 1) throw std::runtime_error("the writing child did not start");
  }
  ~ReportBeingWritten() {
    char c = 1;
    if (::write(go_[1], &c, 1) == 1) ::waitpid(pid_, nullptr, 0);
  }

 private:
  int ready_[2], go_[2];
  pid_t pid_ = -1;
};

struct Case {
  std::string input;              // what is wrong, in the user's words (first column of the docs table)
  std::vector<std::string> args;  // the command line
  int exit_code;
  std::string expect;             // a piece of the line the user sees (error or warning)
  std::string env;                // NAME=VALUE set for this run, or ""
  bool busy = false;              // another process holds DIR/busy.h5.tmp open for writing meanwhile
};

// The line of stderr that carries the outcome: "moescope: error: ..." for a refusal, else the first warning.
std::string outcome_line(const CliResult& r) {
  std::istringstream in(r.err);
  std::string line, warning;
  while (std::getline(in, line)) {
    if (line.rfind("moescope: error: ", 0) == 0 || line.rfind("moescope: internal error: ", 0) == 0) return line;
    if (warning.empty() && line.find("[warning]") != std::string::npos) warning = line;
  }
  return warning;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

TEST(BadInputs, EachGivesOneClearLineAndTheRightExitCode_Slow) {
  TempDir dir;
  const std::string d = dir.path();
  const std::string ckpt = small_checkpoint(dir, "mixtral");  // 2 layers x 4 experts, hidden 64, intermediate 96
  const std::string e2 = "model.layers.1.block_sparse_moe.experts.2.w2.weight";

  rewrite(ckpt, dir.file("nan.safetensors"), [&](const std::string& n, std::vector<float>& v) {
    if (n == e2) v[5 * 96 + 7] = std::nanf("");  // w2 is [hidden 64, intermediate 96]: element [5, 7]
  });
  rewrite(ckpt, dir.file("inf.safetensors"), [&](const std::string& n, std::vector<float>& v) {
    if (n == e2) v[0] = -std::numeric_limits<float>::infinity();
  });
  rewrite(ckpt, dir.file("zero.safetensors"), [&](const std::string& n, std::vector<float>& v) {
    if (n.find("layers.0.block_sparse_moe.experts.3.") != std::string::npos) std::fill(v.begin(), v.end(), 0.f);
  });
  experts_with_shapes(dir, "shapes.safetensors", {{3, 4}, {3, 4}, {5, 4}});
  experts_with_shapes(dir, "empty.safetensors", {{0, 4}, {0, 4}});
  {
    std::ofstream f(dir.file("huge_header.safetensors"), std::ios::binary);
    const std::uint64_t n = 200'000'000;  // claims a 200 MB header
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << "{\"a\": {}}";
  }
  {
    const auto bytes = read_bytes(ckpt);
    write_bytes(dir.file("truncated.safetensors"), std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 100));
  }
  write_text(dir.file("notes.safetensors"), "these are my notes, not a checkpoint\n");
  fs::create_directories(dir.file("empty_folder"));
  fs::create_directories(dir.file("two"));
  fs::copy_file(ckpt, dir.file("two/a.safetensors"));
  fs::copy_file(ckpt, dir.file("two/b.safetensors"));
  fs::create_directories(dir.file("index"));
  write_text(dir.file("index/model.safetensors.index.json"),
             R"({"weight_map": {"w": "model-00001-of-00002.safetensors"}})");

  const std::string run = make_run(dir, "run");
  const std::string nan_run = make_run(dir, "nan_run");
  rewrite(nan_run + "/step_0/model.safetensors", nan_run + "/step_0/model.safetensors",
          [](const std::string& n, std::vector<float>& v) {
            if (n == "head.experts.1.fc1.weight") v[3] = std::nanf("");
          });
  const std::string new_run = make_run(dir, "new_run");
  write_text(new_run + "/step_0/state.json", R"({"step": 0, "moescope_version": "2.0.0", "run_format": 2})");

  {
    const std::vector<float> x(12 * 64, 0.25f);
    std::vector<float> nan_x = x;
    nan_x[3 * 64 + 1] = std::nanf("");
    write_safetensors(dir.file("rec_nan.safetensors"), {{{"layer_00.inputs", DType::F32, {12, 64}}, nan_x.data()}});
    write_safetensors(dir.file("rec_empty.safetensors"), {{{"layer_00.inputs", DType::F32, {0, 64}}, x.data()}});
    write_safetensors(dir.file("rec_wrong.safetensors"), {{{"layer_00.inputs", DType::F32, {12, 32}}, x.data()}});
  }
  write_text(dir.file("empty.txt"), "");
  write_text(dir.file("unknown_key.json"), R"({"model": {"type": "classifier", "expertz": 4}})");
  write_text(dir.file("wrong_type.json"), R"({"train": {"steps": "ten"}})");
  write_text(dir.file("not_json.json"), "{\"train\": {\"steps\": 10,}\n");
  ASSERT_EQ(run_moescope({"geometry", ckpt, "-o", dir.file("good.h5")}).exit_code, 0);
  write_text(dir.file("broken.h5"), "\x89HDF\r\n\x1a\n this is not really HDF5");

  const std::string out = dir.file("r.h5");
  const std::vector<Case> cases = {
      // --- checkpoints
      {"a missing checkpoint", {"geometry", dir.file("nope.safetensors"), "-o", out}, 2, "no such file or folder"},
      {"a folder with no checkpoint", {"geometry", dir.file("empty_folder"), "-o", out}, 2,
       "folder holds no .safetensors"},
      {"a folder with two checkpoints", {"geometry", dir.file("two"), "-o", out}, 2,
       "2 candidate checkpoint files"},
      {"a shard index whose shard is missing", {"geometry", dir.file("index"), "-o", out}, 2,
       "shard " + dir.file("index/model-00001-of-00002.safetensors") + ": cannot open"},
      {"a text file named .safetensors", {"geometry", dir.file("notes.safetensors"), "-o", out}, 2,
       "exceeds the limit of 100000000 bytes"},  // its first 8 bytes read as a header length
      {"a safetensors header of 200 MB (limit 100 MB)", {"inspect", dir.file("huge_header.safetensors")}, 2,
       "header length 200000000 exceeds the limit of 100000000 bytes"},
      {"a truncated safetensors file", {"inspect", dir.file("truncated.safetensors")}, 2, "run past the end of the data"},
      {"one NaN in an expert weight (geometry)", {"geometry", dir.file("nan.safetensors"), "-o", out}, 2,
       "tensor '" + e2 + "' (layer_01, expert 2, down): element [5, 7] of the expert's matrix is nan"},
      {"an infinite expert weight (geometry)", {"geometry", dir.file("inf.safetensors"), "-o", out}, 2,
       "element [0, 0] of the expert's matrix is -inf"},
      {"one NaN in an expert weight (activations, random probe)",
       {"activations", dir.file("nan.safetensors"), "--probe", "random", "--max-tokens", "8", "-o", out}, 2,
       "tensor '" + e2 + "' (down): element [5, 7] is nan; activations need finite weights"},
      {"an all-zero expert (geometry: analysed, left out of the MSO)",
       {"geometry", dir.file("zero.safetensors"), "-o", out}, 0,
       "layer_00: expert 3 is all zeros (model.layers.0.block_sparse_moe.experts.3.w2.weight, "
       "model.layers.0.block_sparse_moe.experts.3.w1.weight, model.layers.0.block_sparse_moe.experts.3.w3.weight): "
       "its cosine with any expert is undefined, so it is NaN in overlap and left out of mso and "
       "param_variance_normalized"},
      {"experts of different shapes in one layer", {"geometry", dir.file("shapes.safetensors"), "-o", out}, 2,
       "shapes.safetensors"},
      {"zero-size expert tensors", {"geometry", dir.file("empty.safetensors"), "-o", out}, 2, "hold no values"},
      {"an --expert-pattern that is not a regex", {"geometry", ckpt, "--expert-pattern", "(?<layer>\\d+", "-o", out}, 2,
       "--expert-pattern"},
      {"an --expert-pattern without the named groups", {"geometry", ckpt, "--expert-pattern", "experts", "-o", out}, 2,
       "--expert-pattern"},
      {"an --expert-pattern that matches nothing",
       {"geometry", ckpt, "--expert-pattern", "^foo\\.(?<layer>\\d+)\\.(?<expert>\\d+)\\.(?<matrix>\\w+)$", "-o", out},
       2, "no MoE layers"},
      {"a layer that does not exist", {"geometry", ckpt, "--layers", "7", "-o", out}, 2, "7"},
      {"a layer list that runs backwards", {"geometry", ckpt, "--layers", "3-1", "-o", out}, 2,
       "--layers: range 3-1 runs backwards in '3-1'"},
      {"a layer list that is not numbers", {"geometry", ckpt, "--layers", "first", "-o", out}, 2,
       "--layers: 'first' is not a number in 'first'"},
      {"a matrix the experts do not have", {"geometry", ckpt, "--matrices", "fc9", "-o", out}, 2,
       "experts have no 'fc9' matrix"},
      {"a report folder that does not exist", {"geometry", ckpt, "-o", dir.file("no/such/folder/r.h5")}, 2,
       "cannot create report (No such file or directory)"},
      // --- runs
      {"a checkpoint that is not a run (hessian)", {"hessian", ckpt, "-o", out}, 2, "not a moescope run"},
      {"a run with a NaN weight (hessian)", {"hessian", nan_run, "-o", out}, 2,
       "tensor 'head.experts.1.fc1.weight' holds nan at [0, 3] (1 of "},
      {"a run with a NaN weight (landscape)", {"landscape", nan_run, "--dirs", "random", "--x", "-1:1:3", "-o", out},
       2, "tensor 'head.experts.1.fc1.weight' holds nan"},
      {"a run written by a newer moescope", {"hessian", new_run, "-o", out}, 2,
       "the run was written by moescope 2.0.0 in run format 2; this moescope ("},
      {"a grid of zero points", {"landscape", run, "--dirs", "random", "--x", "-1:1:0", "-o", out}, 2,
       "--x '-1:1:0': COUNT must be at least 1"},
      {"a grid axis that runs backwards", {"landscape", run, "--dirs", "random", "--x", "1:-1:5", "-o", out}, 2,
       "--x '1:-1:5': MIN must be below MAX"},
      {"an unknown split", {"hessian", run, "--split", "dev", "-o", out}, 2, "--split"},
      {"more eigenpairs than parameters", {"hessian", run, "--params", "router", "--top-k", "500", "-o", out}, 2,
       "--top-k"},
      {"an empty recorded-activations file (0 tokens)",
       {"activations", ckpt, "--activations", dir.file("rec_empty.safetensors"), "-o", out}, 2, "no tokens"},
      {"recorded activations of the wrong width",
       {"activations", ckpt, "--activations", dir.file("rec_wrong.safetensors"), "-o", out}, 2,
       "layer_00.inputs is F32 [12, 32], expected a float [tokens, 64] tensor"},
      {"recorded activations holding a NaN",
       {"activations", ckpt, "--activations", dir.file("rec_nan.safetensors"), "-o", out}, 2,
       "tensor 'layer_00.inputs': element [3, 1] is nan; recorded activations must be finite"},
      // --- data and configs
      {"an empty text file as the data", {"train", "--data", "text-byte:" + dir.file("empty.txt"), "--steps", "1",
                                          "--out-dir", dir.file("runs")}, 2, "empty.txt"},
      {"a config with an unknown key", {"train", "--config", dir.file("unknown_key.json"), "--print-config"}, 2,
       "classifier config: unknown field 'expertz'"},
      {"a config value of the wrong type", {"train", "--config", dir.file("wrong_type.json"), "--print-config"}, 2,
       "train config: field 'steps': expected an integer, got \"ten\""},
      {"a config that is not JSON", {"train", "--config", dir.file("not_json.json"), "--print-config"}, 2,
       "not_json.json"},
      // --- reports
      {"a report that is not HDF5", {"correlate", dir.file("notes.safetensors"), dir.file("good.h5"), "--x",
                                     "/geometry/layer_00/mso", "--y", "/geometry/layer_01/mso"}, 2, "not an HDF5 file"},
      {"a damaged report", {"correlate", dir.file("broken.h5"), dir.file("good.h5"), "--x", "/geometry/layer_00/mso",
                            "--y", "/geometry/layer_01/mso"}, 2, "broken.h5"},
      {"a report another process is writing",
       {"correlate", dir.file("busy.h5.tmp"), dir.file("good.h5"), "--x", "/x", "--y", "/geometry/layer_01/mso"}, 2,
       "cannot open report: another process has it open for writing (unable to lock file", "", true},
      // --- resources
      {"a Hessian request larger than the memory", {"hessian", run, "--max-steps", "1000", "-o", out}, 2,
       "hessian (--params all: ", "MOESCOPE_MAX_MEMORY=64K"},
      {"a 2-D grid of 10^10 points", {"landscape", run, "--dirs", "random", "--x", "-1:1:100000", "--y",
                                      "-1:1:100000", "-o", out}, 2, "landscape: needs about "},
      {"a batch larger than the memory",
       {"activations", ckpt, "--probe", "random", "--batch-size", "1000000000", "-o", out}, 2,
       "activations: needs about "},
      {"a MOESCOPE_MAX_MEMORY that is not a size", {"hessian", run, "-o", out}, 2,
       "MOESCOPE_MAX_MEMORY: expected a size such as 8G, 512M or 2000000000 (bytes), or off; got 'lots'",
       "MOESCOPE_MAX_MEMORY=lots"},
  };

  std::ofstream table;
  if (const char* t = std::getenv("MOESCOPE_ROBUSTNESS_TABLE"); t && *t) {
    table.open(t);
    table << "| bad input | command | exit | what the user sees |\n|---|---|---|---|\n";
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.input);
    std::unique_ptr<ReportBeingWritten> busy;
    if (c.busy) busy = std::make_unique<ReportBeingWritten>(dir.file("busy.h5"));
    std::string env_name;
    if (!c.env.empty()) {
      env_name = c.env.substr(0, c.env.find('='));
      ::setenv(env_name.c_str(), c.env.substr(c.env.find('=') + 1).c_str(), 1);
    }
    const CliResult r = run_moescope(c.args);
    if (!env_name.empty()) ::unsetenv(env_name.c_str());
    busy.reset();
    const std::string line = outcome_line(r);
    EXPECT_EQ(r.exit_code, c.exit_code) << r.err;
    EXPECT_NE(line.find(c.expect), std::string::npos) << "line: " << line << "\nstderr: " << r.err;
    if (c.exit_code != 0) {
      EXPECT_EQ(line.rfind("moescope: error: ", 0), 0u) << r.err;  // bad input, not an internal error
      EXPECT_LE(line.size(), 700u) << line;
      EXPECT_FALSE(file_exists(out)) << "a refused command left " << out;
      EXPECT_FALSE(file_exists(out + ".tmp")) << "a refused command left " << out << ".tmp";
    }
    fs::remove(out);
    if (table.is_open()) {
      std::string cmd = "moescope";
      for (const auto& a : c.args) cmd += " " + (a.find_first_of(" ()\\$*?") == std::string::npos ? a : "'" + a + "'");
      if (!c.env.empty()) cmd = c.env + " " + cmd;
      const auto cell = [&](std::string s) { return replace_all(replace_all(replace_all(s, d, "DIR"), "|", "\\|"), "`", "'"); };
      table << "| " << c.input << " | `" << cell(cmd) << "` | " << r.exit_code << " | `" << cell(line) << "` |\n";
    }
  }
}

}  // namespace
}  // namespace moescope
