#pragma once
// Reading zip archives held in memory (a mapped file or a buffer): the central directory, stored and deflated
// members, ZIP64. Written for torch.save files, which are zip archives of stored members; the parser trusts no
// size or offset in the archive and refuses what it does not support (encryption, multi-disk archives, other
// compression methods) with an InputError naming the file.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moescope/io/tensor.hpp"

namespace moescope {

/// One member of a zip archive, as its central directory entry and local header describe it.
struct ZipEntry {
  std::string name;
  std::uint16_t method = 0;            // 0 stored, 8 deflate (nothing else is accepted)
  std::uint16_t flags = 0;             // general purpose bit flags
  std::uint32_t crc32 = 0;             // of the uncompressed bytes
  std::uint64_t compressed_size = 0;   // bytes of member data in the archive
  std::uint64_t size = 0;              // bytes once uncompressed
  std::uint64_t header_offset = 0;     // the local file header
  std::uint64_t data_offset = 0;       // the first byte of the member data
};

/// Largest ratio of uncompressed to compressed size deflate can reach (a run of one byte: 258 bytes per
/// 2-bit code, about 1032:1); a member claiming more is refused before anything is allocated.
inline constexpr std::uint64_t kMaxDeflateRatio = 1032;

/// The directory of a zip archive over `size` bytes at `data`. The bytes are not copied and must outlive the
/// archive. Checks on construction: the end record (and the ZIP64 end record when present), every central
/// directory entry and its local header lie inside the archive; entry counts agree; names are unique; members
/// do not overlap one another or the central directory; methods are stored or deflate; nothing is encrypted;
/// a stored member's two sizes agree; a deflated member claims no more than kMaxDeflateRatio times its size.
/// Data is not read (CRCs are checked by read()).
class ZipArchive {
 public:
  /// Parses the directory. `file` names the archive in messages. Throws InputError("<file>: ...").
  ZipArchive(const std::uint8_t* data, std::size_t size, std::string file);

  /// Members in central directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  /// The member with exactly this name, or nullptr.
  const ZipEntry* find(std::string_view name) const;

  /// A stored member's bytes as a view into the archive (nothing copied); a deflated member's bytes
  /// inflated into `buffer` (resized to the member's size), then viewed. When `check_crc` the CRC-32 is
  /// verified. Throws InputError naming the file and member on a bad deflate stream, a size or CRC mismatch.
  ByteView read(const ZipEntry& e, std::vector<std::uint8_t>& buffer, bool check_crc = true) const;

  /// The archive's name in messages.
  const std::string& file() const { return file_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::string file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, std::size_t> by_name_;
};

}  // namespace moescope
