#include "moescope/util/json.hpp"
#include "moescope/util/files.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace moescope {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) fail_input(path, "cannot open " + what);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail_input(path, std::string("not valid JSON: ") + e.what());
  }
}

void write_json_file(const std::string& path, const nlohmann::json& j) { write_file_atomic(path, j.dump(2) + "\n"); }

nlohmann::json::json_pointer json_path(const std::string& key) {
  std::string p = key;
  if (p.empty() || p.front() != '/') {
    for (char& c : p) c = c == '.' ? '/' : c;
    p = "/" + p;
  }
  return nlohmann::json::json_pointer(p);
}

void assign_json_path(nlohmann::json& j, const std::string& item, const std::string& what) {
  const auto eq = item.find('=');
  if (eq == std::string::npos || eq == 0) throw InputError(what + ": expected KEY=VALUE, got '" + item + "'");
  const std::string text = item.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  try {
    j[json_path(item.substr(0, eq))] = value;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(what + " " + item + ": " + e.what());
  }
}

namespace json_fields {

void check(const nlohmann::json& j, const std::string& what, const std::string& type,
           const std::set<std::string>& known) {
  if (!j.is_object()) throw InputError(what + ": expected a JSON object, got " + j.dump());
  const auto t = j.find("type");
  if (!type.empty() && t != j.end() && (!t->is_string() || t->get<std::string>() != type)) {
    throw InputError(what + ": \"type\" is " + t->dump() + ", expected \"" + type + "\"");
  }
  for (const auto& item : j.items()) {
    if (item.key() != "type" && known.count(item.key()) == 0) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw InputError(what + ": unknown field '" + item.key() + "' (known: " + list + ")");
    }
  }
}

}  // namespace json_fields
}  // namespace moescope
