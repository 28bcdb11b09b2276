#pragma once
// Telling a Hugging Face model folder (config.json with the model's architecture beside its weights) from a moescope
// run (config.json with a "model" object) by its config.json alone. Torch-free: the CLI and the run loader share it.
#include <string>

namespace moescope {

/// True when `path` is a folder holding a config.json (or is such a config.json) that reads as a JSON object with
/// an "architectures" or "model_type" field and no "model" object (which would make it a moescope run config).
/// Whether the architecture is one moescope runs is not checked here: load_hf_model names an unknown one.
/// Never throws.
bool is_hf_model_folder(const std::string& path);

/// The folder of a model given as the folder or as its config.json.
std::string hf_model_folder(const std::string& path);

}  // namespace moescope
