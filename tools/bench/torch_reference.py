#!/usr/bin/python3
"""PyTorch reference for bench_train: the vision study's gated-MoE head on an MLP backbone, trained the way a
competent PyTorch user would write it, so that moescope's training throughput has an honest yardstick.

Model (674k parameters, the same as bench_train's and bench_hvp's default model):
  images [B, 1, 28, 28] -> flatten -> Linear(784, 512) -> ReLU -> gated head:
  p = softmax(router(h)) with router = Linear(512, 8, bias=False);
  every expert e: Linear(512, 64) -> ReLU -> Linear(64, 10); out = sum_e p_e expert_e(h).
The experts are batched: their weights are stacked parameters [E, H, D], [E, H], [E, O, H], [E, O]; the first layer
of all experts is one matmul (the experts see the same tokens), the second a baddbmm over experts.
Training: cross-entropy, AdamW (lr 2e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-4), gradient-norm clipping
at 1.0, cosine schedule with 20 warm-up steps, as moescope's trainer; batches drawn by index from a shuffled
order of the (standardised) Fashion-MNIST train images, as the trainer does.

Prints one JSON object on the last line of stdout: samples_per_s, the time per step, and what was run.
Run with Debian's /usr/bin/python3 (python3-torch, the same LibTorch 1.13 as moescope links).

Usage: torch_reference.py [--steps 200] [--warmup 20] [--batch-size 128] [--threads N] [--data DIR]
                          [--foreach 0|1] [--seed 0]
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 2051 or len(data) != 16 + n * rows * cols:
        raise ValueError(f"{path}: not an IDX image file")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)


def read_idx_labels(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic != 2049 or len(data) != 8 + n:
        raise ValueError(f"{path}: not an IDX label file")
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def load_data(directory, seed):
    """Standardised train images [N, 1, 28, 28] float32 and labels int64; random data of the same shapes when
    the files are missing (throughput does not depend on the values)."""
    images = os.path.join(directory, "train-images-idx3-ubyte.gz")
    labels = os.path.join(directory, "train-labels-idx1-ubyte.gz")
    if os.path.exists(images) and os.path.exists(labels):
        x = torch.from_numpy(read_idx_images(images).astype(np.float32) / 255.0)
        y = torch.from_numpy(read_idx_labels(labels).astype(np.int64))
        x = (x - x.mean()) / x.std()
        return x.contiguous(), y, "fashion-mnist"
    g = torch.Generator().manual_seed(seed)
    return torch.randn(60000, 1, 28, 28, generator=g), torch.randint(0, 10, (60000,), generator=g), "random"


class BatchedExperts(nn.Module):
    """E two-layer MLP experts D -> H -> O as stacked parameters (nn.Linear's initialisation per expert)."""

    def __init__(self, experts, dim, hidden, out):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(experts, hidden, dim))
        self.b1 = nn.Parameter(torch.empty(experts, hidden))
        self.w2 = nn.Parameter(torch.empty(experts, out, hidden))
        self.b2 = nn.Parameter(torch.empty(experts, out))
        for w, b, fan_in in ((self.w1, self.b1, dim), (self.w2, self.b2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x):
        """Every expert on every token: [T, D] -> [E, T, O]."""
        E, H, D = self.w1.shape
        h = torch.relu(F.linear(x, self.w1.reshape(E * H, D), self.b1.reshape(E * H)))  # one matmul, [T, E*H]
        h = h.view(x.shape[0], E, H).transpose(0, 1)                                      # [E, T, H]
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.w2.transpose(1, 2))           # [E, T, O]


class GatedMixture(nn.Module):
    def __init__(self, dim, experts, hidden, out):
        super().__init__()
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = BatchedExperts(experts, dim, hidden, out)

    def forward(self, x):
        p = torch.softmax(self.router(x), dim=-1)           # [T, E]
        y = self.experts(x)                                 # [E, T, O]
        return torch.einsum("te,eto->to", p, y)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(784, 512)
        self.head = GatedMixture(512, 8, 64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x.flatten(1))))


def learning_rate(step, total, peak=2e-3, warmup=20):
    t = min(max(step - warmup, 0), total - warmup)
    lr = 0.5 * peak * (1.0 + math.cos(math.pi * t / (total - warmup))) if total > warmup else peak
    return lr * step / warmup if step < warmup else lr


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="timed steps")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps before (allocator, thread pool)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--foreach", type=int, default=0, help="AdamW's multi-tensor implementation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flush-denormal", type=int, default=0,
                    help="torch.set_flush_denormal(True): denormals flushed to zero (on the calling thread)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.flush_denormal:
        torch.set_flush_denormal(True)
    torch.manual_seed(a.seed)
    x_all, y_all, data_name = load_data(a.data, a.seed)
    model = Classifier()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                            foreach=bool(a.foreach))
    n, bs = x_all.shape[0], a.batch_size
    per_epoch = n // bs
    total = a.warmup + a.steps
    order = torch.randperm(n)
    model.train()
    t0 = None
    for step in range(total):
        if step == a.warmup:
            t0 = time.perf_counter()
        if step % per_epoch == 0 and step > 0:
            order = torch.randperm(n)
        idx = order[(step % per_epoch) * bs:(step % per_epoch + 1) * bs]
        x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, total)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    elapsed = time.perf_counter() - t0
    print(json.dumps({
        "samples_per_s": a.steps * bs / elapsed,
        "ms_per_step": 1e3 * elapsed / a.steps,
        "steps": a.steps, "batch_size": bs, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in params),
        "data": data_name, "final_loss": float(loss),
        "torch": torch.__version__, "foreach": bool(a.foreach), "flush_denormal": bool(a.flush_denormal),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "malloc": os.environ.get("MALLOC_MMAP_MAX_", "") != "",
        "what": "MLP 784-512 + gated head (8 experts 512-64-10, batched: one matmul + baddbmm), AdamW, "
                "clip 1.0, cosine schedule",
    }))


if __name__ == "__main__":
    sys.exit(main())
