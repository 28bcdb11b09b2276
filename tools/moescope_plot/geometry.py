"""/geometry (`moescope geometry`, `activations --geometry`): expert weight overlap per layer and MSO per layer.

Figures: geometry_overlap (cosine overlap heat map per layer, RdBu_r from -1 to 1), geometry_mso (bar chart of
the mean squared overlap per layer, with the 1/D value of independent random experts marked).
"""
import numpy as np

from .common import (DOUBLE, SINGLE, attr, color, has_layers, heatmap_grid, layer_groups, layer_label, scalar,
                     square)

KIND = "geometry"
DESCRIPTION = "/geometry: expert weight overlap heat map per layer, weight MSO per layer"


def applies(f):
    return has_layers(f, "geometry")


def layers(f):
    return layer_groups(f, "geometry")


def overlap(g):
    return square(g, "overlap")


def plot(f, out):
    ls = layers(f)
    heatmap_grid(
        out, ls, overlap,
        lambda key, g, n: f"{key}: MSO {scalar(g, 'mso'):.3g}" if n <= 8 else layer_label(g, key),
        "cosine overlap of expert weights", "geometry_overlap", "Expert weight overlap $\\langle u_i, u_j\\rangle$")

    n = len(ls)
    mso = np.array([scalar(g, "mso") for _, g in ls])
    dims = np.array([float(attr(g, "dim", float("nan"))) for _, g in ls])
    fig = out.figure(SINGLE if n <= 16 else DOUBLE, 2.5)
    ax = fig.subplots()
    x = np.arange(n)
    ax.bar(x, mso, color=color(0), width=0.7, label="trained weights" if n else None)
    baseline = np.where(dims > 0, 1.0 / dims, np.nan)
    if np.any(np.isfinite(baseline)):
        ax.plot(x, baseline, linestyle="none", marker="_", markersize=12, color=color(3),
                label="1/D (independent random experts)")
    ax.set_xticks(x)
    labels = [layer_label(g, k) for k, g in ls]
    ax.set_xticklabels(labels, rotation=0 if n <= 12 and max(len(s) for s in labels) <= 4 else 60,
                       ha="center" if n <= 12 and max(len(s) for s in labels) <= 4 else "right", fontsize=6)
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("weight MSO")
    pad = max(0.0, (4 - n) / 2)
    ax.set_xlim(-0.6 - pad, n - 0.4 + pad)
    vals = np.concatenate([mso, baseline[np.isfinite(baseline)]])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size >= 2 and vals.max() / vals.min() >= 100:
        ax.set_yscale("log")
        ax.set_ylim(top=vals.max() * 20)
    elif vals.size:
        ax.set_ylim(0, vals.max() * 1.45)
    ax.legend(loc="upper center", ncol=2, fontsize=5.5)
    ax.set_title("Mean squared overlap of expert weights ($i \\neq j$)")
    out.save(fig, "geometry_mso")
