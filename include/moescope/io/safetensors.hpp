#pragma once
// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {str: str}}, then the data.
// The header parser works on bytes and trusts nothing in them (see FORMULAS.md for the rules).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moescope/io/tensor.hpp"

namespace moescope {

/// One tensor entry of a parsed header; offsets are absolute within the file.
struct SafetensorsEntry {
  TensorInfo info;
  std::uint64_t begin = 0;  // absolute file offset of the first byte
  std::uint64_t end = 0;    // one past the last byte
};

/// A parsed header.
struct SafetensorsHeader {
  std::uint64_t header_len = 0;  // N
  std::vector<SafetensorsEntry> entries;  // sorted by name
  std::map<std::string, std::string> metadata;
};

/// Largest header accepted (bytes), as the reference implementation.
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

/// Parses and validates a header given the first bytes of a file and the file's total size.
/// `prefix` must hold at least 8 + N bytes (or all of the file). Throws InputError("<file>: ...") on:
/// short file, N > limit or past the end, invalid JSON, a non-object entry, unknown dtype, negative/huge shape,
/// shape x dtype != end - begin, offsets out of order/overlapping/with gaps/past the end, duplicate names.
SafetensorsHeader parse_safetensors_header(const std::uint8_t* prefix, std::size_t prefix_len,
                                           std::uint64_t file_size, const std::string& file);

/// A memory-mapped safetensors file.
class SafetensorsFile : public TensorSource {
 public:
  /// Maps and validates the file. Throws InputError naming the file.
  explicit SafetensorsFile(std::string path);
  ~SafetensorsFile() override;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  ByteView raw(const std::string& name) const override;
  const std::string& path() const override { return path_; }
  void release(const std::string& name) const override;  // madvise(MADV_DONTNEED) on the tensor's pages
  std::vector<std::pair<std::string, std::string>> metadata() const override;
  const SafetensorsHeader& header() const { return header_; }
  std::uint64_t file_size() const { return size_; }

 private:
  std::string path_;
  int fd_ = -1;
  const std::uint8_t* map_ = nullptr;
  std::uint64_t size_ = 0;
  SafetensorsHeader header_;
  std::vector<TensorInfo> infos_;
};

/// A sharded checkpoint: "model.safetensors.index.json" = {"metadata": {...}, "weight_map": {name: file}}.
/// All shards are mapped on open (cheap: pages load on access);
/// and every name in weight_map must exist in its shard with no name in two shards.
class ShardedSafetensors : public TensorSource {
 public:
  explicit ShardedSafetensors(std::string index_path);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  ByteView raw(const std::string& name) const override;
  const std::string& path() const override { return path_; }
  const std::string& file_of(const std::string& name) const override;
  void release(const std::string& name) const override;
  std::vector<std::pair<std::string, std::string>> metadata() const override;
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }

 private:
  std::string path_;
  std::vector<std::string> shard_paths_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<TensorInfo> infos_;      // sorted by name
  std::vector<std::size_t> shard_of_;  // parallel to infos_
  std::map<std::string, std::string> index_metadata_;
};

/// One tensor to write: its description and its bytes (little-endian, nbytes() long).
struct TensorToWrite {
  TensorInfo info;
  const void* data = nullptr;
};

/// Writes a safetensors file: 8-byte LE header length, JSON header padded with spaces to a multiple of 8,
/// tensors in the given order, contiguous. Written to "<path>.tmp" then renamed. Throws on I/O errors.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// The same, streaming: fill(i, dst) writes tensor i's nbytes() bytes into dst; one tensor is held at a time.
/// An exception from fill removes the temporary file and propagates.
void write_safetensors_streamed(const std::string& path, const std::vector<TensorInfo>& infos,
                                const std::function<void(std::size_t, std::uint8_t*)>& fill,
                                const std::map<std::string, std::string>& metadata = {});

}  // namespace moescope
