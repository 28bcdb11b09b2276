#pragma once
// Mean and spread of measured values of which some may be missing (NaN: a failed point, an analysis not run).
#include <cstdint>
#include <vector>

#include "moescope/util/numbers.hpp"

namespace moescope {

struct FiniteMoments {
  std::int64_t n = 0;  ///< how many values were finite
  double mean = kNaN;  ///< their mean, summed in order (NaN when n = 0)
  double sd = kNaN;    ///< their sample standard deviation, divisor n - 1 (NaN when n < 2)
};

/// Mean and sample standard deviation of the finite values of `v`; NaN and infinities are left out.
FiniteMoments finite_moments(const std::vector<double>& v);

}  // namespace moescope
