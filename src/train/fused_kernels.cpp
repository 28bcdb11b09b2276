// AdamW's update and the sum of squares, one pass each: plain C++, AVX2 + FMA, and AVX-512F (see the header for
// the operations every path performs).
#include "moescope/train/fused_kernels.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(MOESCOPE_NO_MULTIVERSION)
#define MOESCOPE_FUSED_X86 1
#include <immintrin.h>
#define MOESCOPE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MOESCOPE_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define MOESCOPE_FUSED_X86 0
#endif

namespace moescope {
namespace {

VectorIsa resolve(VectorIsa isa, const char* what) {
  if (isa == VectorIsa::Auto) return vector_isa_auto();
  if (!vector_isa_available(isa))
    throw std::invalid_argument(std::string(what) + ": this CPU cannot run the " + std::string(vector_isa_name(isa)) +
                                " path");
  return isa;
}

// The step's scalars in the elements' dtype.
template <class T>
struct Coefficients {
  T b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps, decay, step, grad_scale;
  explicit Coefficients(const AdamWScalars& s)
      : b1(static_cast<T>(s.beta1)),
        one_minus_b1(static_cast<T>(1.0 - s.beta1)),
        b2(static_cast<T>(s.beta2)),
        one_minus_b2(static_cast<T>(1.0 - s.beta2)),
        sqrt_bc2(static_cast<T>(std::sqrt(s.bias_correction2))),
        eps(static_cast<T>(s.eps)),
        decay(static_cast<T>(1.0 - s.lr * s.weight_decay)),
        step(static_cast<T>(-(s.lr / s.bias_correction1))),
        grad_scale(static_cast<T>(s.grad_scale)) {}
};

// One element. With kFma the three multiply-adds are fused (std::fma is one instruction in the AVX paths, which
// are compiled for FMA); without, each product is rounded first (the portable path).
template <bool kFma, class T>
inline void adamw_element(T& p, T g_in, T& m, T& v, const Coefficients<T>& c) {
  const T g = g_in * c.grad_scale;
  const auto madd = [](T a, T b, T addend) {
    if constexpr (kFma) return std::fma(a, b, addend);
    else return a * b + addend;
  };
  const T mi = madd(g, c.one_minus_b1, m * c.b1);
  const T vi = madd(g * g, c.one_minus_b2, v * c.b2);
  const T denom = std::sqrt(vi) / c.sqrt_bc2 + c.eps;
  p = madd(p, c.decay, c.step * (mi / denom));
  m = mi;
  v = vi;
}

template <class T>
void adamw_portable(T* p, const T* g, T* m, T* v, std::int64_t n, const Coefficients<T>& c) {
  for (std::int64_t i = 0; i < n; ++i) adamw_element<false>(p[i], g[i], m[i], v[i], c);
}

// Lane j of the sum of squares takes elements j, j + 8, ...: the tail (fewer than 8 left) continues the lanes.
constexpr int kLanes = 8;

double reduce_lanes(const double* l) { return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); }

template <class T>
double squares_portable(const T* x, std::int64_t n) {
  double lane[kLanes] = {};
  for (std::int64_t i = 0; i < n; ++i) {
    const double xi = static_cast<double>(x[i]);
    lane[i % kLanes] += xi * xi;
  }
  return reduce_lanes(lane);
}

#if MOESCOPE_FUSED_X86
// ---- AVX2 + FMA ------------------------------------------------------------------------------------------

MOESCOPE_TARGET_AVX2
void adamw_avx2(float* p, const float* g, float* m, float* v, std::int64_t n, const Coefficients<float>& c) {
  const __m256 b1 = _mm256_set1_ps(c.b1), ob1 = _mm256_set1_ps(c.one_minus_b1), b2 = _mm256_set1_ps(c.b2),
               ob2 = _mm256_set1_ps(c.one_minus_b2), sbc2 = _mm256_set1_ps(c.sqrt_bc2), eps = _mm256_set1_ps(c.eps),
               decay = _mm256_set1_ps(c.decay), step = _mm256_set1_ps(c.step),
               gscale = _mm256_set1_ps(c.grad_scale);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), gscale);
    const __m256 mi = _mm256_fmadd_ps(gi, ob1, _mm256_mul_ps(_mm256_loadu_ps(m + i), b1));
    const __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(gi, gi), ob2, _mm256_mul_ps(_mm256_loadu_ps(v + i), b2));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), sbc2), eps);
    const __m256 pi = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), decay, _mm256_mul_ps(step, _mm256_div_ps(mi, denom)));
    _mm256_storeu_ps(p + i, pi);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
  }
  for (; i < n; ++i) adamw_element<true>(p[i], g[i], m[i], v[i], c);
}

MOESCOPE_TARGET_AVX2
void adamw_avx2(double* p, const double* g, double* m, double* v, std::int64_t n, const Coefficients<double>& c) {
  const __m256d b1 = _mm256_set1_pd(c.b1), ob1 = _mm256_set1_pd(c.one_minus_b1), b2 = _mm256_set1_pd(c.b2),
                ob2 = _mm256_set1_pd(c.one_minus_b2), sbc2 = _mm256_set1_pd(c.sqrt_bc2), eps = _mm256_set1_pd(c.eps),
                decay = _mm256_set1_pd(c.decay), step = _mm256_set1_pd(c.step),
                gscale = _mm256_set1_pd(c.grad_scale);
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d gi = _mm256_mul_pd(_mm256_loadu_pd(g + i), gscale);
    const __m256d mi = _mm256_fmadd_pd(gi, ob1, _mm256_mul_pd(_mm256_loadu_pd(m + i), b1));
    const __m256d vi = _mm256_fmadd_pd(_mm256_mul_pd(gi, gi), ob2, _mm256_mul_pd(_mm256_loadu_pd(v + i), b2));
    const __m256d denom = _mm256_add_pd(_mm256_div_pd(_mm256_sqrt_pd(vi), sbc2), eps);
    const __m256d pi = _mm256_fmadd_pd(_mm256_loadu_pd(p + i), decay, _mm256_mul_pd(step, _mm256_div_pd(mi, denom)));
    _mm256_storeu_pd(p + i, pi);
    _mm256_storeu_pd(m + i, mi);
    _mm256_storeu_pd(v + i, vi);
  }
  for (; i < n; ++i) adamw_element<true>(p[i], g[i], m[i], v[i], c);
}

// Lanes 0-3 in `lo`, 4-7 in `hi`.
MOESCOPE_TARGET_AVX2
double squares_tail_avx2(__m256d lo, __m256d hi, const double* rest, std::int64_t k) {
  alignas(32) double lane[kLanes];
  _mm256_store_pd(lane, lo);
  _mm256_store_pd(lane + 4, hi);
  for (std::int64_t j = 0; j < k; ++j) lane[j] = std::fma(rest[j], rest[j], lane[j]);
  return reduce_lanes(lane);
}

MOESCOPE_TARGET_AVX2
double squares_avx2(const float* x, std::int64_t n) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), b = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  }
  double rest[kLanes];
  for (std::int64_t j = 0; i + j < n; ++j) rest[j] = static_cast<double>(x[i + j]);
  return squares_tail_avx2(lo, hi, rest, n - i);
}

MOESCOPE_TARGET_AVX2
double squares_avx2(const double* x, std::int64_t n) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256d a = _mm256_loadu_pd(x + i), b = _mm256_loadu_pd(x + i + 4);
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  }
  return squares_tail_avx2(lo, hi, x + i, n - i);
}

// ---- AVX-512F --------------------------------------------------------------------------------------------

// GCC 12 warns that the `_mm512_undefined_*` source operand inside _mm512_sqrt_* and _mm512_cvtps_pd "may be used
// uninitialized" once they are inlined here (a false positive: the all-ones mask never reads it).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

MOESCOPE_TARGET_AVX512
void adamw_avx512(float* p, const float* g, float* m, float* v, std::int64_t n, const Coefficients<float>& c) {
  const __m512 b1 = _mm512_set1_ps(c.b1), ob1 = _mm512_set1_ps(c.one_minus_b1), b2 = _mm512_set1_ps(c.b2),
               ob2 = _mm512_set1_ps(c.one_minus_b2), sbc2 = _mm512_set1_ps(c.sqrt_bc2), eps = _mm512_set1_ps(c.eps),
               decay = _mm512_set1_ps(c.decay), step = _mm512_set1_ps(c.step),
               gscale = _mm512_set1_ps(c.grad_scale);
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 gi = _mm512_mul_ps(_mm512_loadu_ps(g + i), gscale);
    const __m512 mi = _mm512_fmadd_ps(gi, ob1, _mm512_mul_ps(_mm512_loadu_ps(m + i), b1));
    const __m512 vi = _mm512_fmadd_ps(_mm512_mul_ps(gi, gi), ob2, _mm512_mul_ps(_mm512_loadu_ps(v + i), b2));
    const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), sbc2), eps);
    const __m512 pi = _mm512_fmadd_ps(_mm512_loadu_ps(p + i), decay, _mm512_mul_ps(step, _mm512_div_ps(mi, denom)));
    _mm512_storeu_ps(p + i, pi);
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
  }
  for (; i < n; ++i) adamw_element<true>(p[i], g[i], m[i], v[i], c);
}

MOESCOPE_TARGET_AVX512
void adamw_avx512(double* p, const double* g, double* m, double* v, std::int64_t n, const Coefficients<double>& c) {
  const __m512d b1 = _mm512_set1_pd(c.b1), ob1 = _mm512_set1_pd(c.one_minus_b1), b2 = _mm512_set1_pd(c.b2),
                ob2 = _mm512_set1_pd(c.one_minus_b2), sbc2 = _mm512_set1_pd(c.sqrt_bc2), eps = _mm512_set1_pd(c.eps),
                decay = _mm512_set1_pd(c.decay), step = _mm512_set1_pd(c.step),
                gscale = _mm512_set1_pd(c.grad_scale);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d gi = _mm512_mul_pd(_mm512_loadu_pd(g + i), gscale);
    const __m512d mi = _mm512_fmadd_pd(gi, ob1, _mm512_mul_pd(_mm512_loadu_pd(m + i), b1));
    const __m512d vi = _mm512_fmadd_pd(_mm512_mul_pd(gi, gi), ob2, _mm512_mul_pd(_mm512_loadu_pd(v + i), b2));
    const __m512d denom = _mm512_add_pd(_mm512_div_pd(_mm512_sqrt_pd(vi), sbc2), eps);
    const __m512d pi = _mm512_fmadd_pd(_mm512_loadu_pd(p + i), decay, _mm512_mul_pd(step, _mm512_div_pd(mi, denom)));
    _mm512_storeu_pd(p + i, pi);
    _mm512_storeu_pd(m + i, mi);
    _mm512_storeu_pd(v + i, vi);
  }
  for (; i < n; ++i) adamw_element<true>(p[i], g[i], m[i], v[i], c);
}

MOESCOPE_TARGET_AVX512
double squares_tail_avx512(__m512d lanes, const double* rest, std::int64_t k) {
  alignas(64) double lane[kLanes];
  _mm512_store_pd(lane, lanes);
  for (std::int64_t j = 0; j < k; ++j) lane[j] = std::fma(rest[j], rest[j], lane[j]);
  return reduce_lanes(lane);
}

MOESCOPE_TARGET_AVX512
double squares_avx512(const float* x, std::int64_t n) {
  __m512d lanes = _mm512_setzero_pd();
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    lanes = _mm512_fmadd_pd(a, a, lanes);
  }
  double rest[kLanes];
  for (std::int64_t j = 0; i + j < n; ++j) rest[j] = static_cast<double>(x[i + j]);
  return squares_tail_avx512(lanes, rest, n - i);
}

MOESCOPE_TARGET_AVX512
double squares_avx512(const double* x, std::int64_t n) {
  __m512d lanes = _mm512_setzero_pd();
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512d a = _mm512_loadu_pd(x + i);
    lanes = _mm512_fmadd_pd(a, a, lanes);
  }
  return squares_tail_avx512(lanes, x + i, n - i);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // MOESCOPE_FUSED_X86

template <class T>
void adamw_dispatch(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamWScalars& s, VectorIsa isa) {
  const Coefficients<T> c(s);
  switch (resolve(isa, "adamw_update")) {
#if MOESCOPE_FUSED_X86
    case VectorIsa::Avx512: return adamw_avx512(p, g, m, v, n, c);
    case VectorIsa::Avx2: return adamw_avx2(p, g, m, v, n, c);
#endif
    default: return adamw_portable(p, g, m, v, n, c);
  }
}

template <class T>
double squares_dispatch(const T* x, std::int64_t n, VectorIsa isa) {
  switch (resolve(isa, "sum_of_squares")) {
#if MOESCOPE_FUSED_X86
    case VectorIsa::Avx512: return squares_avx512(x, n);
    case VectorIsa::Avx2: return squares_avx2(x, n);
#endif
    default: return squares_portable(x, n);
  }
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamWScalars& s, VectorIsa isa) {
  adamw_dispatch(p, g, m, v, n, s, isa);
}
void adamw_update(double* p, const double* g, double* m, double* v, std::int64_t n, const AdamWScalars& s,
                  VectorIsa isa) {
  adamw_dispatch(p, g, m, v, n, s, isa);
}
double sum_of_squares(const float* x, std::int64_t n, VectorIsa isa) { return squares_dispatch(x, n, isa); }
double sum_of_squares(const double* x, std::int64_t n, VectorIsa isa) { return squares_dispatch(x, n, isa); }

}  // namespace moescope
