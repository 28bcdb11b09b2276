#pragma once
// MoE layout detection: from tensor names (and shapes) find every MoE layer, its router, its experts and each
// expert's matrices, for the Hugging Face families and moescope's own checkpoints.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moescope/io/tensor.hpp"

namespace moescope {

/// A 2-D (or 1-D) strided view of one expert's matrix inside a tensor: element (r, c) is the flat element
/// offset + r * row_stride + c * col_stride of `tensor`. Plain per-expert tensors have offset 0,
/// row_stride = cols, col_stride = 1; fused 3-D tensors select expert e by offset and may interleave columns.
/// Views keep the stored orientation: Linear's [out, in] everywhere except family "gpt-oss", whose experts
/// compute x @ W and so are [in, out] (gate/up: H x I, down: I x H).
struct MatrixView {
  std::string role;    // "gate", "up", "down" (Mixtral w1/w3/w2, Switch wi/wo -> up/down, fc1/fc2 -> up/down),
                       // "gate_bias", "up_bias", "down_bias", or the custom pattern's matrix name
  std::string tensor;  // tensor name in the checkpoint
  std::int64_t rows = 0, cols = 0;
  std::int64_t offset = 0, row_stride = 0, col_stride = 1;
  std::int64_t numel() const { return rows * cols; }
  /// True when the view covers elements [offset, offset + numel) in order.
  bool contiguous() const { return col_stride == 1 && (rows <= 1 || row_stride == cols); }
};

struct ExpertLayout {
  int index = 0;
  std::vector<MatrixView> matrices;  // sorted by role
  const MatrixView* find(const std::string& role) const;
};

struct MoELayerLayout {
  std::string key;      // stable report key: "layer_03", or "encoder_layer_01" / "decoder_layer_01" for Switch
  std::string prefix;   // tensor-name prefix of the block, e.g. "model.layers.3.block_sparse_moe"
  int layer = 0;        // the model's own layer number
  std::string router;   // router weight tensor, "" if none found
  std::string router_bias;
  std::vector<ExpertLayout> experts;        // sorted by index
  std::vector<ExpertLayout> shared_experts; // Qwen shared_expert / DeepSeek shared_experts, reported apart
  std::string shared_expert_gate;           // Qwen2-MoE shared_expert_gate
  std::string activation;  // "swiglu" (gate,up,down), "relu" (up,down): how the expert computes
};

struct Layout {
  // "mixtral", "olmoe-qwen-deepseek", "switch", "fused-v5", "gpt-oss", "moescope", "custom", "none", or
  // "generic": known expert matrix names under a prefix or router that no family above uses
  std::string family;
  std::vector<MoELayerLayout> layers;  // in model order
  std::vector<std::string> notes;      // e.g. "layers 0-2 are dense (no experts)"
};

/// The layers numbered in `wanted` (all when empty), in model order. Throws InputError naming `source` (the
/// checkpoint) when a number has no MoE layer, or when the layout has no MoE layers at all.
std::vector<const MoELayerLayout*> select_layers(const Layout& layout, const std::vector<int>& wanted,
                                                 const std::string& source);

struct LayoutOptions {
  /// ECMAScript regex with named groups written (?<layer>...), (?<expert>...), (?<matrix>...); std::regex has
  /// no named groups, so they are rewritten to numbered ones. When set, it replaces the built-in families.
  std::string expert_pattern;
  /// What the pattern is called in error messages (the CLI passes its flag, "--expert-pattern").
  std::string pattern_source = "expert pattern";
};

/// The role a per-expert matrix name plays in the known families ("w1" -> "gate", "fc2" -> "down",
/// "wi" -> "up", ...); a role or unknown name is returned unchanged.
std::string matrix_role(const std::string& name);

/// The report key of a layer: "layer_03", or "<part>_layer_03" for a part of an encoder-decoder model
/// ("encoder_layer_01"). Every report names layers this way, so reports of one checkpoint pair up by key.
std::string layer_key(int layer, const std::string& part = "");

/// Detects the layout. Throws InputError when the expert pattern is invalid or lacks a group, or when
/// experts of one layer disagree in matrices or shapes.
Layout detect_layout(const std::vector<TensorInfo>& tensors, const LayoutOptions& opts = {});

/// detect_layout of a checkpoint's tensors, its InputErrors prefixed with the checkpoint's path ("ckpt.safetensors:
/// layer_00 (...): expert 2 'down' is 4 x 5 ..."), so that the user sees which file does not fit.
Layout detect_layout(const TensorSource& src, const LayoutOptions& opts = {});

/// Reads elements [first, first + count) of the view (row-major over rows x cols) as double.
void read_view_f64(const TensorSource& src, const MatrixView& view, std::int64_t first, std::int64_t count,
                   double* out);

}  // namespace moescope
