#include "support/runs.hpp"

#include <filesystem>
#include <fstream>

#include "moescope/io/weights_torch.hpp"

namespace moescope::testing {

std::string write_untrained_run(const std::string& dir, const std::string& name, const nlohmann::json& model,
                                const DataSpec& data, std::uint64_t torch_seed) {
  namespace fs = std::filesystem;
  torch::manual_seed(torch_seed);
  const TaskModel m = TaskModel::create(model);
  const fs::path run = fs::path(dir) / name;
  fs::create_directories(run / "step_0");
  save_module_weights(m.module(), (run / "step_0" / "model.safetensors").string());
  std::ofstream(run / "config.json")
      << nlohmann::json{{"name", name}, {"seed", 0}, {"model", m.config()}, {"data", data}}.dump(2);
  return run.string();
}

}  // namespace moescope::testing
