#pragma once
// Opening any checkpoint the readers support, by path.
#include <memory>
#include <string>

#include "moescope/io/tensor.hpp"

namespace moescope {

/// Opens a checkpoint:
///  - a `.safetensors` file (memory-mapped);
///  - a sharded index `*.safetensors.index.json`;
///  - a folder holding `model.safetensors.index.json`, one `*.safetensors` file, or one `.pt`/`.pth`/`.bin`
///    (moescope's own run folders `runs/NAME/step_N/` are such folders);
///  - a PyTorch state dict saved by `torch.save(model.state_dict(), f)` (zip format, `.pt`/`.pth`/`.bin`),
///    read with LibTorch's unpickler; nested dicts ({"model": {...}}) are flattened with dots.
/// Throws InputError naming the path and the problem.
std::unique_ptr<TensorSource> open_checkpoint(const std::string& path);

/// Reads a torch.save'd state dict into memory (tensors converted to contiguous CPU bytes).
std::unique_ptr<TensorSource> read_torch_state_dict(const std::string& path);

}  // namespace moescope
