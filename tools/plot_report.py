#!/usr/bin/python3
"""Figures from a moescope HDF5 report (PNG and PDF), one per analysed quantity.

Usage: /usr/bin/python3 tools/plot_report.py REPORT.h5 [-o DIR]
Needs Debian's python3-h5py, python3-matplotlib and python3-numpy.
"""
import argparse
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, out_dir, name):
    for ext in ("png", "pdf"):
        fig.savefig(os.path.join(out_dir, f"{name}.{ext}"), dpi=150, bbox_inches="tight")
    plt.close(fig)
    print(os.path.join(out_dir, name + ".png"))


def plot_geometry(f, out_dir):
    g = f["geometry"]
    layers = sorted(g.keys())
    if not layers:
        return
    n = len(layers)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for idx, (ax, key) in enumerate(zip(axes.flat, layers)):
        ov = np.asarray(g[key]["overlap"])
        ax.axis("on")
        im = ax.imshow(ov, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"{key}: MSO {float(g[key]['mso'][()]):.3g}", fontsize=9)
        ax.set_xlabel("expert")
        if idx % cols == 0:
            ax.set_ylabel("expert")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="cosine overlap of expert weights")
    save(fig, out_dir, "geometry_overlap")

    fig, ax = plt.subplots(figsize=(4.5, 3))
    mso = [float(g[k]["mso"][()]) for k in layers]
    ax.bar(range(n), mso, color="tab:blue")
    ax.set_xticks(range(n))
    ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("weight MSO")
    ax.set_title("Mean squared overlap of expert weights")
    save(fig, out_dir, "geometry_mso")


def plot_activations(f, out_dir):
    a = f["activations"]
    layers = sorted(k for k in a.keys() if isinstance(a[k], h5py.Group))
    if not layers:
        return
    n = len(layers)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for ax, key in zip(axes.flat, layers):
        im = ax.imshow(np.asarray(a[key]["overlap"]), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"{key}: act. MSO {float(a[key]['mso'][()]):.3g}", fontsize=9)
        ax.set_xlabel("expert")
        ax.set_ylabel("expert")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="mean cosine of expert outputs, same tokens")
    save(fig, out_dir, "activation_overlap")
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for key in layers:
        load = np.asarray(a[key]["load"])
        ax.plot(range(len(load)), load, marker="o", label=key)
    ax.set_xlabel("expert")
    ax.set_ylabel("fraction of assignments")
    ax.set_title("Router load")
    ax.legend(fontsize=7)
    save(fig, out_dir, "router_load")
    if "compare_spaces" in f:
        c = f["compare_spaces"]
        fig, ax = plt.subplots(figsize=(4, 3.5))
        for key in sorted(k for k in c.keys() if isinstance(c[k], h5py.Group)):
            ax.scatter(np.asarray(c[key]["weight_overlap"]), np.asarray(c[key]["activation_overlap"]), s=12,
                       label=key)
        ax.set_xlabel("weight overlap (expert pair)")
        ax.set_ylabel("activation overlap (expert pair)")
        r = float(c["spearman_rho"][()]) if "spearman_rho" in c else float("nan")
        ax.set_title(f"Weight vs activation space, Spearman {r:.2f}", fontsize=9)
        ax.legend(fontsize=7)
        save(fig, out_dir, "weight_vs_activation")


def plot_training(f, out_dir):
    t = f["train"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(np.asarray(t["step"]), np.asarray(t["loss"]), lw=1, label="train (batch)")
    if len(t["val_step"]):
        axes[0].plot(np.asarray(t["val_step"]), np.asarray(t["val_loss"]), marker="o", label="validation")
        axes[1].plot(np.asarray(t["val_step"]), np.asarray(t["val_acc"]), marker="o", color="tab:green")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("validation accuracy")
    save(fig, out_dir, "training_curves")
    if "expert_load" in t:
        load = np.asarray(t["expert_load"])  # [step, layer, expert]
        fig, ax = plt.subplots(figsize=(4.5, 3))
        for e in range(load.shape[2]):
            ax.plot(np.asarray(t["step"]), load[:, 0, e], lw=1, label=f"expert {e}")
        ax.set_xlabel("step")
        ax.set_ylabel("share of assignments (first MoE layer)")
        ax.legend(fontsize=6, ncol=2)
        save(fig, out_dir, "training_expert_load")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("-o", "--output", default=None, help="folder for the figures (default: next to the report)")
    a = ap.parse_args()
    out_dir = a.output or os.path.splitext(a.report)[0] + "_figures"
    os.makedirs(out_dir, exist_ok=True)
    try:
        f = h5py.File(a.report, "r")
    except OSError as e:
        print(f"plot_report: error: {a.report}: {e}", file=sys.stderr)
        return 2
    with f:
        if "geometry" in f:
            plot_geometry(f, out_dir)
        if "activations" in f:
            plot_activations(f, out_dir)
        if "train" in f:
            plot_training(f, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
