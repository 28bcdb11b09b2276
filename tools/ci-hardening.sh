#!/usr/bin/env bash
# CI's hardening step (after the tests): one clang build (build-fuzz/, tools/fuzz-build.sh) with ASan, UBSan and
# libFuzzer's coverage instrumentation, from which
#   1. test_parsers, the unit tests of every reader of untrusted bytes (cmake/hardening.cmake lists them), runs
#      under the sanitizers: any report fails (halt_on_error, LeakSanitizer on; libhdf5's own leaks on damaged
#      files are suppressed by tests/lsan.supp);
#   2. every torch-free fuzz target runs for SECONDS (default 8) from its seeds: tools/fuzz.sh, exit 1 on a finding.
# The whole of test_base and the torch fuzz targets are left to tools/sanitize-tests.sh and tools/fuzz.sh: CI
# cannot afford a second build of LibTorch-heavy sources (see docs/robustness.md for the times).
#
#   tools/ci-hardening.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/fuzz-build.sh
seconds=${1:-8}
build=build-fuzz
t0=$SECONDS
configure_fuzz_build "$build"
cmake --build "$build" --target test_parsers fuzzers_base
echo "ci-hardening: build $((SECONDS - t0)) s"
t1=$SECONDS
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0 \
  OMP_WAIT_POLICY=PASSIVE \
  "$build/test_parsers" --gtest_brief=1
echo "ci-hardening: sanitizer tests $((SECONDS - t1)) s"
t2=$SECONDS
FUZZ_NO_BUILD=1 FUZZ_TORCH=0 bash tools/fuzz.sh "$seconds"
echo "ci-hardening: fuzzing $((SECONDS - t2)) s; total $((SECONDS - t0)) s"
