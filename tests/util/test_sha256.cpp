#include "moescope/util/sha256.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

std::string sha(const std::string& s) { return sha256_bytes(s.data(), s.size()); }

// FIPS 180-4 example vectors (NIST CSRC "Examples with intermediate values").
TEST(Sha256, NistEmpty) {
  EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, NistAbc) {
  EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, Nist448Bit) {
  EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, NistMillionA) {
  const std::string a(1000000, 'a');
  EXPECT_EQ(sha(a), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Same input fed in odd-sized pieces.
  Sha256 s;
  for (std::size_t off = 0; off < a.size(); off += 997) {
    s.update(a.data() + off, std::min<std::size_t>(997, a.size() - off));
  }
  EXPECT_EQ(s.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalSplitAtEveryOffsetMatchesOneShot) {
  std::vector<std::uint8_t> msg(130);
  for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<std::uint8_t>(i * 37 + 11);
  const std::string want = sha256_bytes(msg.data(), msg.size());
  for (std::size_t split = 0; split <= msg.size(); ++split) {
    Sha256 s;
    s.update(msg.data(), split);
    s.update(msg.data() + split, msg.size() - split);
    EXPECT_EQ(s.hex_digest(), want) << "split at " << split;
  }
}

TEST(Sha256, DigestResetsTheObject) {
  Sha256 s;
  s.update("xyz", 3);
  (void)s.hex_digest();
  s.update("abc", 3);
  EXPECT_EQ(s.hex_digest(), sha("abc"));
}

TEST(Sha256, PaddingBoundaryLengths) {
  // Lengths around the 55/56/64-byte padding boundaries, split and one-shot must agree.
  for (std::size_t n : {55u, 56u, 57u, 63u, 64u, 65u, 119u, 120u, 128u}) {
    const std::string m(n, 'q');
    Sha256 s;
    for (char c : m) s.update(&c, 1);
    EXPECT_EQ(s.hex_digest(), sha(m)) << n;
  }
}

TEST(Sha256, FileMatchesBytes) {
  testing::TempDir dir;
  // Over 1 MiB so the file is read in more than one chunk.
  std::vector<std::uint8_t> bytes((1u << 20) + 12345);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 13);
  const std::string path = dir.file("data.bin");
  testing::write_bytes(path, bytes);
  const std::string got = sha256_file(path);
  EXPECT_EQ(got, sha256_bytes(bytes.data(), bytes.size()));

  if (!testing::file_exists("/usr/bin/sha256sum")) return;
  const std::string cmd = "/usr/bin/sha256sum '" + path + "'";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), &pclose);
  ASSERT_TRUE(pipe);
  char line[256] = {};
  ASSERT_NE(std::fgets(line, sizeof(line), pipe.get()), nullptr);
  EXPECT_EQ(std::string(line).substr(0, 64), got);
}

TEST(Sha256, EmptyFile) {
  testing::TempDir dir;
  testing::write_bytes(dir.file("empty"), {});
  EXPECT_EQ(sha256_file(dir.file("empty")), sha(""));
}

TEST(Sha256, MissingFileThrowsInputErrorNamingIt) {
  testing::TempDir dir;
  const std::string path = dir.file("nope.bin");
  try {
    sha256_file(path);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot read file"), std::string::npos) << e.what();
  }
}

TEST(Sha256, DirectoryThrowsInputError) {
  testing::TempDir dir;
  EXPECT_THROW(sha256_file(dir.path()), InputError);
}

}  // namespace
}  // namespace moescope
