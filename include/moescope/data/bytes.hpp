#pragma once
// Whole-file reads for the dataset parsers, with transparent gzip.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moescope {

/// Largest file (after decompression) the data readers accept: 4 GiB. Sizes written inside files are
/// never trusted for allocation; this bounds what a corrupt or hostile file can make us allocate.
inline constexpr std::uint64_t kMaxDataFileBytes = std::uint64_t{1} << 32;

/// The contents of a file, gunzipped when it starts with the gzip magic 1f 8b (whatever its name).
struct FileBytes {
  std::vector<std::uint8_t> bytes;
  bool gzip = false;  // the file was gzip-compressed; `bytes` holds the decompressed data
};

/// Reads `path`, decompressing gzip (all members of a multi-member file; trailing non-gzip bytes are
/// ignored as gzip(1) does). Throws InputError("<path>: ...") when the file cannot be read, is not a
/// regular file, holds (or decompresses to) more than `max_bytes`, or has corrupt or truncated gzip data.
FileBytes read_file_bytes(const std::string& path, std::uint64_t max_bytes = kMaxDataFileBytes);

/// Decompresses an in-memory gzip stream; `file` names it in errors. Same rules as read_file_bytes.
std::vector<std::uint8_t> gunzip(const std::uint8_t* data, std::size_t size, std::uint64_t max_bytes,
                                 const std::string& file);

}  // namespace moescope
