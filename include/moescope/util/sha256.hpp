#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moescope {

/// Incremental SHA-256 (FIPS 180-4).
class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t len);
  /// Finishes and returns the lowercase hex digest; the object is then reset.
  std::string hex_digest();

 private:
  void block(const std::uint8_t* p);
  std::uint32_t h_[8];
  std::uint8_t buf_[64];
  std::size_t buf_len_ = 0;
  std::uint64_t total_ = 0;
};

/// SHA-256 of a whole file, read in chunks. Throws InputError naming the file when it cannot be read.
std::string sha256_file(const std::string& path);
std::string sha256_bytes(const void* data, std::size_t len);

}  // namespace moescope
