#include "moescope/util/runtime.hpp"

#include <csignal>
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <dlfcn.h>
#include <unistd.h>
#endif

#include "moescope/util/cpu.hpp"

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

namespace {

// A function of OpenBLAS's (openblas_get_corename, openblas_set_num_threads, ...) from the process (RTLD_DEFAULT)
// or, with `load`, from the library LibTorch links (loaded and kept: the front end execs right after); null where
// there is none. The callers cast it to the function's type.
void* openblas_symbol(const char* name, bool load) {
#if defined(__linux__)
  if (void* f = dlsym(RTLD_DEFAULT, name)) return f;
  if (!load) return nullptr;
  for (const char* lib : {"libopenblas.so.0", "libblas.so.3"}) {
    if (void* h = dlopen(lib, RTLD_LAZY | RTLD_LOCAL)) {
      if (void* f = dlsym(h, name)) return f;
    }
  }
#else
  (void)name;
  (void)load;
#endif
  return nullptr;
}

// openblas_get_corename / openblas_get_config: null or the text.
const char* openblas_text(const char* name, bool load) {
  void* f = openblas_symbol(name, load);
  return f ? reinterpret_cast<char* (*)()>(f)() : nullptr;
}

}  // namespace

int openblas_threads() {
  void* f = openblas_symbol("openblas_get_num_threads", false);
  return f ? reinterpret_cast<int (*)()>(f)() : 0;
}

bool set_openblas_threads(int n) {
  void* f = openblas_symbol("openblas_set_num_threads", false);
  if (f == nullptr) return false;
  reinterpret_cast<void (*)(int)>(f)(n);
  return true;
}

std::string openblas_core(bool load) {
  const char* name = openblas_text("openblas_get_corename", load);
  return name ? name : "";
}

std::string openblas_core_for(const std::string& detected, bool avx2_fma, bool avx512_skx) {
  if (detected.empty()) return "";
  for (const char* modern : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"})
    if (detected == modern) return "";
  if (avx512_skx) return "SkylakeX";
  if (avx2_fma) return "Haswell";
  return "";
}

std::string openblas_description() {
  const std::string core = openblas_core(false);
  if (core.empty()) return "no OpenBLAS";
  const char* text = openblas_text("openblas_get_config", false);
  return core + (text ? std::string(" (") + text + ")" : std::string());
}

bool set_torch_environment(bool load_blas) {
  bool changed = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) changed = true;
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    const std::string core = openblas_core_for(openblas_core(load_blas), cpu_has_avx2_fma(), cpu_has_avx512_skylake());
    if (!core.empty() && setenv("OPENBLAS_CORETYPE", core.c_str(), 1) == 0) changed = true;
  }
  return changed;
}

void reexec_with_torch_environment(char** argv) {
#if defined(__linux__)
  if (argv == nullptr || argv[0] == nullptr || !set_torch_environment(false)) return;
  execv("/proc/self/exe", argv);  // returns only on failure: go on as we are (children inherit the variables)
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
