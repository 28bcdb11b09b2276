#include "moescope/util/runtime.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

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

// OpenBLAS kernels are chosen over OpenBLAS's own choice only where that was a fallback older than the CPU.
TEST(Runtime, OpenBlasCoreOnlyReplacesFallbacks) {
  EXPECT_EQ(openblas_core_for("Prescott", true, true), "SkylakeX");  // 0.3.21 on family 6 model 207
  EXPECT_EQ(openblas_core_for("Prescott", true, false), "Haswell");
  EXPECT_EQ(openblas_core_for("Sandybridge", true, false), "Haswell");
  EXPECT_EQ(openblas_core_for("Nehalem", true, true), "SkylakeX");
  EXPECT_EQ(openblas_core_for("Prescott", false, false), "");  // the CPU has nothing better
  for (const char* own : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"})
    EXPECT_EQ(openblas_core_for(own, true, true), "") << own;
  EXPECT_EQ(openblas_core_for("", true, true), "");  // no OpenBLAS
}

#if defined(__linux__)
// The program is started again with the torch environment and the same arguments. The test runs this test binary
// in a child with a filter naming this test and neither variable set; the re-executed child finds
// MOESCOPE_RUNTIME_CHILD_OUT and writes what it sees there: the policy, OPENBLAS_CORETYPE, and the kernel set the
// OpenBLAS it then loads runs (so a name moescope sets is one the installed OpenBLAS honours on this CPU).
TEST(Runtime, ReexecutesWithTorchEnvironment) {
  if (const char* out = std::getenv("MOESCOPE_RUNTIME_CHILD_OUT")) {
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    std::ofstream(out) << (std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(unset)") << "\n"
                       << (core ? core : "(unset)") << "\n"
                       << openblas_core(true) << "\n";
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
    unsetenv("OPENBLAS_CORETYPE");
    set_torch_environment(/*load_blas=*/true);  // as the front end does before it starts moescope-torch
    char self[] = "test_base";
    char filter[] = "--gtest_filter=Runtime.ReexecutesWithTorchEnvironment";
    char* args[] = {self, filter, nullptr};
    execv("/proc/self/exe", args);
    _exit(3);  // execv failed
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::ifstream in(out);
  std::string policy, core_type, core;
  std::getline(in, policy);
  std::getline(in, core_type);
  std::getline(in, core);
  std::filesystem::remove(out);
  EXPECT_EQ(policy, "PASSIVE");
  if (core_type != "(unset)") EXPECT_EQ(core, core_type) << "OpenBLAS does not honour OPENBLAS_CORETYPE=" << core_type;
  std::printf("OpenBLAS here: %s (OPENBLAS_CORETYPE %s)\n", core.empty() ? "none" : core.c_str(), core_type.c_str());
}

// What the user set stands: nothing is re-executed and the variables are left alone.
TEST(Runtime, UserEnvironmentStands) {
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* v : {"OMP_WAIT_POLICY", "OPENBLAS_CORETYPE"})
    saved.emplace_back(v, std::getenv(v) ? std::getenv(v) : std::string("\x01"));
  setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
  setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  char self[] = "test_base";
  char* args[] = {self, nullptr};
  reexec_with_torch_environment(args);  // returns: this process goes on
  EXPECT_STREQ(std::getenv("OMP_WAIT_POLICY"), "ACTIVE");
  EXPECT_STREQ(std::getenv("OPENBLAS_CORETYPE"), "Prescott");
  for (const auto& [name, value] : saved) {
    if (value == "\x01") unsetenv(name.c_str());
    else setenv(name.c_str(), value.c_str(), 1);
  }
}
#endif

}  // namespace
}  // namespace moescope
