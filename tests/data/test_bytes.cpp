#include "moescope/data/bytes.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "data/helpers.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;
using testing::write_bytes;
using testing::expect_input_error;
using testing::write_gzip;

std::vector<std::uint8_t> counting_bytes(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>((i * 7 + i / 251) & 0xff);
  return v;
}

TEST(ReadFileBytes, RawFileIsReturnedAsIs) {
  TempDir d;
  const auto data = counting_bytes(1000);
  write_bytes(d.file("raw.bin"), data);
  const FileBytes f = read_file_bytes(d.file("raw.bin"));
  EXPECT_FALSE(f.gzip);
  EXPECT_EQ(f.bytes, data);
}

TEST(ReadFileBytes, EmptyFileIsEmpty) {
  TempDir d;
  write_bytes(d.file("empty"), {});
  EXPECT_TRUE(read_file_bytes(d.file("empty")).bytes.empty());
}

TEST(ReadFileBytes, GzipDetectedByContentNotName) {
  TempDir d;
  const auto data = counting_bytes(300000);  // several inflate output rounds
  write_gzip(d.file("no-extension"), data);
  const FileBytes f = read_file_bytes(d.file("no-extension"));
  EXPECT_TRUE(f.gzip);
  EXPECT_EQ(f.bytes, data);
  // and a raw file named .gz is read raw
  write_bytes(d.file("plain.gz"), {1, 2, 3});
  EXPECT_EQ(read_file_bytes(d.file("plain.gz")).bytes, (std::vector<std::uint8_t>{1, 2, 3}));
}

TEST(ReadFileBytes, ConcatenatedGzipMembersAreAllRead) {
  TempDir d;
  write_gzip(d.file("a.gz"), {1, 2, 3});
  write_gzip(d.file("b.gz"), {4, 5});
  auto both = testing::read_bytes(d.file("a.gz"));
  const auto b = testing::read_bytes(d.file("b.gz"));
  both.insert(both.end(), b.begin(), b.end());
  write_bytes(d.file("ab.gz"), both);
  EXPECT_EQ(read_file_bytes(d.file("ab.gz")).bytes, (std::vector<std::uint8_t>{1, 2, 3, 4, 5}));
}

TEST(ReadFileBytes, TruncatedGzipIsInputError) {
  TempDir d;
  write_gzip(d.file("full.gz"), counting_bytes(5000));
  auto bytes = testing::read_bytes(d.file("full.gz"));
  bytes.resize(bytes.size() / 2);
  write_bytes(d.file("cut.gz"), bytes);
  expect_input_error([&] { read_file_bytes(d.file("cut.gz")); }, {"cut.gz", "truncated"});
  write_bytes(d.file("magic-only.gz"), {0x1f, 0x8b});
  expect_input_error([&] { read_file_bytes(d.file("magic-only.gz")); }, {"magic-only.gz", "truncated"});
}

TEST(ReadFileBytes, CorruptGzipIsInputError) {
  TempDir d;
  // a valid gzip header (deflate, no flags) followed by an invalid deflate block type (3)
  write_bytes(d.file("bad.gz"), {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff});
  expect_input_error([&] { read_file_bytes(d.file("bad.gz")); }, {"bad.gz", "corrupt gzip"});
  // right data, wrong CRC
  write_gzip(d.file("crc.gz"), counting_bytes(100));
  auto bytes = testing::read_bytes(d.file("crc.gz"));
  bytes[bytes.size() - 8] ^= 0xff;
  write_bytes(d.file("crc.gz"), bytes);
  expect_input_error([&] { read_file_bytes(d.file("crc.gz")); }, {"crc.gz", "corrupt gzip"});
  // bad compression method in the header
  write_bytes(d.file("method.gz"), {0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3});
  expect_input_error([&] { read_file_bytes(d.file("method.gz")); }, {"method.gz"});
}

TEST(ReadFileBytes, SizeLimitsApplyBeforeAndAfterDecompression) {
  TempDir d;
  write_bytes(d.file("big.bin"), counting_bytes(101));
  expect_input_error([&] { read_file_bytes(d.file("big.bin"), 100); }, {"big.bin", "101 bytes", "limit"});
  EXPECT_EQ(read_file_bytes(d.file("big.bin"), 101).bytes.size(), 101u);
  // a small gzip file that inflates past the limit (zeros compress ~1000:1)
  write_gzip(d.file("bomb.gz"), std::vector<std::uint8_t>(1 << 20, 0));
  expect_input_error([&] { read_file_bytes(d.file("bomb.gz"), 100000); }, {"bomb.gz", "more than 100000"});
  EXPECT_EQ(read_file_bytes(d.file("bomb.gz"), 1 << 20).bytes.size(), std::size_t{1} << 20);
}

TEST(ReadFileBytes, MissingFileAndFolderAreInputErrors) {
  TempDir d;
  expect_input_error([&] { read_file_bytes(d.file("nope")); }, {"nope", "no such file"});
  expect_input_error([&] { read_file_bytes(d.path()); }, {d.path(), "not a regular file"});
}

}  // namespace
}  // namespace moescope
