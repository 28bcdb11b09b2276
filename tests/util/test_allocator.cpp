#include "moescope/util/allocator.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace moescope {
namespace {

#if defined(__GLIBC__)
// After keep_freed_memory(), a large block freed and allocated again comes from the heap (no mmap): the bytes
// glibc reports as mmapped stay where they were, and the freed block is not trimmed away.
TEST(Allocator, LargeBlocksStayInTheHeap) {
  ASSERT_EQ(std::getenv("MALLOC_MMAP_MAX_"), nullptr) << "the test needs glibc's own settings";
  const std::string what = keep_freed_memory();
  EXPECT_NE(what.find("keeps freed memory"), std::string::npos) << what;
  const struct mallinfo2 before = mallinfo2();
  const std::size_t big = 64u << 20;  // above glibc's largest mmap threshold (32 MiB)
  void* p = std::malloc(big);
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, big);
  const struct mallinfo2 during = mallinfo2();
  EXPECT_EQ(during.hblkhd, before.hblkhd) << "a 64 MiB block was mmapped";
  std::free(p);
  const struct mallinfo2 after = mallinfo2();
  EXPECT_GE(after.fordblks, big) << "the freed block was given back to the system";
}

TEST(Allocator, EnvironmentSettingsStand) {
  ASSERT_EQ(setenv("MALLOC_TOP_PAD_", "0", 0), 0);
  const std::string what = keep_freed_memory();
  unsetenv("MALLOC_TOP_PAD_");
  EXPECT_NE(what.find("MALLOC_TOP_PAD_"), std::string::npos) << what;
}
#endif

}  // namespace
}  // namespace moescope
