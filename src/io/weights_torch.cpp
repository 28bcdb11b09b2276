#include "moescope/io/weights_torch.hpp"

#include <cstring>
#include <map>
#include <set>

#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"
#include "moescope/version.hpp"

namespace moescope {

NamedTensors state_entries(const torch::nn::Module& m) {
  NamedTensors out;
  for (const auto& p : m.named_parameters(true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

void write_tensor_map(const std::string& path, const NamedTensors& tensors, bool float64,
                      const std::vector<std::pair<std::string, std::string>>& metadata) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> host;  // keeps the bytes alive until written
  std::vector<TensorToWrite> out;
  host.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    const bool integral = !at::isFloatingType(t.scalar_type());
    const auto dtype = integral ? torch::kInt64 : float64 ? torch::kFloat64 : torch::kFloat32;
    host.push_back(t.detach().to(torch::kCPU, dtype).contiguous());
    TensorToWrite w;
    w.info.name = name;
    w.info.dtype = integral ? DType::I64 : float64 ? DType::F64 : DType::F32;
    w.info.shape = host.back().sizes().vec();
    w.data = host.back().data_ptr();
    out.push_back(w);
  }
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : metadata) meta[k] = v;
  write_safetensors(path, out, meta);
}

void save_module_weights(const torch::nn::Module& module, const std::string& path,
                         const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::vector<std::pair<std::string, std::string>> meta{{"format", "pt"}, {"moescope_version", kVersion}};
  meta.insert(meta.end(), metadata.begin(), metadata.end());
  write_tensor_map(path, state_entries(module), /*float64=*/false, meta);
}

void load_module_weights(const torch::nn::Module& module, const std::string& path,
                         const std::set<std::string>& may_be_missing) {
  const SafetensorsFile file(path);
  std::map<std::string, const TensorInfo*> infos;
  for (const auto& info : file.tensors()) infos[info.name] = &info;
  torch::NoGradGuard ng;
  std::set<std::string> used;
  for (auto& [name, t] : state_entries(module)) {
    const auto it = infos.find(name);
    if (it == infos.end()) {
      if (may_be_missing.count(name) > 0) continue;
      fail_input(path, "tensor '" + name + "' is missing (does config.json match the weights?)");
    }
    const TensorInfo& info = *it->second;
    if (info.shape != t.sizes().vec()) {
      fail_input(path, "tensor '" + name + "' has shape " + shape_string(info.shape) + ", the model expects " +
                           shape_string(t.sizes().vec()));
    }
    if (!at::isFloatingType(t.scalar_type())) {
      if (info.dtype != DType::I64) fail_input(path, "tensor '" + name + "' should be I64");
      const ByteView raw = file.raw(name);
      auto host = torch::empty(t.sizes(), torch::kInt64);
      std::memcpy(host.data_ptr(), raw.data, raw.size);
      t.copy_(host);
    } else {
      auto host = torch::empty(t.sizes(), torch::kFloat32);
      file.read_f32(name, 0, info.numel(), host.data_ptr<float>());
      t.copy_(host);
    }
    used.insert(name);
  }
  for (const auto& [name, _] : infos)
    if (used.count(name) == 0) fail_input(path, "tensor '" + name + "' is not part of the model");
}

}  // namespace moescope
