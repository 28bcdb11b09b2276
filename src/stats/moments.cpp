#include "moescope/stats/moments.hpp"

#include <cmath>

namespace moescope {

FiniteMoments finite_moments(const std::vector<double>& v) {
  FiniteMoments m;
  double sum = 0;
  for (const double x : v)
    if (std::isfinite(x)) sum += x, ++m.n;
  if (m.n == 0) return m;
  m.mean = sum / static_cast<double>(m.n);
  if (m.n < 2) return m;
  double ss = 0;
  for (const double x : v)
    if (std::isfinite(x)) ss += (x - m.mean) * (x - m.mean);
  m.sd = std::sqrt(ss / static_cast<double>(m.n - 1));
  return m;
}

}  // namespace moescope
