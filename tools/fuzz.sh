#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (tests/fuzz/fuzz_*.cpp) with libFuzzer, ASan and UBSan.
#
#   tools/fuzz.sh [SECONDS] [TARGET ...]      SECONDS per target (default 25); all targets unless named
#
# Builds with clang into build-fuzz/ (-DMOESCOPE_FUZZ=ON), makes seed corpora from valid files
# (tests/fuzz/make_seeds.py, plus the regression inputs in tests/data/fuzz/), then runs each target for SECONDS
# with its dictionary. The corpus each target grows is kept in build-fuzz/corpus/TARGET/, so later runs start where
# earlier ones stopped. A finding (crash, sanitizer report, an exception other than InputError, a timeout of 10 s
# on one input, an allocation over 2 GiB) is written to build-fuzz/findings/TARGET/ and makes the script exit 1;
# reproduce it with `build-fuzz/TARGET FILE`. Prints executions per target at the end.
# Environment: FUZZ_PARALLEL (targets run at once; default: the number of cores), FUZZ_NO_BUILD=1 (use the
# binaries as they are), FUZZ_NICE (nice level of the fuzzers; default 10), FUZZ_TORCH=0 (only the torch-free
# targets: the torch ones need moescope_core built with clang and the fuzz instrumentation, ~20 min on 2 cores).
# CI runs `FUZZ_TORCH=0 tools/fuzz.sh 8` through tools/ci-hardening.sh; a long run is e.g. `tools/fuzz.sh 3600`
# (an hour per target).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/fuzz-build.sh
. tools/fuzz-build.sh
seconds=${1:-25}
shift || true
build=build-fuzz
all=fuzzers                                    # every target; FUZZ_TORCH=0: the torch-free ones (fuzzers_base)
[ "${FUZZ_TORCH:-1}" = 0 ] && all=fuzzers_base
py=/usr/bin/python3
[ -x "$py" ] || py=python3

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  command -v clang++ > /dev/null || { echo "fuzz.sh: clang++ is missing (Debian: apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
  configure_fuzz_build "$build"
  if [ $# -gt 0 ]; then
    cmake --build "$build" --target "$@"
  else
    cmake --build "$build" --target "$all"
  fi
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < "$build/$all.txt"

rm -rf "$build/seeds"
"$py" tests/fuzz/make_seeds.py "$build/seeds" > /dev/null

dict_of() {
  case "$1" in
    fuzz_tokenizer) echo tests/fuzz/tokenizer.dict ;;
    fuzz_safetensors | fuzz_shard_index | fuzz_recorded_activations_torch) echo tests/fuzz/safetensors.dict ;;
    fuzz_run_config_torch) echo tests/fuzz/run_config.dict ;;
    fuzz_journal_torch) echo tests/fuzz/journal.dict ;;
  esac
}

run_one() {
  local t=$1 log="$build/logs/$1.log"
  rm -rf "$build/findings/$t"
  mkdir -p "$build/corpus/$t" "$build/findings/$t" "$build/seeds/$t" "$build/logs"
  local args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$build/findings/$t/")
  local d
  d=$(dict_of "$t")
  [ -n "$d" ] && args+=(-dict="$d")
  # libhdf5 loses a few blocks on most damaged files (tests/lsan.supp): checking for leaks after every such
  # input would run LeakSanitizer's full scan each time (10 inputs/s instead of hundreds). The unit tests under
  # the sanitizers check the reader's own frees.
  # libhdf5 itself (Debian's 1.10.8, not instrumented) crashes on some damaged files that have no metadata
  # checksums: the report target runs in fork mode past crashes, and each crash is then classified by where it
  # happened (classify_report_crashes): inside libhdf5 it is HDF5's (kept in findings/fuzz_report/hdf5/, listed,
  # not failing the run); anywhere else it is moescope's.
  [ "$t" = fuzz_report ] && args+=(-detect_leaks=0 -fork=1 -ignore_crashes=1)
  local rc=0
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0} \
    nice -n "${FUZZ_NICE:-10}" "$build/$t" "${args[@]}" "$build/corpus/$t" "$build/seeds/$t" > "$log" 2>&1 || rc=$?
  [ "$t" = fuzz_report ] && rc=$(classify_report_crashes "$rc")
  echo "$rc" > "$build/logs/$t.rc"
}

# Re-runs each crash, timeout and out-of-memory input of fuzz_report (single allocations above 256 MiB stop it with
# their stack); one whose first frame outside the sanitizer runtime, libFuzzer and libc is in libhdf5 moves to
# findings/fuzz_report/hdf5/. Prints 0 when every finding was HDF5's, else the given exit code or 1.
classify_report_crashes() {
  local rc=$1 dir="$build/findings/fuzz_report" ours=0 hdf5=0 f frame
  mkdir -p "$dir/hdf5"
  for f in "$dir"/crash-* "$dir"/oom-* "$dir"/timeout-* "$dir"/leak-*; do
    [ -e "$f" ] || continue
    frame=$(ASAN_OPTIONS=detect_leaks=0 timeout 120 "$build/fuzz_report" -timeout=10 -malloc_limit_mb=256 \
              -rss_limit_mb=2048 "$f" 2>&1 | grep -E '^ +#[0-9]+ ' |
            grep -vE '__sanitizer|__asan|asan_|__interceptor_|fuzzer::|libclang_rt|in (malloc|free|calloc|realloc|operator new|memcpy|memmove|memset)|libc\.so|libc_start|in _start' |
            head -1 || true)
    if [[ "$frame" == *libhdf5* ]]; then
      mv "$f" "$dir/hdf5/"
      hdf5=1
    else
      ours=1
      echo "fuzz_report: moescope finding $f: ${frame:-no stack}" >> "$build/logs/fuzz_report.log"
    fi
  done
  if [ "$ours" = 1 ]; then echo 1; elif [ "$hdf5" = 1 ]; then echo 0; else echo "$rc"; fi
}

parallel=${FUZZ_PARALLEL:-$(nproc)}
status=0
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  echo "fuzz: $t for ${seconds}s"
  rm -f "$build/logs/$t.rc"
  run_one "$t" &
done
wait
printf '\n%-34s %12s %10s  %s\n' target executions corpus result
for t in "${targets[@]}"; do
  if [ "$(cat "$build/logs/$t.rc" 2> /dev/null)" = 0 ]; then result=ok; else result="FINDING (see $build/logs/$t.log)"; status=1; fi
  execs=$(grep -ao 'stat::number_of_executed_units: [0-9]*' "$build/logs/$t.log" | tail -1 | awk '{print $2}' || true)
  # fork mode (fuzz_report) prints "#N: cov: ..." lines instead
  [ -n "$execs" ] || execs=$(grep -ao '^#[0-9]*: cov' "$build/logs/$t.log" | tail -1 | tr -dc 0-9 || true)
  [ "$t" = fuzz_report ] && [ -d "$build/findings/$t/hdf5" ] &&
    result="$result ($(ls "$build/findings/$t/hdf5" | wc -l) crash inputs inside libhdf5 kept in $build/findings/$t/hdf5)"
  printf '%-34s %12s %10s  %s\n' "$t" "${execs:-?}" "$(ls "$build/corpus/$t" | wc -l)" "$result"
done
exit $status
