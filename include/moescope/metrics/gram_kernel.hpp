#pragma once
// The hot loop of weight geometry: float64 sums over coordinates c of E expert vectors x_e read straight from
// checkpoint bytes,
//   gram(i, j) = sum_c x_i[c] x_j[c]            (i <= j)
//   sq_dev     = sum_c sum_e (x_e[c] - m[c])^2   with m[c] = S[c] / E, S[c] = sum_e x_e[c], computed per
//                coordinate as q[c] = sum_e (E x_e[c] - S[c])^2 (two passes over the experts, so a large common
//                offset does not cancel; E x_e - S is rounded once, by FMA, and no division is needed), and
//                sq_dev = (sum_c q[c]) / E^2.
//
// Accuracy: every element is decoded exactly to float64 and every product is formed in float64 (FMA). For
// F32/F16/BF16/F8 data the products are exact (at most 24 + 24 significant bits), so a Gram entry carries only
// the rounding of its float64 additions, kept short by summing in two levels: 8 lanes per entry within a segment
// of kSegment coordinates (512 terms per lane), then segment by segment. Nothing is summed in float32.
//
// Order of operations (which fixes the bits): an add() call is cut into segments of kSegment coordinates from
// its first; coordinate k of a segment goes to lane k mod 8, and each lane starts at zero and is updated in
// increasing k with fma(x_i[k], x_j[k], lane) for the Gram and with lane + q[k] for sq_dev, where S[k] sums the
// experts in order e = 0..E-1 and q[k] = fma(d_e, d_e, q) over e = 0..E-1 from q = 0 with
// d_e = fma(E, x_e[k], -S[k]). At the end of each segment its lanes are added to running lanes, lane by lane;
// take() reduces the running lanes as ((0+1)+(2+3))+((4+5)+(6+7)). The block size (how many coordinates are
// decoded at a time) does not enter, nor does the code path: every instruction set performs exactly these IEEE
// operations (the tests compare their bits). So |error| <= (kSegment/8 + n/kSegment + 3) u sum_k |x_i x_j|
// for a Gram entry over n coordinates (u = 2^-53).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "moescope/io/tensor.hpp"
#include "moescope/util/cpu.hpp"

namespace moescope {

/// Code paths of GramKernel (util/cpu.hpp): Auto picks the widest the CPU runs.
using GramIsa = VectorIsa;
inline bool gram_isa_available(GramIsa isa) { return vector_isa_available(isa); }
inline GramIsa gram_isa_auto() { return vector_isa_auto(); }
inline std::string_view gram_isa_name(GramIsa isa) { return vector_isa_name(isa); }

/// True for the dtypes GramKernel decodes itself: F64, F32, F16, BF16, F8_E4M3, F8_E5M2 (F8 without block
/// scales; scaled F8, integers and strided views go through read_view_f64 into F64 first).
bool gram_kernel_reads(DType t);

/// Float64 sums of one or more GramKernel::add() calls; see the file comment for the definitions.
struct GramSums {
  int experts = 0;
  std::int64_t count = 0;     // coordinates summed
  std::vector<double> upper;  // gram(i, j), i <= j, row by row: (0,0), (0,1), .., (0,E-1), (1,1), ..
  double sq_dev = 0.0;        // sum over coordinates of sum_e (x_e - mean)^2 (not divided by E - 1 or D)

  explicit GramSums(int experts = 0);
  /// Adds another's sums entry by entry (this + other). Throws std::invalid_argument if the expert counts differ.
  void add(const GramSums& other);
  /// gram(i, j) for any order of i, j < experts.
  double gram(int i, int j) const;
  /// The symmetric E x E matrix.
  Eigen::MatrixXd gram_matrix() const;
};

/// Accumulates GramSums over coordinates given as E strips of raw checkpoint bytes. Not thread-safe: use one
/// per thread. Working memory: E x block float64 plus 16 float64 lanes per Gram entry.
class GramKernel {
 public:
  /// Coordinates per segment (see the file comment): add() calls whose lengths are multiples of this give the
  /// same bits as one call over their concatenation.
  static constexpr std::int64_t kSegment = 4096;

  /// `experts` >= 1; `block` coordinates are decoded at a time (0: min(512, 16384 / E) but at least 64),
  /// rounded up to a multiple of 8, at most kSegment. Throws std::invalid_argument for experts < 1, block < 0,
  /// or an `isa` this CPU cannot run.
  explicit GramKernel(int experts, std::int64_t block = 0, GramIsa isa = GramIsa::Auto);
  ~GramKernel();
  GramKernel(GramKernel&&) noexcept;
  GramKernel& operator=(GramKernel&&) noexcept;

  /// Adds coordinates [0, count) of the strips: rows[e] points at `count` little-endian elements of dtype t
  /// (any alignment) for expert e = 0..experts-1. Throws std::invalid_argument for count < 0 or a dtype that
  /// gram_kernel_reads() rejects.
  void add(DType t, const std::uint8_t* const* rows, std::int64_t count);
  /// Same, from float64 values.
  void add(const double* const* rows, std::int64_t count);
  /// Returns the sums of the add() calls since construction or the previous take(), and starts afresh.
  GramSums take();

  int experts() const;
  std::int64_t block() const;
  GramIsa isa() const;  // never Auto

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moescope
