#include "moescope/data/bytes.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "moescope/util/error.hpp"

namespace moescope {

namespace {

// zlib counts in uInt (32 bits): feed and drain it in pieces well below that.
constexpr std::size_t kZlibChunk = std::size_t{1} << 30;

class InflateGuard {
 public:
  explicit InflateGuard(z_stream* zs) : zs_(zs) {}
  ~InflateGuard() { inflateEnd(zs_); }
  InflateGuard(const InflateGuard&) = delete;
  InflateGuard& operator=(const InflateGuard&) = delete;

 private:
  z_stream* zs_;
};

bool has_gzip_magic(const std::uint8_t* p, std::size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

}  // namespace

std::vector<std::uint8_t> gunzip(const std::uint8_t* data, std::size_t size, std::uint64_t max_bytes,
                                 const std::string& file) {
  z_stream zs{};
  // 16 + MAX_WBITS: gzip wrapper only (header, CRC-32 and length are checked by zlib)
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error("zlib: inflateInit2 failed");
  InflateGuard guard(&zs);

  std::vector<std::uint8_t> out;
  std::size_t fed = 0;   // input bytes handed to zlib so far
  std::size_t used = 0;  // output bytes produced so far
  const std::uint64_t limit = std::min<std::uint64_t>(max_bytes, SIZE_MAX - 1);
  for (;;) {
    if (zs.avail_in == 0 && fed < size) {
      const std::size_t n = std::min(size - fed, kZlibChunk);
      zs.next_in = const_cast<Bytef*>(data + fed);
      zs.avail_in = static_cast<uInt>(n);
      fed += n;
    }
    if (used == out.size()) {
      // grow geometrically from what was actually produced, never from sizes stated in the file
      if (out.size() > limit) fail_input(file, "decompresses to more than " + std::to_string(limit) + " bytes");
      const std::uint64_t grown = out.size() + std::max<std::size_t>(out.size(), std::size_t{1} << 16);
      out.resize(static_cast<std::size_t>(std::min<std::uint64_t>(grown, limit + 1)));
    }
    zs.next_out = out.data() + used;
    zs.avail_out = static_cast<uInt>(std::min(out.size() - used, kZlibChunk));
    const uInt room = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    used += room - zs.avail_out;
    const std::size_t consumed = fed - zs.avail_in;
    if (rc == Z_STREAM_END) {
      if (has_gzip_magic(data + consumed, size - consumed)) {  // next member of a concatenated file
        if (inflateReset(&zs) != Z_OK) throw std::runtime_error("zlib: inflateReset failed");
        continue;
      }
      break;
    }
    if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
      fail_input(file, "compressed offset " + std::to_string(consumed) + ": corrupt gzip data (" +
                           (zs.msg ? zs.msg : "unknown error") + ")");
    }
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && fed == size) {
      fail_input(file, "gzip stream is truncated: ended after " + std::to_string(size) +
                           " compressed bytes without its end marker");
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) throw std::runtime_error("zlib: inflate returned " + std::to_string(rc));
  }
  if (used > limit) fail_input(file, "decompresses to more than " + std::to_string(limit) + " bytes");
  out.resize(used);
  out.shrink_to_fit();
  return out;
}

FileBytes read_file_bytes(const std::string& path, std::uint64_t max_bytes) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) fail_input(path, "cannot open: no such file");
  if (!std::filesystem::is_regular_file(status)) fail_input(path, "not a regular file");
  const std::uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) fail_input(path, "cannot read its size: " + ec.message());
  if (size > max_bytes) {
    fail_input(path, "file has " + std::to_string(size) + " bytes, more than the limit of " +
                         std::to_string(max_bytes));
  }

  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail_input(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(size));
  const std::size_t got = raw.empty() ? 0 : std::fread(raw.data(), 1, raw.size(), f);
  const bool read_error = std::ferror(f) != 0;
  std::fclose(f);
  if (read_error || got != raw.size()) {
    fail_input(path, "read " + std::to_string(got) + " of " + std::to_string(size) + " bytes");
  }

  FileBytes result;
  if (has_gzip_magic(raw.data(), raw.size())) {
    result.gzip = true;
    result.bytes = gunzip(raw.data(), raw.size(), max_bytes, path);
  } else {
    result.bytes = std::move(raw);
  }
  return result;
}

}  // namespace moescope
