#!/usr/bin/env bash
# The main job on the embedded default data: installs what is missing, builds moescope, trains a small sparse
# MoE on Fashion-MNIST (Debian's dataset-fashion-mnist), analyses the trained run against its initialisation
# and writes reports and figures under out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh build moescope  # only what the job runs (moescope and moescope-torch)
bin=build/moescope
out=out/demo
mkdir -p "$out"
rm -rf "$out/runs/fmnist-sparse"
# 1. Train: small CNN + top-2 of 8 experts, AdamW with a cosine schedule, load balancing, one epoch.
"$bin" train --out-dir "$out/runs" --name fmnist-sparse
run="$out/runs/fmnist-sparse"
last=$(ls -d "$run"/step_* | sed 's/.*step_//' | sort -n | tail -1)
final="$run/step_$last"
# 2. What the checkpoint holds, and the experts' weight geometry before and after training.
"$bin" inspect "$final/model.safetensors"
"$bin" geometry "$run/step_0/model.safetensors" -o "$out/geometry_init.h5"
# 3. Activation overlap of the experts on the same test images, next to the weight geometry.
"$bin" activations "$final" --split test --max-tokens 2000 --geometry -o "$out/activations.h5"
"$bin" activations "$run/step_0" --split test --max-tokens 2000 --geometry -o "$out/activations_init.h5"
# 4. Loss along a filter-normalised random direction, on train and test.
"$bin" landscape "$final" --dirs filter --x -1:1:21 --split train,test --max-samples 1000 -o "$out/landscape.h5"
# 5. Curvature: top Hessian eigenvalues (Lanczos) and trace (Hutch++) on train and test samples.
"$bin" hessian "$final" --split train,test --top-k 3 --trace hutch++ --probes 30 --max-samples 500 --keep-graph \
  -o "$out/hessian.h5"
# 6. Figures.
"$bin" plot "$run/log.h5" -o "$out/figures"
"$bin" plot "$out/activations.h5" -o "$out/figures"
"$bin" plot "$out/landscape.h5" -o "$out/figures"
"$bin" plot "$out/hessian.h5" -o "$out/figures"
echo "run: $run   reports: $out/*.h5   figures: $out/figures/"
