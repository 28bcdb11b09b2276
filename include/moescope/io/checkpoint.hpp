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
///    (moescope's own step folders `runs/NAME/step_N/` are such folders; a run folder `runs/NAME` opens its latest
///    step's weights);
///  - a PyTorch state dict saved by `torch.save(model.state_dict(), f)` (zip format, `.pt`/`.pth`/`.bin`),
///    read by io/torch_pickle.hpp's own bounds-checked unpickler (no LibTorch); nested dicts ({"model": {...}})
///    are flattened with dots.
/// Throws InputError naming the path and the problem.
std::unique_ptr<TensorSource> open_checkpoint(const std::string& path);

/// What a checkpoint path resolves to.
struct ResolvedCheckpoint {
  enum class Kind { Safetensors, ShardIndex, TorchPickle } kind = Kind::Safetensors;
  std::string path;  // the file or index to open
};
/// Resolves a path as open_checkpoint does (folders to the file or index inside). Throws InputError.
ResolvedCheckpoint resolve_checkpoint(const std::string& path);

/// A digest identifying a checkpoint for reports.
struct CheckpointHash {
  std::string sha256;  // hex, "" when scope is "none"
  std::string scope;   // "file" (all bytes), "index" (the shard index JSON), "header" (safetensors header
                       // bytes and file size: cheap for huge files), "none"
};
/// mode: "full" hashes the file (or the index of a sharded checkpoint), "header" the safetensors header(s),
/// "none" nothing, "auto" = full up to 2 GiB, header beyond.
CheckpointHash hash_checkpoint(const std::string& path, const std::string& mode);


}  // namespace moescope
