// Resolving a checkpoint path (files, folders, shard indexes) and hashing it for reports: torch-free.
#include "moescope/io/checkpoint.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "moescope/io/run.hpp"
#include "moescope/io/safetensors.hpp"
#include "moescope/io/torch_pickle.hpp"
#include "moescope/util/error.hpp"
#include "moescope/util/sha256.hpp"
#include "moescope/util/strings.hpp"

namespace fs = std::filesystem;

namespace moescope {
namespace {

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

ResolvedCheckpoint resolve_checkpoint(const std::string& path) {
  using Kind = ResolvedCheckpoint::Kind;
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) fail_input(path, "no such file or folder");
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "model.safetensors.index.json"))
      return {Kind::ShardIndex, (p / "model.safetensors.index.json").string()};
    // A folder's model.safetensors is its checkpoint (Hugging Face's name, and a moescope step folder's, beside
    // e.g. OMoE's omoe.safetensors).
    if (fs::is_regular_file(p / "model.safetensors", ec)) return {Kind::Safetensors, (p / "model.safetensors").string()};
    // A moescope run folder: its latest step's weights.
    if (Run::is_run(path)) return {Kind::Safetensors, Run::open(path).weights_file()};
    if (auto f = only_file_with(p, {".safetensors.index.json"}); !f.empty()) return {Kind::ShardIndex, f};
    if (auto f = only_file_with(p, {".safetensors"}); !f.empty()) return {Kind::Safetensors, f};
    if (auto f = only_file_with(p, {".pt", ".pth", ".bin"}); !f.empty()) return {Kind::TorchPickle, f};
    fail_input(path, "folder holds no .safetensors, .safetensors.index.json, .pt, .pth or .bin checkpoint");
  }
  if (ends_with(path, ".json")) return {Kind::ShardIndex, path};
  if (ends_with(path, ".pt") || ends_with(path, ".pth") || ends_with(path, ".bin")) return {Kind::TorchPickle, path};
  // anything else: sniff zip (torch.save) vs safetensors
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  if (f.gcount() == 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0) return {Kind::TorchPickle, path};
  return {Kind::Safetensors, path};
}

std::unique_ptr<TensorSource> open_checkpoint(const std::string& path) {
  const ResolvedCheckpoint r = resolve_checkpoint(path);
  switch (r.kind) {
    case ResolvedCheckpoint::Kind::ShardIndex: return std::make_unique<ShardedSafetensors>(r.path);
    case ResolvedCheckpoint::Kind::TorchPickle: return read_torch_pickle(r.path);
    case ResolvedCheckpoint::Kind::Safetensors: break;
  }
  return std::make_unique<SafetensorsFile>(r.path);
}

namespace {

// SHA-256 of a safetensors file's length prefix and JSON header, then its size in decimal.
void hash_header(const std::string& file, Sha256& h) {
  std::ifstream f(file, std::ios::binary);
  std::uint8_t len8[8] = {};
  f.read(reinterpret_cast<char*>(len8), 8);
  if (f.gcount() != 8) fail_input(file, "file shorter than the 8-byte safetensors header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len8[i];
  const std::uint64_t size = fs::file_size(file);
  if (n > kMaxSafetensorsHeader || 8 + n > size) fail_input(file, "header length " + std::to_string(n) + " invalid");
  std::vector<char> header(n);
  f.read(header.data(), static_cast<std::streamsize>(n));
  h.update(len8, 8);
  h.update(header.data(), header.size());
  const std::string s = std::to_string(size);
  h.update(s.data(), s.size());
}

}  // namespace

CheckpointHash hash_checkpoint(const std::string& path, const std::string& mode) {
  if (mode == "none") return {"", "none"};
  if (mode != "auto" && mode != "full" && mode != "header")
    throw InputError("hash mode: expected auto, full, header or none, got '" + mode + "'");
  const ResolvedCheckpoint r = resolve_checkpoint(path);
  if (r.kind == ResolvedCheckpoint::Kind::ShardIndex && mode != "header") return {sha256_file(r.path), "index"};
  const bool pickle = r.kind == ResolvedCheckpoint::Kind::TorchPickle;  // no header to hash: always the file
  const bool small = fs::file_size(r.path) <= (std::uint64_t{2} << 30);
  if (r.kind != ResolvedCheckpoint::Kind::ShardIndex && (pickle || mode == "full" || (mode == "auto" && small)))
    return {sha256_file(r.path), "file"};
  Sha256 h;
  if (r.kind == ResolvedCheckpoint::Kind::ShardIndex) {
    ShardedSafetensors shards(r.path);
    for (const auto& s : shards.shard_paths()) hash_header(s, h);
  } else {
    hash_header(r.path, h);
  }
  return {h.hex_digest(), "header"};
}

}  // namespace moescope
