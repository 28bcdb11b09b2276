#pragma once
// Building small zip archives byte by byte for tests (header-only): stored or deflated members, optional ZIP64
// records, and the offsets of every structure so that tests can corrupt them.
#include <zlib.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace moescope::testing {

/// One member to write: its name and uncompressed bytes.
struct ZipMember {
  std::string name;
  std::string data;
  bool deflate = false;
};

/// Where the builder put things (byte offsets into the archive).
struct ZipLayout {
  std::vector<std::size_t> local;    // local header of each member
  std::vector<std::size_t> data;     // first data byte of each member
  std::vector<std::size_t> central;  // central directory entry of each member
  std::size_t central_start = 0;
  std::size_t end_record = 0;        // the (classic) end of central directory record
  std::size_t zip64_end = 0;         // the ZIP64 end record (0 when not written)
};

inline void put16(std::string& s, std::uint32_t v) {
  s += static_cast<char>(v & 0xff);
  s += static_cast<char>((v >> 8) & 0xff);
}
inline void put32(std::string& s, std::uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}
inline void put64(std::string& s, std::uint64_t v) {
  put32(s, static_cast<std::uint32_t>(v));
  put32(s, static_cast<std::uint32_t>(v >> 32));
}
/// Overwrites a little-endian field of `bytes` bytes at `at`.
inline void patch(std::string& s, std::size_t at, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.at(at + static_cast<std::size_t>(i)) = static_cast<char>((v >> (8 * i)) & 0xff);
}

/// Raw deflate (no zlib header), as zip members hold it.
inline std::string raw_deflate(const std::string& in) {
  z_stream zs{};
  if (deflateInit2(&zs, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
  std::string out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

inline std::uint32_t crc_of(const std::string& s) {
  return static_cast<std::uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

/// A zip archive of the members. With `zip64`, every central directory entry stores its sizes and offset in a
/// ZIP64 extra field (the 32-bit fields saturated) and the archive ends with ZIP64 end record and locator.
inline std::string build_zip(const std::vector<ZipMember>& members, bool zip64 = false, ZipLayout* layout = nullptr) {
  ZipLayout l;
  std::string z;
  std::vector<std::string> packed;
  for (const auto& m : members) {
    packed.push_back(m.deflate ? raw_deflate(m.data) : m.data);
    l.local.push_back(z.size());
    put32(z, 0x04034b50);
    put16(z, 20);
    put16(z, 0);
    put16(z, m.deflate ? 8 : 0);
    put32(z, 0);  // time, date
    put32(z, crc_of(m.data));
    put32(z, static_cast<std::uint32_t>(packed.back().size()));
    put32(z, static_cast<std::uint32_t>(m.data.size()));
    put16(z, static_cast<std::uint32_t>(m.name.size()));
    put16(z, 0);
    z += m.name;
    l.data.push_back(z.size());
    z += packed.back();
  }
  l.central_start = z.size();
  for (std::size_t i = 0; i < members.size(); ++i) {
    const auto& m = members[i];
    l.central.push_back(z.size());
    put32(z, 0x02014b50);
    put16(z, 45);
    put16(z, 45);
    put16(z, 0);
    put16(z, m.deflate ? 8 : 0);
    put32(z, 0);
    put32(z, crc_of(m.data));
    put32(z, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(packed[i].size()));
    put32(z, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(m.data.size()));
    put16(z, static_cast<std::uint32_t>(m.name.size()));
    put16(z, zip64 ? 28 : 0);
    put16(z, 0);  // comment
    put16(z, 0);  // disk
    put16(z, 0);
    put32(z, 0);
    put32(z, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(l.local[i]));
    z += m.name;
    if (zip64) {
      put16(z, 1);
      put16(z, 24);
      put64(z, m.data.size());
      put64(z, packed[i].size());
      put64(z, l.local[i]);
    }
  }
  const std::size_t cd_size = z.size() - l.central_start;
  if (zip64) {
    l.zip64_end = z.size();
    put32(z, 0x06064b50);
    put64(z, 44);
    put16(z, 45);
    put16(z, 45);
    put32(z, 0);
    put32(z, 0);
    put64(z, members.size());
    put64(z, members.size());
    put64(z, cd_size);
    put64(z, l.central_start);
    put32(z, 0x07064b50);
    put32(z, 0);
    put64(z, l.zip64_end);
    put32(z, 1);
  }
  l.end_record = z.size();
  put32(z, 0x06054b50);
  put32(z, 0);
  put16(z, zip64 ? 0xffff : static_cast<std::uint32_t>(members.size()));
  put16(z, zip64 ? 0xffff : static_cast<std::uint32_t>(members.size()));
  put32(z, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(cd_size));
  put32(z, zip64 ? 0xffffffffu : static_cast<std::uint32_t>(l.central_start));
  put16(z, 0);
  if (layout) *layout = l;
  return z;
}

}  // namespace moescope::testing
