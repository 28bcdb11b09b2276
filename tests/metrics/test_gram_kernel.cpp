// GramKernel against a naive long-double reference, and the bit-for-bit promises of its header: every code path,
// block size and way of feeding the coordinates gives the same bits.
//
// Tolerances: products of decoded elements are exact in float64, so a Gram entry differs from the exact sum only
// by float64 additions in the kernel's two-level order, |error| <= depth * u * sum_c |x_i x_j| with
// depth = min(n, kSegment)/8 + ceil(n / kSegment) + 3 and u = 2^-53 (Higham's gamma bound, first order). sq_dev's
// per-coordinate terms carry a few more roundings each (E x_e - S, the square, E additions into q, the final
// division): depth + 2E + 8 relative to sq_dev itself; S's own rounding enters only at second order because the
// deviations sum to zero.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "moescope/metrics/gram_kernel.hpp"

namespace moescope {
namespace {

constexpr double kU = 1.1102230246251565e-16;  // 2^-53

std::vector<GramIsa> available_isas() {
  std::vector<GramIsa> v;
  for (GramIsa i : {GramIsa::Portable, GramIsa::Avx2, GramIsa::Avx512})
    if (gram_isa_available(i)) v.push_back(i);
  return v;
}

// E strips of `n` elements of dtype t, each starting `misalign` bytes into its own buffer, holding values drawn
// from `draw` and rounded to t; `values` gets the decoded (exact) values.
struct Strips {
  DType t;
  std::vector<std::vector<std::uint8_t>> bytes;
  std::vector<const std::uint8_t*> rows;
  std::vector<std::vector<double>> values;
};

template <typename Draw>
Strips make_strips(DType t, int E, std::int64_t n, std::size_t misalign, Draw&& draw) {
  Strips s;
  s.t = t;
  const std::size_t es = dtype_size(t);
  for (int e = 0; e < E; ++e) {
    std::vector<float> f(static_cast<std::size_t>(n));
    for (auto& x : f) x = draw();
    std::vector<std::uint8_t> b(misalign + es * static_cast<std::size_t>(n) + 1, 0xAB);
    if (t == DType::F8_E4M3 || t == DType::F8_E5M2) {
      for (std::int64_t i = 0; i < n; ++i)  // draw() in [0, 1): a uniform byte
        b[misalign + static_cast<std::size_t>(i)] =
            static_cast<std::uint8_t>(static_cast<std::uint32_t>(draw() * 256.f) & 0xffu);
    } else if (t == DType::F64) {
      for (std::int64_t i = 0; i < n; ++i) {
        // not a float32 value: products are rounded, as in real F64 checkpoints
        const double d =
            static_cast<double>(f[static_cast<std::size_t>(i)]) * (1.0 + 1e-12 * static_cast<double>(i % 7));
        std::memcpy(&b[misalign + 8 * static_cast<std::size_t>(i)], &d, 8);
      }
    } else {
      convert_from_f32(t, f.data(), f.size(), b.data() + misalign);
    }
    std::vector<double> v(static_cast<std::size_t>(n));
    convert_to_f64(t, b.data() + misalign, v.size(), v.data());
    s.bytes.push_back(std::move(b));
    s.values.push_back(std::move(v));
  }
  for (int e = 0; e < E; ++e) s.rows.push_back(s.bytes[static_cast<std::size_t>(e)].data() + misalign);
  return s;
}

struct Reference {
  std::vector<std::vector<long double>> gram, abs_gram;
  long double sq_dev = 0, scale_dev = 0;
};

Reference reference(const std::vector<std::vector<double>>& v) {
  const auto E = static_cast<int>(v.size());
  const std::size_t n = E ? v[0].size() : 0;
  Reference r;
  r.gram.assign(static_cast<std::size_t>(E), std::vector<long double>(static_cast<std::size_t>(E), 0));
  r.abs_gram = r.gram;
  for (int i = 0; i < E; ++i)
    for (int j = i; j < E; ++j) {
      for (std::size_t c = 0; c < n; ++c) {
        const long double p = static_cast<long double>(v[i][c]) * v[j][c];
        r.gram[i][j] += p;
        r.abs_gram[i][j] += std::fabs(p);
      }
      r.gram[j][i] = r.gram[i][j];
      r.abs_gram[j][i] = r.abs_gram[i][j];
    }
  for (std::size_t c = 0; c < n; ++c) {
    long double s = 0;
    for (int e = 0; e < E; ++e) s += v[e][c];
    const long double m = s / E;
    for (int e = 0; e < E; ++e) r.sq_dev += (v[e][c] - m) * (v[e][c] - m);
  }
  return r;
}

double depth(std::int64_t n) {
  const std::int64_t seg = GramKernel::kSegment;
  return static_cast<double>(std::min(n, seg)) / 8 + static_cast<double>((n + seg - 1) / seg) + 3;
}

void expect_close(const GramSums& got, const Reference& ref, std::int64_t n, const std::string& what) {
  const int E = got.experts;
  for (int i = 0; i < E; ++i)
    for (int j = 0; j < E; ++j) {
      const double bound = depth(n) * kU * static_cast<double>(ref.abs_gram[i][j]);
      EXPECT_NEAR(got.gram(i, j), static_cast<double>(ref.gram[i][j]), bound) << what << " (" << i << "," << j << ")";
    }
  const double bound = (depth(n) + 2 * E + 8) * kU * static_cast<double>(ref.sq_dev) + 1e-300;
  EXPECT_NEAR(got.sq_dev, static_cast<double>(ref.sq_dev), bound) << what;
}

bool same_bits(const GramSums& a, const GramSums& b) {
  return a.experts == b.experts && a.count == b.count && a.upper.size() == b.upper.size() &&
         std::memcmp(a.upper.data(), b.upper.data(), a.upper.size() * sizeof(double)) == 0 &&
         std::memcmp(&a.sq_dev, &b.sq_dev, sizeof(double)) == 0;
}

TEST(GramKernel, EveryDtypeSizeAndExpertCountMatchesLongDoubleReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.25f, 1.5f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2})
    for (int E : {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17})
      for (std::int64_t n : std::vector<std::int64_t>{0, 1, 7, 8, 9, 63, 64, 65, 1001, 2 * GramKernel::kSegment + 13}) {
        const bool fp8 = t == DType::F8_E4M3 || t == DType::F8_E5M2;
        Strips s = make_strips(t, E, n, static_cast<std::size_t>(E % 3), [&] { return fp8 ? ud(rng) : nd(rng); });
        // a NaN byte pattern for FP8 would poison the comparison: keep FP8 finite (E4M3 0x7f/0xff, E5M2 >= 0x7c)
        if (fp8)
          for (int e = 0; e < E; ++e)
            for (std::int64_t i = 0; i < n; ++i) {
              auto& b = s.bytes[static_cast<std::size_t>(e)][static_cast<std::size_t>(E % 3 + i)];
              b = static_cast<std::uint8_t>(b & 0xbb);  // clears bits 2 and 6: never all-ones exponent
              convert_to_f64(t, &b, 1, &s.values[static_cast<std::size_t>(e)][static_cast<std::size_t>(i)]);
            }
        const Reference ref = reference(s.values);
        for (GramIsa isa : available_isas()) {
          GramKernel k(E, 16, isa);
          k.add(t, s.rows.data(), n);
          const GramSums got = k.take();
          EXPECT_EQ(got.count, n);
          expect_close(got, ref, n,
                       std::string(dtype_name(t)) + " E=" + std::to_string(E) + " n=" + std::to_string(n) + " " +
                           std::string(gram_isa_name(isa)));
        }
      }
}

TEST(GramKernel, EveryPathAndBlockSizeGivesTheSameBits) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(-0.5f, 3.f);
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16})
    for (int E : {2, 3, 4, 6, 8, 11, 16, 17}) {
      const std::int64_t n = 2000 + 37 * E;
      Strips s = make_strips(t, E, n, 1, [&] { return nd(rng); });
      GramKernel ref_kernel(E, 0, GramIsa::Portable);
      ref_kernel.add(t, s.rows.data(), n);
      const GramSums ref = ref_kernel.take();
      for (GramIsa isa : available_isas())
        for (std::int64_t block : {1, 8, 24, 64, 0, 5000}) {
          GramKernel k(E, block, isa);
          k.add(t, s.rows.data(), n);
          EXPECT_TRUE(same_bits(k.take(), ref))
              << dtype_name(t) << " E=" << E << " " << gram_isa_name(isa) << " block " << block;
        }
    }
}

TEST(GramKernel, RawBytesAndTheirFloat64ValuesGiveTheSameBits) {
  // The geometry's staged path (read_view_f64, then add(double)) must agree with reading bytes in place: the
  // products of F32/F16/BF16/F8 values are exact, so fma and multiply-then-add coincide.
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (DType t : {DType::F32, DType::F16, DType::BF16})
    for (GramIsa isa : available_isas()) {
      const int E = 7;
      const std::int64_t n = 3 * GramKernel::kSegment + 1001;
      Strips s = make_strips(t, E, n, 3, [&] { return nd(rng); });
      GramKernel a(E, 0, isa), b(E, 0, isa);
      a.add(t, s.rows.data(), n);
      std::vector<const double*> rows;
      for (const auto& v : s.values) rows.push_back(v.data());
      // fed in pieces of one segment (as geometry's staged path does): the lanes see the same sequence
      for (std::int64_t at = 0; at < n; at += GramKernel::kSegment) {
        std::vector<const double*> piece;
        for (const double* r : rows) piece.push_back(r + at);
        b.add(piece.data(), std::min<std::int64_t>(GramKernel::kSegment, n - at));
      }
      EXPECT_TRUE(same_bits(a.take(), b.take())) << dtype_name(t) << " " << gram_isa_name(isa);
    }
}

TEST(GramKernel, LargeCommonOffsetOverTenMillionCoordinates) {
  // Experts = 1000 + 0.01 z (float32), D = 10^7 fed in 10 calls: the squared deviations are 1e-10 of the squares,
  // so a one-pass sum(x^2) - S^2/E in float64 loses them (checked below, so the data really is adversarial),
  // while the kernel's two-pass form keeps u-level relative accuracy. The reference is long double (64-bit
  // significand) over exact float32 values.
  const int E = 4;
  const std::int64_t piece = 1'000'000, pieces = 10;
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<GramKernel> kernels;
  for (GramIsa isa : available_isas()) kernels.emplace_back(E, 0, isa);
  Reference total;
  total.gram.assign(E, std::vector<long double>(E, 0));
  double naive_sq = 0, naive_s2 = 0;  // the one-pass formula in float64
  for (std::int64_t p = 0; p < pieces; ++p) {
    Strips s = make_strips(DType::F32, E, piece, 0, [&] { return 1000.f + 0.01f * nd(rng); });
    for (auto& k : kernels) k.add(DType::F32, s.rows.data(), piece);
    const Reference r = reference(s.values);
    for (int i = 0; i < E; ++i)
      for (int j = 0; j < E; ++j) total.gram[i][j] += r.gram[i][j];
    total.sq_dev += r.sq_dev;
    for (std::int64_t c = 0; c < piece; ++c) {
      double sq = 0, sum = 0;
      for (int e = 0; e < E; ++e) sq += s.values[e][c] * s.values[e][c], sum += s.values[e][c];
      naive_sq += sq;
      naive_s2 += sum * sum / E;
    }
  }
  const double ref_sq = static_cast<double>(total.sq_dev);
  EXPECT_GT(std::fabs((naive_sq - naive_s2) - ref_sq), 1e-6 * ref_sq) << "the data is not adversarial";
  for (auto& k : kernels) {
    const GramSums got = k.take();
    const auto isa = gram_isa_name(k.isa());
    // the header's bounds: depth(10^7) = 512 + 2442 + 3, so 3.3e-13 relative for the Gram (positive terms) and
    // 3.3e-13 for sq_dev; 1e-12 leaves a factor 3. (This float32 data has structured low bits, so its rounding
    // errors do not cancel: one level of lanes over 1.25e6 terms each was off by 5e-12.)
    EXPECT_NEAR(got.sq_dev, ref_sq, 1e-12 * ref_sq) << isa;
    for (int i = 0; i < E; ++i)
      for (int j = i; j < E; ++j) {
        const double g = static_cast<double>(total.gram[i][j]);
        EXPECT_NEAR(got.gram(i, j), g, 1e-12 * g) << isa << " (" << i << "," << j << ")";
      }
  }
}

TEST(GramKernel, CallsAccumulateUntilTakeAndTakeRestarts) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  const int E = 5;
  const std::int64_t seg = GramKernel::kSegment, n = 3 * seg + 100;
  Strips s = make_strips(DType::BF16, E, n, 0, [&] { return nd(rng); });
  GramKernel k(E);
  k.add(DType::BF16, s.rows.data(), n);
  const GramSums once = k.take();
  // calls of whole segments, then the rest: the same lanes in the same order
  std::int64_t at = 0;
  for (std::int64_t len : {seg, 2 * seg, std::int64_t{100}}) {
    std::vector<const std::uint8_t*> rows;
    for (const auto* r : s.rows) rows.push_back(r + 2 * at);
    k.add(DType::BF16, rows.data(), len);
    at += len;
  }
  EXPECT_TRUE(same_bits(k.take(), once));
  const GramSums empty = k.take();
  EXPECT_EQ(empty.count, 0);
  for (double x : empty.upper) EXPECT_EQ(x, 0.0);
  EXPECT_EQ(empty.sq_dev, 0.0);
}

TEST(GramKernel, NonFiniteValuesPropagateToTheirEntriesOnly) {
  const int E = 3;
  std::vector<float> a(20, 1.f), b(20, 2.f), c(20, 3.f);
  b[13] = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::vector<std::uint8_t>> bytes;
  for (const auto* v : {&a, &b, &c}) {
    bytes.emplace_back(v->size() * 2);
    convert_from_f32(DType::BF16, v->data(), v->size(), bytes.back().data());
  }
  std::vector<const std::uint8_t*> rows = {bytes[0].data(), bytes[1].data(), bytes[2].data()};
  for (GramIsa isa : available_isas()) {
    GramKernel k(E, 8, isa);
    k.add(DType::BF16, rows.data(), 20);
    const GramSums g = k.take();
    EXPECT_EQ(g.gram(0, 0), 20.0);
    EXPECT_EQ(g.gram(0, 2), 60.0);
    EXPECT_EQ(g.gram(2, 2), 180.0);
    EXPECT_TRUE(std::isnan(g.gram(0, 1)) && std::isnan(g.gram(1, 1)) && std::isnan(g.gram(1, 2)));
    EXPECT_TRUE(std::isnan(g.sq_dev));
  }
}

TEST(GramKernel, HalfSubnormalsAndBf16ExtremesDecodeExactly) {
  // F16 subnormals (2^-24 steps), the largest half, and bf16 values near float32's limits: squares and
  // products are exact in float64, so the Gram must equal the exact value.
  const std::vector<std::uint16_t> half = {0x0001, 0x03ff, 0x7bff, 0x8001, 0x3c00, 0x0200, 0xfbff, 0x0000};
  const std::vector<std::uint16_t> bf = {0x0001, 0x7f7f, 0x8080, 0x0080, 0x3f80, 0xff7f, 0x007f, 0x4000};
  for (const auto& [t, bits] : {std::pair{DType::F16, half}, std::pair{DType::BF16, bf}}) {
    std::vector<std::uint8_t> bytes(bits.size() * 2);
    std::memcpy(bytes.data(), bits.data(), bytes.size());
    std::vector<double> v(bits.size());
    convert_to_f64(t, bytes.data(), v.size(), v.data());
    long double sq = 0;
    for (double x : v) sq += static_cast<long double>(x) * x;
    const std::uint8_t* rows[2] = {bytes.data(), bytes.data()};
    for (GramIsa isa : available_isas()) {
      GramKernel k(2, 0, isa);
      k.add(t, rows, static_cast<std::int64_t>(v.size()));
      const GramSums g = k.take();
      EXPECT_EQ(g.gram(0, 1), static_cast<double>(sq)) << dtype_name(t) << " " << gram_isa_name(isa);
      EXPECT_EQ(g.sq_dev, 0.0);
    }
  }
}

TEST(GramKernel, SumsAddEntryByEntry) {
  GramSums a(3), b(3);
  for (std::size_t k = 0; k < a.upper.size(); ++k) a.upper[k] = static_cast<double>(k), b.upper[k] = 10.0;
  a.sq_dev = 1, b.sq_dev = 2, a.count = 3, b.count = 4;
  a.add(b);
  EXPECT_EQ(a.count, 7);
  EXPECT_EQ(a.sq_dev, 3.0);
  // row by row: (0,0)=0 (0,1)=1 (0,2)=2 (1,1)=3 (1,2)=4 (2,2)=5, plus 10
  EXPECT_EQ(a.gram(0, 2), 12.0);
  EXPECT_EQ(a.gram(2, 1), 14.0);
  EXPECT_EQ(a.gram(2, 2), 15.0);
  const Eigen::MatrixXd m = a.gram_matrix();
  EXPECT_EQ(m(1, 0), 11.0);
  EXPECT_EQ(m(0, 1), 11.0);
  EXPECT_THROW(a.add(GramSums(4)), std::invalid_argument);
}

TEST(GramKernel, RejectsBadArguments) {
  EXPECT_THROW(GramKernel(0), std::invalid_argument);
  EXPECT_THROW(GramKernel(2, -1), std::invalid_argument);
  GramKernel k(2);
  const std::uint8_t bytes[8] = {};
  const std::uint8_t* rows[2] = {bytes, bytes};
  EXPECT_THROW(k.add(DType::I32, rows, 1), std::invalid_argument);
  EXPECT_THROW(k.add(DType::BF16, rows, -1), std::invalid_argument);
  EXPECT_FALSE(gram_kernel_reads(DType::I8));
  EXPECT_TRUE(gram_kernel_reads(DType::F8_E5M2));
  EXPECT_NE(gram_isa_auto(), GramIsa::Auto);
  for (GramIsa isa : {GramIsa::Avx2, GramIsa::Avx512})
    if (!gram_isa_available(isa)) EXPECT_THROW(GramKernel(2, 0, isa), std::invalid_argument);
  EXPECT_EQ(GramKernel(5, 3).block(), 8);  // rounded up to a multiple of 8
  EXPECT_EQ(GramKernel(5, 1 << 20).block(), GramKernel::kSegment);
}

}  // namespace
}  // namespace moescope
