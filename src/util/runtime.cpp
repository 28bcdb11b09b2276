#include "moescope/util/runtime.hpp"

#include <csignal>
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <unistd.h>
#endif

namespace moescope {

std::string keep_freed_memory() {
#if defined(__GLIBC__)
  for (const char* v : {"MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (std::getenv(v) != nullptr) return std::string("glibc malloc as the environment sets it (") + v + ")";
  const bool ok = mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  return ok ? "glibc malloc keeps freed memory (M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB)" : "glibc malloc: mallopt refused";
#else
  return "system allocator unchanged (not glibc)";
#endif
}

void reexec_with_passive_openmp(char** argv) {
#if defined(__linux__)
  if (argv == nullptr || argv[0] == nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: go on as we are (children inherit the variable)
#else
  (void)argv;
#endif
}

void ignore_file_size_signal() {
#if defined(SIGXFSZ)
  std::signal(SIGXFSZ, SIG_IGN);
#endif
}

}  // namespace moescope
