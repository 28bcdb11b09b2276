#include "moescope/util/runtime.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace moescope {
namespace {

#if defined(__GLIBC__)
// After keep_freed_memory(), a large block freed and allocated again comes from the heap (no mmap): the bytes
// glibc reports as mmapped stay where they were, and the freed block is not trimmed away.
TEST(Runtime, LargeBlocksStayInTheHeap) {
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

TEST(Runtime, MallocEnvironmentSettingsStand) {
  ASSERT_EQ(setenv("MALLOC_TOP_PAD_", "0", 0), 0);
  const std::string what = keep_freed_memory();
  unsetenv("MALLOC_TOP_PAD_");
  EXPECT_NE(what.find("MALLOC_TOP_PAD_"), std::string::npos) << what;
}
#endif

#if defined(__linux__)
// The program is started again with OMP_WAIT_POLICY=PASSIVE and the same arguments. The test runs this test
// binary in a child with a filter naming this test; the re-executed child finds MOESCOPE_RUNTIME_CHILD_OUT and
// writes the policy it sees there.
TEST(Runtime, ReexecutesWithPassiveOpenMP) {
  if (const char* out = std::getenv("MOESCOPE_RUNTIME_CHILD_OUT")) {
    std::ofstream(out) << (std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(unset)");
    return;
  }
  const std::string out = (std::filesystem::temp_directory_path() /
                           ("moescope-runtime-" + std::to_string(getpid()) + ".txt")).string();
  std::filesystem::remove(out);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("MOESCOPE_RUNTIME_CHILD_OUT", out.c_str(), 1);
    unsetenv("OMP_WAIT_POLICY");
    char self[] = "test_base";
    char filter[] = "--gtest_filter=Runtime.ReexecutesWithPassiveOpenMP";
    char* args[] = {self, filter, nullptr};
    reexec_with_passive_openmp(args);
    _exit(3);  // execv failed
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::ifstream in(out);
  std::string seen;
  std::getline(in, seen);
  std::filesystem::remove(out);
  EXPECT_EQ(seen, "PASSIVE");
}

// A policy the user set stands: nothing is re-executed and the variable is left alone.
TEST(Runtime, UserOpenMPPolicyStands) {
  const char* had = std::getenv("OMP_WAIT_POLICY");
  const std::string saved = had ? had : "";
  setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
  char self[] = "test_base";
  char* args[] = {self, nullptr};
  reexec_with_passive_openmp(args);  // returns: this process goes on
  EXPECT_STREQ(std::getenv("OMP_WAIT_POLICY"), "ACTIVE");
  if (had) setenv("OMP_WAIT_POLICY", saved.c_str(), 1); else unsetenv("OMP_WAIT_POLICY");
}
#endif

}  // namespace
}  // namespace moescope
