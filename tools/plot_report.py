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
    return 0


if __name__ == "__main__":
    sys.exit(main())
