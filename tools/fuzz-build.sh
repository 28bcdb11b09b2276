# Sourced by tools/fuzz.sh and tools/ci-hardening.sh: configures the one clang build both use (build-fuzz/):
# MOESCOPE_FUZZ (coverage instrumentation, ASan, UBSan, FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION on every source),
# the unit tests on (test_parsers, the sanitizer subset, builds from the same objects), -O1 with line tables only
# (quick to compile, stacks still name file:line).
configure_fuzz_build() {
  local build=$1
  command -v clang++ > /dev/null || { echo "fuzz: clang++ is missing (Debian: apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
  [ -f "$build/build.ninja" ] && return 0
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    "-DCMAKE_C_FLAGS=-O1 -gline-tables-only" "-DCMAKE_CXX_FLAGS=-O1 -gline-tables-only" -DMOESCOPE_FUZZ=ON \
    -DMOESCOPE_BUILD_TESTS=ON -DMOESCOPE_BUILD_BENCH=OFF -DMOESCOPE_PCH=OFF > /dev/null
}
