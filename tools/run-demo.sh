#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds moescope, makes a checkpoint,
# analyses it, and writes the report and figures under out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh build
bin=build/moescope
out=out/demo
mkdir -p "$out"
# A Mixtral-named bf16 checkpoint whose experts share half their variance: expert cosine ~0.5, MSO ~0.25.
"$bin" synth mixtral -o "$out/mixtral-synthetic.safetensors" --layers 4 --experts 8 --hidden 256 \
  --intermediate 512 --dtype BF16 --rho 0.5 --seed 1
"$bin" inspect "$out/mixtral-synthetic.safetensors"
"$bin" geometry "$out/mixtral-synthetic.safetensors" -o "$out/geometry.h5"
/usr/bin/python3 tools/plot_report.py "$out/geometry.h5" -o "$out/figures"
echo "report: $out/geometry.h5   figures: $out/figures/"
