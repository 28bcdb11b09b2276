#!/usr/bin/env bash
# Installs what is missing, builds moescope and runs every test (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bash tools/setup.sh "$build"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 900
