#!/usr/bin/env python3
"""Seed corpora for every libFuzzer target of tests/fuzz, made from valid files (and, for the tokenizer, from the
test fixtures), plus the regression inputs committed under tests/data/fuzz/<target>/.

usage: make_seeds.py OUT_DIR                      one folder per target: OUT_DIR/fuzz_safetensors/, ...
       make_seeds.py TOKENIZER_DIR TOKEN_IDS_DIR   the tokenizer and token-id seeds only (the older form)

Needs numpy and h5py (Debian: /usr/bin/python3 with python3-numpy, python3-h5py) for the report seeds; without h5py
the report corpus holds the committed reports of tools/tests/data only."""
import gzip
import json
import os
import shutil
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.normpath(os.path.join(here, "..", ".."))
fixtures = os.path.join(here, "..", "data", "tokenizer")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# ------------------------------------------------------------------------------------------ tokenizer, token ids
def tokenizer_seeds(tok_dir, ids_dir):
    os.makedirs(tok_dir, exist_ok=True)
    os.makedirs(ids_dir, exist_ok=True)
    variants = json.load(open(os.path.join(fixtures, "variants.json"), encoding="utf-8"))
    for v in variants:
        base = json.load(open(os.path.join(fixtures, v["base"]), encoding="utf-8"))["model"]
        vocab = {t: i for t, i in base["vocab"].items() if i < 400}
        merges = []
        for m in base["merges"]:
            a, b = m.split(" ") if isinstance(m, str) else m
            if a in vocab and b in vocab and a + b in vocab:
                merges.append(m)
        model = dict(base, vocab=vocab, merges=merges)
        model.update(v.get("model", {}))
        added, next_id = [], len(vocab)
        for t in v.get("added_tokens", []):
            t = dict(t)
            t["id"] = vocab.get(t["content"], next_id)
            if t["content"] not in vocab:
                next_id += 1
            added.append(t)
        j = {"version": "1.0", "added_tokens": added, "model": model}
        for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            j[key] = json.loads(json.dumps(v.get(key)))
        # template ids refer to the full vocabulary: point them at the renumbered added tokens
        new_id = {t["content"]: t["id"] for t in added}

        def renumber(pp):
            if not pp:
                return
            for p in pp.get("processors", []):
                renumber(p)
            for spec in pp.get("special_tokens", {}).values():
                spec["ids"] = [new_id[c] for c in spec["tokens"]]

        renumber(j["post_processor"])
        write(os.path.join(tok_dir, v["name"] + ".json"), json.dumps(j, ensure_ascii=False))
    ids_fixtures = os.path.join(here, "..", "data", "token_ids")
    for name in os.listdir(ids_fixtures):
        if not name.endswith(".py"):
            shutil.copy(os.path.join(ids_fixtures, name), os.path.join(ids_dir, name))
    return len(variants)


if len(sys.argv) == 3:
    n = tokenizer_seeds(sys.argv[1], sys.argv[2])
    print(n, "tokenizer seeds,", len(os.listdir(sys.argv[2])), "token-id seeds")
    sys.exit(0)
if len(sys.argv) != 2:
    sys.exit(__doc__)
out = sys.argv[1]
tokenizer_seeds(os.path.join(out, "fuzz_tokenizer"), os.path.join(out, "fuzz_token_ids"))


# ------------------------------------------------------------------------------------------ safetensors
def f32(values):
    return struct.pack("<%df" % len(values), *values)


def bf16(values):
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def ramp(n, scale=0.1, shift=0.0):
    return [((i * 37 + 11) % 23 - 11) * scale + shift for i in range(n)]


st = os.path.join(out, "fuzz_safetensors")
write(os.path.join(st, "plain.safetensors"),
      safetensors([("a", "F32", [2, 3], f32(ramp(6))), ("b", "BF16", [4], bf16(ramp(4))),
                   ("c", "I64", [2], struct.pack("<2q", -1, 7)), ("empty", "F32", [0, 3], b"")], {"format": "pt"}))
# Mixtral-named MoE layer: 4 experts of w1/w3 [3, 4] and w2 [4, 3], a router [4, 4]
mix = [("model.layers.0.block_sparse_moe.gate.weight", "F32", [4, 4], f32(ramp(16)))]
for e in range(4):
    for w, shape in (("w1", [3, 4]), ("w2", [4, 3]), ("w3", [3, 4])):
        mix.append(("model.layers.0.block_sparse_moe.experts.%d.%s.weight" % (e, w), "F32", shape,
                    f32(ramp(12, 0.1 + 0.01 * e, 0.05 * e))))
write(os.path.join(st, "mixtral.safetensors"), safetensors(mix))
# OLMoE/Qwen names in BF16 with a zero expert
olmoe = []
for e in range(3):
    for w, shape in (("gate_proj", [2, 4]), ("up_proj", [2, 4]), ("down_proj", [4, 2])):
        vals = [0.0] * 8 if e == 2 else ramp(8, 0.2, 0.1 * e)
        olmoe.append(("model.layers.1.mlp.experts.%d.%s.weight" % (e, w), "BF16", shape, bf16(vals)))
olmoe.append(("model.layers.1.mlp.gate.weight", "BF16", [3, 4], bf16(ramp(12))))
write(os.path.join(st, "olmoe_bf16.safetensors"), safetensors(olmoe))
# moescope's own names, with a NaN in one expert
own = [("head.router.weight", "F32", [2, 3], f32(ramp(6)))]
for e in range(2):
    vals = ramp(6, 0.3, e)
    if e == 1:
        vals[4] = float("nan")
    own.append(("head.experts.%d.fc1.weight" % e, "F32", [2, 3], f32(vals)))
    own.append(("head.experts.%d.fc2.weight" % e, "F32", [3, 2], f32(ramp(6, 0.2, -e))))
write(os.path.join(st, "moescope_nan.safetensors"), safetensors(own))
# DeepSeek-style FP8 weight with 128 x 128 block scales: [130, 3] E4M3 -> scales [2, 1]
fp8 = bytes((i * 29 + 3) % 0x7e for i in range(130 * 3))
write(os.path.join(st, "fp8.safetensors"),
      safetensors([("w", "F8_E4M3", [130, 3], fp8), ("w_scale_inv", "F32", [2, 1], f32([0.5, 2.0])),
                   ("v", "F8_E5M2", [2, 2], bytes([0x3c, 0xbc, 0x7c, 0x01]))]))
write(os.path.join(st, "empty_header.safetensors"), safetensors([]))

# ------------------------------------------------------------------------------------------ shard index
idx = os.path.join(out, "fuzz_shard_index")
write(os.path.join(idx, "index.json"), json.dumps(
    {"metadata": {"total_size": 32}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}))
write(os.path.join(idx, "partial.json"), json.dumps({"weight_map": {"z": "b.safetensors"}}))

# ------------------------------------------------------------------------------------------ FP8 block scales
fz = os.path.join(out, "fuzz_fp8")
for k, head in enumerate([bytes([0, 130, 0, 3, 0, 0, 0, 5, 0, 100, 0, 0]),      # E4M3 [131, 4], F32 scales
                          bytes([1, 44, 1, 200, 0, 1, 3, 0, 0, 255, 1, 1]),     # E5M2 [301 % 300.., ...], BF16
                          bytes([0, 10, 0, 10, 0, 3, 0, 0, 0, 121, 0, 0])]):    # small, F64 scales
    write(os.path.join(fz, "seed%d" % k), head + bytes(range(256)))

# ------------------------------------------------------------------------------------------ torch.save
tp = os.path.join(out, "fuzz_torch_pickle")
os.makedirs(tp, exist_ok=True)
pickles = os.path.join(here, "..", "data", "torch_pickle")
for name in os.listdir(pickles):
    if name.endswith(".pt"):
        shutil.copy(os.path.join(pickles, name), os.path.join(tp, name))

# ------------------------------------------------------------------------------------------ IDX
ix = os.path.join(out, "fuzz_idx")
images = struct.pack(">IIII", 0x803, 3, 2, 2) + bytes(range(12))
labels = struct.pack(">II", 0x801, 3) + bytes([0, 9, 4])
write(os.path.join(ix, "images"), bytes([0, 0]) + images)
write(os.path.join(ix, "labels"), bytes([1, 0]) + labels)
write(os.path.join(ix, "images_gz"), bytes([2, 0]) + gzip.compress(images, mtime=0))
cut = len(images) * 256 // (len(images) + len(labels))
write(os.path.join(ix, "pair"), bytes([3, min(cut + 1, 255)]) + images + labels)
write(os.path.join(ix, "pair_gz"), bytes([3, 128]) + gzip.compress(images, mtime=0) + gzip.compress(labels, mtime=0))
fm = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
if os.path.exists(fm):
    with gzip.open(fm) as f:
        write(os.path.join(ix, "fashion_labels"), bytes([1, 0]) + f.read()[:200])

# ------------------------------------------------------------------------------------------ CIFAR-10
cf = os.path.join(out, "fuzz_cifar10")
rec = lambda label, seed: bytes([label]) + bytes((i * seed + 7) % 256 for i in range(3072))
write(os.path.join(cf, "two_records"), rec(3, 5) + rec(9, 11))
write(os.path.join(cf, "one_record_meta"), bytes([1]) + rec(0, 3)[1:] +
      b"\nairplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
write(os.path.join(cf, "gz"), gzip.compress(rec(2, 13), mtime=0))

# ------------------------------------------------------------------------------------------ text
tx = os.path.join(out, "fuzz_text")
write(os.path.join(tx, "wiki"), bytes([90, 128]) + b" = Valkyria = \n\n the game 's <unk> battle \n the end \n")
write(os.path.join(tx, "utf8"), bytes([200, 10]) +
      "caf\u00e9 na\u00efve \u4f60\u597d \U0001f44d\n".encode() + b"bad \xc3 \xff\xfe \xed\xa0\x80 end\n")
write(os.path.join(tx, "vocab"), "moescope-vocabulary 1\n<unk>\n<eos>\nthe\na\\nb\ntab\\there\nback\\\\slash\n")
fortunes = "/usr/share/games/fortunes/fortunes"
if os.path.exists(fortunes):
    with open(fortunes, "rb") as f:
        write(os.path.join(tx, "fortunes"), bytes([180, 128]) + f.read(2000))

# ------------------------------------------------------------------------------------------ HDF5 reports
rp = os.path.join(out, "fuzz_report")
os.makedirs(rp, exist_ok=True)
reports = os.path.join(root, "tools", "tests", "data")
for name in ("real_geometry.h5", "real_correlation.h5"):
    if os.path.exists(os.path.join(reports, name)):
        shutil.copy(os.path.join(reports, name), os.path.join(rp, name))
try:
    import h5py
    import numpy as np

    small = os.path.join(rp, "small.h5")
    with h5py.File(small, "w", libver=("v108", "latest")) as f:
        f.attrs["moescope_version"] = "0.1.0"
        f.attrs["seed"] = np.int64(3)
        g = f.create_group("geometry/layer_00")
        g["overlap"] = np.eye(2)
        g["mso"] = 0.25
        g.attrs["experts"] = np.int64(2)
        g.attrs["matrices"] = "up,down"
        f["names"] = np.array([b"a", b"bc"])
        f.create_dataset("vlen", data=["x", "yz"], dtype=h5py.string_dtype())
        f["train/step"] = np.arange(3)
        f["train/test_loss"] = 0.5
    with h5py.File(os.path.join(rp, "chunked.h5"), "w") as f:
        f.create_dataset("big", data=np.arange(200.0), chunks=(50,), compression="gzip")
except ImportError:
    print("no h5py: report seeds are the committed reports only", file=sys.stderr)

# ------------------------------------------------------------------------------------------ run config
rc = os.path.join(out, "fuzz_run_config_torch")
write(os.path.join(rc, "default.json"), json.dumps({
    "name": "fmnist-sparse", "seed": 0, "out_dir": "runs",
    "model": {"type": "classifier", "backbone": "cnn", "backbone_widths": [32, 64, 128], "head": "sparse",
              "head_hidden": 64, "experts": 8, "top_k": 2},
    "data": {"name": "fashion-mnist", "max_eval": 2000},
    "train": {"epochs": 1, "batch_size": 128, "eval_every": 100, "regularisers": {"load_balance": 0.01},
              "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0001, "schedule": "cosine",
                        "warmup_steps": 20, "clip_norm": 1.0, "omoe": {"enabled": True, "skip": 2}}}}))
write(os.path.join(rc, "lm.json"), json.dumps({
    "name": "lm", "model": {"type": "lm", "vocab_size": 300, "context": 32, "dim": 32, "layers": 2, "heads": 2,
                            "experts": 4, "top_k": 2},
    "data": {"name": "text-byte", "path": "/usr/share/games/fortunes", "context": 32}}))
write(os.path.join(rc, "clustered.json"), json.dumps({
    "model": {"type": "classifier", "backbone": "mlp", "head": "gated", "experts": 4},
    "data": {"name": "clustered", "clustered": {"clusters": 4, "dim": 8}}, "train": {"steps": 10}}))
write(os.path.join(rc, "data_arg.json"), json.dumps({"data": "cifar10:/tmp/cifar"}))

# ------------------------------------------------------------------------------------------ landscape journal
def fnv1a(s):
    h = 0xcbf29ce484222325
    for c in s.encode():
        h ^= c
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def g17(v):
    return "%.17g" % v


jn = os.path.join(out, "fuzz_journal_torch")
xs = [-1 + 2 * i / 3 for i in range(4)]
xs[-1] = 1.0
ys = [-1.0, 0.0, 1.0]
head = "moescope-landscape-journal 1\nsettings x=-1:1:4 y=-1:1:3 metrics=train_loss,train_acc dirs=fuzz\n"
lines = []
for i in range(4):
    for j in range(3):
        line = "p %d %d %s %s" % (i, j, g17(xs[i]), g17(ys[j]))
        lines.append(line + " #" + fnv1a(line) + "\n")
write(os.path.join(jn, "complete"), b"\x00" + (head + "".join(lines)).encode())
write(os.path.join(jn, "half_torn"), b"\x03" + (head + "".join(lines[:6]) + lines[6][:9]).encode())
bad = "p 1 1 nan inf"
write(os.path.join(jn, "nan_and_damaged"), b"\x00" + (head + bad + " #" + fnv1a(bad) + "\n" + lines[0][:-3] +
                                                      "00\n").encode())

# ------------------------------------------------------------------------------------------ recorded activations
ra = os.path.join(out, "fuzz_recorded_activations_torch")
write(os.path.join(ra, "both.safetensors"), safetensors([
    ("layer_00.inputs", "F32", [6, 4], f32(ramp(24))), ("layer_00.router_probs", "F32", [6, 3], f32([1 / 3] * 18)),
    ("layer_01.inputs", "BF16", [3, 4], bf16(ramp(12, 0.5)))]))
write(os.path.join(ra, "router.safetensors"), safetensors([("layer_00.inputs", "F16", [2, 4],
                                                            struct.pack("<8e", *ramp(8)))]))

# ------------------------------------------------------------------------------------------ regression inputs
committed = os.path.join(root, "tests", "data", "fuzz")
if os.path.isdir(committed):
    for target in os.listdir(committed):
        src = os.path.join(committed, target)
        if os.path.isdir(src):
            for name in os.listdir(src):
                os.makedirs(os.path.join(out, target), exist_ok=True)
                shutil.copy(os.path.join(src, name), os.path.join(out, target, "regression_" + name))
for target in sorted(os.listdir(out)):
    print("%-34s %d seeds" % (target, len(os.listdir(os.path.join(out, target)))))
