// PyTorch state dicts (zip-format torch.save files) read with LibTorch's unpickler, and open_checkpoint, which
// needs it for .pt files.
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <optional>

#include "moescope/io/checkpoint.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace {


std::optional<DType> dtype_of(c10::ScalarType t) {
  switch (t) {
    case c10::kDouble: return DType::F64;
    case c10::kFloat: return DType::F32;
    case c10::kHalf: return DType::F16;
    case c10::kBFloat16: return DType::BF16;
    case c10::kLong: return DType::I64;
    case c10::kInt: return DType::I32;
    case c10::kShort: return DType::I16;
    case c10::kChar: return DType::I8;
    case c10::kByte: return DType::U8;
    case c10::kBool: return DType::BOOL;
    default: return std::nullopt;
  }
}

void add_entries(const std::string& file, const c10::IValue& v, const std::string& prefix, MemoryTensorSource& out) {
  if (v.isTensor()) {
    const at::Tensor t = v.toTensor().contiguous().cpu();
    const auto dt = dtype_of(t.scalar_type());
    if (!dt) fail_input(file, "tensor '" + prefix + "': unsupported dtype " + std::string(c10::toString(t.scalar_type())));
    TensorInfo info{prefix, *dt, t.sizes().vec()};
    std::vector<std::uint8_t> bytes(info.nbytes());
    if (!bytes.empty()) std::memcpy(bytes.data(), t.data_ptr(), bytes.size());
    out.add(std::move(info), std::move(bytes));
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) {
      if (!kv.key().isString()) continue;  // e.g. optimizer state keyed by ints: not weights
      add_entries(file, kv.value(), prefix.empty() ? kv.key().toStringRef() : prefix + "." + kv.key().toStringRef(),
                  out);
    }
  }
  // other values (ints, strings, lists: epochs, configs) are not tensors of the model; skipped
}

}  // namespace

std::unique_ptr<TensorSource> read_torch_state_dict(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_input(path, "cannot open file");
  std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (data.size() < 4 || std::memcmp(data.data(), "PK\x03\x04", 4) != 0)
    fail_input(path, "not a zip-format torch.save file (legacy or non-torch format); re-save with torch.save() "
                     "from PyTorch >= 1.6, or convert to safetensors");
  c10::IValue v;
  try {
    v = torch::pickle_load(data);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    fail_input(path, "cannot unpickle state dict: " + msg);
  }
  auto src = std::make_unique<MemoryTensorSource>(path);
  add_entries(path, v, "", *src);
  if (src->tensors().empty()) fail_input(path, "no tensors found (expected a state dict: {name: tensor})");
  return src;
}

std::unique_ptr<TensorSource> open_checkpoint(const std::string& path) {
  const ResolvedCheckpoint r = resolve_checkpoint(path);
  switch (r.kind) {
    case ResolvedCheckpoint::Kind::ShardIndex: return std::make_unique<ShardedSafetensors>(r.path);
    case ResolvedCheckpoint::Kind::TorchPickle: return read_torch_state_dict(r.path);
    case ResolvedCheckpoint::Kind::Safetensors: break;
  }
  return std::make_unique<SafetensorsFile>(r.path);
}

}  // namespace moescope
