// GramKernel: decode a block of every expert's strip into float64 (L1-sized), then update 8 float64 lanes per
// Gram entry tile by tile (4 x 4 tiles of experts, upper triangle) and the per-coordinate squared deviations.
// Three code paths do the same IEEE operations per lane (see the header): plain C++, AVX2+FMA+F16C (a lane
// vector of 8 is two ymm halves, each updated on its own) and AVX-512F (one zmm).
#include "moescope/metrics/gram_kernel.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(MOESCOPE_NO_MULTIVERSION)
#define MOESCOPE_GRAM_X86 1
#include <immintrin.h>
#define MOESCOPE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MOESCOPE_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#else
#define MOESCOPE_GRAM_X86 0
#endif

namespace moescope {
namespace {

constexpr int kLanes = 8;        // float64 lanes per Gram entry (fixes the summation order)
constexpr int kTile = 4;         // experts per tile side
constexpr int kDiagPairs = 10;   // upper triangle of a 4 x 4 diagonal tile
constexpr int kBlockPairs = 16;  // a full off-diagonal 4 x 4 tile

// One tile of the Gram's upper triangle: experts [4g, 4g+4) x [4h, 4h+4), g <= h, with its lanes at acc + offset
// (diagonal tiles: pairs (0,0),(0,1),(0,2),(0,3),(1,1),(1,2),(1,3),(2,2),(2,3),(3,3); others: p * 4 + q).
struct Tile {
  int g = 0, h = 0;
  std::size_t offset = 0;  // in doubles
};

constexpr int kDiagIndex[4][4] = {{0, 1, 2, 3}, {-1, 4, 5, 6}, {-1, -1, 7, 8}, {-1, -1, -1, 9}};

// Exact float64 values of every FP8 byte (from the library's scalar decoder).
const std::array<double, 256>& fp8_table(DType t) {
  static const auto make = [](DType d) {
    std::array<double, 256> a{};
    std::array<std::uint8_t, 256> bytes{};
    for (int i = 0; i < 256; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
    convert_to_f64(d, bytes.data(), 256, a.data());
    return a;
  };
  static const std::array<double, 256> e4m3 = make(DType::F8_E4M3), e5m2 = make(DType::F8_E5M2);
  return t == DType::F8_E4M3 ? e4m3 : e5m2;
}

// The fixed reduction tree of the lanes.
double reduce_lanes(const double* l) { return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); }

struct AlignedFree {
  void operator()(double* p) const { std::free(p); }
};
using AlignedDoubles = std::unique_ptr<double[], AlignedFree>;

AlignedDoubles aligned_zeros(std::size_t n) {
  const std::size_t bytes = std::max<std::size_t>(64, (n * sizeof(double) + 63) / 64 * 64);
  auto* p = static_cast<double*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return AlignedDoubles(p);
}

// The state every path works on.
struct Work {
  int E = 0, e_pad = 0;
  std::int64_t stride = 0;  // doubles between rows of x (the block size)
  double* x = nullptr;      // e_pad rows; rows >= E stay zero
  double* acc = nullptr;    // Gram lanes, tile by tile
  double* var = nullptr;    // 8 lanes of sq_dev
  const std::vector<Tile>* tiles = nullptr;
};

// ---------------------------------------------------------------------------------------------------------
// Portable path. `exact` says every product x_i * x_j is exact in float64 (all decoded dtypes but F64), where
// a * b + c is fma(a, b, c) bit for bit and much cheaper without hardware FMA.

void decode_portable(DType t, const std::uint8_t* src, std::int64_t n, double* dst) {
  if (t == DType::F8_E4M3 || t == DType::F8_E5M2) {
    const auto& tab = fp8_table(t);
    for (std::int64_t i = 0; i < n; ++i) dst[i] = tab[src[i]];
    return;
  }
  convert_to_f64(t, src, static_cast<std::size_t>(n), dst);
}

template <bool Exact>
inline double madd(double a, double b, double c) {
  if constexpr (Exact) return a * b + c;
  else return std::fma(a, b, c);
}

template <bool Exact>
void block_portable(const Work& w, std::int64_t n8) {
  for (const Tile& t : *w.tiles) {
    double* acc = w.acc + t.offset;
    for (int p = 0; p < kTile; ++p)
      for (int q = (t.g == t.h ? p : 0); q < kTile; ++q) {
        const double* xi = w.x + (kTile * t.g + p) * w.stride;
        const double* xj = w.x + (kTile * t.h + q) * w.stride;
        double* lanes = acc + kLanes * (t.g == t.h ? kDiagIndex[p][q] : p * kTile + q);
        for (std::int64_t c = 0; c < n8; c += kLanes)
          for (int l = 0; l < kLanes; ++l) lanes[l] = madd<Exact>(xi[c + l], xj[c + l], lanes[l]);
      }
  }
  if (w.E < 2) return;
  const double E = static_cast<double>(w.E);
  for (std::int64_t c = 0; c < n8; ++c) {
    double s = w.x[c];
    for (int e = 1; e < w.E; ++e) s += w.x[e * w.stride + c];
    double q = 0.0;
    for (int e = 0; e < w.E; ++e) {
      const double d = std::fma(E, w.x[e * w.stride + c], -s);  // E * (x_e - mean), rounded once
      q = std::fma(d, d, q);
    }
    w.var[c % kLanes] += q;
  }
}

#if MOESCOPE_GRAM_X86
// ---------------------------------------------------------------------------------------------------------
// AVX2 + FMA + F16C. Lanes 0-3 and 4-7 of an entry are separate ymm accumulators, each fed the coordinates
// that fall in its half of every group of 8, in order: the same per-lane sequence as the portable loop.

MOESCOPE_TARGET_AVX2
void decode_avx2(DType t, const std::uint8_t* src, std::int64_t n, double* dst) {
  std::int64_t i = 0;
  switch (t) {
    case DType::BF16:
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
        const __m256 f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        _mm256_store_pd(dst + i, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
        _mm256_store_pd(dst + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
      }
      break;
    case DType::F16:
      for (; i + 8 <= n; i += 8) {
        const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i)));
        _mm256_store_pd(dst + i, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
        _mm256_store_pd(dst + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
      }
      break;
    case DType::F32:
      for (; i + 8 <= n; i += 8) {
        const __m256 f = _mm256_loadu_ps(reinterpret_cast<const float*>(src + 4 * i));
        _mm256_store_pd(dst + i, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
        _mm256_store_pd(dst + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
      }
      break;
    case DType::F64:
      for (; i + 4 <= n; i += 4)
        _mm256_store_pd(dst + i, _mm256_loadu_pd(reinterpret_cast<const double*>(src + 8 * i)));
      break;
    default:
      break;
  }
  if (i < n) decode_portable(t, src + static_cast<std::size_t>(i) * dtype_size(t), n - i, dst + i);
}

MOESCOPE_TARGET_AVX2
void diag_tile_avx2(const Work& w, const Tile& t, std::int64_t n8) {
  const double* x0 = w.x + (kTile * t.g) * w.stride;
  const double* x1 = x0 + w.stride;
  const double* x2 = x1 + w.stride;
  const double* x3 = x2 + w.stride;
  double* acc = w.acc + t.offset;
  for (int half = 0; half < 2; ++half) {
    double* a = acc + 4 * half;
    __m256d a00 = _mm256_load_pd(a + 0 * kLanes), a01 = _mm256_load_pd(a + 1 * kLanes),
            a02 = _mm256_load_pd(a + 2 * kLanes), a03 = _mm256_load_pd(a + 3 * kLanes),
            a11 = _mm256_load_pd(a + 4 * kLanes), a12 = _mm256_load_pd(a + 5 * kLanes),
            a13 = _mm256_load_pd(a + 6 * kLanes), a22 = _mm256_load_pd(a + 7 * kLanes),
            a23 = _mm256_load_pd(a + 8 * kLanes), a33 = _mm256_load_pd(a + 9 * kLanes);
    for (std::int64_t c = 4 * half; c < n8; c += kLanes) {
      const __m256d v0 = _mm256_load_pd(x0 + c), v1 = _mm256_load_pd(x1 + c), v2 = _mm256_load_pd(x2 + c),
                    v3 = _mm256_load_pd(x3 + c);
      a00 = _mm256_fmadd_pd(v0, v0, a00);
      a01 = _mm256_fmadd_pd(v0, v1, a01);
      a02 = _mm256_fmadd_pd(v0, v2, a02);
      a03 = _mm256_fmadd_pd(v0, v3, a03);
      a11 = _mm256_fmadd_pd(v1, v1, a11);
      a12 = _mm256_fmadd_pd(v1, v2, a12);
      a13 = _mm256_fmadd_pd(v1, v3, a13);
      a22 = _mm256_fmadd_pd(v2, v2, a22);
      a23 = _mm256_fmadd_pd(v2, v3, a23);
      a33 = _mm256_fmadd_pd(v3, v3, a33);
    }
    _mm256_store_pd(a + 0 * kLanes, a00);
    _mm256_store_pd(a + 1 * kLanes, a01);
    _mm256_store_pd(a + 2 * kLanes, a02);
    _mm256_store_pd(a + 3 * kLanes, a03);
    _mm256_store_pd(a + 4 * kLanes, a11);
    _mm256_store_pd(a + 5 * kLanes, a12);
    _mm256_store_pd(a + 6 * kLanes, a13);
    _mm256_store_pd(a + 7 * kLanes, a22);
    _mm256_store_pd(a + 8 * kLanes, a23);
    _mm256_store_pd(a + 9 * kLanes, a33);
  }
}

// Off-diagonal tile as two 4 x 2 halves (8 accumulators + 3 operands fit the 16 ymm registers).
MOESCOPE_TARGET_AVX2
void block_tile_avx2(const Work& w, const Tile& t, std::int64_t n8) {
  const double* x0 = w.x + (kTile * t.g) * w.stride;
  const double* x1 = x0 + w.stride;
  const double* x2 = x1 + w.stride;
  const double* x3 = x2 + w.stride;
  double* acc = w.acc + t.offset;
  for (int q0 = 0; q0 < kTile; q0 += 2) {
    const double* y0 = w.x + (kTile * t.h + q0) * w.stride;
    const double* y1 = y0 + w.stride;
    for (int half = 0; half < 2; ++half) {
      double* a = acc + 4 * half;
      const auto at = [&](int p, int q) { return a + (p * kTile + q0 + q) * kLanes; };
      __m256d a00 = _mm256_load_pd(at(0, 0)), a01 = _mm256_load_pd(at(0, 1)), a10 = _mm256_load_pd(at(1, 0)),
              a11 = _mm256_load_pd(at(1, 1)), a20 = _mm256_load_pd(at(2, 0)), a21 = _mm256_load_pd(at(2, 1)),
              a30 = _mm256_load_pd(at(3, 0)), a31 = _mm256_load_pd(at(3, 1));
      for (std::int64_t c = 4 * half; c < n8; c += kLanes) {
        const __m256d u0 = _mm256_load_pd(y0 + c), u1 = _mm256_load_pd(y1 + c);
        __m256d v = _mm256_load_pd(x0 + c);
        a00 = _mm256_fmadd_pd(v, u0, a00);
        a01 = _mm256_fmadd_pd(v, u1, a01);
        v = _mm256_load_pd(x1 + c);
        a10 = _mm256_fmadd_pd(v, u0, a10);
        a11 = _mm256_fmadd_pd(v, u1, a11);
        v = _mm256_load_pd(x2 + c);
        a20 = _mm256_fmadd_pd(v, u0, a20);
        a21 = _mm256_fmadd_pd(v, u1, a21);
        v = _mm256_load_pd(x3 + c);
        a30 = _mm256_fmadd_pd(v, u0, a30);
        a31 = _mm256_fmadd_pd(v, u1, a31);
      }
      _mm256_store_pd(at(0, 0), a00);
      _mm256_store_pd(at(0, 1), a01);
      _mm256_store_pd(at(1, 0), a10);
      _mm256_store_pd(at(1, 1), a11);
      _mm256_store_pd(at(2, 0), a20);
      _mm256_store_pd(at(2, 1), a21);
      _mm256_store_pd(at(3, 0), a30);
      _mm256_store_pd(at(3, 1), a31);
    }
  }
}

// Both halves of a group of 8 coordinates per iteration: two independent chains over the experts.
MOESCOPE_TARGET_AVX2
void variance_avx2(const Work& w, std::int64_t n8) {
  const __m256d E = _mm256_set1_pd(static_cast<double>(w.E));
  __m256d lo = _mm256_load_pd(w.var), hi = _mm256_load_pd(w.var + 4);
  for (std::int64_t c = 0; c < n8; c += kLanes) {
    __m256d s0 = _mm256_load_pd(w.x + c), s1 = _mm256_load_pd(w.x + c + 4);
    for (int e = 1; e < w.E; ++e) {
      s0 = _mm256_add_pd(s0, _mm256_load_pd(w.x + e * w.stride + c));
      s1 = _mm256_add_pd(s1, _mm256_load_pd(w.x + e * w.stride + c + 4));
    }
    __m256d q0 = _mm256_setzero_pd(), q1 = _mm256_setzero_pd();
    for (int e = 0; e < w.E; ++e) {
      const __m256d d0 = _mm256_fmsub_pd(E, _mm256_load_pd(w.x + e * w.stride + c), s0);
      const __m256d d1 = _mm256_fmsub_pd(E, _mm256_load_pd(w.x + e * w.stride + c + 4), s1);
      q0 = _mm256_fmadd_pd(d0, d0, q0);
      q1 = _mm256_fmadd_pd(d1, d1, q1);
    }
    lo = _mm256_add_pd(lo, q0);
    hi = _mm256_add_pd(hi, q1);
  }
  _mm256_store_pd(w.var, lo);
  _mm256_store_pd(w.var + 4, hi);
}

MOESCOPE_TARGET_AVX2
void block_avx2(const Work& w, std::int64_t n8) {
  for (const Tile& t : *w.tiles) {
    if (t.g == t.h) diag_tile_avx2(w, t, n8);
    else block_tile_avx2(w, t, n8);
  }
  if (w.E >= 2) variance_avx2(w, n8);
}

// ---------------------------------------------------------------------------------------------------------
// AVX-512F: one zmm holds an entry's 8 lanes; a full 4 x 4 tile (16 accumulators + 5 operands) fits 32 registers.

// GCC 12's AVX-512 conversion intrinsics pass an _mm512_undefined_* operand that -Wmaybe-uninitialized flags
// (clang has no such warning group and would warn about the pragma).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
MOESCOPE_TARGET_AVX512
void decode_avx512(DType t, const std::uint8_t* src, std::int64_t n, double* dst) {
  std::int64_t i = 0;
  switch (t) {
    case DType::BF16:
      for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
        const __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        _mm512_store_pd(dst + i, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
        _mm512_store_pd(dst + i + 8,
                        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
      }
      break;
    case DType::F16:
      for (; i + 16 <= n; i += 16) {
        const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i)));
        _mm512_store_pd(dst + i, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
        _mm512_store_pd(dst + i + 8,
                        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
      }
      break;
    case DType::F32:
      for (; i + 8 <= n; i += 8)
        _mm512_store_pd(dst + i, _mm512_cvtps_pd(_mm256_loadu_ps(reinterpret_cast<const float*>(src + 4 * i))));
      break;
    case DType::F64:
      for (; i + 8 <= n; i += 8) _mm512_store_pd(dst + i, _mm512_loadu_pd(src + 8 * i));
      break;
    default:
      break;
  }
  if (i < n) decode_avx2(t, src + static_cast<std::size_t>(i) * dtype_size(t), n - i, dst + i);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

MOESCOPE_TARGET_AVX512
void diag_tile_avx512(const Work& w, const Tile& t, std::int64_t n8) {
  const double* x0 = w.x + (kTile * t.g) * w.stride;
  const double* x1 = x0 + w.stride;
  const double* x2 = x1 + w.stride;
  const double* x3 = x2 + w.stride;
  double* a = w.acc + t.offset;
  __m512d a00 = _mm512_load_pd(a + 0 * kLanes), a01 = _mm512_load_pd(a + 1 * kLanes),
          a02 = _mm512_load_pd(a + 2 * kLanes), a03 = _mm512_load_pd(a + 3 * kLanes),
          a11 = _mm512_load_pd(a + 4 * kLanes), a12 = _mm512_load_pd(a + 5 * kLanes),
          a13 = _mm512_load_pd(a + 6 * kLanes), a22 = _mm512_load_pd(a + 7 * kLanes),
          a23 = _mm512_load_pd(a + 8 * kLanes), a33 = _mm512_load_pd(a + 9 * kLanes);
  for (std::int64_t c = 0; c < n8; c += kLanes) {
    const __m512d v0 = _mm512_load_pd(x0 + c), v1 = _mm512_load_pd(x1 + c), v2 = _mm512_load_pd(x2 + c),
                  v3 = _mm512_load_pd(x3 + c);
    a00 = _mm512_fmadd_pd(v0, v0, a00);
    a01 = _mm512_fmadd_pd(v0, v1, a01);
    a02 = _mm512_fmadd_pd(v0, v2, a02);
    a03 = _mm512_fmadd_pd(v0, v3, a03);
    a11 = _mm512_fmadd_pd(v1, v1, a11);
    a12 = _mm512_fmadd_pd(v1, v2, a12);
    a13 = _mm512_fmadd_pd(v1, v3, a13);
    a22 = _mm512_fmadd_pd(v2, v2, a22);
    a23 = _mm512_fmadd_pd(v2, v3, a23);
    a33 = _mm512_fmadd_pd(v3, v3, a33);
  }
  _mm512_store_pd(a + 0 * kLanes, a00);
  _mm512_store_pd(a + 1 * kLanes, a01);
  _mm512_store_pd(a + 2 * kLanes, a02);
  _mm512_store_pd(a + 3 * kLanes, a03);
  _mm512_store_pd(a + 4 * kLanes, a11);
  _mm512_store_pd(a + 5 * kLanes, a12);
  _mm512_store_pd(a + 6 * kLanes, a13);
  _mm512_store_pd(a + 7 * kLanes, a22);
  _mm512_store_pd(a + 8 * kLanes, a23);
  _mm512_store_pd(a + 9 * kLanes, a33);
}

MOESCOPE_TARGET_AVX512
void block_tile_avx512(const Work& w, const Tile& t, std::int64_t n8) {
  const double* x[4];
  const double* y[4];
  for (int p = 0; p < kTile; ++p) {
    x[p] = w.x + (kTile * t.g + p) * w.stride;
    y[p] = w.x + (kTile * t.h + p) * w.stride;
  }
  double* a = w.acc + t.offset;
  __m512d acc[16];
  for (int k = 0; k < kBlockPairs; ++k) acc[k] = _mm512_load_pd(a + k * kLanes);
  for (std::int64_t c = 0; c < n8; c += kLanes) {
    const __m512d u0 = _mm512_load_pd(y[0] + c), u1 = _mm512_load_pd(y[1] + c), u2 = _mm512_load_pd(y[2] + c),
                  u3 = _mm512_load_pd(y[3] + c);
    for (int p = 0; p < kTile; ++p) {
      const __m512d v = _mm512_load_pd(x[p] + c);
      acc[p * 4 + 0] = _mm512_fmadd_pd(v, u0, acc[p * 4 + 0]);
      acc[p * 4 + 1] = _mm512_fmadd_pd(v, u1, acc[p * 4 + 1]);
      acc[p * 4 + 2] = _mm512_fmadd_pd(v, u2, acc[p * 4 + 2]);
      acc[p * 4 + 3] = _mm512_fmadd_pd(v, u3, acc[p * 4 + 3]);
    }
  }
  for (int k = 0; k < kBlockPairs; ++k) _mm512_store_pd(a + k * kLanes, acc[k]);
}

// Two groups of 8 coordinates per iteration: two independent chains over the experts.
MOESCOPE_TARGET_AVX512
void variance_avx512(const Work& w, std::int64_t n8) {
  const __m512d E = _mm512_set1_pd(static_cast<double>(w.E));
  __m512d lane = _mm512_load_pd(w.var);
  std::int64_t c = 0;
  for (; c + 2 * kLanes <= n8; c += 2 * kLanes) {
    __m512d s0 = _mm512_load_pd(w.x + c), s1 = _mm512_load_pd(w.x + c + kLanes);
    for (int e = 1; e < w.E; ++e) {
      s0 = _mm512_add_pd(s0, _mm512_load_pd(w.x + e * w.stride + c));
      s1 = _mm512_add_pd(s1, _mm512_load_pd(w.x + e * w.stride + c + kLanes));
    }
    __m512d q0 = _mm512_setzero_pd(), q1 = _mm512_setzero_pd();
    for (int e = 0; e < w.E; ++e) {
      const __m512d d0 = _mm512_fmsub_pd(E, _mm512_load_pd(w.x + e * w.stride + c), s0);
      const __m512d d1 = _mm512_fmsub_pd(E, _mm512_load_pd(w.x + e * w.stride + c + kLanes), s1);
      q0 = _mm512_fmadd_pd(d0, d0, q0);
      q1 = _mm512_fmadd_pd(d1, d1, q1);
    }
    lane = _mm512_add_pd(_mm512_add_pd(lane, q0), q1);
  }
  for (; c < n8; c += kLanes) {
    __m512d s0 = _mm512_load_pd(w.x + c);
    for (int e = 1; e < w.E; ++e) s0 = _mm512_add_pd(s0, _mm512_load_pd(w.x + e * w.stride + c));
    __m512d q0 = _mm512_setzero_pd();
    for (int e = 0; e < w.E; ++e) {
      const __m512d d0 = _mm512_fmsub_pd(E, _mm512_load_pd(w.x + e * w.stride + c), s0);
      q0 = _mm512_fmadd_pd(d0, d0, q0);
    }
    lane = _mm512_add_pd(lane, q0);
  }
  _mm512_store_pd(w.var, lane);
}

MOESCOPE_TARGET_AVX512
void block_avx512(const Work& w, std::int64_t n8) {
  for (const Tile& t : *w.tiles) {
    if (t.g == t.h) diag_tile_avx512(w, t, n8);
    else block_tile_avx512(w, t, n8);
  }
  if (w.E >= 2) variance_avx512(w, n8);
}
#endif  // MOESCOPE_GRAM_X86

}  // namespace

bool gram_kernel_reads(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3 ||
         t == DType::F8_E5M2;
}

// ---------------------------------------------------------------------------------------------------------

GramSums::GramSums(int e) : experts(e), upper(static_cast<std::size_t>(e > 0 ? e * (e + 1) / 2 : 0), 0.0) {}

void GramSums::add(const GramSums& o) {
  if (o.experts != experts)
    throw std::invalid_argument("GramSums::add: " + std::to_string(o.experts) + " experts added to " +
                                std::to_string(experts));
  for (std::size_t k = 0; k < upper.size(); ++k) upper[k] += o.upper[k];
  sq_dev += o.sq_dev;
  count += o.count;
}

double GramSums::gram(int i, int j) const {
  if (i > j) std::swap(i, j);
  // row i starts after rows 0..i-1, which hold E, E-1, .., E-i+1 entries
  return upper[static_cast<std::size_t>(i * experts - i * (i - 1) / 2 + (j - i))];
}

Eigen::MatrixXd GramSums::gram_matrix() const {
  Eigen::MatrixXd g(experts, experts);
  for (int i = 0; i < experts; ++i)
    for (int j = i; j < experts; ++j) g(i, j) = g(j, i) = gram(i, j);
  return g;
}

// ---------------------------------------------------------------------------------------------------------

struct GramKernel::Impl {
  GramIsa isa = GramIsa::Portable;
  int E = 0, e_pad = 0;
  std::int64_t block = 0;
  std::vector<Tile> tiles;
  std::size_t acc_size = 0;
  AlignedDoubles x, acc, var;  // lanes of the current segment
  AlignedDoubles acc2, var2;   // lanes summed segment by segment
  std::int64_t count = 0;

  Work work() const {
    Work w;
    w.E = E;
    w.e_pad = e_pad;
    w.stride = block;
    w.x = x.get();
    w.acc = acc.get();
    w.var = var.get();
    w.tiles = &tiles;
    return w;
  }

  void decode(DType t, const std::uint8_t* src, std::int64_t n, double* dst) const {
#if MOESCOPE_GRAM_X86
    if (isa == GramIsa::Avx512) return decode_avx512(t, src, n, dst);
    if (isa == GramIsa::Avx2) return decode_avx2(t, src, n, dst);
#endif
    decode_portable(t, src, n, dst);
  }

  void run_block(std::int64_t n8, bool exact) const {
    const Work w = work();
#if MOESCOPE_GRAM_X86
    if (isa == GramIsa::Avx512) return block_avx512(w, n8);
    if (isa == GramIsa::Avx2) return block_avx2(w, n8);
#endif
    if (exact) block_portable<true>(w, n8);
    else block_portable<false>(w, n8);
  }

  // Adds the segment's lanes to the running lanes, lane by lane, and clears them.
  void flush() {
    double* a = acc.get();
    double* a2 = acc2.get();
    for (std::size_t k = 0; k < acc_size; ++k) a2[k] += a[k];
    std::fill(a, a + acc_size, 0.0);
    for (int l = 0; l < kLanes; ++l) var2[l] += var[l];
    std::fill(var.get(), var.get() + kLanes, 0.0);
  }

  // Splits the call into segments of kSegment coordinates; each is decoded block by block into x (the last
  // block of the call zero-padded to a multiple of 8: zeros add nothing) and then flushed.
  template <typename Decode>
  void add_segments(std::int64_t count_, bool exact, Decode&& decode_row) {
    for (std::int64_t seg = 0; seg < count_; seg += GramKernel::kSegment) {
      const std::int64_t seg_end = std::min(count_, seg + GramKernel::kSegment);
      for (std::int64_t at = seg; at < seg_end; at += block) {
        const std::int64_t n = std::min(block, seg_end - at), n8 = (n + kLanes - 1) / kLanes * kLanes;
        for (int e = 0; e < E; ++e) {
          double* row = x.get() + e * block;
          decode_row(e, at, n, row);
          std::fill(row + n, row + n8, 0.0);
        }
        run_block(n8, exact);
      }
      flush();
    }
    count += count_;
  }
};

GramKernel::GramKernel(int experts, std::int64_t block, GramIsa isa) : impl_(std::make_unique<Impl>()) {
  if (experts < 1) throw std::invalid_argument("GramKernel: experts must be >= 1, got " + std::to_string(experts));
  if (block < 0) throw std::invalid_argument("GramKernel: block must be >= 0, got " + std::to_string(block));
  if (isa == GramIsa::Auto) isa = gram_isa_auto();
  if (!gram_isa_available(isa))
    throw std::invalid_argument("GramKernel: this CPU cannot run the " + std::string(gram_isa_name(isa)) + " path");
  Impl& m = *impl_;
  m.isa = isa;
  m.E = experts;
  m.e_pad = (experts + kTile - 1) / kTile * kTile;
  // about 32 KiB of float64 (L1) for a few experts, up to 128 KiB (L2) for many, whose tiles then run longer
  if (block == 0) block = std::max<std::int64_t>(64, std::min<std::int64_t>(512, 16384 / m.e_pad));
  m.block = std::min<std::int64_t>(kSegment, (block + kLanes - 1) / kLanes * kLanes);
  const int groups = m.e_pad / kTile;
  for (int g = 0; g < groups; ++g)
    for (int h = g; h < groups; ++h) {
      m.tiles.push_back(Tile{g, h, m.acc_size});
      m.acc_size += static_cast<std::size_t>(kLanes * (g == h ? kDiagPairs : kBlockPairs));
    }
  m.x = aligned_zeros(static_cast<std::size_t>(m.e_pad * m.block));
  m.acc = aligned_zeros(m.acc_size);
  m.acc2 = aligned_zeros(m.acc_size);
  m.var2 = aligned_zeros(kLanes);
  m.var = aligned_zeros(kLanes);
}

GramKernel::~GramKernel() = default;
GramKernel::GramKernel(GramKernel&&) noexcept = default;
GramKernel& GramKernel::operator=(GramKernel&&) noexcept = default;

void GramKernel::add(DType t, const std::uint8_t* const* rows, std::int64_t count) {
  if (count < 0) throw std::invalid_argument("GramKernel::add: negative count " + std::to_string(count));
  if (!gram_kernel_reads(t))
    throw std::invalid_argument("GramKernel::add: cannot read " + std::string(dtype_name(t)) + " elements");
  const std::size_t es = dtype_size(t);
  impl_->add_segments(count, t != DType::F64, [&](int e, std::int64_t at, std::int64_t n, double* row) {
    impl_->decode(t, rows[e] + static_cast<std::size_t>(at) * es, n, row);
  });
}

void GramKernel::add(const double* const* rows, std::int64_t count) {
  add(DType::F64, reinterpret_cast<const std::uint8_t* const*>(rows), count);
}

GramSums GramKernel::take() {
  Impl& m = *impl_;
  GramSums s(m.E);
  for (const Tile& t : m.tiles)
    for (int p = 0; p < kTile; ++p)
      for (int q = (t.g == t.h ? p : 0); q < kTile; ++q) {
        const int i = kTile * t.g + p, j = kTile * t.h + q;
        if (i >= m.E || j >= m.E) continue;
        const double* lanes = m.acc2.get() + t.offset + kLanes * (t.g == t.h ? kDiagIndex[p][q] : p * kTile + q);
        s.upper[static_cast<std::size_t>(i * m.E - i * (i - 1) / 2 + (j - i))] = reduce_lanes(lanes);
      }
  s.sq_dev = m.E >= 2 ? reduce_lanes(m.var2.get()) / (static_cast<double>(m.E) * m.E) : 0.0;
  s.count = m.count;
  std::fill(m.acc2.get(), m.acc2.get() + m.acc_size, 0.0);
  std::fill(m.var2.get(), m.var2.get() + kLanes, 0.0);
  m.count = 0;
  return s;
}

int GramKernel::experts() const { return impl_->E; }
std::int64_t GramKernel::block() const { return impl_->block; }
GramIsa GramKernel::isa() const { return impl_->isa; }

}  // namespace moescope
