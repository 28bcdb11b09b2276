// moescope-test-env PROGRAM [ARGS...]: runs PROGRAM in the environment moescope's front end gives moescope-torch
// (util/runtime.hpp: OMP_WAIT_POLICY, and OPENBLAS_CORETYPE where OpenBLAS does not know the CPU). ctest starts the
// test binaries through it (CROSSCOMPILING_EMULATOR in CMakeLists.txt), so that the library in a test process
// computes with the same OpenBLAS kernels as the moescope-torch processes the tests start and compare with.
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "moescope/util/runtime.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: moescope-test-env PROGRAM [ARGS...]\n");
    return 2;
  }
  moescope::set_torch_environment(/*load_blas=*/true);
  execv(argv[1], argv + 1);
  std::fprintf(stderr, "moescope-test-env: cannot run %s: %s\n", argv[1], std::strerror(errno));
  return 127;
}
