// Parameter subsets by spec, on a module named like moescope's own MoE blocks.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "moescope/model/params.hpp"
#include "moescope/util/error.hpp"

namespace moescope {
namespace {

struct Expert : torch::nn::Module {
  Expert() {
    register_module("fc1", torch::nn::Linear(4, 6));
    register_module("fc2", torch::nn::Linear(6, 4));
  }
};

struct Moe : torch::nn::Module {
  explicit Moe(int experts) {
    register_module("router", torch::nn::Linear(4, experts));
    auto list = torch::nn::ModuleList();
    for (int e = 0; e < experts; ++e) list->push_back(std::make_shared<Expert>());
    register_module("experts", list);
  }
};

struct Net : torch::nn::Module {
  Net() {
    register_module("embed", torch::nn::Linear(4, 4));
    auto blocks = torch::nn::ModuleList();
    for (int l = 0; l < 2; ++l) {
      auto b = std::make_shared<torch::nn::Module>();
      b->register_module("moe", std::make_shared<Moe>(3));
      blocks->push_back(b);
    }
    register_module("blocks", blocks);
  }
};

std::vector<std::string> names(const std::vector<NamedParameter>& ps) {
  std::vector<std::string> n;
  for (const auto& p : ps) n.push_back(p.first);
  return n;
}

TEST(Params, SelectBySpec) {
  Net net;
  EXPECT_EQ(select_parameters(net, "all").size(), net.parameters().size());
  EXPECT_EQ(names(select_parameters(net, "router")),
            (std::vector<std::string>{"blocks.0.moe.router.weight", "blocks.0.moe.router.bias",
                                      "blocks.1.moe.router.weight", "blocks.1.moe.router.bias"}));
  EXPECT_EQ(names(select_parameters(net, "expert:1.2")),
            (std::vector<std::string>{"blocks.1.moe.experts.2.fc1.weight", "blocks.1.moe.experts.2.fc1.bias",
                                      "blocks.1.moe.experts.2.fc2.weight", "blocks.1.moe.experts.2.fc2.bias"}));
  EXPECT_EQ(select_parameters(net, "re:^embed\\.").size(), 2u);
  // the selected tensors are the module's own (sharing storage), so HVPs see the live weights
  EXPECT_TRUE(select_parameters(net, "expert:0.0")[0].second.is_same(
      net.named_parameters()["blocks.0.moe.experts.0.fc1.weight"]));
}

TEST(Params, ListExperts) {
  Net net;
  EXPECT_EQ(list_experts(net), (std::vector<std::pair<int, int>>{{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}}));
}

TEST(Params, BadSpecsAreInputErrors) {
  Net net;
  for (const char* spec : {"expert:9.9", "expert:1", "expert:a.b", "re:(", "re:nomatch", "routers", ""})
    EXPECT_THROW(select_parameters(net, spec), InputError) << spec;
}

}  // namespace
}  // namespace moescope
