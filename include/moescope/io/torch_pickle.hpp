#pragma once
// PyTorch state dicts saved by torch.save (the zip format of PyTorch >= 1.6) read without LibTorch.
//
// The archive holds <archive>/data.pkl (a pickle), <archive>/data/<key> (each storage's raw little-endian bytes)
// and optionally <archive>/byteorder. The pickle is run by a small virtual machine that executes nothing: it
// knows the opcodes of pickle protocols 0-5 that carry data, builds dicts, lists, tuples, ints, floats, strings
// and tensors, and recognises an allow-list of globals (tensor and parameter rebuilders, OrderedDict, the
// TorchScript pickler's type tags). Any other global becomes an inert placeholder: skipped where a non-tensor
// value is, an error where a tensor is (module torch.*: quantized, sparse, nested or subclassed tensors).
// Every size, offset and count in the file is checked against what the file holds.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "moescope/io/tensor.hpp"

namespace moescope {

/// Largest data.pkl accepted (bytes, uncompressed). A state dict of 100k tensors needs about 15 MB. The
/// unpickler's memory is linear in this: at worst ~110 bytes per pickle byte (a pickle of nothing but empty
/// dicts), about 20 per byte for a real state dict.
inline constexpr std::uint64_t kMaxTorchPickleBytes = std::uint64_t{256} << 20;
/// Deepest nesting of containers (lists, tuples, dicts) accepted; Python's own unpickler manages about 1000.
inline constexpr std::uint32_t kMaxTorchPickleDepth = 200;
/// Bytes that copies of non-contiguous tensors (transposed or strided views, read in row-major order) may take
/// beyond the bytes of the storages they view. Views that overlap (stride 0, repeated views of one storage)
/// could otherwise make a small file claim terabytes.
inline constexpr std::uint64_t kMaxTorchCopyExtraBytes = std::uint64_t{1} << 30;

/// Reads a state dict saved by torch.save (zip format; stored or deflated members; ZIP64). The file is
/// memory-mapped: contiguous tensors are views of the mapping (nothing copied); non-contiguous ones are copied
/// to row-major order, and deflated storages inflated, when first read. A storage's CRC-32 is checked when a
/// tensor over it is first read.
/// Semantics as the LibTorch reader in checkpoint.hpp: nested dicts flattened with dots ({"model": {"w": t}}
/// gives "model.w"), values that are not tensors or dicts skipped (ints, lists, optimizer settings), keys
/// that are not strings skipped; a top-level tensor is named "".
/// dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL (and F8_E4M3/F8_E5M2 via _rebuild_tensor_v3).
/// Throws InputError("<path>: ...") when the file is not a zip-format torch.save file, the archive or pickle is
/// malformed or exceeds the limits above, byteorder is "big", a tensor (named by its key) has an unsupported
/// dtype or layout or lies outside its storage, two flattened names collide, or no tensor is found.
/// raw() throws InputError on a CRC mismatch or a bad deflate stream.
std::unique_ptr<TensorSource> read_torch_pickle(const std::string& path);

/// The same for a torch.save file held in memory; the bytes are copied. `name` names it in messages and is
/// the source's path(). The fuzzer's entry point.
std::unique_ptr<TensorSource> read_torch_pickle_bytes(const std::uint8_t* data, std::size_t size,
                                                      const std::string& name);

}  // namespace moescope
