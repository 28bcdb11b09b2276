#pragma once
// Runs for the analysis tests (test_core only: needs LibTorch): laid out as the trainer writes them.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "moescope/model/task.hpp"

namespace moescope::testing {

/// DIR/NAME/config.json ({name, seed 0, model, data}) and DIR/NAME/step_0/model.safetensors with the untrained
/// weights of `model` built after torch::manual_seed(torch_seed). Returns DIR/NAME.
std::string write_untrained_run(const std::string& dir, const std::string& name, const nlohmann::json& model,
                                const DataSpec& data, std::uint64_t torch_seed);

}  // namespace moescope::testing
