// Loading a Hugging Face MoE model folder: config.json, then every weight checked against the config and mapped
// copy-on-write from its safetensors file when it is already in the target dtype, converted once otherwise.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "moescope/model/params.hpp"
#include "moescope/io/checkpoint.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/model/hf.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace {

// A safetensors file mapped privately and writable: pages come from the page cache until written, when the process
// gets its own copy (so in-place changes such as a landscape's perturbations never reach the file).
class CowMapping {
 public:
  // nullptr when the file cannot be mapped this way (the caller then copies).
  static std::shared_ptr<CowMapping> open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nullptr;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 8) {
      ::close(fd);
      return nullptr;
    }
    const auto size = static_cast<std::size_t>(st.st_size);
    // MAP_NORESERVE: a private writable mapping would otherwise be charged in full against overcommit limits.
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    ::close(fd);
    if (m == MAP_FAILED) return nullptr;
    auto map = std::shared_ptr<CowMapping>(new CowMapping(static_cast<std::uint8_t*>(m), size));
    map->header_ = parse_safetensors_header(map->data_, size, size, path);
    return map;
  }
  ~CowMapping() { ::munmap(data_, size_); }
  CowMapping(const CowMapping&) = delete;
  CowMapping& operator=(const CowMapping&) = delete;

  // The entry of `name`, or nullptr.
  const SafetensorsEntry* entry(const std::string& name) const {
    const auto& es = header_.entries;
    const auto it = std::lower_bound(es.begin(), es.end(), name,
                                     [](const SafetensorsEntry& e, const std::string& n) { return e.info.name < n; });
    return it != es.end() && it->info.name == name ? &*it : nullptr;
  }
  std::uint8_t* data() const { return data_; }

 private:
  CowMapping(std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t* data_;
  std::size_t size_;
  SafetensorsHeader header_;
};

torch::ScalarType torch_dtype_of(DType t) {
  switch (t) {
    case DType::F64: return torch::kDouble;
    case DType::F32: return torch::kFloat;
    case DType::BF16: return torch::kBFloat16;
    case DType::F16: return torch::kHalf;
    default: return at::ScalarType::Undefined;
  }
}

torch::ScalarType target_dtype(HFDType want, DType embed) {
  switch (want) {
    case HFDType::F32: return torch::kFloat;
    case HFDType::F64: return torch::kDouble;
    case HFDType::BF16: return torch::kBFloat16;
    case HFDType::Keep: break;
  }
  switch (embed) {
    case DType::F64: return torch::kDouble;
    case DType::BF16: return torch::kBFloat16;
    default: return torch::kFloat;  // F32, and F16 (no CPU half matmul in LibTorch 1.13)
  }
}

// Reads a tensor converted to `dt` into a fresh tensor (F8 weights dequantised by the source).
torch::Tensor read_converted(const TensorSource& src, const TensorInfo& info, torch::ScalarType dt) {
  const std::int64_t n = info.numel();
  auto t = torch::empty(info.shape, torch::TensorOptions().dtype(dt));
  if (dt == torch::kDouble) {
    src.read_f64(info.name, 0, n, t.data_ptr<double>());
  } else if (dt == torch::kFloat) {
    src.read_f32(info.name, 0, n, t.data_ptr<float>());
  } else {  // via float32 in chunks, rounded to nearest even by torch
    constexpr std::int64_t kChunk = 1 << 20;
    std::vector<float> buf(static_cast<std::size_t>(std::min(n, kChunk)));
    auto flat = t.view({-1});
    for (std::int64_t off = 0; off < n; off += kChunk) {
      const std::int64_t m = std::min(kChunk, n - off);
      src.read_f32(info.name, off, m, buf.data());
      flat.narrow(0, off, m).copy_(torch::from_blob(buf.data(), {m}, torch::kFloat));
    }
  }
  src.release(info.name);
  return t;
}

}  // namespace

HFCausalLM load_hf_model(const std::string& dir, const HFLoadOptions& options) {
  namespace fs = std::filesystem;
  HFConfig cfg = read_hf_config(dir);
  std::error_code ec;
  // The weights sit beside config.json (a folder may be given as the config file's path too).
  const std::string weights_at = fs::is_directory(dir, ec) ? dir : fs::path(dir).parent_path().string();
  const ResolvedCheckpoint resolved = resolve_checkpoint(weights_at.empty() ? "." : weights_at);
  const std::unique_ptr<TensorSource> src = open_checkpoint(resolved.path);
  const bool safetensors = resolved.kind != ResolvedCheckpoint::Kind::TorchPickle;

  // Presence, shape and dtype of every tensor the config implies.
  const std::vector<HFTensorSpec> specs = hf_tensor_specs(cfg);
  std::set<std::string> expected;
  for (const auto& s : specs) {
    expected.insert(s.name);
    const TensorInfo* t = src->find(s.name);
    if (!t)
      fail_input(src->path(), "tensor '" + s.name + "' is missing (" + cfg.file + " implies shape " +
                                  shape_string(s.shape) + ")");
    if (t->shape != s.shape)
      fail_input(src->file_of(s.name), "tensor '" + s.name + "' has shape " + shape_string(t->shape) + " but " +
                                           cfg.file + " implies " + shape_string(s.shape));
    if (!dtype_is_float(t->dtype))
      fail_input(src->file_of(s.name), "tensor '" + s.name + "' has dtype " + std::string(dtype_name(t->dtype)) +
                                           "; a floating-point dtype is expected");
    if ((t->dtype == DType::F8_E4M3 || t->dtype == DType::F8_E5M2) && !src->find(s.name + "_scale_inv"))
      fail_input(src->file_of(s.name), "tensor '" + s.name + "' is " + std::string(dtype_name(t->dtype)) +
                                           " without block scales '" + s.name + "_scale_inv'");
  }
  // Nothing else, except what the forward pass does not use and FP8 block scales.
  for (const auto& t : src->tensors()) {
    if (expected.count(t.name) || hf_unused_tensor(cfg, t.name)) continue;
    const std::string suffix = "_scale_inv";
    if (t.name.size() > suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const TensorInfo* w = src->find(t.name.substr(0, t.name.size() - suffix.size()));
      if (w && (w->dtype == DType::F8_E4M3 || w->dtype == DType::F8_E5M2)) continue;
    }
    fail_input(src->file_of(t.name), "unexpected tensor '" + t.name + "' (not part of a " + cfg.architecture +
                                         " with " + cfg.file + ")");
  }

  const torch::ScalarType dt = target_dtype(options.dtype, src->at("model.embed_tokens.weight").dtype);
  std::map<std::string, std::shared_ptr<CowMapping>> maps;  // by file; an empty pointer: cannot map
  auto mapping_of = [&](const std::string& file) -> std::shared_ptr<CowMapping> {
    const auto it = maps.find(file);
    if (it != maps.end()) return it->second;
    return maps[file] = CowMapping::open(file);
  };

  HFWeights weights;
  for (const auto& s : specs) {
    const TensorInfo& info = src->at(s.name);
    const torch::ScalarType want = hf_float32_tensor(s.name) && dt != torch::kDouble ? torch::kFloat : dt;
    torch::Tensor t;
    if (safetensors && torch_dtype_of(info.dtype) == want) {
      if (auto map = mapping_of(src->file_of(s.name))) {
        const SafetensorsEntry* e = map->entry(s.name);
        std::uint8_t* p = e ? map->data() + e->begin : nullptr;
        if (p && reinterpret_cast<std::uintptr_t>(p) % dtype_size(info.dtype) == 0)
          t = torch::from_blob(p, info.shape, [map](void*) {}, torch::TensorOptions().dtype(want));
      }
    }
    if (!t.defined()) t = read_converted(*src, info, want);
    weights.emplace(s.name, std::move(t));
  }
  HFCausalLM model(std::move(cfg), std::move(weights));

  if (!options.trainable.empty()) {
    // select_parameters looks at parameters that require grad: mark all, select, keep the selection.
    for (auto& p : model->parameters()) p.set_requires_grad(true);
    std::vector<NamedParameter> chosen;
    try {
      chosen = select_parameters(*model, options.trainable);
    } catch (...) {
      for (auto& p : model->parameters()) p.set_requires_grad(false);
      throw;
    }
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    for (auto& np : chosen) np.second.set_requires_grad(true);
  }
  return model;
}

}  // namespace moescope
