// dtype encoders against the decoders over every 16-bit pattern, and known values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "moescope/io/tensor.hpp"

namespace moescope {
namespace {

float decode16(DType t, std::uint16_t bits) {
  std::uint8_t b[2];
  std::memcpy(b, &bits, 2);
  float f;
  convert_to_f32(t, b, 1, &f);
  return f;
}

std::uint16_t encode16(DType t, float f) {
  std::uint8_t b[2];
  convert_from_f32(t, &f, 1, b);
  std::uint16_t bits;
  std::memcpy(&bits, b, 2);
  return bits;
}

TEST(TensorConvert, HalfAndBf16RoundTripEveryPattern) {
  for (DType t : {DType::F16, DType::BF16}) {
    for (std::uint32_t u = 0; u < 65536; ++u) {
      const auto bits = static_cast<std::uint16_t>(u);
      const float f = decode16(t, bits);
      if (std::isnan(f)) {
        EXPECT_TRUE(std::isnan(decode16(t, encode16(t, f))));
        continue;
      }
      ASSERT_EQ(encode16(t, f), bits) << dtype_name(t) << " pattern " << u;
    }
  }
}

TEST(TensorConvert, KnownValues) {
  EXPECT_EQ(decode16(DType::F16, 0x3C00), 1.0f);
  EXPECT_EQ(decode16(DType::F16, 0xC000), -2.0f);
  EXPECT_EQ(decode16(DType::F16, 0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(decode16(DType::F16, 0x7BFF), 65504.0f);
  EXPECT_EQ(decode16(DType::BF16, 0x3F80), 1.0f);
  // rounding to nearest even: 1 + 2^-11 is halfway between two halves, goes to the even one (1.0)
  EXPECT_EQ(encode16(DType::F16, 1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(encode16(DType::F16, 1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(encode16(DType::F16, 70000.0f), 0x7C00);  // overflow to infinity
  EXPECT_EQ(encode16(DType::BF16, 1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  std::uint8_t e4m3[4] = {0x38, 0x40, 0x7E, 0x01};
  float out[4];
  convert_to_f32(DType::F8_E4M3, e4m3, 4, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 2.0f);
  EXPECT_EQ(out[2], 448.0f);
  EXPECT_EQ(out[3], std::ldexp(1.0f, -9));
}

TEST(TensorConvert, NamesRoundTrip) {
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2, DType::I64,
                  DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    ASSERT_EQ(parse_dtype(dtype_name(t)), t);
    EXPECT_GT(dtype_size(t), 0u);
  }
  EXPECT_FALSE(parse_dtype("Q7").has_value());
  EXPECT_EQ(shape_string({2, 3}), "[2, 3]");
}

}  // namespace
}  // namespace moescope
