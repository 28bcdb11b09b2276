#!/usr/bin/env bash
# The torch-free unit tests (test_base: every parser, layouts, metrics, reports, statistics, data) under
# AddressSanitizer and UndefinedBehaviorSanitizer, built with clang into build-asan/ (-DMOESCOPE_SANITIZE=ON).
#
#   tools/sanitize-tests.sh [GTEST_FILTER]
#
# test_core (LibTorch) is left out: instrumenting it means building LibTorch-heavy sources a second time (longer
# than CI allows) while Debian's LibTorch itself stays uninstrumented; the parsers, which is where hostile bytes
# enter, are all in moescope_base. Any sanitizer report fails the run (halt_on_error); libhdf5's own leaks on
# damaged files are suppressed (tests/lsan.supp).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-asan
compiler=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
command -v clang++ > /dev/null || compiler=()  # gcc sanitizes too, only slower to build
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=-O1 -gline-tables-only" "${compiler[@]}" -DMOESCOPE_SANITIZE=ON \
    -DMOESCOPE_BUILD_BENCH=OFF -DMOESCOPE_PCH=OFF > /dev/null
fi
cmake --build "$build" --target test_base
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0 \
  OMP_WAIT_POLICY=PASSIVE \
  "$build/test_base" --gtest_brief=1 ${1:+--gtest_filter="$1"}
