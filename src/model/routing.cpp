#include "moescope/model/routing.hpp"

namespace moescope {

void Probe::clear() {
  probs.clear();
  choices.clear();
  choice_weights.clear();
  expert_outputs.clear();
  inputs.clear();
  calls = 0;
}

namespace detail {

torch::Tensor flatten_tokens(const torch::Tensor& x, std::int64_t dim, const char* layer) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == dim, layer, ": expected input [..., ", dim, "], got ", x.sizes());
  return x.reshape({-1, dim});
}

torch::Tensor restore_tokens(const torch::Tensor& y, const torch::Tensor& like) {
  auto shape = like.sizes().vec();
  shape.back() = y.size(-1);
  return y.reshape(shape);
}

}  // namespace detail
}  // namespace moescope
