#include "moescope/io/run.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"
#include "moescope/util/strings.hpp"
#include "moescope/version.hpp"

namespace fs = std::filesystem;

namespace moescope {

std::int64_t step_number(const std::string& dir) {
  const std::string name = fs::path(dir).filename().string();
  if (name.size() <= 5 || name.compare(0, 5, "step_") != 0 || name.size() > 5 + 18) return -1;
  if (name.find_first_not_of("0123456789", 5) != std::string::npos) return -1;
  return std::stoll(name.substr(5));
}

std::string latest_step_dir(const std::string& run_dir, const std::string& file) {
  std::error_code ec;
  std::string best;
  std::int64_t best_step = -1;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::int64_t s = step_number(entry.path().string());
    if (s > best_step && fs::exists(entry.path() / file, ec)) {
      best_step = s;
      best = entry.path().string();
    }
  }
  return best;
}

namespace {

/// The step folder and weights file `path` stands for; empty when it stands for none.
struct Located {
  fs::path step, weights;
};
Located locate_run(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    if (!ends_with(path.filename().string(), ".safetensors")) return {};
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    return {dir, path};
  }
  if (!fs::is_directory(path, ec)) return {};
  if (fs::is_regular_file(path / "model.safetensors", ec)) return {path, path / "model.safetensors"};
  const std::string latest = latest_step_dir(path.string(), "model.safetensors");
  if (latest.empty()) return {};
  return {latest, fs::path(latest) / "model.safetensors"};
}

fs::path config_of(const fs::path& step_dir) {
  std::error_code ec;
  if (fs::is_regular_file(step_dir / "config.json", ec)) return step_dir / "config.json";
  if (fs::is_regular_file(step_dir.parent_path() / "config.json", ec)) return step_dir.parent_path() / "config.json";
  return {};
}

bool is_run_config(const nlohmann::json& j) { return j.is_object() && j.contains("model") && j["model"].is_object(); }

}  // namespace

bool Run::is_run(const std::string& path) {
  const Located at = locate_run(path);
  if (at.step.empty()) return false;
  const fs::path cfg = config_of(at.step);
  if (cfg.empty()) return false;
  std::ifstream in(cfg);
  return is_run_config(nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false));
}

namespace {

// The major version of "MAJOR.MINOR.PATCH[+...]"; -1 when it does not start with a number.
long major_of(const std::string& v) {
  if (v.empty() || v[0] < '0' || v[0] > '9') return -1;
  long m = 0;
  for (char c : v) {
    if (c < '0' || c > '9') break;
    if (m > 1000000) return -1;
    m = m * 10 + (c - '0');
  }
  return m;
}

}  // namespace

void check_run_format(const nlohmann::json& state, const std::string& file) {
  if (!state.is_object()) fail_input(file, "not a checkpoint state: expected a JSON object");
  std::string writer = "an unknown moescope";
  if (const auto v = state.find("moescope_version"); v != state.end() && v->is_string())
    writer = "moescope " + printable(v->get<std::string>(), 40);
  const std::string upgrade = "; this moescope (" + std::string(kVersion) + ") reads run format " +
                              std::to_string(kRunFormat) + " and older: open it with a newer moescope";
  if (const auto f = state.find("run_format"); f != state.end()) {
    if (!f->is_number_integer() || f->get<std::int64_t>() < 1)
      fail_input(file, "\"run_format\" must be a positive integer, got " + printable(f->dump(), 40));
    if (f->get<std::int64_t>() > kRunFormat)
      fail_input(file, "the run was written by " + writer + " in run format " + std::to_string(f->get<std::int64_t>()) +
                           upgrade);
    return;
  }
  if (const auto v = state.find("moescope_version"); v != state.end() && v->is_string()) {
    const long theirs = major_of(v->get<std::string>()), ours = major_of(kVersion);
    if (theirs > ours) fail_input(file, "the run was written by " + writer + ", a newer major version" + upgrade);
  }
}

Run Run::open(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail_input(path, "no such file or folder");
  const Located at = locate_run(path);
  if (at.step.empty()) fail_input(path, std::string("not a moescope run: ") + kRunDescription);
  const fs::path cfg = config_of(at.step);
  if (cfg.empty())
    fail_input(path, std::string("not a moescope run (no config.json beside it or in the folder above): ") +
                         kRunDescription);
  Run run;
  if (const fs::path state = at.step / "state.json"; fs::is_regular_file(state, ec))
    check_run_format(read_json_file(state.string(), "the checkpoint state"), state.string());
  run.config_ = read_json_file(cfg.string(), "the run config");
  if (!is_run_config(run.config_)) fail_input(cfg.string(), "not a run config: it has no \"model\" object");
  run.config_file_ = cfg.string();
  run.step_directory_ = at.step.string();
  run.weights_file_ = at.weights.string();
  run.step_ = step_number(run.step_directory_);
  run.directory_ = run.step_ >= 0 ? at.step.parent_path().string() : run.step_directory_;
  if (run.directory_.empty()) run.directory_ = ".";
  return run;
}

std::vector<std::int64_t> Run::steps() const {
  std::vector<std::int64_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(directory_, ec)) {
    const std::int64_t s = step_number(entry.path().string());
    if (s >= 0 && fs::exists(entry.path() / "model.safetensors", ec)) out.push_back(s);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace moescope
