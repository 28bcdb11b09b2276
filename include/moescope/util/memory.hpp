#pragma once
// Refusing requests that cannot fit in memory before they start, instead of being killed by the OOM killer half-way
// through. A request adds up what it will hold at its peak (the big allocations only: Lanczos bases, probe blocks,
// grids, expert outputs) and compares the sum with the memory budget.
#include <cstdint>
#include <string>
#include <vector>

namespace moescope {

/// How much memory a request may plan for.
struct MemoryBudget {
  std::uint64_t bytes = 0;  ///< 0: unknown or unlimited (no check)
  std::string source;       ///< where it came from, for messages: "MemAvailable", "MOESCOPE_MAX_MEMORY", "none"
};

/// The environment variable that sets the budget: bytes, or a number with a binary suffix K, M, G or T ("16G",
/// "512M", "1.5T"); "0", "off" or "none" turn the check off.
inline constexpr const char* kMaxMemoryEnv = "MOESCOPE_MAX_MEMORY";

/// MOESCOPE_MAX_MEMORY when set, else MemAvailable from /proc/meminfo (memory the kernel can give without swapping),
/// else none. Throws InputError naming the variable when its value does not parse.
MemoryBudget memory_budget();
/// Parses a MOESCOPE_MAX_MEMORY value (see kMaxMemoryEnv); 0 for "off". Throws InputError naming `what`.
std::uint64_t parse_memory_size(const std::string& text, const std::string& what);
/// MemAvailable of a /proc/meminfo text, in bytes; 0 when absent.
std::uint64_t mem_available(const std::string& meminfo);

/// "1.50 GiB", "300 MiB", "12 KiB", "17 B".
std::string format_bytes(double bytes);

/// One part of an estimate.
struct MemoryItem {
  std::string what;  ///< e.g. "Lanczos basis: 301 x 2,400,000 float64"
  double bytes = 0;
};

/// Throws InputError "<what>: needs about T of memory (item: X; item: Y) but B are available (source); <advice>;
/// MOESCOPE_MAX_MEMORY=BYTES sets the limit" when the items add up to more than `budget` (a zero budget checks
/// nothing). `advice` names the flags that lower the estimate.
void check_memory(const std::string& what, const std::vector<MemoryItem>& items, const std::string& advice,
                  const MemoryBudget& budget);
/// The same against memory_budget().
void check_memory(const std::string& what, const std::vector<MemoryItem>& items, const std::string& advice);

}  // namespace moescope
