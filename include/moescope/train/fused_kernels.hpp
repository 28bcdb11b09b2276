#pragma once
// Loops of the training step that torch runs as several tensor operations, each written as one pass over the
// elements with AVX-512 and AVX2 code paths (util/cpu.hpp), for train/optim's AdamW step and gradient clipping.
// Torch-free: raw pointers, no threads (the caller splits the elements; neither result depends on the split, see
// below).
//
// Rounding: the AVX-512 and AVX2 paths perform the same IEEE operations on every element, the multiply-adds below
// as fused multiply-adds (FMA), so they give the same bits (the tests compare them). The portable path, for CPUs
// without FMA, rounds those products separately and may differ from them in the last bit.
#include <cstdint>

#include "moescope/util/cpu.hpp"

namespace moescope {

/// The scalars of one AdamW step (torch's AdamW: decoupled weight decay, bias corrections 1 - beta^t).
struct AdamWScalars {
  double lr = 1e-3, weight_decay = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double bias_correction1 = 1.0, bias_correction2 = 1.0;  // 1 - beta1^t, 1 - beta2^t
  double grad_scale = 1.0;  // each gradient is read as g * grad_scale (rounded to its dtype): deferred clipping
};

/// AdamW's update of n elements in place, in the elements' dtype with the scalars rounded to it, g being the
/// gradient times grad_scale (one rounded product; exactly g when it is 1):
///   m <- fma(g, 1 - b1, b1 m);  v <- fma(g g, 1 - b2, b2 v);  d = sqrt(v) / sqrt(bc2) + eps;
///   p <- fma(p, 1 - lr wd, (-lr / bc1) (m / d))
/// which is torch's `p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr / bc1 m / d` up to
/// the rounding of the three products. Elementwise: the same bits however the caller splits the elements.
/// Throws std::invalid_argument when this CPU cannot run `isa`.
void adamw_update(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamWScalars& s,
                  VectorIsa isa = VectorIsa::Auto);
void adamw_update(double* p, const double* g, double* m, double* v, std::int64_t n, const AdamWScalars& s,
                  VectorIsa isa = VectorIsa::Auto);

/// Sum of squares of n elements, in float64: eight lanes, lane j taking elements j, j + 8, j + 16, ... in order
/// (lane <- fma(x, x, lane)), added as ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)). Throws as adamw_update.
double sum_of_squares(const float* x, std::int64_t n, VectorIsa isa = VectorIsa::Auto);
double sum_of_squares(const double* x, std::int64_t n, VectorIsa isa = VectorIsa::Auto);

}  // namespace moescope
