#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "moescope/io/checkpoint.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"

namespace fs = std::filesystem;

namespace moescope {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

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

std::string only_file_with(const fs::path& dir, const std::vector<std::string>& exts) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    for (const auto& x : exts)
      if (ends_with(name, x)) found.push_back(e.path().string());
  }
  if (found.size() > 1) {
    std::sort(found.begin(), found.end());
    fail_input(dir.string(), std::to_string(found.size()) + " candidate checkpoint files (" + found[0] + ", " +
                                 found[1] + ", ...) and no model.safetensors.index.json; name one file");
  }
  return found.empty() ? std::string() : found[0];
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
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) fail_input(path, "no such file or folder");
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "model.safetensors.index.json"))
      return std::make_unique<ShardedSafetensors>((p / "model.safetensors.index.json").string());
    if (auto f = only_file_with(p, {".safetensors.index.json"}); !f.empty())
      return std::make_unique<ShardedSafetensors>(f);
    if (auto f = only_file_with(p, {".safetensors"}); !f.empty()) return std::make_unique<SafetensorsFile>(f);
    if (auto f = only_file_with(p, {".pt", ".pth", ".bin"}); !f.empty()) return read_torch_state_dict(f);
    fail_input(path, "folder holds no .safetensors, .safetensors.index.json, .pt, .pth or .bin checkpoint");
  }
  if (ends_with(path, ".json")) return std::make_unique<ShardedSafetensors>(path);
  if (ends_with(path, ".pt") || ends_with(path, ".pth") || ends_with(path, ".bin")) return read_torch_state_dict(path);
  // anything else: sniff zip (torch.save) vs safetensors
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  if (f.gcount() == 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0) return read_torch_state_dict(path);
  return std::make_unique<SafetensorsFile>(path);
}

}  // namespace moescope
