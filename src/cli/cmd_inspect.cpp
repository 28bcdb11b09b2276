// moescope inspect CKPT [--json]: tensors, detected MoE layout, experts per layer.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "moescope/io/checkpoint.hpp"
#include "moescope/io/layout.hpp"

namespace moescope::cli {
namespace {

struct InspectArgs {
  std::string checkpoint;
  bool json = false;
  bool all_tensors = false;
  std::string expert_pattern;
};

std::string roles_summary(const ExpertLayout& e) {
  std::string s;
  for (const auto& m : e.matrices) s += (s.empty() ? "" : ", ") + fmt::format("{} [{}x{}]", m.role, m.rows, m.cols);
  return s;
}

nlohmann::json layout_json(const Layout& layout) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : layout.layers) {
    nlohmann::json matrices = nlohmann::json::array();
    for (const auto& m : l.experts.front().matrices)
      matrices.push_back({{"role", m.role}, {"rows", m.rows}, {"cols", m.cols}, {"tensor_expert0", m.tensor}});
    layers.push_back({{"key", l.key}, {"layer", l.layer}, {"prefix", l.prefix}, {"router", l.router},
                      {"experts", l.experts.size()}, {"shared_experts", l.shared_experts.size()},
                      {"activation", l.activation}, {"matrices", matrices}});
  }
  return {{"family", layout.family}, {"layers", layers}, {"notes", layout.notes}};
}

void run(const InspectArgs& a) {
  const auto src = open_checkpoint(a.checkpoint);
  LayoutOptions lo;
  lo.expert_pattern = a.expert_pattern;
  lo.pattern_source = "--expert-pattern";
  const Layout layout = detect_layout(*src, lo);
  std::uint64_t total = 0;
  for (const auto& t : src->tensors()) total += t.nbytes();

  if (a.json) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : src->tensors())
      tensors.push_back({{"name", t.name}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape},
                         {"file", src->file_of(t.name)}});
    nlohmann::json j = {{"checkpoint", a.checkpoint}, {"tensor_count", src->tensors().size()}, {"total_bytes", total},
                        {"tensors", tensors}, {"layout", layout_json(layout)}};
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << fmt::format("checkpoint: {}\ntensors: {} ({:.3f} GB)\n", a.checkpoint, src->tensors().size(),
                           static_cast<double>(total) / 1e9);
  const std::size_t shown = a.all_tensors ? src->tensors().size() : std::min<std::size_t>(src->tensors().size(), 40);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& t = src->tensors()[i];
    std::cout << fmt::format("  {:<60} {:<8} {}\n", t.name, dtype_name(t.dtype), shape_string(t.shape));
  }
  if (shown < src->tensors().size())
    std::cout << fmt::format("  ... {} more (--all to list every tensor)\n", src->tensors().size() - shown);
  std::cout << fmt::format("family: {}\nMoE layers: {}\n", layout.family, layout.layers.size());
  for (const auto& l : layout.layers) {
    std::cout << fmt::format("  {:<18} {} experts{}  router: {}  [{}]\n", l.key, l.experts.size(),
                             l.shared_experts.empty() ? "" : fmt::format(" + {} shared", l.shared_experts.size()),
                             l.router.empty() ? "-" : l.router, roles_summary(l.experts.front()));
  }
  for (const auto& n : layout.notes) std::cout << "note: " << n << "\n";
}

}  // namespace

void add_inspect(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<InspectArgs>();
  auto* sub = app.add_subcommand("inspect", "List tensors, the detected MoE layout and the experts of each layer");
  sub->add_option("checkpoint", args->checkpoint, "safetensors file, shard index, folder, or .pt state dict")->required();
  sub->add_flag("--json", args->json, "Machine-readable output");
  sub->add_flag("--all", args->all_tensors, "List every tensor (default: the first 40)");
  sub->add_option("--expert-pattern", args->expert_pattern,
                  "Regex with named groups (?<layer>..)(?<expert>..)(?<matrix>..) for unknown layouts");
  sub->callback([args, &ctx] { run(*args); });
}

}  // namespace moescope::cli
