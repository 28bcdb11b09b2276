// dtype names, sizes and element conversion (little-endian hosts; see the static_assert below).
#include <cmath>
#include <limits>
#include <cstring>
#include <stdexcept>

#include "moescope/io/tensor.hpp"
#include "moescope/util/multiversion.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace {

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE floats expected");

struct DTypeRow {
  DType t;
  const char* name;
  std::size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {DType::F64, "F64", 8},         {DType::F32, "F32", 4},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},       {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::I64, "I64", 8},         {DType::I32, "I32", 4},         {DType::I16, "I16", 2},
    {DType::I8, "I8", 1},           {DType::U8, "U8", 1},           {DType::BOOL, "BOOL", 1},
};

template <typename T>
T load(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);  // zero and subnormals
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

float bf16_to_float(std::uint16_t b) {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// OCP FP8 E4M3 ("fn": no infinities, S.1111.111 is NaN), bias 7.
float e4m3_to_float(std::uint8_t x) {
  const int sign = x >> 7, exp = (x >> 3) & 0xf, mant = x & 0x7;
  float v;
  if (exp == 0xf && mant == 0x7) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x8), exp - 10);
  }
  return sign ? -v : v;
}

// FP8 E5M2 (IEEE-like, bias 15).
float e5m2_to_float(std::uint8_t x) { return half_to_float(static_cast<std::uint16_t>(x) << 8); }

template <typename Out>
[[gnu::always_inline]] inline void convert(DType t, const std::uint8_t* src, std::size_t n, Out* dst) {
  switch (t) {
    case DType::F64:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(load<double>(src + 8 * i));
      break;
    case DType::F32:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(load<float>(src + 4 * i));
      break;
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(half_to_float(load<std::uint16_t>(src + 2 * i)));
      break;
    case DType::BF16:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(bf16_to_float(load<std::uint16_t>(src + 2 * i)));
      break;
    case DType::F8_E4M3:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(e4m3_to_float(src[i]));
      break;
    case DType::F8_E5M2:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(e5m2_to_float(src[i]));
      break;
    case DType::I64:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(load<std::int64_t>(src + 8 * i));
      break;
    case DType::I32:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(load<std::int32_t>(src + 4 * i));
      break;
    case DType::I16:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(load<std::int16_t>(src + 2 * i));
      break;
    case DType::I8:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(static_cast<std::int8_t>(src[i]));
      break;
    case DType::U8:
    case DType::BOOL:
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(src[i]);
      break;
  }
}

std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: infinity
  if (ax < 0x38800000u) {  // below the smallest normal half: subnormal (or zero), round to nearest even
    const float a = std::fabs(f) * 16777216.0f;  // units of 2^-24, exact scaling
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(a)));
  }
  std::uint32_t m = ax + 0xc8000fffu + ((ax >> 13) & 1u);  // rebias 127 -> 15 and round to nearest even
  return static_cast<std::uint16_t>(sign | (m >> 13));
}

}  // namespace

void convert_from_f32(DType t, const float* src, std::size_t n, std::uint8_t* dst) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, 4 * n);
      return;
    case DType::F64:
      for (std::size_t i = 0; i < n; ++i) {
        const double d = src[i];
        std::memcpy(dst + 8 * i, &d, 8);
      }
      return;
    case DType::BF16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = float_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = float_to_half(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    default:
      throw std::invalid_argument("convert_from_f32: cannot encode " + std::string(dtype_name(t)));
  }
}

std::string_view dtype_name(DType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r.name;
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& r : kDTypes)
    if (name == r.name) return r.t;
  return std::nullopt;
}

std::size_t dtype_size(DType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r.size;
  return 0;
}

bool dtype_is_float(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3 ||
         t == DType::F8_E5M2;
}

// Hot in every streamed read: compiled for AVX2 as well, chosen at load time (bit-identical results: the
// conversions are exact).
MOESCOPE_MULTIVERSION
void convert_to_f64(DType t, const std::uint8_t* src, std::size_t count, double* dst) { convert(t, src, count, dst); }
MOESCOPE_MULTIVERSION
void convert_to_f32(DType t, const std::uint8_t* src, std::size_t count, float* dst) { convert(t, src, count, dst); }

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace moescope
