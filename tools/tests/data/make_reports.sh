#!/usr/bin/env bash
# Regenerates the real reports the plotting tests read (tools/tests/test_plot.py): two tiny runs (an MLP
# classifier with a top-2-of-8 sparse head on the clustered task, and a 3-layer MoE byte-level LM on the
# fortunes) and one report of every kind from them, all small. Usage: make_reports.sh [path/to/moescope]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin=${1:-"$here/../../../build/moescope"}
bin=$(realpath "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
m() { "$bin" --threads 1 "$@" > /dev/null; }
m train --data clustered --steps 30 --backbone mlp --head sparse --out-dir runs --name mlp
cat > lm.json <<'JSON'
{"model": {"type": "lm", "vocab_size": 256, "context": 32, "dim": 32, "layers": 3, "heads": 2, "ffn_hidden": 64,
           "moe_every": 1, "experts": 4, "top_k": 2, "expert_hidden": 32},
 "data": {"name": "text-byte", "path": "/usr/share/games/fortunes", "context": 32, "max_eval": 200},
 "train": {"batch_size": 32, "eval_every": 10, "log_every": 2, "checkpoint_every": 0}}
JSON
m train --config lm.json --steps 40 --weight-orth 0.01 --z-loss 0.001 --out-dir runs --name lm
r=runs/mlp
m geometry "$r"/step_30/model.safetensors -o geometry.h5
m activations "$r" --split test --max-tokens 500 --geometry -o act_mlp.h5
m activations "$r" --split test --max-tokens 500 -o act_only.h5
m compare-spaces act_only.h5 --geometry geometry.h5 -o compare_spaces.h5
m activations "$r"/step_0 --split test --max-tokens 500 --geometry -o act_mlp0.h5
m activations runs/lm --split test --max-tokens 300 --geometry -o activations_geometry.h5
m activations runs/lm/step_0 --split test --max-tokens 300 --geometry -o act_lm0.h5
m correlate act_mlp.h5 act_mlp0.h5 activations_geometry.h5 act_lm0.h5 --x geometry/layer_00/mso \
  --y activations/layer_00/mso -o correlation.h5
m hessian "$r" --split train,test --top-k 3 --trace hutch++ --probes 10 --density --density-bins 300 \
  --max-samples 200 -o hessian.h5
m hessian "$r" --split test --params each-expert --top-k 1 --trace hutch++ --probes 6 --max-samples 100 \
  -o hessian_each_expert.h5
m landscape "$r" --dirs filter --x -1:1:5 --y -1:1:4 --max-samples 200 --split train,test -o landscape_2d.h5
m landscape "$r" --dirs filter --x -1:1:9 --max-samples 200 --split train,test --sharpness 0.05,0.1,0.5 \
  --sharpness-dirs 3 -o landscape_1d_sharpness.h5
cp runs/mlp/log.h5 train_log.h5
cp runs/lm/log.h5 train_lm_log.h5
for f in geometry activations_geometry compare_spaces correlation hessian hessian_each_expert landscape_2d \
         landscape_1d_sharpness train_log train_lm_log; do
  cp "$f.h5" "$here/real_$f.h5"
done
ls -l "$here"/real_*.h5
