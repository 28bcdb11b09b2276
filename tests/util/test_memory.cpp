// util/memory: sizes as the environment variable gives them, MemAvailable, and the refusal message.
#include "moescope/util/memory.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

#include "moescope/util/error.hpp"

namespace moescope {
namespace {

TEST(Memory, ParsesSizes) {
  EXPECT_EQ(parse_memory_size("2000000000", "X"), 2000000000u);
  EXPECT_EQ(parse_memory_size("512M", "X"), 512ull << 20);
  EXPECT_EQ(parse_memory_size("16G", "X"), 16ull << 30);
  EXPECT_EQ(parse_memory_size("16GiB", "X"), 16ull << 30);
  EXPECT_EQ(parse_memory_size("1.5T", "X"), 3ull << 39);
  EXPECT_EQ(parse_memory_size("4k", "X"), 4096u);
  EXPECT_EQ(parse_memory_size("off", "X"), 0u);
  EXPECT_EQ(parse_memory_size("0", "X"), 0u);
  for (const char* bad : {"", "-1G", "G", "12Q", "1e400", "0.1", "nan", "12 G"}) {
    try {
      parse_memory_size(bad, "MOESCOPE_MAX_MEMORY");
      FAIL() << "accepted '" << bad << "'";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("MOESCOPE_MAX_MEMORY: expected a size", 0), 0u) << e.what();
    }
  }
}

TEST(Memory, ReadsMemAvailable) {
  const std::string meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20480000 kB\n";
  EXPECT_EQ(mem_available(meminfo), 20480000ull * 1024);
  EXPECT_EQ(mem_available("MemTotal: 1 kB\n"), 0u);
  // the real file of this machine has one, between 1 MiB and the address space
  const MemoryBudget b = memory_budget();
  if (std::getenv(kMaxMemoryEnv) == nullptr && b.source != "none") {
    EXPECT_GT(b.bytes, 1u << 20);
  }
}

TEST(Memory, FormatsBytes) {
  EXPECT_EQ(format_bytes(17), "17 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(3.0 * (1ull << 30)), "3 GiB");
  EXPECT_EQ(format_bytes(300.0 * (1ull << 20)), "300 MiB");
}

TEST(Memory, RefusesWhatDoesNotFitNamingTheItemsAndTheFlag) {
  const MemoryBudget budget{1ull << 30, "MemAvailable in /proc/meminfo"};
  EXPECT_NO_THROW(check_memory("hessian", {{"basis", 512.0 * (1 << 20)}, {"vectors", 256.0 * (1 << 20)}}, "lower --x",
                               budget));
  try {
    check_memory("hessian", {{"Lanczos basis", 3.0 * (1ull << 30)}, {"tiny", 1.0}}, "lower --max-steps", budget);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "hessian: needs about 3 GiB of memory (Lanczos basis: 3 GiB) but 1 GiB are available (MemAvailable in "
              "/proc/meminfo); lower --max-steps; MOESCOPE_MAX_MEMORY=SIZE (e.g. 64G, or off) sets the limit");
  }
  EXPECT_NO_THROW(check_memory("x", {{"huge", 1e30}}, "", MemoryBudget{0, "none"}));  // no budget: no check
}

}  // namespace
}  // namespace moescope
