#pragma once
// One finite-difference checker for the autograd tests (gradients of losses, double gradients, Hessian-vector
// products). Central differences in float64: truncation O(h^2 |f'''|), rounding O(eps |f| / h); each test states the
// tolerance that follows for its function and step.
#include <torch/torch.h>

#include <functional>

namespace moescope::testing {

/// (f(x0 + h e_i) - f(x0 - h e_i)) / (2h) for every element i of x0 (float64; f returns a scalar tensor). x0 is not
/// modified.
inline torch::Tensor central_gradient(const std::function<torch::Tensor(const torch::Tensor&)>& f,
                                      const torch::Tensor& x0, double h) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(x0.scalar_type() == torch::kDouble, "central_gradient: x0 must be float64");
  auto flat = x0.detach().clone().reshape({-1});
  auto out = torch::zeros_like(flat);
  auto acc = flat.accessor<double, 1>();
  for (std::int64_t n = 0; n < flat.numel(); ++n) {
    const double keep = acc[n];
    acc[n] = keep + h;
    const double up = f(flat.view(x0.sizes())).item<double>();
    acc[n] = keep - h;
    const double down = f(flat.view(x0.sizes())).item<double>();
    acc[n] = keep;
    out[n] = (up - down) / (2.0 * h);
  }
  return out.view(x0.sizes());
}

/// (g at w + h v - g at w - h v) / (2h) for a tensor-valued g of parameters w moved in place: `shift(s)` adds s v
/// to them. Leaves them where they were (shift(h), shift(-2h), shift(h)). With g the gradient this is H v.
inline torch::Tensor central_directional(const std::function<torch::Tensor()>& g,
                                         const std::function<void(double)>& shift, double h) {
  shift(h);
  const torch::Tensor plus = g().detach().clone();
  shift(-2 * h);
  const torch::Tensor minus = g().detach().clone();
  shift(h);
  return (plus - minus) / (2 * h);
}

}  // namespace moescope::testing
