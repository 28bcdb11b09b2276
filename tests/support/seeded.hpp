#pragma once
// Fixture for the model tests: a fixed torch seed per test, so every case is reproducible on its own.
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace moescope::testing {

class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(20260601); }
};

/// Largest absolute difference of two tensors, as a double.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

}  // namespace moescope::testing
