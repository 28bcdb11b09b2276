#pragma once
// Fixture for the model tests: a fixed torch seed per test, so every case is reproducible on its own.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moescope::testing {

class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(20260601); }
};

/// Largest absolute difference of two tensors, as a double.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// Each named parameter's shape.
inline std::map<std::string, std::vector<std::int64_t>> parameter_shapes(const torch::nn::Module& m) {
  std::map<std::string, std::vector<std::int64_t>> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

/// The number of parameter elements.
inline std::int64_t parameter_count(const torch::nn::Module& m) {
  std::int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace moescope::testing
