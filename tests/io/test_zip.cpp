// Zip archives in memory: stored, deflated and ZIP64 members read back exactly; every malformed structure is an
// InputError naming the archive (never a crash or a read outside the buffer: the sanitizer build checks that).
#include "moescope/io/zip.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moescope/util/error.hpp"
#include "support/zip_builder.hpp"

namespace moescope {
namespace {

using testing::build_zip;
using testing::patch;
using testing::ZipLayout;
using testing::ZipMember;

const std::uint8_t* bytes(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

std::string contents(const ZipArchive& z, const std::string& name) {
  std::vector<std::uint8_t> buf;
  const ZipEntry* e = z.find(name);
  if (!e) throw std::runtime_error("no member " + name);
  const ByteView v = z.read(*e, buf);
  return std::string(reinterpret_cast<const char*>(v.data), v.size);
}

// The message of the InputError that parsing `archive` throws ("" when it parses).
std::string parse_error(const std::string& archive) {
  try {
    ZipArchive z(bytes(archive), archive.size(), "a.zip");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::vector<ZipMember> sample() {
  std::string big(5000, 'x');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7) % 13);
  return {{"arch/one", "hello", false}, {"arch/two", big, true}, {"arch/empty", "", false}, {"arch/zd", "", true}};
}

TEST(Zip, StoredAndDeflatedMembersReadBack) {
  for (bool zip64 : {false, true}) {
    const auto members = sample();
    const std::string a = build_zip(members, zip64);
    ZipArchive z(bytes(a), a.size(), "a.zip");
    ASSERT_EQ(z.entries().size(), members.size());
    for (std::size_t i = 0; i < members.size(); ++i) {
      EXPECT_EQ(z.entries()[i].name, members[i].name);
      EXPECT_EQ(z.entries()[i].size, members[i].data.size());
      EXPECT_EQ(contents(z, members[i].name), members[i].data) << members[i].name << " zip64 " << zip64;
    }
    EXPECT_EQ(z.entries()[1].method, 8);
    EXPECT_LT(z.entries()[1].compressed_size, z.entries()[1].size);  // really deflated
    EXPECT_EQ(z.find("arch/three"), nullptr);
  }
}

TEST(Zip, StoredMemberIsAViewIntoTheArchive) {
  const std::string a = build_zip({{"d/x", "abcdef", false}});
  ZipArchive z(bytes(a), a.size(), "a.zip");
  std::vector<std::uint8_t> buf;
  const ByteView v = z.read(z.entries()[0], buf);
  EXPECT_TRUE(buf.empty());
  EXPECT_GE(v.data, bytes(a));
  EXPECT_LE(v.data + v.size, bytes(a) + a.size());
}

TEST(Zip, ACommentAfterTheEndRecordIsAllowed) {
  std::string a = build_zip({{"d/x", "abc", false}});
  patch(a, a.size() - 2, 7, 2);
  a += "comment";
  ZipArchive z(bytes(a), a.size(), "a.zip");
  EXPECT_EQ(contents(z, "d/x"), "abc");
  a += "!";  // the comment length no longer reaches the end
  EXPECT_NE(parse_error(a).find("no zip end of central directory record"), std::string::npos) << parse_error(a);
}

TEST(Zip, EveryTruncationIsAnInputError) {
  for (bool zip64 : {false, true}) {
    const std::string a = build_zip(sample(), zip64);
    for (std::size_t n = 0; n < a.size(); ++n) {
      const std::string cut = a.substr(0, n);
      const std::string err = parse_error(cut);
      EXPECT_NE(err, "") << "prefix of " << n << " bytes parsed";
      EXPECT_EQ(err.rfind("a.zip: ", 0), 0u) << err;
    }
  }
}

TEST(Zip, MalformedDirectoriesAreNamed) {
  ZipLayout l;
  const std::string good = build_zip(sample(), false, &l);
  auto with = [&](std::size_t at, std::uint64_t v, int n) {
    std::string a = good;
    patch(a, at, v, n);
    return parse_error(a);
  };
  auto expect_has = [](const std::string& err, const std::string& what) {
    EXPECT_NE(err.find(what), std::string::npos) << "'" << err << "' lacks '" << what << "'";
  };
  expect_has(with(l.central[1], 0x12345678, 4), "bad central directory entry at offset");
  expect_has(with(l.end_record + 10, 3, 2), "multi-disk");                    // counts on this disk vs total
  expect_has(with(l.end_record + 8, 3, 2), "multi-disk");
  {
    std::string a = good;
    patch(a, l.end_record + 8, 3, 2);
    patch(a, l.end_record + 10, 3, 2);
    expect_has(parse_error(a), "central directory holds more members than the 3");
  }
  {  // long names: the directory could hold a third entry by size, but holds two
    ZipLayout l2;
    std::string a = build_zip({{"d/" + std::string(100, 'a'), "1"}, {"d/" + std::string(100, 'b'), "2"}}, false, &l2);
    patch(a, l2.end_record + 8, 3, 2);
    patch(a, l2.end_record + 10, 3, 2);
    expect_has(parse_error(a), "central directory holds 2 members but the end record claims 3");
  }
  {
    std::string a = good;
    patch(a, l.end_record + 8, 60000, 2);
    patch(a, l.end_record + 10, 60000, 2);
    expect_has(parse_error(a), "holds at most");
  }
  expect_has(with(l.end_record + 16, 0xfffffff0u, 4), "does not end where the end record begins");
  expect_has(with(l.end_record + 12, 1, 4), "does not end where the end record begins");
  expect_has(with(l.central[0] + 42, 0x7ffffff0u, 4), "no local header at offset");
  expect_has(with(l.central[0] + 42, l.local[1], 4), "names another member");
  expect_has(with(l.central[0] + 28, 400, 2), "runs past the directory");
  expect_has(with(l.local[0] + 28, 60000, 2), "runs past the start of the central directory");
  {  // a stored member claiming more bytes: its data reaches into the next member's header
    std::string a = good;
    patch(a, l.central[0] + 20, 40, 4);
    patch(a, l.central[0] + 24, 40, 4);
    expect_has(parse_error(a), "members 'arch/one' and 'arch/two' overlap");
  }
  expect_has(with(l.central[0] + 20, 6, 4), "stored member with compressed size 6 and size 5");
  expect_has(with(l.central[0] + 8, 1, 2), "encrypted");
  expect_has(with(l.central[0] + 10, 12, 2), "compression method 12");
  expect_has(with(l.central[1] + 24, 0x7fffffffu, 4), "more than deflate can");
  expect_has(with(l.central[0] + 34, 1, 2), "on disk 1");
  {  // a name used twice
    const std::string a = build_zip({{"d/x", "1", false}, {"d/x", "2", false}});
    expect_has(parse_error(a), "member 'd/x': appears twice");
  }
  expect_has(parse_error(""), "too short for an end record");
  expect_has(parse_error(std::string(100, 'z')), "no zip end of central directory record");
}

TEST(Zip, MalformedZip64RecordsAreNamed) {
  ZipLayout l;
  const std::string good = build_zip(sample(), true, &l);
  auto with = [&](std::size_t at, std::uint64_t v, int n) {
    std::string a = good;
    patch(a, at, v, n);
    return parse_error(a);
  };
  auto expect_has = [](const std::string& err, const std::string& what) {
    EXPECT_NE(err.find(what), std::string::npos) << "'" << err << "' lacks '" << what << "'";
  };
  const std::size_t locator = l.end_record - 20;
  expect_has(with(locator + 8, 1ull << 40, 8), "ZIP64 end record offset");
  expect_has(with(locator + 8, l.zip64_end - 4, 8), "no ZIP64 end record at offset");
  expect_has(with(l.zip64_end + 4, 1ull << 40, 8), "ZIP64 end record claims");
  expect_has(with(l.zip64_end + 32, 9, 8), "multi-disk");
  expect_has(with(l.zip64_end + 48, 7, 8), "does not end where the end record begins");
  // The extra field: its tag missing, or too short for the saturated fields.
  const std::size_t extra0 = l.central[0] + 46 + 8;  // after "arch/one"
  expect_has(with(extra0, 0x9999, 2), "saturated sizes but no ZIP64 extra field");
  expect_has(with(extra0 + 2, 16, 2), "ZIP64 extra field too short");
  expect_has(with(extra0 + 2, 200, 2), "extra field runs past its entry");
  expect_has(with(extra0 + 4 + 16, 1ull << 50, 8), "no local header");
}

TEST(Zip, ReadChecksCrcAndDeflateStreams) {
  ZipLayout l;
  const auto members = sample();
  const std::string good = build_zip(members, false, &l);
  auto read_error = [&](const std::string& a, const std::string& name) {
    ZipArchive z(bytes(a), a.size(), "a.zip");  // the directory is fine: only reading fails
    try {
      contents(z, name);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  {
    std::string a = good;
    a[l.data[0]] ^= 1;
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION  // fuzz builds compute CRC-32s without enforcing them
    EXPECT_NE(read_error(a, "arch/one").find("member 'arch/one': CRC-32 mismatch"), std::string::npos);
#endif
    ZipArchive z(bytes(a), a.size(), "a.zip");
    std::vector<std::uint8_t> buf;
    EXPECT_NO_THROW(z.read(z.entries()[0], buf, false));  // unless asked not to check
  }
  {
    std::string a = good;
    a[l.data[1]] = static_cast<char>(0xff);  // a reserved block type
    EXPECT_NE(read_error(a, "arch/two").find("invalid deflate data"), std::string::npos) << read_error(a, "arch/two");
  }
  {  // declared one byte short, then one byte long
    std::string a = good;
    patch(a, l.central[1] + 24, members[1].data.size() - 1, 4);
    EXPECT_NE(read_error(a, "arch/two").find("inflates to more than its declared 4999 bytes"), std::string::npos)
        << read_error(a, "arch/two");
    patch(a, l.central[1] + 24, members[1].data.size() + 1, 4);
    EXPECT_NE(read_error(a, "arch/two").find("inflates to 5000 bytes, not the declared 5001"), std::string::npos)
        << read_error(a, "arch/two");
  }
  {  // the compressed stream cut short
    std::string a = good;
    const std::uint64_t csize = static_cast<std::uint8_t>(a[l.central[1] + 20]) |
                                (static_cast<std::uint64_t>(static_cast<std::uint8_t>(a[l.central[1] + 21])) << 8);
    patch(a, l.central[1] + 20, csize / 2, 4);
    EXPECT_NE(read_error(a, "arch/two").find("deflate stream ends early"), std::string::npos) << read_error(a, "arch/two");
  }
}

}  // namespace
}  // namespace moescope
