#pragma once
// Reading option structs from JSON with clear errors: every message names the object ("classifier config") and
// the key, so a user's typo or wrong type is one line that says where it is.
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "moescope/util/error.hpp"

namespace moescope {

/// Reads a JSON file. Throws InputError naming the file when it cannot be opened ("cannot open <what>") or is not
/// valid JSON.
nlohmann::json read_json_file(const std::string& path, const std::string& what);

/// Writes `j` (indented by 2) to `path` atomically: "<path>.tmp", then rename. Throws InputError naming the file.
void write_json_file(const std::string& path, const nlohmann::json& j);

/// Applies "a.b.c=VALUE" (or "/a/b/c=VALUE", a JSON pointer) to `j`: VALUE is JSON, or a plain string when it does
/// not parse as JSON; missing objects on the way are created. Throws InputError naming `what` (e.g. "--set") and the
/// assignment when it is malformed or the path runs through a value that is not an object.
void assign_json_path(nlohmann::json& j, const std::string& assignment, const std::string& what);

/// The JSON pointer of a dotted key ("train.optim.lr" -> "/train/optim/lr"; a key starting with '/' is one already).
nlohmann::json::json_pointer json_path(const std::string& key);

namespace json_fields {

/// What a field of type T should hold, for messages ("an integer", "a list", ...).
template <typename T>
const char* expected(const T* = nullptr) {
  if constexpr (std::is_same_v<T, bool>) return "true or false";
  else if constexpr (std::is_integral_v<T>) return std::is_unsigned_v<T> ? "a non-negative integer" : "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else return "another type";
}
template <typename T>
const char* expected(const std::vector<T>*) {
  return "a list";
}

/// Reads j[key] into `out` when present; a wrong type becomes an InputError naming the key, e.g.
/// "classifier config: field 'experts': expected an integer, got \"8\"".
template <typename T>
void read(const nlohmann::json& j, const std::string& what, const std::string& key, T& out) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  try {
    out = it->template get<T>();
  } catch (const nlohmann::json::exception&) {
    throw InputError(what + ": field '" + key + "': expected " + expected(static_cast<const T*>(nullptr)) + ", got " +
                     it->dump());
  }
}

/// j[key] when `j` is an object holding a string there; "" otherwise (absent, another type, `j` no object). For
/// dispatching on a field ("type") whose wrong value the caller then names.
inline std::string string_or_empty(const nlohmann::json& j, const std::string& key) {
  if (!j.is_object()) return "";
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

/// Rejects an object that is not one, a wrong "type" (when `type` is non-empty and the object has one), or keys
/// outside `known` (typos would pass silently). "type" itself is always allowed.
void check(const nlohmann::json& j, const std::string& what, const std::string& type,
           const std::set<std::string>& known);

/// Reads an enum stored by name through its parser; parse errors become InputErrors naming the key.
template <typename E, typename Parse>
void read_enum(const nlohmann::json& j, const std::string& what, const std::string& key, E& out, Parse parse) {
  std::string name;
  read(j, what, key, name);
  if (name.empty()) return;
  try {
    out = parse(name);
  } catch (const std::exception& e) {
    throw InputError(what + ": field '" + key + "': " + e.what());
  }
}

}  // namespace json_fields
}  // namespace moescope
