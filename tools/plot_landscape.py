#!/usr/bin/python3
"""Figures of a `moescope landscape` report (PNG and PDF): 1-D curves or 2-D contours of every surface.

Usage: /usr/bin/python3 tools/plot_landscape.py REPORT.h5 [-o DIR] [--levels N] [--vmax V]
Reads /landscape/{xcoordinates, ycoordinates?, <split>_loss, <split>_acc, ...}, where 2-D values[i, j] lie at
(xcoordinates[i], ycoordinates[j]) (the report says so in its index_order attribute). Prints each figure's path.
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

from plot_report import save  # noqa: E402  (tools/ is on sys.path when this script runs)


def surfaces(g):
    """Names of the datasets holding values on the grid, sorted."""
    skip = {"xcoordinates", "ycoordinates"}
    return sorted(k for k in g.keys() if k not in skip and isinstance(g[k], h5py.Dataset))


def label(name):
    split, _, what = name.rpartition("_")
    return f"{split} " + {"loss": "loss", "acc": "accuracy", "ppl": "perplexity"}.get(what, what)


def plot_1d(g, out_dir, names):
    x = np.asarray(g["xcoordinates"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    loss = [n for n in names if n.endswith("_loss")]
    for n in loss:
        ax.plot(x, np.asarray(g[n]), label=label(n))
    ax.set_xlabel("x (direction coordinate)")
    ax.set_ylabel("loss")
    others = [n for n in names if n.endswith("_acc")]
    if others:
        ax2 = ax.twinx()
        for n in others:
            ax2.plot(x, np.asarray(g[n]), linestyle="--", label=label(n))
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Loss along {g.attrs.get('dirs', 'the direction')}")
    save(fig, out_dir, "landscape_1d")


def plot_2d(g, out_dir, names, levels, vmax):
    x = np.asarray(g["xcoordinates"])
    y = np.asarray(g["ycoordinates"])
    for n in names:
        z = np.asarray(g[n])
        if z.shape != (len(x), len(y)):
            raise ValueError(f"{n} has shape {z.shape}, expected {(len(x), len(y))}")
        fig, ax = plt.subplots(figsize=(4.5, 4))
        # values[i, j] at (x[i], y[j]): contour wants Z[row = y, column = x], the transpose
        zz = z.T if vmax is None or not n.endswith("_loss") else np.minimum(z.T, vmax)
        finite = zz[np.isfinite(zz)]
        if finite.size and np.ptp(finite) > 0:
            cs = ax.contour(x, y, zz, levels=levels, cmap="viridis")
            ax.clabel(cs, inline=True, fontsize=7)
        else:  # a constant surface has no contour lines
            ax.pcolormesh(x, y, zz, shading="nearest", cmap="viridis")
        ax.plot([0], [0], "k+", markersize=8)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(label(n))
        save(fig, out_dir, f"landscape_2d_{n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("-o", "--output", default=None, help="folder for the figures (default: next to the report)")
    ap.add_argument("--levels", type=int, default=20, help="contour levels")
    ap.add_argument("--vmax", type=float, default=None, help="clip losses above this value")
    a = ap.parse_args()
    out_dir = a.output or os.path.splitext(a.report)[0] + "_figures"
    try:
        f = h5py.File(a.report, "r")
    except OSError as e:
        print(f"plot_landscape: error: {a.report}: {e}", file=sys.stderr)
        return 2
    with f:
        if "landscape" not in f:
            print(f"plot_landscape: error: {a.report}: no /landscape group", file=sys.stderr)
            return 2
        g = f["landscape"]
        os.makedirs(out_dir, exist_ok=True)
        names = surfaces(g)
        if "ycoordinates" in g:
            plot_2d(g, out_dir, names, a.levels, a.vmax)
        else:
            plot_1d(g, out_dir, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
