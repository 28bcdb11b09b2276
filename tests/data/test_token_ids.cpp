// data/token_ids: files written by NumPy itself and by the safetensors layout (tests/data/token_ids/
// make_fixtures.py), text files, and malformed variants built here byte by byte.
#include "moescope/data/token_ids.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "data/helpers.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::expect_input_error;
using Ids = std::vector<std::int32_t>;

const std::string kDir = std::string(MOESCOPE_SOURCE_DIR) + "/tests/data/token_ids/";
const Ids kIds = {0, 1, 2, 50255, 50256, 7};  // the 2x3 array of make_fixtures.py, flattened in C order

std::string bytes_of(const std::vector<std::uint8_t>& v) { return std::string(v.begin(), v.end()); }

// An .npy v1 file: magic, version, header length, the header padded to 64 bytes with a final newline, data.
std::string npy(const std::string& dict, const std::string& data, char major = 1) {
  std::string header = dict;
  const std::size_t pre = major == 1 ? 10 : 12;
  while ((pre + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string s = "\x93NUMPY";
  s += major;
  s += '\0';
  const auto n = static_cast<std::uint32_t>(header.size());
  s += static_cast<char>(n & 0xFF);
  s += static_cast<char>((n >> 8) & 0xFF);
  if (major != 1) {
    s += static_cast<char>((n >> 16) & 0xFF);
    s += static_cast<char>((n >> 24) & 0xFF);
  }
  return s + header + data;
}

std::string le32(std::initializer_list<std::uint32_t> v) {
  std::string s;
  for (std::uint32_t x : v) {
    for (int k = 0; k < 4; ++k) s += static_cast<char>((x >> (8 * k)) & 0xFF);
  }
  return s;
}

std::string safetensors(const std::string& header, const std::string& data) {
  std::string s;
  const std::uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) s += static_cast<char>((n >> (8 * k)) & 0xFF);
  return s + header + data;
}

TEST(TokenIds, NumpyFilesWrittenByNumpy) {
  for (const char* f : {"i4.npy", "u2.npy", "u4_v2.npy", "i8_be_v3.npy"}) {
    EXPECT_EQ(read_token_ids(kDir + f, 50257), kIds) << f;
  }
  EXPECT_EQ(read_token_ids(kDir + "u1.npy", 256), Ids({3, 1, 4, 1, 5}));
  EXPECT_EQ(read_token_ids(kDir + "scalar.npy", 100), Ids({42}));  // shape () holds one element
  EXPECT_TRUE(read_token_ids(kDir + "empty.npy", 10).empty());     // shape (0, 5)
  EXPECT_EQ(read_token_ids(kDir + "fortran_column.npy", 50257), Ids({0, 50255}));
  expect_input_error([] { read_token_ids(kDir + "fortran.npy", 50257); }, {"fortran.npy", "Fortran order"});
  expect_input_error([] { read_token_ids(kDir + "f4.npy", 50257); }, {"f4.npy", "'<f4' is not an integer type"});
  expect_input_error([] { read_token_ids(kDir + "structured.npy", 50257); }, {"structured.npy", "npy header"});
}

TEST(TokenIds, SafetensorsFiles) {
  EXPECT_EQ(read_token_ids(kDir + "u4.safetensors", 50257), kIds);
  EXPECT_EQ(read_token_ids(kDir + "i64.safetensors", 50257), kIds);
  expect_input_error([] { read_token_ids(kDir + "two.safetensors", 50257); }, {"two.safetensors", "more than one tensor"});
  expect_input_error([] { read_token_ids(kDir + "f32.safetensors", 50257); }, {"f32.safetensors", "dtype F32 is not an integer type"});
}

TEST(TokenIds, TextFiles) {
  EXPECT_EQ(read_token_ids(kDir + "ids.txt", 50257), kIds);
  EXPECT_TRUE(parse_token_ids("", "e.txt", 10).empty());
  EXPECT_TRUE(parse_token_ids(" \n\t ", "e.txt", 10).empty());
  EXPECT_EQ(parse_token_ids("007 8", "a.txt", 10), Ids({7, 8}));
  expect_input_error([] { parse_token_ids("1 2\n3 x1 4", "a.txt", 10); }, {"a.txt: line 2, position 3: 'x1' is not an integer"});
  expect_input_error([] { parse_token_ids("1 \x01\x02", "a.txt", 10); }, {"a.txt: line 1, position 1: '\\x01\\x02' is not an integer"});
  expect_input_error([] { parse_token_ids("1 -", "a.txt", 10); }, {"a.txt: line 1, position 1: '-' is not an integer"});
  expect_input_error([] { parse_token_ids("1 2.5", "a.txt", 10); }, {"'2.5' is not an integer"});
  expect_input_error([] { parse_token_ids("\n\n9 10", "a.txt", 10); }, {"a.txt: line 3, position 1: id 10 is outside the vocabulary [0, 10)"});
  expect_input_error([] { parse_token_ids("-3", "a.txt", 10); }, {"position 0: id -3 is outside"});
  expect_input_error([] { parse_token_ids("99999999999999999999999", "a.txt", 0); }, {"is outside the vocabulary [0, 2147483648)"});
  // vocab_size <= 0: any id that fits int32
  EXPECT_EQ(parse_token_ids("2147483647", "a.txt", 0), Ids({2147483647}));
}

TEST(TokenIds, RangeChecksNameThePositionAndTheId) {
  expect_input_error([] { read_token_ids(kDir + "i4.npy", 50256); }, {"i4.npy: position 4: id 50256 is outside the vocabulary [0, 50256)"});
  expect_input_error([] { read_token_ids(kDir + "u4.safetensors", 100); }, {"u4.safetensors: position 3: id 50255 is outside"});
  // negative values of signed types, and unsigned values past int32
  expect_input_error([] { parse_token_ids(npy("{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", std::string("\x01\x00\xff\xff", 4)), "n.npy", 0); },
                     {"n.npy: position 1: id -1 is outside"});
  expect_input_error([] { parse_token_ids(npy("{'descr': '<u4', 'fortran_order': False, 'shape': (1,), }", le32({0xFFFFFFFFu})), "n.npy", 0); },
                     {"position 0: id 4294967295 is outside the vocabulary [0, 2147483648)"});
}

TEST(TokenIds, FormatDetection) {
  const std::string n = npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", le32({5, 6}));
  EXPECT_EQ(detect_token_id_format(n, "noext"), TokenIdFormat::Npy);
  EXPECT_EQ(parse_token_ids(n, "noext", 10), Ids({5, 6}));
  const std::string st = safetensors(R"({"t":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", le32({5, 6}));
  EXPECT_EQ(detect_token_id_format(st, "noext"), TokenIdFormat::Safetensors);
  EXPECT_EQ(parse_token_ids(st, "noext", 10), Ids({5, 6}));
  EXPECT_EQ(detect_token_id_format("1 2 3", "x.bin"), TokenIdFormat::Text);
  // the extension decides when there is one: a .npy without the magic is an error, not text
  EXPECT_EQ(detect_token_id_format("1 2 3", "x.npy"), TokenIdFormat::Npy);
  expect_input_error([] { parse_token_ids("1 2 3", "x.npy", 10); }, {"x.npy: not a NumPy .npy file"});
  expect_input_error([] { parse_token_ids("1 2 3", "x.safetensors", 10); }, {"x.safetensors: safetensors file of 5 bytes has no header length"});
}

TEST(TokenIds, MalformedNpyHeaders) {
  const std::string ok = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
  auto bad = [](const std::string& bytes, const std::vector<std::string>& parts) {
    expect_input_error([&] { parse_token_ids(bytes, "b.npy", 10); }, parts);
  };
  const std::string good = npy(ok, le32({1, 2}));
  bad(good.substr(0, 9), {"b.npy: not a NumPy .npy file"});
  std::string v9 = good;
  v9[6] = 9;
  bad(v9, {"npy version 9.0 is not 1, 2 or 3"});
  std::string long_header = good;
  long_header[8] = '\xff';
  long_header[9] = '\x7f';
  bad(long_header, {"npy header of 32767 bytes runs past the end of the file"});
  bad(npy(ok, le32({1})), {"need 8 bytes of data, the file holds 4"});
  bad(npy(ok, le32({1, 2, 3})), {"need 8 bytes of data, the file holds 12"});
  bad(npy("{'descr': '<i4', 'shape': (2,), }", le32({1, 2})), {"lacks descr, fortran_order or shape"});
  bad(npy("{'descr': '<i3', 'fortran_order': False, 'shape': (2,), }", le32({1, 2})), {"'<i3' is not an integer type"});
  bad(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (-2,), }", le32({1, 2})), {"shape entries must be non-negative"});
  bad(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (46116860184273879040,), }", ""), {"shape entry too large"});
  bad(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", ""), {"npy shape overflows"});
  bad(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2147483648, 2147483648, 4), }", ""), {"npy shape overflows"});
  bad(npy("{'descr': '<i4', 'fortran_order': Maybe, 'shape': (2,), }", le32({1, 2})), {"npy header: expected a string, True, False or a tuple"});
  bad(npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,)", le32({1, 2})), {"npy header: unexpected end"});
  bad(npy("{'descr: '<i4'}", ""), {"npy header"});
  // version 2 headers have a 4-byte length
  EXPECT_EQ(parse_token_ids(npy(ok, le32({1, 2}), 2), "b.npy", 10), Ids({1, 2}));
}

TEST(TokenIds, MalformedSafetensors) {
  auto bad = [](const std::string& bytes, const std::vector<std::string>& parts) {
    expect_input_error([&] { parse_token_ids(bytes, "b.safetensors", 10); }, parts);
  };
  const std::string data = le32({1, 2});
  bad("1234", {"b.safetensors: safetensors file of 4 bytes has no header length"});
  bad(safetensors("{}", data).substr(0, 8) + "{", {"header length 2 runs past the end of the file (9 bytes)"});
  bad(safetensors("{nope", data), {"safetensors header is not valid JSON"});
  bad(safetensors("[1]", data), {"header is not a JSON object"});
  bad(safetensors(R"({"__metadata__":{}})", ""), {"holds no tensor"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[2]}})", data), {"tensor 't': needs dtype, shape and data_offsets"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[-2],"data_offsets":[0,8]}})", data), {"not a non-negative integer"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[2],"data_offsets":[0,16]}})", data), {"data_offsets [0, 16) do not lie within the 8 bytes"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[2],"data_offsets":[8,0]}})", data), {"do not lie within"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", data), {"data_offsets [0, 4) do not cover the 8 bytes"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[3],"data_offsets":[0,8]}})", data), {"shape [3] of I32 does not match the 8 bytes"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", data), {"overflows"});
  bad(safetensors(R"({"t":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\1\0"), {"dtype BOOL is not an integer type"});
  bad(safetensors(R"({"t":{"dtype":"I32","shape":[2],"data_offsets":[0]}})", data), {"data_offsets is not a pair"});
  EXPECT_EQ(parse_token_ids(safetensors(R"({"t":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}})", std::string("\x05\x00\x09\x00", 4)), "b.safetensors", 10),
            Ids({5, 9}));
}

TEST(TokenIds, FilesThatCannotBeRead) {
  expect_input_error([] { read_token_ids(kDir + "missing.npy", 10); }, {"missing.npy", "cannot open"});
  expect_input_error([] { read_token_ids(kDir, 10); }, {"not a regular file"});
  testing::TempDir dir;
  testing::write_text(dir.file("empty.txt"), "");
  EXPECT_TRUE(read_token_ids(dir.file("empty.txt"), 10).empty());
}

}  // namespace
}  // namespace moescope
