#include "moescope/data/spec.hpp"

#include <algorithm>

#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"

namespace moescope {

void to_json(nlohmann::json& j, const DataSpec& s) {
  const auto& c = s.clustered;
  j = nlohmann::json{{"name", s.name},
                     {"path", s.path},
                     {"valid_fraction", s.valid_fraction},
                     {"max_train", s.max_train},
                     {"max_eval", s.max_eval},
                     {"context", s.context},
                     {"clustered",
                      {{"samples", c.samples},
                       {"dim", c.dim},
                       {"clusters", c.clusters},
                       {"classes", c.classes},
                       {"centre_scale", c.centre_scale},
                       {"noise", c.noise}}},
                     {"seed", s.seed}};
}

void from_json(const nlohmann::json& j, DataSpec& s) {
  const std::string what = "data config";
  json_fields::check(j, what, "data",
                     {"name", "path", "valid_fraction", "max_train", "max_eval", "context", "clustered", "seed"});
  json_fields::read(j, what, "name", s.name);
  json_fields::read(j, what, "path", s.path);
  json_fields::read(j, what, "valid_fraction", s.valid_fraction);
  json_fields::read(j, what, "max_train", s.max_train);
  json_fields::read(j, what, "max_eval", s.max_eval);
  json_fields::read(j, what, "context", s.context);
  json_fields::read(j, what, "seed", s.seed);
  if (const auto it = j.find("clustered"); it != j.end()) {
    const std::string cw = "data config: clustered";
    json_fields::check(*it, cw, "clustered", {"samples", "dim", "clusters", "classes", "centre_scale", "noise"});
    auto& c = s.clustered;
    json_fields::read(*it, cw, "samples", c.samples);
    json_fields::read(*it, cw, "dim", c.dim);
    json_fields::read(*it, cw, "clusters", c.clusters);
    json_fields::read(*it, cw, "classes", c.classes);
    json_fields::read(*it, cw, "centre_scale", c.centre_scale);
    json_fields::read(*it, cw, "noise", c.noise);
  }
  static const char* const kNames[] = {"fashion-mnist", "cifar10", "clustered", "text-word", "text-byte",
                                       "text-char", "text", "tokens"};
  if (std::find(std::begin(kNames), std::end(kNames), s.name) == std::end(kNames)) {
    throw InputError(what + ": field 'name': unknown data set '" + s.name +
                     "' (fashion-mnist, cifar10, clustered, text-word, text-byte, text-char, text, tokens)");
  }
  if (!(s.valid_fraction >= 0.0 && s.valid_fraction < 1.0)) {
    throw InputError(what + ": field 'valid_fraction' must be in [0, 1), got " + std::to_string(s.valid_fraction));
  }
  if (s.max_train < 0 || s.max_eval < 0) throw InputError(what + ": fields 'max_train' and 'max_eval' must be >= 0");
  if (s.context < 1) throw InputError(what + ": field 'context' must be >= 1, got " + std::to_string(s.context));
}

DataSpec parse_data_arg(const std::string& arg, const DataSpec& base, const std::string& what) {
  if (arg.empty()) return base;
  if (arg.size() > 5 && arg.compare(arg.size() - 5, 5, ".json") == 0) {
    const nlohmann::json j = read_json_file(arg, "the data spec");
    DataSpec s;
    try {
      from_json(j, s);
    } catch (const InputError& e) {
      fail_input(arg, e.what());
    }
    return s;
  }
  DataSpec s = base;
  const auto colon = arg.find(':');
  const std::string name = arg.substr(0, colon);
  if (name != s.name) s.path.clear();
  s.name = name;
  if (colon != std::string::npos) s.path = arg.substr(colon + 1);
  try {
    nlohmann::json j = s;
    from_json(j, s);  // validates the name
  } catch (const InputError& e) {
    throw InputError(what + " " + arg + ": " + e.what());
  }
  return s;
}

void check_split_name(const std::string& name, const std::string& what) {
  if (name != "train" && name != "valid" && name != "test")
    throw InputError(what + ": unknown split '" + name + "' (train, valid, test)");
}

}  // namespace moescope
