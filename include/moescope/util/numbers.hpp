#pragma once
// Numeric constants shared by the library, and how values that are not numbers read in messages.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

namespace moescope {

/// A quiet NaN: "no value" in tables and results (never a silent number).
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// "nan", "inf" or "-inf": a non-finite value as messages name it.
inline const char* nonfinite_name(double v) { return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"); }

/// "element [r, c]": the position of flat index `flat` in a row-major matrix of `cols` columns (a vector: cols 0
/// or 1, which reads [i, 0]).
inline std::string matrix_element(std::int64_t flat, std::int64_t cols) {
  const std::int64_t c = std::max<std::int64_t>(cols, 1);
  return "element [" + std::to_string(flat / c) + ", " + std::to_string(flat % c) + "]";
}

}  // namespace moescope
