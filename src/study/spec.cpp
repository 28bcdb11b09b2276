#include "moescope/study/spec.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>

#include "moescope/util/error.hpp"
#include "moescope/util/json.hpp"

namespace moescope {

namespace {

const std::set<std::string> kCommands = {"geometry", "activations", "hessian", "landscape"};

// The JSON type of a value for axis checks: integers and floats are one "number".
std::string kind_of(const nlohmann::json& v) {
  if (v.is_number()) return "number";
  if (v.is_boolean()) return "boolean";
  if (v.is_string()) return "string";
  if (v.is_object()) return "object";
  if (v.is_array()) return "list";
  return "null";
}

std::string flag_value(const nlohmann::ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + flag_value(x);
    return s;
  }
  return v.dump();
}

}  // namespace

std::vector<std::string> AnalysisSpec::arguments() const {
  std::vector<std::string> out;
  for (const auto& [key, value] : flags.items()) {
    if (key == "command" || key == "when") continue;
    if (value.is_boolean()) {
      if (value.get<bool>()) out.push_back("--" + key);
      continue;
    }
    out.push_back("--" + key);
    out.push_back(flag_value(value));
  }
  return out;
}

bool SweepAxis::numeric() const {
  return std::all_of(values.begin(), values.end(), [](const nlohmann::json& v) { return v.is_number(); });
}

std::string SweepAxis::short_name() const {
  const auto dot = key.find_last_of("./");
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

namespace {
nlohmann::json unordered(const nlohmann::ordered_json& j) { return nlohmann::json::parse(j.dump()); }
}  // namespace

SweepSpec parse_sweep_spec(const nlohmann::ordered_json& j, const std::string& file) {
  auto bad = [&](const std::string& key, const std::string& what) -> void { fail_input(file, key + ": " + what); };
  if (!j.is_object()) fail_input(file, "a sweep spec is a JSON object");
  static const std::set<std::string> kKeys = {"name", "description", "base", "axes", "strength", "with", "analyses",
                                              "summary", "threads"};
  for (const auto& item : j.items())
    if (kKeys.count(item.key()) == 0)
      bad(item.key(), "unknown key (name, description, base, axes, strength, with, analyses, summary, threads)");
  SweepSpec s;
  s.file = file;
  s.json = unordered(j);
  try {
    json_fields::read(s.json, "spec", "name", s.name);
    json_fields::read(s.json, "spec", "description", s.description);
    json_fields::read(s.json, "spec", "threads", s.threads);
  } catch (const InputError& e) {
    fail_input(file, e.what());
  }
  if (s.name.empty()) s.name = std::filesystem::path(file).stem().string();
  if (s.threads < 0) bad("threads", "must be >= 0");

  // The base: inline, or a file relative to the spec.
  const auto base = j.find("base");
  if (base == j.end()) {
    s.base = nlohmann::json::object();
  } else if (base->is_string()) {
    std::filesystem::path p(base->get<std::string>());
    if (p.is_relative() && !file.empty()) p = std::filesystem::path(file).parent_path() / p;
    s.base = read_json_file(p.string(), "the sweep's base run config");
  } else {
    s.base = unordered(*base);
  }
  if (!s.base.is_object()) bad("base", "must be a run config object or the path of one");

  const auto axes = j.find("axes");
  if (axes == j.end() || !axes->is_object() || axes->empty()) bad("axes", "give at least one axis: {\"KEY\": [values]}");
  for (const auto& [key, values] : axes->items()) {
    const std::string where = "axes." + key;
    if (!values.is_array()) bad(where, "an axis is a list of values");
    if (values.empty()) bad(where, "the axis is empty");
    SweepAxis a;
    a.key = key;
    for (const auto& ov : values) {
      const nlohmann::json v = unordered(ov);
      if (kind_of(v) != kind_of(unordered(values.front())))
        bad(where, "value " + v.dump() + " is a " + kind_of(v) + ", the axis's first value a " +
                       kind_of(unordered(values.front())));
      if (std::find(a.values.begin(), a.values.end(), v) != a.values.end()) bad(where, "value " + v.dump() + " twice");
      a.values.push_back(v);
    }
    if (key == "name" || key == "out_dir") bad(where, "the sweep sets this key itself");
    static const std::set<std::string> kTopLevel = {"seed", "model", "data", "train"};
    a.label = key.find('.') == std::string::npos && kTopLevel.count(key) == 0;
    s.axes.push_back(std::move(a));
  }

  if (const auto st = j.find("strength"); st != j.end()) {
    if (!st->is_string()) bad("strength", "the key of a numeric axis");
    s.strength = st->get<std::string>();
    const auto it = std::find_if(s.axes.begin(), s.axes.end(), [&](const SweepAxis& a) { return a.key == s.strength; });
    if (it == s.axes.end()) bad("strength", "'" + s.strength + "' is not an axis");
    if (!it->numeric()) bad("strength", "'" + s.strength + "' is not a numeric axis");
  } else {
    for (const auto& a : s.axes)
      if (a.numeric() && a.key != "seed") {
        s.strength = a.key;
        break;
      }
  }

  if (const auto w = j.find("with"); w != j.end()) {
    if (!w->is_object()) bad("with", "an object {\"AXIS KEY\": {\"AXIS VALUE\": {\"KEY\": value, ...}}}");
    for (const auto& item : w->items()) {  // no structured bindings: lambdas below capture them (C++17)
      const std::string& axis_key = item.key();
      const nlohmann::json& by_value = item.value();
      const std::string where = "with." + axis_key;
      const auto axis = std::find_if(s.axes.begin(), s.axes.end(), [&](const SweepAxis& a) { return a.key == axis_key; });
      if (axis == s.axes.end()) bad(where, "'" + axis_key + "' is not an axis");
      if (!by_value.is_object()) bad(where, "an object {\"AXIS VALUE\": {\"KEY\": value, ...}}");
      auto& out = s.with[axis_key];
      for (const auto& value_item : by_value.items()) {
        const std::string& value = value_item.key();
        const nlohmann::json& settings = value_item.value();
        const std::string at = where + "." + value;
        if (std::none_of(axis->values.begin(), axis->values.end(),
                         [&](const nlohmann::json& v) { return axis_value_text(v) == value; }))
          bad(at, "'" + value + "' is not a value of the axis");
        if (!settings.is_object() || settings.empty()) bad(at, "an object {\"KEY\": value, ...} of run-config keys");
        for (const auto& setting : settings.items()) {
          const std::string& key = setting.key();
          const nlohmann::json& v = setting.value();
          if (key == "name" || key == "out_dir") bad(at + "." + key, "the sweep sets this key itself");
          if (std::any_of(s.axes.begin(), s.axes.end(), [&](const SweepAxis& a) { return a.key == key; }))
            bad(at + "." + key, "is an axis: an axis value cannot also be set with another");
          if (v.is_null()) bad(at + "." + key, "a value is a number, string, boolean, list or object");
        }
        out[value] = unordered(settings);
      }
    }
  }
  for (const SweepAxis& a : s.axes) {
    if (!a.label) continue;
    const auto w = s.with.find(a.key);
    for (const auto& v : a.values)
      if (w == s.with.end() || w->second.count(axis_value_text(v)) == 0)
        bad("axes." + a.key, "'" + a.key + "' is no run-config key, so it is a label axis, and its value '" +
                                 axis_value_text(v) + "' needs settings in with." + a.key);
  }

  if (const auto an = j.find("analyses"); an != j.end()) {
    if (!an->is_object()) bad("analyses", "an object {\"NAME\": {flags}}");
    for (const auto& [name, flags] : an->items()) {
      const std::string where = "analyses." + name;
      if (!flags.is_object()) bad(where, "the flags are an object, e.g. {\"top-k\": 3}");
      AnalysisSpec a;
      a.name = name;
      a.command = flags.value("command", name);
      if (kCommands.count(a.command) == 0)
        bad(where, "unknown command '" + a.command + "' (geometry, activations, hessian, landscape; or give \"command\")");
      if (name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos)
        bad(where, "names are letters, digits, '_' and '-' (the report is NAME.h5)");
      if (const auto w = flags.find("when"); w != flags.end()) {
        if (!w->is_object() || w->empty()) bad(where + ".when", "an object {\"AXIS KEY\": [values], ...}");
        for (const auto& item : w->items()) {
          const std::string& axis_key = item.key();
          const nlohmann::json& values = item.value();
          const std::string at = where + ".when." + axis_key;
          const auto axis =
              std::find_if(s.axes.begin(), s.axes.end(), [&](const SweepAxis& x) { return x.key == axis_key; });
          if (axis == s.axes.end()) bad(at, "'" + axis_key + "' is not an axis");
          if (!values.is_array() || values.empty()) bad(at, "a non-empty list of the axis's values");
          for (const auto& ov : values) {
            const nlohmann::json v = unordered(ov);
            if (std::find(axis->values.begin(), axis->values.end(), v) == axis->values.end())
              bad(at, "value " + v.dump() + " is not a value of the axis");
            a.when[axis_key].push_back(v);
          }
        }
      }
      for (const auto& [flag, value] : flags.items()) {
        if (flag == "command" || flag == "when") continue;
        if (flag == "o" || flag == "output") bad(where + "." + flag, "the sweep names the report itself");
        if (value.is_object() || value.is_null()) bad(where + "." + flag, "a flag's value is a number, string, boolean or list");
      }
      a.flags = flags;  // ordered: the flags keep the spec's order too
      s.analyses.push_back(std::move(a));
    }
  }

  if (const auto sm = j.find("summary"); sm != j.end()) {
    if (!sm->is_object())
      bad("summary", "an object {\"columns\": [...], \"pairs\": [[X, Y], ...], \"reference\": {...}}");
    for (const auto& item : sm->items())
      if (item.key() != "columns" && item.key() != "pairs" && item.key() != "reference")
        bad("summary." + item.key(), "unknown key (columns, pairs, reference)");
    if (const auto c = sm->find("columns"); c != sm->end()) {
      if (!c->is_array() || c->empty()) bad("summary.columns", "a non-empty list of column names");
      for (const auto& col : *c) {
        if (!col.is_string() || col.get<std::string>().empty()) bad("summary.columns", "column names are strings, got " + col.dump());
        s.columns.push_back(col.get<std::string>());
      }
    }
    if (const auto p = sm->find("pairs"); p != sm->end()) {
      if (!p->is_array()) bad("summary.pairs", "a list of [X, Y] column names");
      for (const auto& pair : *p) {
        if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string())
          bad("summary.pairs", "each pair is [\"X\", \"Y\"], got " + pair.dump());
        s.pairs.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
      }
    }
    if (const auto r = sm->find("reference"); r != sm->end()) s.reference = *r;
  }
  return s;
}

SweepSpec read_sweep_spec(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_input(path, "cannot open the sweep spec");
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail_input(path, std::string("not valid JSON: ") + e.what());
  }
  return parse_sweep_spec(j, path);
}

const nlohmann::json* config_value(const nlohmann::json& config, const std::string& key) {
  const nlohmann::json* at = &config;
  std::string part;
  std::size_t pos = 0;
  while (pos <= key.size()) {
    const std::size_t dot = std::min(key.find('.', pos), key.size());
    part = key.substr(pos, dot - pos);
    if (!at->is_object()) return nullptr;
    const auto it = at->find(part);
    if (it == at->end()) return nullptr;
    at = &*it;
    pos = dot + 1;
  }
  return at;
}

namespace {
// Keys of a config as dotted paths (leaves and objects).
void collect_keys(const nlohmann::json& j, const std::string& prefix, std::vector<std::string>& out) {
  if (!j.is_object()) return;
  for (const auto& [k, v] : j.items()) {
    const std::string key = prefix.empty() ? k : prefix + "." + k;
    out.push_back(key);
    collect_keys(v, key, out);
  }
}
}  // namespace

void check_axes_against(const SweepSpec& spec, const nlohmann::json& resolved) {
  for (const auto& [axis, by_value] : spec.with)
    for (const auto& [value, settings] : by_value)
      for (const auto& [key, x] : settings.items()) {
        const std::string where = "with." + axis + "." + value + "." + key;
        const nlohmann::json* v = config_value(resolved, key);
        if (v == nullptr) fail_input(spec.file, where + ": no such key in the run config");
        if (!v->is_null() && !v->is_object() && kind_of(x) != kind_of(*v))
          fail_input(spec.file, where + ": value " + x.dump() + " is a " + kind_of(x) + ", the run config's " + key +
                                    " is a " + kind_of(*v) + " (" + v->dump() + ")");
      }
  for (const SweepAxis& a : spec.axes) {
    if (a.label) continue;
    const nlohmann::json* v = config_value(resolved, a.key);
    if (v == nullptr) {
      std::vector<std::string> keys;
      collect_keys(resolved, "", keys);
      std::string hint;
      for (const auto& k : keys) {
        const auto dot = k.find_last_of('.');
        if ((dot == std::string::npos ? k : k.substr(dot + 1)) == a.short_name()) hint = " (did you mean " + k + "?)";
      }
      fail_input(spec.file, "axes." + a.key + ": no such key in the run config" + hint);
    }
    // A key whose default is null or an object (a whole "model") takes any value of the config's own checks.
    if (v->is_null() || v->is_object()) continue;
    for (const auto& x : a.values)
      if (kind_of(x) != kind_of(*v))
        fail_input(spec.file, "axes." + a.key + ": value " + x.dump() + " is a " + kind_of(x) + ", the run config's " +
                                  a.key + " is a " + kind_of(*v) + " (" + v->dump() + ")");
  }
}

std::string axis_value_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::vector<SweepPoint> expand_grid(const SweepSpec& spec) {
  // Short names unless two axes share one.
  std::vector<std::string> label;
  for (const auto& a : spec.axes) {
    const bool shared = std::count_if(spec.axes.begin(), spec.axes.end(), [&](const SweepAxis& b) {
                          return b.short_name() == a.short_name();
                        }) > 1;
    label.push_back(shared ? a.key : a.short_name());
  }
  auto text = [](const nlohmann::json& v) {
    std::string s = axis_value_text(v);
    for (char& c : s)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '+' && c != '-') c = '_';
    return s;
  };
  std::vector<SweepPoint> out;
  std::vector<std::size_t> idx(spec.axes.size(), 0);
  for (;;) {
    SweepPoint p;
    p.config = spec.base;
    for (std::size_t a = 0; a < spec.axes.size(); ++a) {
      const nlohmann::json& v = spec.axes[a].values[idx[a]];
      p.coords.push_back(v);
      if (!spec.axes[a].label) p.config[json_path(spec.axes[a].key)] = v;
      p.name += (a ? "_" : "") + label[a] + "=" + text(v);
    }
    for (std::size_t a = 0; a < spec.axes.size(); ++a) {
      const auto w = spec.with.find(spec.axes[a].key);
      if (w == spec.with.end()) continue;
      const auto settings = w->second.find(axis_value_text(p.coords[a]));
      if (settings == w->second.end()) continue;
      for (const auto& [key, v] : settings->second.items()) p.config[json_path(key)] = v;
    }
    if (std::any_of(out.begin(), out.end(), [&](const SweepPoint& q) { return q.name == p.name; }))
      fail_input(spec.file, "axes: two points would share the folder '" + p.name + "' (values that differ only in "
                            "characters outside [A-Za-z0-9.+-])");
    out.push_back(std::move(p));
    std::size_t a = spec.axes.size();
    while (a > 0) {
      --a;
      if (++idx[a] < spec.axes[a].values.size()) break;
      idx[a] = 0;
      if (a == 0) return out;
    }
    if (spec.axes.empty()) return out;
  }
}

bool analysis_applies(const AnalysisSpec& a, const SweepSpec& spec, const SweepPoint& p) {
  for (const auto& entry : a.when) {
    const auto& key = entry.first;
    const auto& values = entry.second;
    const auto axis = std::find_if(spec.axes.begin(), spec.axes.end(), [&](const SweepAxis& x) { return x.key == key; });
    if (axis == spec.axes.end()) return false;
    const nlohmann::json& v = p.coords[static_cast<std::size_t>(axis - spec.axes.begin())];
    if (std::find(values.begin(), values.end(), v) == values.end()) return false;
  }
  return true;
}

}  // namespace moescope
