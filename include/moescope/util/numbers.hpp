#pragma once
// Numeric constants shared by the library.
#include <limits>

namespace moescope {

/// A quiet NaN: "no value" in tables and results (never a silent number).
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace moescope
