#pragma once
// Parameter subsets for curvature and landscapes: per-expert curvature is what MoE research asks for.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace moescope {

/// A named parameter of a module.
using NamedParameter = std::pair<std::string, torch::Tensor>;

/// Selects parameters by a spec:
///  - "all": every parameter that requires grad;
///  - "router": those of routers (a name component "router" or "gate" directly holding weight/bias);
///  - "expert:L.E": expert E of the MoE layer numbered L (names "<P>.experts.E.*", L = the last integer
///    component of P, or 0 when P has none, as moescope's layout detection numbers layers);
///  - "re:REGEX": names matching the ECMAScript regex anywhere.
/// Names come from module.named_parameters(). Throws InputError ("params ...") for a bad spec or an empty selection.
std::vector<NamedParameter> select_parameters(const torch::nn::Module& module, const std::string& spec);

/// Every (layer, expert) pair present in the module's parameter names, sorted.
std::vector<std::pair<int, int>> list_experts(const torch::nn::Module& module);

}  // namespace moescope
