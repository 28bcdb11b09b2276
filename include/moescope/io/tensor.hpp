#pragma once
// Tensors of a checkpoint as the readers see them: a name, a dtype, a shape and bytes.
// No torch here: parsers and metrics work on these plain views.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moescope {

/// Element types a checkpoint may hold (safetensors' names). Floats convert to float32/64 on read;
/// integer and bool tensors are kept as raw bytes (read_f64 converts them too, exactly where representable).
enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL };

/// "F32", "BF16", ... as safetensors spells them.
std::string_view dtype_name(DType t);
/// Parses a safetensors dtype name; std::nullopt when unknown.
std::optional<DType> parse_dtype(std::string_view name);
/// Bytes per element.
std::size_t dtype_size(DType t);
/// True for F64/F32/F16/BF16/F8_*.
bool dtype_is_float(DType t);

/// Converts `count` elements of type `t` starting at `src` to double / float.
void convert_to_f64(DType t, const std::uint8_t* src, std::size_t count, double* dst);
void convert_to_f32(DType t, const std::uint8_t* src, std::size_t count, float* dst);

/// Encodes float32 values as F64/F32/F16/BF16 (round to nearest even); other dtypes throw std::invalid_argument.
void convert_from_f32(DType t, const float* src, std::size_t count, std::uint8_t* dst);

/// One tensor's description.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::int64_t numel() const;
  std::uint64_t nbytes() const { return static_cast<std::uint64_t>(numel()) * dtype_size(dtype); }
};

/// Shape as "[8, 4096, 14336]".
std::string shape_string(const std::vector<std::int64_t>& shape);

/// A read-only view of bytes owned by a TensorSource (valid while the source lives).
struct ByteView {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

/// A checkpoint: a set of named tensors that can be read piece by piece.
/// Implementations: memory-mapped safetensors (single or sharded), PyTorch state dicts, in-memory sets.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  /// All tensors, sorted by name.
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  /// The tensor's raw little-endian bytes. Throws InputError if the name is unknown.
  virtual ByteView raw(const std::string& name) const = 0;
  /// What to call this source in messages (the file or index path).
  virtual const std::string& path() const = 0;
  /// Which file holds the tensor (for messages); defaults to path().
  virtual const std::string& file_of(const std::string& name) const { (void)name; return path(); }
  /// Hint that the tensor's bytes will not be needed again soon (lets a mapping drop its pages).
  virtual void release(const std::string& name) const { (void)name; }
  /// Format-level metadata (safetensors' __metadata__), may be empty.
  virtual std::vector<std::pair<std::string, std::string>> metadata() const { return {}; }

  /// nullptr if absent. Binary search over tensors().
  const TensorInfo* find(std::string_view name) const;
  /// Like find(), but throws InputError naming path() when absent.
  const TensorInfo& at(std::string_view name) const;

  /// Reads elements [offset, offset + count) of the flattened tensor as double. F8 weights that have a
  /// DeepSeek-style sibling "<name>_scale_inv" (128x128 block scales, float) are dequantised.
  void read_f64(const std::string& name, std::int64_t offset, std::int64_t count, double* out) const;
  void read_f32(const std::string& name, std::int64_t offset, std::int64_t count, float* out) const;
  /// The whole tensor as double.
  std::vector<double> read_all_f64(const std::string& name) const;
};

/// A TensorSource over tensors held in memory (tests, .pt state dicts, anything not memory-mapped).
class MemoryTensorSource : public TensorSource {
 public:
  explicit MemoryTensorSource(std::string path) : path_(std::move(path)) {}
  /// Adds a tensor; bytes.size() must equal the info's nbytes().
  void add(TensorInfo info, std::vector<std::uint8_t> bytes);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  ByteView raw(const std::string& name) const override;
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  std::vector<TensorInfo> infos_;                 // sorted by name
  std::vector<std::vector<std::uint8_t>> bytes_;  // parallel to infos_
};

}  // namespace moescope
