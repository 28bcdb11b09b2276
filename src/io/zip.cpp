// Zip archives in memory: end record, ZIP64, central directory, local headers, stored and deflated members.
// Layout facts from PKWARE's APPNOTE.TXT (sections 4.3 and 4.5); the checks are ours.
#include "moescope/io/zip.hpp"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <numeric>

#include "moescope/util/error.hpp"
#include "moescope/util/strings.hpp"

namespace moescope {
namespace {

constexpr std::uint32_t kLocalSig = 0x04034b50;
constexpr std::uint32_t kCentralSig = 0x02014b50;
constexpr std::uint32_t kEndSig = 0x06054b50;
constexpr std::uint32_t kZip64EndSig = 0x06064b50;
constexpr std::uint32_t kZip64LocatorSig = 0x07064b50;
constexpr std::size_t kLocalLen = 30, kCentralLen = 46, kEndLen = 22, kZip64EndLen = 56, kZip64LocatorLen = 20;
constexpr std::size_t kMaxComment = 0xffff;

std::uint16_t le16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
std::uint32_t le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
std::uint64_t le64(const std::uint8_t* p) { return le32(p) | (static_cast<std::uint64_t>(le32(p + 4)) << 32); }


// Where the end of central directory record starts; it must end the archive exactly (after its comment).
std::size_t find_end_record(const std::uint8_t* d, std::size_t n, const std::string& file) {
  if (n < kEndLen) fail_input(file, "zip archive of " + std::to_string(n) + " bytes is too short for an end record");
  const std::size_t lowest = n - kEndLen > kMaxComment ? n - kEndLen - kMaxComment : 0;
  for (std::size_t pos = n - kEndLen + 1; pos-- > lowest;) {
    if (le32(d + pos) == kEndSig && pos + kEndLen + le16(d + pos + 20) == n) return pos;
  }
  fail_input(file, "no zip end of central directory record (truncated or not a zip archive)");
}

struct Directory {
  std::uint64_t entries = 0;
  std::uint64_t offset = 0;  // of the central directory
  std::uint64_t size = 0;    // of the central directory
  std::uint64_t end = 0;     // where the central directory must end (the ZIP64 end record, or the end record)
};

Directory read_directory_location(const std::uint8_t* d, std::size_t n, const std::string& file) {
  const std::size_t eocd = find_end_record(d, n, file);
  const std::uint8_t* e = d + eocd;
  Directory dir;
  if (le16(e + 4) != 0 || le16(e + 6) != 0 || le16(e + 8) != le16(e + 10))
    fail_input(file, "multi-disk zip archives are not supported");
  dir.entries = le16(e + 10);
  dir.size = le32(e + 12);
  dir.offset = le32(e + 16);
  dir.end = eocd;
  if (eocd >= kZip64LocatorLen && le32(d + eocd - kZip64LocatorLen) == kZip64LocatorSig) {
    const std::uint8_t* loc = d + eocd - kZip64LocatorLen;
    if (le32(loc + 4) != 0 || le32(loc + 16) > 1) fail_input(file, "multi-disk zip archives are not supported");
    const std::uint64_t at = le64(loc + 8);
    const std::uint64_t limit = eocd - kZip64LocatorLen;
    if (at > limit || limit - at < kZip64EndLen)
      fail_input(file, "ZIP64 end record offset " + std::to_string(at) + " lies outside the archive");
    const std::uint8_t* z = d + at;
    if (le32(z) != kZip64EndSig) fail_input(file, "no ZIP64 end record at offset " + std::to_string(at));
    const std::uint64_t rec = le64(z + 4);  // size of the rest of the record
    if (rec < kZip64EndLen - 12 || rec > limit - at - 12)
      fail_input(file, "ZIP64 end record claims " + std::to_string(rec) + " bytes, more than the archive holds");
    if (le32(z + 16) != 0 || le32(z + 20) != 0 || le64(z + 24) != le64(z + 32))
      fail_input(file, "multi-disk zip archives are not supported");
    dir.entries = le64(z + 32);
    dir.size = le64(z + 40);
    dir.offset = le64(z + 48);
    dir.end = at;
  }
  if (dir.offset > dir.end || dir.end - dir.offset != dir.size)
    fail_input(file, "central directory [" + std::to_string(dir.offset) + ", +" + std::to_string(dir.size) +
                         ") does not end where the end record begins (offset " + std::to_string(dir.end) + ")");
  return dir;
}

// Replaces saturated 32-bit fields with the ZIP64 extra field's 64-bit values (APPNOTE 4.5.3: the fields
// present are exactly the saturated ones, in the order size, compressed size, offset, disk).
void apply_zip64_extra(const std::uint8_t* extra, std::size_t len, ZipEntry& z, std::uint32_t& disk,
                       const std::string& file) {
  const bool need_size = z.size == 0xffffffffu, need_csize = z.compressed_size == 0xffffffffu;
  const bool need_offset = z.header_offset == 0xffffffffu, need_disk = disk == 0xffffu;
  std::size_t p = 0;
  bool found = false;
  while (len - p >= 4) {
    const std::uint16_t tag = le16(extra + p), n = le16(extra + p + 2);
    if (n > len - p - 4) fail_input(file, "member " + moescope::quoted(z.name) + ": extra field runs past its entry");
    if (tag == 0x0001 && !found) {
      found = true;
      const std::uint8_t* f = extra + p + 4;
      std::size_t q = 0;
      auto take64 = [&](std::uint64_t& out) {
        if (n - q < 8) fail_input(file, "member " + moescope::quoted(z.name) + ": ZIP64 extra field too short");
        out = le64(f + q);
        q += 8;
      };
      if (need_size) take64(z.size);
      if (need_csize) take64(z.compressed_size);
      if (need_offset) take64(z.header_offset);
      if (need_disk) {
        if (n - q < 4) fail_input(file, "member " + moescope::quoted(z.name) + ": ZIP64 extra field too short");
        disk = le32(f + q);
      }
    }
    p += 4 + std::size_t{n};
  }
  if (!found && (need_size || need_csize || need_offset || need_disk))
    fail_input(file, "member " + moescope::quoted(z.name) + ": saturated sizes but no ZIP64 extra field");
}

}  // namespace

ZipArchive::ZipArchive(const std::uint8_t* data, std::size_t size, std::string file)
    : data_(data), size_(size), file_(std::move(file)) {
  const Directory dir = read_directory_location(data_, size_, file_);
  // Every entry takes at least kCentralLen bytes: bound the count before trusting it.
  if (dir.entries > dir.size / kCentralLen)
    fail_input(file_, "end record claims " + std::to_string(dir.entries) + " members but the central directory of " +
                          std::to_string(dir.size) + " bytes holds at most " + std::to_string(dir.size / kCentralLen));
  entries_.reserve(static_cast<std::size_t>(dir.entries));
  std::uint64_t p = dir.offset;
  const std::uint64_t end = dir.offset + dir.size;
  while (p < end) {
    if (end - p < kCentralLen || le32(data_ + p) != kCentralSig)
      fail_input(file_, "bad central directory entry at offset " + std::to_string(p));
    if (entries_.size() == dir.entries)
      fail_input(file_, "central directory holds more members than the " + std::to_string(dir.entries) +
                            " its end record claims");
    const std::uint8_t* c = data_ + p;
    const std::size_t name_len = le16(c + 28), extra_len = le16(c + 30), comment_len = le16(c + 32);
    if (kCentralLen + name_len + extra_len + comment_len > end - p)
      fail_input(file_, "central directory entry at offset " + std::to_string(p) + " runs past the directory");
    ZipEntry z;
    z.name.assign(reinterpret_cast<const char*>(c + kCentralLen), name_len);
    z.flags = le16(c + 8);
    z.method = le16(c + 10);
    z.crc32 = le32(c + 16);
    z.compressed_size = le32(c + 20);
    z.size = le32(c + 24);
    std::uint32_t disk = le16(c + 34);
    z.header_offset = le32(c + 42);
    apply_zip64_extra(c + kCentralLen + name_len, extra_len, z, disk, file_);
    const std::string who = "member " + moescope::quoted(z.name) + ": ";
    if (disk != 0) fail_input(file_, who + "on disk " + std::to_string(disk) + " (multi-disk archives are not supported)");
    if (z.flags & 0x41) fail_input(file_, who + "encrypted members are not supported");
    if (z.method != 0 && z.method != 8)
      fail_input(file_, who + "compression method " + std::to_string(z.method) + " (only stored and deflate are supported)");
    if (z.method == 0 && z.compressed_size != z.size)
      fail_input(file_, who + "stored member with compressed size " + std::to_string(z.compressed_size) +
                            " and size " + std::to_string(z.size));

    // The local header: its own name and extra lengths decide where the data starts.
    const std::uint64_t h = z.header_offset;
    if (h > dir.offset || dir.offset - h < kLocalLen || le32(data_ + h) != kLocalSig)
      fail_input(file_, who + "no local header at offset " + std::to_string(h));
    const std::uint8_t* l = data_ + h;
    const std::uint64_t local_name = le16(l + 26), local_extra = le16(l + 28);
    z.data_offset = h + kLocalLen + local_name + local_extra;
    if (z.data_offset > dir.offset || dir.offset - z.data_offset < z.compressed_size)
      fail_input(file_, who + "data [" + std::to_string(z.data_offset) + ", +" + std::to_string(z.compressed_size) +
                            ") runs past the start of the central directory (offset " + std::to_string(dir.offset) + ")");
    if (z.method == 8 && z.size / kMaxDeflateRatio > z.compressed_size + 1)  // compressed_size < archive size here
      fail_input(file_, who + "claims to inflate " + std::to_string(z.compressed_size) + " bytes to " +
                            std::to_string(z.size) + ", more than deflate can");
    if (local_name != name_len || std::memcmp(l + kLocalLen, z.name.data(), name_len) != 0)
      fail_input(file_, who + "local header at offset " + std::to_string(h) + " names another member");
    if (!by_name_.emplace(z.name, entries_.size()).second) fail_input(file_, who + "appears twice in the archive");
    entries_.push_back(std::move(z));
    p += kCentralLen + name_len + extra_len + comment_len;
  }
  if (entries_.size() != dir.entries)
    fail_input(file_, "central directory holds " + std::to_string(entries_.size()) + " members but the end record claims " +
                          std::to_string(dir.entries));

  // Members must not share bytes (overlapping members let a small archive claim any amount of data).
  std::vector<std::size_t> order(entries_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return entries_[a].header_offset < entries_[b].header_offset; });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const ZipEntry& a = entries_[order[i - 1]];
    const ZipEntry& b = entries_[order[i]];
    if (a.data_offset + a.compressed_size > b.header_offset)
      fail_input(file_, "members " + moescope::quoted(a.name) + " and " + moescope::quoted(b.name) + " overlap");
  }
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

ByteView ZipArchive::read(const ZipEntry& e, std::vector<std::uint8_t>& buffer, bool check_crc) const {
  const std::string who = "member " + moescope::quoted(e.name) + ": ";
  const std::uint8_t* src = data_ + e.data_offset;
  ByteView out;
  if (e.method == 0) {
    out = {src, static_cast<std::size_t>(e.size)};
  } else {
    buffer.assign(static_cast<std::size_t>(e.size), 0);
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail_input(file_, who + "cannot start inflating");
    std::uint64_t in_left = e.compressed_size, out_left = e.size;
    const std::uint8_t* in = src;
    std::uint8_t* dst = buffer.data();
    std::uint8_t spare = 0;  // a byte past the declared size: any output into it means the size was wrong
    int rc = Z_OK;
    while (rc == Z_OK) {
      const auto give_in = static_cast<uInt>(std::min<std::uint64_t>(in_left, UINT_MAX));
      const bool past = out_left == 0;
      const auto give_out = past ? 1u : static_cast<uInt>(std::min<std::uint64_t>(out_left, UINT_MAX));
      zs.next_in = const_cast<Bytef*>(in);
      zs.avail_in = give_in;
      zs.next_out = past ? &spare : dst;
      zs.avail_out = give_out;
      rc = inflate(&zs, Z_NO_FLUSH);
      const std::uint64_t used_in = give_in - zs.avail_in, made = give_out - zs.avail_out;
      in += used_in;
      in_left -= used_in;
      if (past && made > 0) {
        inflateEnd(&zs);
        fail_input(file_, who + "inflates to more than its declared " + std::to_string(e.size) + " bytes");
      }
      if (!past) {
        dst += made;
        out_left -= made;
      }
      if (rc == Z_OK && used_in == 0 && made == 0) rc = Z_BUF_ERROR;  // no progress possible
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END)
      fail_input(file_, who + (rc == Z_BUF_ERROR ? std::string("deflate stream ends early")
                                                 : "invalid deflate data (" + std::string(zs.msg ? zs.msg : "zlib error") + ")"));
    if (out_left != 0)
      fail_input(file_, who + "inflates to " + std::to_string(e.size - out_left) + " bytes, not the declared " +
                            std::to_string(e.size));
    out = {buffer.data(), buffer.size()};
  }
  if (check_crc) {
    const uLong crc = crc32_z(0L, out.data, out.size);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION  // fuzz builds: mutated members must reach the parsers behind
    if (crc != e.crc32) fail_input(file_, who + "CRC-32 mismatch (the archive is corrupt)");
#else
    (void)crc;
#endif
  }
  return out;
}

}  // namespace moescope
