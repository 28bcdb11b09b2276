#pragma once
// Reading option structs from JSON with clear errors (private to src/model).
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "moescope/util/error.hpp"

namespace moescope::detail {

/// Reads j[key] into `out` when present; a wrong type becomes an InputError naming the key.
template <typename T>
void read_field(const nlohmann::json& j, const char* what, const std::string& key, T& out) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  try {
    out = it->template get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(std::string(what) + ": field '" + key + "': " + e.what());
  }
}

/// Rejects an object that is not one, a wrong "type", or keys outside `known` (typos would pass silently).
inline void check_fields(const nlohmann::json& j, const char* what, const char* type,
                         const std::set<std::string>& known) {
  if (!j.is_object()) throw InputError(std::string(what) + ": expected a JSON object");
  const auto t = j.find("type");
  if (t != j.end() && (!t->is_string() || t->get<std::string>() != type)) {
    throw InputError(std::string(what) + ": \"type\" is " + t->dump() + ", expected \"" + type + "\"");
  }
  for (const auto& item : j.items()) {
    if (item.key() != "type" && known.count(item.key()) == 0) {
      throw InputError(std::string(what) + ": unknown field '" + item.key() + "'");
    }
  }
}

/// Reads an enum stored by name through its parser; parse errors become InputErrors naming the key.
template <typename E, typename Parse>
void read_enum(const nlohmann::json& j, const char* what, const std::string& key, E& out, Parse parse) {
  std::string name;
  read_field(j, what, key, name);
  if (name.empty()) return;
  try {
    out = parse(name);
  } catch (const std::exception& e) {
    throw InputError(std::string(what) + ": field '" + key + "': " + e.what());
  }
}

}  // namespace moescope::detail
