#include "moescope/util/memory.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "moescope/util/error.hpp"
#include "moescope/util/strings.hpp"

namespace moescope {

std::uint64_t parse_memory_size(const std::string& text, const std::string& what) {
  if (text == "0" || text == "off" || text == "none") return 0;
  const auto bad = [&] {
    return InputError(what + ": expected a size such as 8G, 512M or 2000000000 (bytes), or off; got '" +
                      printable(text, 40) + "'");
  };
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '.')) throw bad();
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  std::string suffix(end);
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  if (suffix.size() == 2 && (suffix[1] == 'i' || suffix[1] == 'I')) suffix.pop_back();  // "GiB" as "G"
  double scale = 1;
  if (suffix.size() == 1) {
    switch (suffix[0]) {
      case 'k': case 'K': scale = 1024.0; break;
      case 'm': case 'M': scale = 1024.0 * 1024; break;
      case 'g': case 'G': scale = 1024.0 * 1024 * 1024; break;
      case 't': case 'T': scale = 1024.0 * 1024 * 1024 * 1024; break;
      default: throw bad();
    }
  } else if (!suffix.empty()) {
    throw bad();
  }
  const double bytes = v * scale;
  if (!std::isfinite(bytes) || bytes < 1 || bytes > 1.8e19) throw bad();
  return static_cast<std::uint64_t>(bytes);
}

std::uint64_t mem_available(const std::string& meminfo) {
  std::istringstream in(meminfo);
  std::string key, unit;
  std::uint64_t value = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream l(line);
    if (!(l >> key >> value)) continue;
    if (key != "MemAvailable:") continue;
    l >> unit;
    return unit == "kB" ? value * 1024 : value;
  }
  return 0;
}

MemoryBudget memory_budget() {
  if (const char* env = std::getenv(kMaxMemoryEnv); env && *env)
    return {parse_memory_size(env, kMaxMemoryEnv), kMaxMemoryEnv};
  std::ifstream f("/proc/meminfo");
  if (!f) return {0, "none"};
  std::stringstream text;
  text << f.rdbuf();
  const std::uint64_t avail = mem_available(text.str());
  return avail > 0 ? MemoryBudget{avail, "MemAvailable in /proc/meminfo"} : MemoryBudget{0, "none"};
}

std::string format_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) bytes /= 1024, ++u;
  char buf[48];
  if (u == 0 || bytes >= 100)
    std::snprintf(buf, sizeof buf, "%.0f %s", bytes, kUnits[u]);
  else
    std::snprintf(buf, sizeof buf, "%.3g %s", bytes, kUnits[u]);
  return buf;
}

void check_memory(const std::string& what, const std::vector<MemoryItem>& items, const std::string& advice,
                  const MemoryBudget& budget) {
  if (budget.bytes == 0) return;
  double total = 0;
  for (const auto& i : items) total += i.bytes;
  if (total <= static_cast<double>(budget.bytes)) return;
  std::string parts;
  for (const auto& i : items)
    if (i.bytes >= 0.01 * total) parts += (parts.empty() ? "" : "; ") + i.what + ": " + format_bytes(i.bytes);
  throw InputError(what + ": needs about " + format_bytes(total) + " of memory (" + parts + ") but " +
                   format_bytes(static_cast<double>(budget.bytes)) + " are available (" + budget.source + "); " +
                   advice + "; " + kMaxMemoryEnv + "=SIZE (e.g. 64G, or off) sets the limit");
}

void check_memory(const std::string& what, const std::vector<MemoryItem>& items, const std::string& advice) {
  check_memory(what, items, advice, memory_budget());
}

}  // namespace moescope
