// safetensors: round trips, the byte format, dtype conversion, sharded indexes, and rejection of corrupt files.
#include "moescope/io/safetensors.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::TempDir;
using testing::f32_bytes;
using testing::read_bytes;
using testing::write_bytes;
using testing::write_text;

template <typename T>
std::vector<std::uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<std::uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TensorInfo info(const std::string& name, DType t, std::vector<std::int64_t> shape) {
  TensorInfo i;
  i.name = name;
  i.dtype = t;
  i.shape = std::move(shape);
  return i;
}

// A file from a hand-written header: 8-byte LE length, the JSON (padded with spaces when `pad`), the data.
std::vector<std::uint8_t> raw_file(const std::string& header, const std::vector<std::uint8_t>& data, bool pad = true) {
  std::string h = header;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  std::vector<std::uint8_t> out(8);
  const std::uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void set_header_len(std::vector<std::uint8_t>& bytes, std::uint64_t n) {
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
}

std::uint64_t header_len(const std::vector<std::uint8_t>& bytes) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[static_cast<std::size_t>(i)];
  return n;
}

// Runs `f`, expecting an InputError whose message holds every one of `needles`.
void expect_input_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no InputError thrown";
  } catch (const InputError& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what() << "\n  lacks: " << n;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected InputError, got another exception: " << e.what();
  }
}

// Writes `bytes` to `name` in `dir` and expects opening it to fail with a message naming the file and `needle`.
void expect_corrupt(const TempDir& dir, const std::string& name, const std::vector<std::uint8_t>& bytes,
                    const std::string& needle) {
  const std::string p = dir.file(name);
  write_bytes(p, bytes);
  expect_input_error([&] { SafetensorsFile f(p); }, {p, needle});
  // The byte-level parser must agree with the file reader.
  expect_input_error([&] { parse_safetensors_header(bytes.data(), bytes.size(), bytes.size(), p); }, {p, needle});
}

// A valid two-tensor file (a: F32 [2,2], b: F32 [3]) to corrupt.
std::vector<std::uint8_t> two_tensor_file() {
  return raw_file(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                  R"("b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}})",
                  f32_bytes({1, 2, 3, 4, 5, 6, 7}));
}

// ---------------------------------------------------------------------------------------------------------
// Round trips and the byte format

TEST(Safetensors, RoundTripsEveryKindOfTensor) {
  TempDir d;
  const std::string p = d.file("all.safetensors");
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.125f, 1e30f};
  const std::vector<double> f64 = {3.141592653589793, -1e-300, 2.5};
  const std::vector<std::uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x7BFF};  // 1, -2, 2^-24, 65504
  const std::vector<std::uint16_t> bf16 = {0x3F80, 0xC040, 0x3E80, 0x0000};  // 1, -3, 0.25, 0
  const std::vector<std::int64_t> i64 = {-5, 0, 1LL << 40};
  const std::vector<std::uint8_t> u8 = {0, 7, 255, 128, 1};
  const std::vector<std::uint8_t> boolean = {1, 0, 1};
  const std::vector<float> scalar = {42.0f};
  const std::vector<TensorToWrite> ts = {
      {info("w.f32", DType::F32, {2, 3}), f32.data()},
      {info("w.f64", DType::F64, {3}), f64.data()},
      {info("w.f16", DType::F16, {2, 2}), f16.data()},
      {info("w.bf16", DType::BF16, {4}), bf16.data()},
      {info("w.i64", DType::I64, {3}), i64.data()},
      {info("w.u8", DType::U8, {5}), u8.data()},
      {info("w.bool", DType::BOOL, {3}), boolean.data()},
      {info("empty", DType::F32, {0, 4}), nullptr},
      {info("scalar", DType::F32, {}), scalar.data()},
  };
  write_safetensors(p, ts, {{"format", "pt"}, {"note", "héllo"}});
  EXPECT_FALSE(testing::file_exists(p + ".tmp"));

  SafetensorsFile f(p);
  EXPECT_EQ(f.path(), p);
  ASSERT_EQ(f.tensors().size(), ts.size());
  for (std::size_t i = 1; i < f.tensors().size(); ++i) EXPECT_LT(f.tensors()[i - 1].name, f.tensors()[i].name);
  for (const auto& t : ts) {
    const TensorInfo& got = f.at(t.info.name);
    EXPECT_EQ(got.dtype, t.info.dtype) << t.info.name;
    EXPECT_EQ(got.shape, t.info.shape) << t.info.name;
    const ByteView b = f.raw(t.info.name);
    ASSERT_EQ(b.size, t.info.nbytes()) << t.info.name;
    if (b.size) {
      EXPECT_EQ(std::memcmp(b.data, t.data, b.size), 0) << t.info.name;
    }
  }
  const auto md = f.metadata();
  ASSERT_EQ(md.size(), 2u);
  EXPECT_EQ(md[0], (std::pair<std::string, std::string>{"format", "pt"}));
  EXPECT_EQ(md[1], (std::pair<std::string, std::string>{"note", "héllo"}));

  EXPECT_EQ(f.read_all_f64("w.f32"), std::vector<double>(f32.begin(), f32.end()));
  EXPECT_EQ(f.read_all_f64("w.f64"), f64);
  EXPECT_EQ(f.read_all_f64("w.f16"), (std::vector<double>{1.0, -2.0, std::ldexp(1.0, -24), 65504.0}));
  EXPECT_EQ(f.read_all_f64("w.bf16"), (std::vector<double>{1.0, -3.0, 0.25, 0.0}));
  EXPECT_EQ(f.read_all_f64("w.i64"), (std::vector<double>{-5.0, 0.0, 1099511627776.0}));
  EXPECT_EQ(f.read_all_f64("w.u8"), (std::vector<double>{0, 7, 255, 128, 1}));
  EXPECT_EQ(f.read_all_f64("w.bool"), (std::vector<double>{1, 0, 1}));
  EXPECT_TRUE(f.read_all_f64("empty").empty());
  EXPECT_EQ(f.at("empty").numel(), 0);
  EXPECT_EQ(f.read_all_f64("scalar"), std::vector<double>{42.0});
  EXPECT_EQ(f.at("scalar").numel(), 1);

  expect_input_error([&] { f.raw("nope"); }, {p, "nope"});
}

TEST(Safetensors, HeaderBytesFollowTheFormat) {
  TempDir d;
  const std::string p = d.file("fmt.safetensors");
  const std::vector<float> a = {1, 2, 3};
  const std::vector<std::uint16_t> b = {0x3F80};
  const std::vector<std::uint8_t> c = {9, 8, 7, 6, 5};
  // Given order z, a, m: data must follow that order, not the name order.
  write_safetensors(p,
                    {{info("z", DType::F32, {3}), a.data()},
                     {info("a", DType::BF16, {1}), b.data()},
                     {info("m", DType::U8, {5}), c.data()}},
                    {{"k", "v"}});
  const std::vector<std::uint8_t> bytes = read_bytes(p);
  ASSERT_GE(bytes.size(), 8u);
  const std::uint64_t n = header_len(bytes);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + n + 12 + 2 + 5);
  const std::string text(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  const std::size_t close = text.find_last_of('}');
  ASSERT_NE(close, std::string::npos);
  for (std::size_t i = close + 1; i < text.size(); ++i) EXPECT_EQ(text[i], ' ') << "padding must be spaces";
  EXPECT_LT(text.size() - close - 1, 8u);

  const auto j = nlohmann::json::parse(text);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 4u);
  EXPECT_EQ(j["__metadata__"], (nlohmann::json{{"k", "v"}}));
  EXPECT_EQ(j["z"]["dtype"], "F32");
  EXPECT_EQ(j["z"]["shape"], (nlohmann::json{3}));
  EXPECT_EQ(j["z"]["data_offsets"], (nlohmann::json{0, 12}));
  EXPECT_EQ(j["a"]["dtype"], "BF16");
  EXPECT_EQ(j["a"]["data_offsets"], (nlohmann::json{12, 14}));
  EXPECT_EQ(j["m"]["dtype"], "U8");
  EXPECT_EQ(j["m"]["shape"], (nlohmann::json{5}));
  EXPECT_EQ(j["m"]["data_offsets"], (nlohmann::json{14, 19}));
  const std::size_t data = 8 + static_cast<std::size_t>(n);
  EXPECT_EQ(std::memcmp(&bytes[data], a.data(), 12), 0);
  EXPECT_EQ(std::memcmp(&bytes[data + 12], b.data(), 2), 0);
  EXPECT_EQ(std::memcmp(&bytes[data + 14], c.data(), 5), 0);

  // The parsed header reports absolute offsets, entries sorted by name.
  const SafetensorsHeader h = parse_safetensors_header(bytes.data(), bytes.size(), bytes.size(), p);
  EXPECT_EQ(h.header_len, n);
  ASSERT_EQ(h.entries.size(), 3u);
  EXPECT_EQ(h.entries[0].info.name, "a");
  EXPECT_EQ(h.entries[0].begin, data + 12);
  EXPECT_EQ(h.entries[0].end, data + 14);
  EXPECT_EQ(h.entries[1].info.name, "m");
  EXPECT_EQ(h.entries[2].info.name, "z");
  EXPECT_EQ(h.entries[2].begin, data);
  EXPECT_EQ(h.metadata.at("k"), "v");
}

TEST(Safetensors, NoMetadataKeyWhenMetadataIsEmpty) {
  TempDir d;
  const std::string p = d.file("nometa.safetensors");
  const float x = 1;
  write_safetensors(p, {{info("x", DType::F32, {}), &x}});
  const auto bytes = read_bytes(p);
  const auto j = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_len(bytes)));
  EXPECT_FALSE(j.contains("__metadata__"));
  EXPECT_TRUE(SafetensorsFile(p).metadata().empty());
}

TEST(Safetensors, EmptyCheckpointRoundTrips) {
  TempDir d;
  const std::string p = d.file("none.safetensors");
  write_safetensors(p, {});
  SafetensorsFile f(p);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.file_size(), read_bytes(p).size());
}

TEST(Safetensors, ReadsWithOffsets) {
  TempDir d;
  const std::string p = d.file("off.safetensors");
  std::vector<float> v(20);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.5f * static_cast<float>(i) - 3.0f;
  const std::vector<double> w = {10, 20, 30, 40};
  write_safetensors(p, {{info("v", DType::F32, {4, 5}), v.data()}, {info("w", DType::F64, {4}), w.data()}});
  SafetensorsFile f(p);
  double out[6];
  f.read_f64("v", 7, 6, out);
  for (int k = 0; k < 6; ++k) EXPECT_EQ(out[k], v[static_cast<std::size_t>(7 + k)]);
  float outf[3];
  f.read_f32("w", 1, 3, outf);
  EXPECT_EQ(outf[0], 20.0f);
  EXPECT_EQ(outf[1], 30.0f);
  EXPECT_EQ(outf[2], 40.0f);
  f.read_f64("v", 20, 0, out);  // an empty read at the end is fine
  expect_input_error([&] { f.read_f64("v", 15, 6, out); }, {p, "'v'"});
  expect_input_error([&] { f.read_f64("v", -1, 1, out); }, {p, "'v'"});
}

// ---------------------------------------------------------------------------------------------------------
// Element conversion, checked against hand-computed encodings

TEST(Safetensors, Float16AndBFloat16Conversions) {
  const std::vector<std::uint16_t> h = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x3555, 0x8000, 0x7C00, 0xFC00, 0x7E00};
  std::vector<double> out(h.size());
  convert_to_f64(DType::F16, as_bytes(h).data(), h.size(), out.data());
  EXPECT_EQ(out[0], 1.0);
  EXPECT_EQ(out[1], -2.0);
  EXPECT_EQ(out[2], std::ldexp(1.0, -24));             // smallest subnormal
  EXPECT_EQ(out[3], 1023.0 * std::ldexp(1.0, -24));    // largest subnormal
  EXPECT_EQ(out[4], std::ldexp(1.0, -14));             // smallest normal
  EXPECT_EQ(out[5], 65504.0);                          // largest finite
  EXPECT_EQ(out[6], (1024.0 + 0x155) / 1024.0 / 4.0);  // 0.33325195...
  EXPECT_EQ(out[7], 0.0);
  EXPECT_TRUE(std::signbit(out[7]));
  EXPECT_EQ(out[8], std::numeric_limits<double>::infinity());
  EXPECT_EQ(out[9], -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(out[10]));

  const std::vector<std::uint16_t> b = {0x3F80, 0xC040, 0x3E80, 0x4049, 0x0001, 0x7F80};
  std::vector<float> outf(b.size());
  convert_to_f32(DType::BF16, as_bytes(b).data(), b.size(), outf.data());
  EXPECT_EQ(outf[0], 1.0f);
  EXPECT_EQ(outf[1], -3.0f);
  EXPECT_EQ(outf[2], 0.25f);
  EXPECT_EQ(outf[3], 3.140625f);  // 0x4049 = 1.5703125 * 2
  EXPECT_EQ(outf[4], std::ldexp(1.0f, -133));
  EXPECT_EQ(outf[5], std::numeric_limits<float>::infinity());
}

TEST(Safetensors, Float8Encodings) {
  const std::vector<std::uint8_t> e4 = {0x38, 0x40, 0x7E, 0x01, 0x07, 0x08, 0xB8, 0x00, 0x7F, 0xFF, 0x3C};
  std::vector<double> out(e4.size());
  convert_to_f64(DType::F8_E4M3, e4.data(), e4.size(), out.data());
  EXPECT_EQ(out[0], 1.0);
  EXPECT_EQ(out[1], 2.0);
  EXPECT_EQ(out[2], 448.0);  // largest finite E4M3FN
  EXPECT_EQ(out[3], std::ldexp(1.0, -9));
  EXPECT_EQ(out[4], 7 * std::ldexp(1.0, -9));  // largest subnormal
  EXPECT_EQ(out[5], std::ldexp(1.0, -6));      // smallest normal
  EXPECT_EQ(out[6], -1.0);
  EXPECT_EQ(out[7], 0.0);
  EXPECT_TRUE(std::isnan(out[8]));
  EXPECT_TRUE(std::isnan(out[9]));
  EXPECT_EQ(out[10], 1.5);

  const std::vector<std::uint8_t> e5 = {0x3C, 0x40, 0x01, 0x7B, 0x7C};
  std::vector<double> o5(e5.size());
  convert_to_f64(DType::F8_E5M2, e5.data(), e5.size(), o5.data());
  EXPECT_EQ(o5[0], 1.0);
  EXPECT_EQ(o5[1], 2.0);
  EXPECT_EQ(o5[2], std::ldexp(1.0, -16));
  EXPECT_EQ(o5[3], 57344.0);
  EXPECT_EQ(o5[4], std::numeric_limits<double>::infinity());
}

TEST(Safetensors, DeepSeekBlockScalesDequantiseFloat8) {
  TempDir d;
  const std::string p = d.file("fp8.safetensors");
  constexpr std::int64_t kRows = 130, kCols = 260;
  // Blocks: rows [0,128) [128,130), cols [0,128) [128,256) [256,260) -> scale [2, 3].
  std::vector<std::uint8_t> w(static_cast<std::size_t>(kRows * kCols));
  const std::uint8_t codes[] = {0x38, 0x40, 0x7E, 0x01, 0xB8, 0x3C};  // 1, 2, 448, 2^-9, -1, 1.5
  const double values[] = {1.0, 2.0, 448.0, std::ldexp(1.0, -9), -1.0, 1.5};
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = codes[(i * 7) % 6];
  const std::vector<float> scale = {0.5f, 2.0f, -4.0f, 0.125f, 8.0f, 3.0f};
  write_safetensors(p, {{info("m.w.weight", DType::F8_E4M3, {kRows, kCols}), w.data()},
                        {info("m.w.weight_scale_inv", DType::F32, {2, 3}), scale.data()}});
  SafetensorsFile f(p);
  const std::vector<double> all = f.read_all_f64("m.w.weight");
  ASSERT_EQ(all.size(), w.size());
  const std::int64_t row_edges[2][2] = {{0, 127}, {128, 129}};
  const std::int64_t col_edges[3][2] = {{0, 127}, {128, 255}, {256, 259}};
  for (int br = 0; br < 2; ++br)
    for (int bc = 0; bc < 3; ++bc)
      for (std::int64_t r : row_edges[br])
        for (std::int64_t c : col_edges[bc]) {
          const auto flat = static_cast<std::size_t>(r * kCols + c);
          const double want = values[(flat * 7) % 6] * scale[static_cast<std::size_t>(br * 3 + bc)];
          EXPECT_EQ(all[flat], want) << "row " << r << " col " << c;
          double one = 0;
          f.read_f64("m.w.weight", static_cast<std::int64_t>(flat), 1, &one);
          EXPECT_EQ(one, want) << "row " << r << " col " << c;
        }
  // A partial read that crosses block columns (row 128, cols 120..139) scales each element by its block.
  float part[20];
  f.read_f32("m.w.weight", 128 * kCols + 120, 20, part);
  for (int k = 0; k < 20; ++k) {
    const auto flat = static_cast<std::size_t>(128 * kCols + 120 + k);
    const float s = scale[static_cast<std::size_t>(3 + (120 + k) / 128)];
    EXPECT_EQ(part[k], static_cast<float>(values[(flat * 7) % 6] * s)) << k;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Sharded checkpoints

struct Shards {
  TempDir dir;
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6}, c = {7, 8, 9};
  std::string index() const { return dir.file("model.safetensors.index.json"); }
  void write_shards() {
    write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                      {{info("layer.0.a", DType::F32, {2, 2}), a.data()}, {info("layer.0.b", DType::F32, {2}), b.data()}});
    write_safetensors(dir.file("model-00002-of-00002.safetensors"), {{info("layer.1.c", DType::F32, {3}), c.data()}});
  }
  void write_index(const std::string& weight_map) const {
    write_text(index(), R"({"metadata": {"total_size": 36, "format": "pt"}, "weight_map": )" + weight_map + "}");
  }
};

const char* kGoodMap = R"({"layer.0.a": "model-00001-of-00002.safetensors",
                           "layer.0.b": "model-00001-of-00002.safetensors",
                           "layer.1.c": "model-00002-of-00002.safetensors"})";

TEST(ShardedSafetensors, ReadsEveryShard) {
  Shards s;
  s.write_shards();
  s.write_index(kGoodMap);
  ShardedSafetensors src(s.index());
  EXPECT_EQ(src.path(), s.index());
  ASSERT_EQ(src.tensors().size(), 3u);
  EXPECT_EQ(src.tensors()[0].name, "layer.0.a");
  EXPECT_EQ(src.tensors()[1].name, "layer.0.b");
  EXPECT_EQ(src.tensors()[2].name, "layer.1.c");
  EXPECT_EQ(src.shard_paths().size(), 2u);
  EXPECT_EQ(src.file_of("layer.0.a"), s.dir.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(src.file_of("layer.0.b"), s.dir.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(src.file_of("layer.1.c"), s.dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(src.file_of("missing"), s.index());
  EXPECT_EQ(src.read_all_f64("layer.0.a"), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(src.read_all_f64("layer.0.b"), (std::vector<double>{5, 6}));
  EXPECT_EQ(src.read_all_f64("layer.1.c"), (std::vector<double>{7, 8, 9}));
  src.release("layer.1.c");
  EXPECT_EQ(src.read_all_f64("layer.1.c"), (std::vector<double>{7, 8, 9}));
  const auto md = src.metadata();
  ASSERT_EQ(md.size(), 2u);
  EXPECT_EQ(md[0], (std::pair<std::string, std::string>{"format", "pt"}));
  EXPECT_EQ(md[1], (std::pair<std::string, std::string>{"total_size", "36"}));
}

TEST(ShardedSafetensors, ShardsInASubfolderAndUnlistedTensors) {
  Shards s;
  std::filesystem::create_directory(s.dir.file("sub"));
  write_safetensors(s.dir.file("sub/one.safetensors"),
                    {{info("x", DType::F32, {2}), s.b.data()}, {info("extra", DType::F32, {3}), s.c.data()}});
  s.write_index(R"({"x": "sub/one.safetensors"})");
  ShardedSafetensors src(s.index());
  ASSERT_EQ(src.tensors().size(), 2u);  // "extra" is not in the map but is in the shard: kept
  EXPECT_EQ(src.file_of("extra"), s.dir.file("sub/one.safetensors"));
  EXPECT_EQ(src.read_all_f64("extra"), (std::vector<double>{7, 8, 9}));
}

TEST(ShardedSafetensors, MissingShardFile) {
  Shards s;
  s.write_shards();
  s.write_index(R"({"layer.0.a": "model-00001-of-00002.safetensors", "q": "model-00003-of-00002.safetensors"})");
  expect_input_error([&] { ShardedSafetensors x(s.index()); },
                     {s.index(), "model-00003-of-00002.safetensors", "cannot open"});
}

TEST(ShardedSafetensors, TensorMissingFromItsShard) {
  Shards s;
  s.write_shards();
  s.write_index(R"({"layer.0.a": "model-00001-of-00002.safetensors", "layer.9.z": "model-00002-of-00002.safetensors"})");
  expect_input_error([&] { ShardedSafetensors x(s.index()); },
                     {s.index(), "'layer.9.z'", s.dir.file("model-00002-of-00002.safetensors")});
}

TEST(ShardedSafetensors, TensorListedUnderTheWrongShard) {
  Shards s;
  s.write_shards();
  s.write_index(R"({"layer.0.a": "model-00002-of-00002.safetensors", "layer.1.c": "model-00002-of-00002.safetensors"})");
  expect_input_error([&] { ShardedSafetensors x(s.index()); },
                     {s.index(), "'layer.0.a'", "model-00002-of-00002.safetensors"});
}

TEST(ShardedSafetensors, TensorInTwoShards) {
  Shards s;
  write_safetensors(s.dir.file("one.safetensors"), {{info("dup", DType::F32, {2}), s.b.data()}});
  write_safetensors(s.dir.file("two.safetensors"),
                    {{info("dup", DType::F32, {2}), s.b.data()}, {info("other", DType::F32, {2}), s.b.data()}});
  s.write_index(R"({"dup": "one.safetensors", "other": "two.safetensors"})");
  expect_input_error([&] { ShardedSafetensors x(s.index()); },
                     {s.index(), "'dup'", s.dir.file("one.safetensors"), s.dir.file("two.safetensors")});
}

TEST(ShardedSafetensors, PathsEscapingTheFolder) {
  Shards s;
  s.write_shards();
  for (const std::string bad : {"../model-00001-of-00002.safetensors", "sub/../../x.safetensors", "..",
                                "/etc/passwd", ""}) {
    s.write_index(R"({"layer.0.a": ")" + bad + R"("})");
    expect_input_error([&] { ShardedSafetensors x(s.index()); }, {s.index(), "'layer.0.a'", "shard path"});
  }
}

TEST(ShardedSafetensors, MalformedIndexes) {
  Shards s;
  s.write_shards();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {R"({"metadata": {}})", "weight_map"},
      {R"({"weight_map": []})", "weight_map"},
      {R"({"weight_map": {"a": 3}})", "'a'"},
      {R"({"weight_map": {}, "metadata": 5})", "metadata"},
      {R"({"weight_map": {"layer.0.a": "model-00001-of-00002.safetensors",)"
       R"( "layer.0.a": "model-00002-of-00002.safetensors"}})",
       "'layer.0.a' twice"},
  };
  for (const auto& [text, needle] : cases) {
    write_text(s.index(), text);
    expect_input_error([&] { ShardedSafetensors x(s.index()); }, {s.index(), needle});
  }
  expect_input_error([&] { ShardedSafetensors x(s.dir.file("absent.index.json")); }, {"absent.index.json"});
}

// ---------------------------------------------------------------------------------------------------------
// Corrupt files, one defect each

TEST(SafetensorsCorrupt, ValidBaselineOpens) {
  TempDir d;
  const std::string p = d.file("ok.safetensors");
  write_bytes(p, two_tensor_file());
  SafetensorsFile f(p);
  EXPECT_EQ(f.read_all_f64("b"), (std::vector<double>{5, 6, 7}));
}

TEST(SafetensorsCorrupt, TruncatedData) {
  TempDir d;
  auto bytes = two_tensor_file();
  bytes.resize(bytes.size() - 3);
  expect_corrupt(d, "trunc.safetensors", bytes, "'b'");
}

TEST(SafetensorsCorrupt, TrailingBytesAfterTheData) {
  TempDir d;
  auto bytes = two_tensor_file();
  bytes.push_back(0);
  expect_corrupt(d, "trailing.safetensors", bytes, "unaccounted");
}

TEST(SafetensorsCorrupt, HeaderLengthPastTheFile) {
  TempDir d;
  auto bytes = two_tensor_file();
  set_header_len(bytes, bytes.size());
  expect_corrupt(d, "long.safetensors", bytes, "past the end of the file");
}

TEST(SafetensorsCorrupt, HeaderLengthOverTheLimit) {
  TempDir d;
  auto bytes = two_tensor_file();
  set_header_len(bytes, kMaxSafetensorsHeader + 1);
  expect_corrupt(d, "huge.safetensors", bytes, "exceeds the limit");
  set_header_len(bytes, ~0ull);  // would overflow 8 + N
  expect_corrupt(d, "huge2.safetensors", bytes, "exceeds the limit");
}

TEST(SafetensorsCorrupt, InvalidJson) {
  TempDir d;
  expect_corrupt(d, "json.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", f32_bytes({1})),
                 "not valid JSON");
  expect_corrupt(d, "json2.safetensors", raw_file("", {}), "not valid JSON");
  // nlohmann alone would stop at the first NUL and accept these.
  expect_corrupt(d, "json3.safetensors", raw_file(std::string("{}\0\0\0\0\0\0", 8), {}, false), "not valid JSON");
  expect_corrupt(d, "json4.safetensors", raw_file(std::string("{}\0 junk!", 10), {}), "not valid JSON");
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  TempDir d;
  expect_corrupt(d, "arr.safetensors", raw_file("[1,2]", {}), "not an object");
}

TEST(SafetensorsCorrupt, EntryNotAnObjectOrMistyped) {
  TempDir d;
  const auto data = f32_bytes({1, 2});
  expect_corrupt(d, "e1.safetensors", raw_file(R"({"a": [1]})", {}), "tensor 'a': entry is not an object");
  expect_corrupt(d, "e2.safetensors", raw_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data), "tensor 'a'");
  expect_corrupt(d, "e3.safetensors", raw_file(R"({"a":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", data), "dtype");
  expect_corrupt(d, "e4.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", data), "shape");
  expect_corrupt(d, "e5.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", data),
                 "shape");
  expect_corrupt(d, "e6.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", data), "data_offsets");
  expect_corrupt(d, "e7.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data),
                 "data_offsets");
  expect_corrupt(d, "e8.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", data),
                 "data_offsets");
  expect_corrupt(d, "e9.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,8]}})", data),
                 "data_offsets");
}

TEST(SafetensorsCorrupt, OverlappingOffsets) {
  TempDir d;
  expect_corrupt(d, "overlap.safetensors",
                 raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          f32_bytes({1, 2, 3})),
                 "overlap tensor 'a'");
}

TEST(SafetensorsCorrupt, GapBetweenTensors) {
  TempDir d;
  expect_corrupt(d, "gap.safetensors",
                 raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                          f32_bytes({1, 2, 3})),
                 "tensor 'b': data_offsets [8, 12) leave a gap of 4 bytes");
  expect_corrupt(d, "gap0.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32_bytes({1, 2})),
                 "gap");
}

TEST(SafetensorsCorrupt, OffsetsPastTheEnd) {
  TempDir d;
  expect_corrupt(d, "past.safetensors",
                 raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                          f32_bytes({1, 2, 3})),
                 "tensor 'b': data_offsets [8, 24) run past the end of the data (12 bytes)");
  expect_corrupt(d, "past2.safetensors",
                 raw_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})", {}),
                 "'a'");
}

TEST(SafetensorsCorrupt, BackwardsOffsets) {
  TempDir d;
  expect_corrupt(d, "back.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", f32_bytes({1, 2})),
                 "tensor 'a'");
}

TEST(SafetensorsCorrupt, UnsupportedDtype) {
  TempDir d;
  expect_corrupt(d, "q7.safetensors", raw_file(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1})),
                 "tensor 'a': unsupported dtype 'Q7'");
}

TEST(SafetensorsCorrupt, ShapeAndBytesDisagree) {
  TempDir d;
  const std::string p = d.file("x.safetensors");
  expect_corrupt(d, "x.safetensors",
                 raw_file(R"({"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", f32_bytes({1, 2, 3})),
                 p + ": tensor 'a.weight': data_offsets [0, 12) hold 12 bytes but shape [2, 2] of F32 needs 16");
}

TEST(SafetensorsCorrupt, NegativeOrHugeShape) {
  TempDir d;
  expect_corrupt(d, "neg.safetensors", raw_file(R"({"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,0]}})", {}),
                 "tensor 'a': negative dimension -1");
  expect_corrupt(d, "big.safetensors",
                 raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", {}),
                 "tensor 'a'");
  expect_corrupt(d, "big2.safetensors",
                 raw_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", {}),
                 "tensor 'a'");
  expect_corrupt(d, "big3.safetensors",
                 raw_file(R"({"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,0]}})", {}),
                 "tensor 'a'");
}

TEST(SafetensorsCorrupt, DuplicateTensorName) {
  TempDir d;
  expect_corrupt(d, "dup.safetensors",
                 raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          f32_bytes({1, 2})),
                 "duplicate tensor name 'a'");
  expect_corrupt(d, "dupkey.safetensors",
                 raw_file(R"({"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1})),
                 "'a'");
}

TEST(SafetensorsCorrupt, BadMetadata) {
  TempDir d;
  expect_corrupt(d, "md1.safetensors", raw_file(R"({"__metadata__": {"n": 3}})", {}), "__metadata__");
  expect_corrupt(d, "md2.safetensors", raw_file(R"({"__metadata__": ["x"]})", {}), "__metadata__");
}

TEST(SafetensorsCorrupt, FileOfThreeBytes) {
  TempDir d;
  expect_corrupt(d, "three.safetensors", {1, 2, 3}, "too small");
}

TEST(SafetensorsCorrupt, EmptyFile) {
  TempDir d;
  expect_corrupt(d, "empty.safetensors", {}, "empty file");
}

TEST(SafetensorsCorrupt, MissingFileAndFolder) {
  TempDir d;
  expect_input_error([&] { SafetensorsFile f(d.file("absent.safetensors")); }, {d.file("absent.safetensors"), "cannot open"});
  expect_input_error([&] { SafetensorsFile f(d.path()); }, {d.path()});
}

TEST(SafetensorsCorrupt, ShortPrefixGivenToTheParser) {
  const auto bytes = two_tensor_file();
  expect_input_error([&] { parse_safetensors_header(bytes.data(), 20, bytes.size(), "p.safetensors"); },
                     {"p.safetensors", "available"});
}

TEST(SafetensorsCorrupt, ZeroSizeTensorsAnywhereAreFine) {
  // Zero-size tensors may sit at any offset inside or at the end of the data, even alongside each other.
  TempDir d;
  const std::string p = d.file("zero.safetensors");
  write_bytes(p, raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                          R"("e0":{"dtype":"BF16","shape":[3,0],"data_offsets":[0,0]},)"
                          R"("e2":{"dtype":"I64","shape":[0],"data_offsets":[8,8]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          f32_bytes({1, 2})));
  SafetensorsFile f(p);
  EXPECT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.read_all_f64("b"), std::vector<double>{2});
  EXPECT_EQ(f.raw("e2").size, 0u);
}

// ---------------------------------------------------------------------------------------------------------
// Fuzzing the header, and release()

// Parses `bytes` both from memory and as a file: either works (and every tensor then reads) or InputError.
void parse_or_input_error(const TempDir& d, const std::vector<std::uint8_t>& bytes, int& ok, int& rejected) {
  const std::string p = d.file("fuzz.safetensors");
  try {
    const SafetensorsHeader h = parse_safetensors_header(bytes.data(), bytes.size(), bytes.size(), p);
    for (const auto& e : h.entries) {
      ASSERT_LE(e.begin, e.end);
      ASSERT_LE(e.end, bytes.size());
      ASSERT_EQ(e.end - e.begin, e.info.nbytes());
    }
  } catch (const InputError&) {
  } catch (const std::exception& e) {
    FAIL() << "parser threw a non-InputError: " << e.what();
  }
  write_bytes(p, bytes);
  try {
    SafetensorsFile f(p);
    for (const auto& t : f.tensors()) {
      try {
        (void)f.read_all_f64(t.name);  // may refuse (e.g. a mutated F8 scale shape), never crash
      } catch (const InputError&) {
      }
    }
    ++ok;
  } catch (const InputError&) {
    ++rejected;
  } catch (const std::exception& e) {
    FAIL() << "file reader threw a non-InputError: " << e.what();
  }
}

TEST(SafetensorsFuzz, MutatedHeadersAndTruncationsNeverCrash) {
  TempDir d;
  const std::string src = d.file("seed.safetensors");
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<std::uint16_t> b = {0x3F80, 0x4000};
  const std::vector<std::uint8_t> w(4, 0x38);
  const std::vector<float> s = {2.0f};
  write_safetensors(src,
                    {{info("a", DType::F32, {2, 3}), a.data()},
                     {info("b", DType::BF16, {2}), b.data()},
                     {info("e", DType::I64, {0}), nullptr},
                     {info("w.weight", DType::F8_E4M3, {2, 2}), w.data()},
                     {info("w.weight_scale_inv", DType::F32, {1, 1}), s.data()}},
                    {{"format", "pt"}});
  const std::vector<std::uint8_t> seed = read_bytes(src);
  const std::size_t header_end = 8 + static_cast<std::size_t>(header_len(seed));

  std::mt19937_64 rng(20240611);
  // Structural characters and digits make mutations that stay JSON-ish and reach the deeper checks.
  const std::string interesting = "{}[]\":,0123456789-. eE";
  int ok = 0, rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::uint8_t> m = seed;
    const std::size_t pos = static_cast<std::size_t>(rng() % header_end);
    const std::uint64_t r = rng();
    m[pos] = (r & 1) ? static_cast<std::uint8_t>(interesting[(r >> 1) % interesting.size()])
                     : static_cast<std::uint8_t>(r >> 8);
    parse_or_input_error(d, m, ok, rejected);
    if (::testing::Test::HasFatalFailure()) return;
  }
  for (int i = 0; i < 200; ++i) {
    std::vector<std::uint8_t> m = seed;
    m.resize(static_cast<std::size_t>(rng() % seed.size()));
    parse_or_input_error(d, m, ok, rejected);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_EQ(ok + rejected, 2200);
  EXPECT_GT(rejected, 1000);  // most mutations break something
  EXPECT_GT(ok, 0);           // some land in padding or metadata and stay valid
}

TEST(Safetensors, ReleaseKeepsLaterReadsCorrect) {
  TempDir d;
  const std::string p = d.file("big.safetensors");
  // Several pages per tensor, at unaligned offsets, so release() has whole pages to drop.
  std::vector<float> a(40001), b(30000), c(3);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.25f;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = -static_cast<float>(i);
  c = {7, 8, 9};
  write_safetensors(p, {{info("c", DType::F32, {3}), c.data()},
                        {info("a", DType::F32, {static_cast<std::int64_t>(a.size())}), a.data()},
                        {info("b", DType::F32, {100, 300}), b.data()}});
  SafetensorsFile f(p);
  for (int round = 0; round < 3; ++round) {
    for (const char* name : {"a", "b", "c"}) {
      const std::vector<double> got = f.read_all_f64(name);
      const std::vector<float>& want = name[0] == 'a' ? a : name[0] == 'b' ? b : c;
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << name << "[" << i << "]";
      f.release(name);
    }
  }
  expect_input_error([&] { f.release("nope"); }, {p, "nope"});
}

// ---------------------------------------------------------------------------------------------------------
// Writing

TEST(SafetensorsWrite, DuplicateNamesAreRejected) {
  TempDir d;
  const std::string p = d.file("dup.safetensors");
  const float x = 1;
  expect_input_error([&] { write_safetensors(p, {{info("x", DType::F32, {}), &x}, {info("x", DType::F32, {}), &x}}); },
                     {p, "duplicate tensor name 'x'"});
  EXPECT_FALSE(testing::file_exists(p));
  EXPECT_FALSE(testing::file_exists(p + ".tmp"));
}

TEST(SafetensorsWrite, BadTensorsAreRejected) {
  TempDir d;
  const std::string p = d.file("bad.safetensors");
  const float x = 1;
  expect_input_error([&] { write_safetensors(p, {{info("__metadata__", DType::F32, {}), &x}}); }, {p, "reserved"});
  expect_input_error([&] { write_safetensors(p, {{info("n", DType::F32, {-2}), &x}}); }, {p, "'n'"});
  expect_input_error([&] { write_safetensors(p, {{info("n", DType::F32, {2}), nullptr}}); }, {p, "'n'"});
  expect_input_error([&] { write_safetensors(p, {{info("bad\xff", DType::F32, {}), &x}}); }, {p, "UTF-8"});
  EXPECT_FALSE(testing::file_exists(p));
}

TEST(SafetensorsWrite, UnwritablePlaceLeavesNothingBehind) {
  TempDir d;
  const std::string p = d.file("no/such/folder/out.safetensors");
  const float x = 1;
  expect_input_error([&] { write_safetensors(p, {{info("x", DType::F32, {}), &x}}); }, {p});
  // A folder in the way of the rename: the temporary must be removed.
  const std::string q = d.file("folder.safetensors");
  std::filesystem::create_directory(q);
  std::filesystem::create_directory(q + "/inside");
  expect_input_error([&] { write_safetensors(q, {{info("x", DType::F32, {}), &x}}); }, {q, "rename"});
  EXPECT_FALSE(testing::file_exists(q + ".tmp"));
}

TEST(SafetensorsWrite, OverwritesAnExistingFileAtomically) {
  TempDir d;
  const std::string p = d.file("over.safetensors");
  const float x = 1, y = 2;
  write_safetensors(p, {{info("x", DType::F32, {}), &x}});
  SafetensorsFile before(p);  // an open mapping of the old file stays valid after the rename
  write_safetensors(p, {{info("y", DType::F32, {}), &y}});
  EXPECT_EQ(before.read_all_f64("x"), std::vector<double>{1});
  SafetensorsFile after(p);
  EXPECT_EQ(after.tensors().size(), 1u);
  EXPECT_EQ(after.read_all_f64("y"), std::vector<double>{2});
}

}  // namespace
}  // namespace moescope
