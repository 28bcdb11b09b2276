#include "moescope/io/synthetic_checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/random.hpp"
#include "moescope/util/files.hpp"

namespace moescope {
namespace {

// One tensor of the checkpoint and how to fill it.
struct Planned {
  TensorInfo info;
  int layer = -1;           // -1: not an expert tensor (plain Gaussian)
  int experts_fused = 0;    // > 0: dim 0 indexes experts; each slice follows the shared+noise rule
  int expert = -1;          // per-expert tensor: its index
  std::string matrix;       // key of the shared component (same for every expert of the layer)
  std::int64_t fan_in = 1;
};

std::vector<Planned> plan(const SyntheticCheckpointOptions& o) {
  const std::int64_t H = o.hidden, I = o.intermediate, E = o.experts;
  std::vector<Planned> p;
  auto plain = [&](std::string name, std::vector<std::int64_t> shape, std::int64_t fan_in) {
    Planned t;
    t.info = {std::move(name), o.dtype, std::move(shape)};
    t.fan_in = fan_in;
    p.push_back(std::move(t));
  };
  auto expert = [&](std::string name, std::vector<std::int64_t> shape, int layer, int e, std::string matrix,
                    std::int64_t fan_in) {
    Planned t;
    t.info = {std::move(name), o.dtype, std::move(shape)};
    t.layer = layer, t.expert = e, t.matrix = std::move(matrix), t.fan_in = fan_in;
    p.push_back(std::move(t));
  };
  auto fused = [&](std::string name, std::vector<std::int64_t> shape, int layer, std::string matrix,
                   std::int64_t fan_in) {
    Planned t;
    t.info = {std::move(name), o.dtype, std::move(shape)};
    t.layer = layer, t.experts_fused = static_cast<int>(E), t.matrix = std::move(matrix), t.fan_in = fan_in;
    p.push_back(std::move(t));
  };
  const std::string& f = o.family;
  if (f != "switch" && f != "moescope") plain("model.embed_tokens.weight", {32, H}, H);
  for (int L = 0; L < o.layers; ++L) {
    const std::string ml = "model.layers." + std::to_string(L) + ".";
    if (f != "switch" && f != "moescope") plain(ml + "self_attn.q_proj.weight", {H, H}, H);
    if (f == "mixtral") {
      plain(ml + "block_sparse_moe.gate.weight", {E, H}, H);
      for (int e = 0; e < E; ++e) {
        const std::string x = ml + "block_sparse_moe.experts." + std::to_string(e) + ".";
        expert(x + "w1.weight", {I, H}, L, e, "w1", H);
        expert(x + "w2.weight", {H, I}, L, e, "w2", I);
        expert(x + "w3.weight", {I, H}, L, e, "w3", H);
      }
    } else if (f == "qwen2-moe" || f == "olmoe" || f == "deepseek") {
      if (f == "deepseek" && L == 0) {  // DeepSeek's first layers are dense
        for (const char* m : {"gate_proj", "up_proj"}) plain(ml + "mlp." + m + ".weight", {I, H}, H);
        plain(ml + "mlp.down_proj.weight", {H, I}, I);
        continue;
      }
      plain(ml + "mlp.gate.weight", {E, H}, H);
      for (int e = 0; e < E; ++e) {
        const std::string x = ml + "mlp.experts." + std::to_string(e) + ".";
        expert(x + "gate_proj.weight", {I, H}, L, e, "gate", H);
        expert(x + "up_proj.weight", {I, H}, L, e, "up", H);
        expert(x + "down_proj.weight", {H, I}, L, e, "down", I);
      }
      if (f != "olmoe") {
        const std::string s = ml + (f == "deepseek" ? "mlp.shared_experts." : "mlp.shared_expert.");
        for (const char* m : {"gate_proj", "up_proj"}) plain(s + m + ".weight", {I, H}, H);
        plain(s + "down_proj.weight", {H, I}, I);
        if (f == "qwen2-moe") plain(ml + "mlp.shared_expert_gate.weight", {1, H}, H);
      }
    } else if (f == "switch") {
      // Switch makes every other block sparse; encoder FFN at layer.1
      const std::string b = "encoder.block." + std::to_string(2 * L + 1) + ".layer.1.mlp.";
      plain(b + "router.classifier.weight", {E, H}, H);
      for (int e = 0; e < E; ++e) {
        const std::string x = b + "experts.expert_" + std::to_string(e) + ".";
        expert(x + "wi.weight", {I, H}, L, e, "wi", H);
        expert(x + "wo.weight", {H, I}, L, e, "wo", I);
      }
    } else if (f == "fused-v5") {
      plain(ml + "mlp.gate.weight", {E, H}, H);
      fused(ml + "mlp.experts.gate_up_proj", {E, 2 * I, H}, L, "gate_up", H);
      fused(ml + "mlp.experts.down_proj", {E, H, I}, L, "down", I);
    } else if (f == "gpt-oss") {
      plain(ml + "mlp.router.weight", {E, H}, H);
      plain(ml + "mlp.router.bias", {E}, H);
      fused(ml + "mlp.experts.gate_up_proj", {E, H, 2 * I}, L, "gate_up", H);
      fused(ml + "mlp.experts.gate_up_proj_bias", {E, 2 * I}, L, "gate_up_bias", H);
      fused(ml + "mlp.experts.down_proj", {E, I, H}, L, "down", I);
      fused(ml + "mlp.experts.down_proj_bias", {E, H}, L, "down_bias", I);
    } else if (f == "moescope") {
      const std::string b = "blocks." + std::to_string(L) + ".moe.";
      plain(b + "router.weight", {E, H}, H);
      for (int e = 0; e < E; ++e) {
        const std::string x = b + "experts." + std::to_string(e) + ".";
        expert(x + "fc1.weight", {I, H}, L, e, "fc1", H);
        expert(x + "fc1.bias", {I}, L, e, "fc1b", H);
        expert(x + "fc2.weight", {H, I}, L, e, "fc2", I);
        expert(x + "fc2.bias", {H}, L, e, "fc2b", I);
      }
    } else {
      std::string known;
      for (const auto& k : synthetic_families()) known += (known.empty() ? "" : ", ") + k;
      throw InputError("unknown synthetic family '" + f + "' (known: " + known + ")");
    }
  }
  return p;
}

// Fills n values of W = sqrt(rho) S + sqrt(1 - rho) N_e into out (float).
void fill_expert(std::uint64_t shared_seed, std::uint64_t own_seed, double rho, double scale, std::int64_t n,
                 float* out) {
  Rng s(shared_seed), e(own_seed);
  const double a = std::sqrt(rho) * scale, b = std::sqrt(1.0 - rho) * scale;
  for (std::int64_t k = 0; k < n; ++k) out[k] = static_cast<float>(a * s.gaussian() + b * e.gaussian());
}

void fill(const SyntheticCheckpointOptions& o, const Planned& t, std::uint8_t* dst) {
  const std::int64_t n = t.info.numel();
  const double scale = 1.0 / std::sqrt(static_cast<double>(t.fan_in));
  std::vector<float> buf(static_cast<std::size_t>(n));
  const std::uint64_t base = o.seed * 0x9e3779b97f4a7c15ULL;
  if (t.layer < 0) {
    Rng r(base ^ fnv1a64(t.info.name));
    for (auto& x : buf) x = static_cast<float>(scale * r.gaussian());
  } else {
    const std::uint64_t shared = base ^ fnv1a64("layer" + std::to_string(t.layer) + "/" + t.matrix);
    if (t.experts_fused > 0) {
      const std::int64_t per = n / t.experts_fused;
      for (int e = 0; e < t.experts_fused; ++e)
        fill_expert(shared, shared ^ fnv1a64("expert" + std::to_string(e)), o.rho, scale, per, buf.data() + e * per);
    } else {
      fill_expert(shared, shared ^ fnv1a64("expert" + std::to_string(t.expert)), o.rho, scale, n, buf.data());
    }
  }
  convert_from_f32(o.dtype, buf.data(), buf.size(), dst);
}

}  // namespace

std::vector<std::string> synthetic_families() {
  return {"mixtral", "qwen2-moe", "olmoe", "deepseek", "switch", "fused-v5", "gpt-oss", "moescope"};
}

std::vector<TensorInfo> synthetic_tensors(const SyntheticCheckpointOptions& opts) {
  std::vector<TensorInfo> out;
  for (auto& t : plan(opts)) out.push_back(t.info);
  return out;
}

void write_synthetic_checkpoint(const std::string& path, const SyntheticCheckpointOptions& o) {
  if (o.layers < 1 || o.experts < 1 || o.hidden < 1 || o.intermediate < 1 || o.shards < 1)
    throw InputError("synthetic checkpoint: layers, experts, hidden, intermediate and shards must be >= 1");
  if (!(o.rho >= 0.0 && o.rho <= 1.0)) throw InputError("synthetic checkpoint: rho must be in [0, 1]");
  if (o.dtype != DType::F32 && o.dtype != DType::F64 && o.dtype != DType::F16 && o.dtype != DType::BF16)
    throw InputError("synthetic checkpoint: dtype must be F32, F64, F16 or BF16");
  const std::vector<Planned> all = plan(o);
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"generator", "moescope synthetic"},
                                                    {"family", o.family}, {"rho", std::to_string(o.rho)},
                                                    {"seed", std::to_string(o.seed)}};
  auto write_part = [&](const std::string& file, std::size_t first, std::size_t last) {
    std::vector<TensorInfo> infos;
    for (std::size_t i = first; i < last; ++i) infos.push_back(all[i].info);
    write_safetensors_streamed(
        file, infos, [&](std::size_t i, std::uint8_t* dst) { fill(o, all[first + i], dst); }, meta);
  };
  if (o.shards == 1) {
    write_part(path, 0, all.size());
    return;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) fail_input(path, "cannot create folder: " + ec.message());
  // tensor i goes to shard floor(bytes before i * shards / total): roughly equal parts, tensors kept whole
  std::uint64_t total = 0;
  for (const auto& t : all) total += t.info.nbytes();
  std::vector<std::size_t> first(static_cast<std::size_t>(o.shards) + 1, all.size());
  std::uint64_t before = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto s = static_cast<std::size_t>(std::min<std::uint64_t>(
        static_cast<std::uint64_t>(o.shards - 1), total ? before * static_cast<std::uint64_t>(o.shards) / total : 0));
    for (std::size_t k = 0; k <= s; ++k) first[k] = std::min(first[k], i);
    before += all[i].info.nbytes();
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (int s = 0; s < o.shards; ++s) {
    const std::size_t a = first[static_cast<std::size_t>(s)], b = first[static_cast<std::size_t>(s) + 1];
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, o.shards);
    write_part((fs::path(path) / name).string(), a, std::max(a, b));
    for (std::size_t i = a; i < b; ++i) weight_map[all[i].info.name] = name;
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const std::string index_path = (fs::path(path) / "model.safetensors.index.json").string();
  write_file_atomic(index_path, index.dump(2) + "\n");
}

}  // namespace moescope
