#pragma once
// Small file helpers every writer shares.
#include <cstdint>
#include <string>
#include <string_view>

namespace moescope {

/// Writes `text` to "<path>.tmp", flushes, and renames it to `path`, so a reader (or a crash) sees the old file or
/// the whole new one. Throws InputError naming `path` when the folder is not writable, the disk is full or the
/// rename fails (the temporary file is removed).
void write_file_atomic(const std::string& path, std::string_view text);

/// FNV-1a, 64 bits: a stable hash of bytes (journal line checksums, names to seeds). Not cryptographic.
std::uint64_t fnv1a64(std::string_view bytes);

}  // namespace moescope
