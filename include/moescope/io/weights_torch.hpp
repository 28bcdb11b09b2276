#pragma once
// Module weights as safetensors files: the state dict (parameters, then buffers, by dotted name) in float32, read
// back strictly (every tensor present with its shape, nothing extra).
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace moescope {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// The state dict: parameters then buffers, each by its dotted name.
NamedTensors state_entries(const torch::nn::Module& module);

/// Writes named tensors as safetensors, atomically (tmp + rename): floating tensors as float64 when `float64`,
/// else float32, integer ones as int64; `metadata` goes in the header's __metadata__.
void write_tensor_map(const std::string& path, const NamedTensors& tensors, bool float64,
                      const std::vector<std::pair<std::string, std::string>>& metadata = {});

/// Writes the module's state dict as float32 safetensors, atomically, with `metadata` in __metadata__ (beside
/// format and moescope_version).
void save_module_weights(const torch::nn::Module& module, const std::string& path,
                         const std::vector<std::pair<std::string, std::string>>& metadata = {});

/// Copies weights from a safetensors file into the module. Every parameter and buffer must be present with its
/// shape, except those named in `may_be_missing` (they keep their values); extra tensors are an error too. Throws
/// InputError naming the file and the tensor.
void load_module_weights(const torch::nn::Module& module, const std::string& path,
                         const std::set<std::string>& may_be_missing = {});

}  // namespace moescope
