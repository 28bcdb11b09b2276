#!/usr/bin/env bash
# Installs what moescope needs on Debian 12 (only what is missing), then configures and builds it.
# Usage: tools/setup.sh [BUILD_DIR [TARGET ...]]   (default: every target; env: MOESCOPE_JOBS, MOESCOPE_CMAKE_ARGS)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
targets=("$@")

pkgs=(cmake ninja-build g++ pkg-config ccache
      libtorch-dev libopenblas0-pthread libeigen3-dev libspectra-dev libhdf5-dev libcli11-dev nlohmann-json3-dev
      libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev zlib1g-dev libgloo-dev libpcre2-dev libicu-dev
      dataset-fashion-mnist fortunes python3 python3-h5py python3-matplotlib python3-numpy)
# Only the test command (every target) needs these: notebooks run headless, sanitizer and fuzz builds (clang).
if ((${#targets[@]} == 0)); then
  pkgs+=(jupyter-nbconvert python3-ipykernel clang libclang-rt-14-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "moescope setup: installing ${missing[*]}" >&2
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=${MOESCOPE_JOBS:-$(nproc)}
# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MOESCOPE_CMAKE_ARGS:-} >/dev/null
if ((${#targets[@]})); then
  cmake --build "$build" -j "$jobs" --target "${targets[@]}"
else
  cmake --build "$build" -j "$jobs"
fi
