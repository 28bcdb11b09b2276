#include "moescope/io/hf_folder.hpp"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace moescope {

namespace fs = std::filesystem;

std::string hf_model_folder(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return path;
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

bool is_hf_model_folder(const std::string& path) {
  std::error_code ec;
  fs::path cfg;
  if (fs::is_directory(path, ec)) {
    cfg = fs::path(path) / "config.json";
  } else if (fs::path(path).filename() == "config.json") {
    cfg = path;
  } else {
    return false;
  }
  if (!fs::is_regular_file(cfg, ec)) return false;
  std::ifstream in(cfg);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  const auto model = j.find("model");
  if (model != j.end() && model->is_object()) return false;
  return j.contains("architectures") || j.contains("model_type");
}

}  // namespace moescope
