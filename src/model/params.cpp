#include "moescope/model/params.hpp"

#include <algorithm>
#include <cctype>
#include <regex>
#include <sstream>

#include "moescope/util/error.hpp"

namespace moescope {
namespace {

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  std::stringstream ss(s);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  return parts;
}

bool is_number(const std::string& s) {
  return !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// (layer, expert) of a name "<P>.experts.<E>.<rest>", or (-1, -1).
std::pair<int, int> expert_of(const std::string& name) {
  const auto parts = split_dots(name);
  for (std::size_t i = 0; i + 2 < parts.size(); ++i) {
    if (parts[i] != "experts" || !is_number(parts[i + 1])) continue;
    int layer = 0;
    for (std::size_t j = i; j-- > 0;)
      if (is_number(parts[j])) {
        layer = std::stoi(parts[j]);
        break;
      }
    return {layer, std::stoi(parts[i + 1])};
  }
  return {-1, -1};
}

bool is_router(const std::string& name) {
  const auto parts = split_dots(name);
  return parts.size() >= 2 && (parts[parts.size() - 2] == "router" || parts[parts.size() - 2] == "gate") &&
         expert_of(name).first < 0;
}

}  // namespace

std::vector<NamedParameter> select_parameters(const torch::nn::Module& module, const std::string& spec) {
  std::function<bool(const std::string&)> keep;
  if (spec == "all") {
    keep = [](const std::string&) { return true; };
  } else if (spec == "router") {
    keep = is_router;
  } else if (spec.rfind("expert:", 0) == 0) {
    const std::string le = spec.substr(7);
    const auto dot = le.find('.');
    if (dot == std::string::npos || !is_number(le.substr(0, dot)) || !is_number(le.substr(dot + 1)))
      throw InputError("params '" + spec + "': expected expert:LAYER.EXPERT, e.g. expert:0.3");
    const std::pair<int, int> want{std::stoi(le.substr(0, dot)), std::stoi(le.substr(dot + 1))};
    keep = [want](const std::string& n) { return expert_of(n) == want; };
  } else if (spec.rfind("re:", 0) == 0) {
    std::regex re;
    try {
      re = std::regex(spec.substr(3));
    } catch (const std::regex_error& e) {
      throw InputError("params '" + spec + "': invalid regex (" + e.what() + ")");
    }
    keep = [re](const std::string& n) { return std::regex_search(n, re); };
  } else {
    throw InputError("params '" + spec + "': expected all, router, expert:L.E or re:REGEX");
  }
  std::vector<NamedParameter> out;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    if (p.value().requires_grad() && keep(p.key())) out.emplace_back(p.key(), p.value());
  if (out.empty()) throw InputError("params '" + spec + "' selects no parameters");
  return out;
}

std::vector<std::pair<int, int>> list_experts(const torch::nn::Module& module) {
  std::vector<std::pair<int, int>> out;
  for (const auto& p : module.named_parameters(true)) {
    const auto le = expert_of(p.key());
    if (le.first >= 0 && std::find(out.begin(), out.end(), le) == out.end()) out.push_back(le);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace moescope
