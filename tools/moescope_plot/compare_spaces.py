"""/compare_spaces (`moescope compare-spaces`, `activations --geometry`): weight vs activation overlap.

Figures:
- weight_vs_activation: every expert pair of every layer (colour = layer), the least-squares line over all pairs
  and the pooled Pearson r and p (as stored in the report) in the legend;
- weight_vs_activation_layers: one panel per layer with its pairs, its own fitted line, and its Pearson r and
  p and Spearman rho (from the report) in the legend; pages of 12 panels;
- mso_weight_vs_activation (3 layers or more): each layer's weight MSO against its activation MSO, with the
  across-layer Pearson r and p from the report.
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from .common import (DOUBLE, SINGLE, array, child_groups, color, draw_fit, fmt_p, grid_shape, hide_unused, is_group,
                     layer_label, scalar)

KIND = "compare_spaces"
DESCRIPTION = "/compare_spaces: weight vs activation overlap per expert pair, per layer and pooled, with Pearson r, p"


def applies(f):
    return is_group(f, "compare_spaces") and len(child_groups(f["compare_spaces"])) > 0


def pairs(g):
    w = array(g, "weight_overlap", ndim=1)
    a = array(g, "activation_overlap", length=w.size)
    return w, a


def stat_text(r, p, rho=None):
    s = f"r = {r:+.3f}, {fmt_p(p)}" if np.isfinite(r) else "r undefined"
    if rho is not None and np.isfinite(rho):
        s += f", ρ = {rho:+.3f}"
    return s


def plot(f, out):
    c = f["compare_spaces"]
    keys = child_groups(c)
    layers = [(k, c[k]) for k in keys]
    data = [pairs(g) for _, g in layers]
    n = len(layers)

    # Pooled: all pairs, one colour per layer (a sequential map beyond 8 layers).
    fig = out.figure(SINGLE, 3.0)
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    for i, ((key, g), (w, a)) in enumerate(zip(layers, data)):
        col = color(i) if n <= 8 else cmap(Normalize(0, n - 1)(i))
        ax.scatter(w, a, s=8, color=col, alpha=0.8, linewidths=0, label=key if n <= 8 else None)
    allw = np.concatenate([w for w, _ in data]) if data else np.array([])
    alla = np.concatenate([a for _, a in data]) if data else np.array([])
    r = scalar(c, "pearson_r", float("nan"))
    p = scalar(c, "pearson_p", float("nan"))
    line = draw_fit(ax, allw, alla, color="black", linewidth=1.0)
    if line is not None:
        line.set_label(f"pooled fit ({allw.size} pairs): {stat_text(r, p)}")
    if n > 8:
        sm = ScalarMappable(Normalize(0, n - 1), cmap)
        fig.colorbar(sm, ax=ax, label="layer index (report order)")
    ax.set_xlabel("weight overlap (cosine, expert pair)")
    ax.set_ylabel("activation overlap (mean cosine)")
    ax.set_title("Weight vs activation overlap, all layers")
    ax.legend(loc="best", fontsize=5.5)
    out.save(fig, "weight_vs_activation")

    # One panel per layer.
    per_page = 12
    for p0 in range(0, n, per_page):
        page = list(zip(layers, data))[p0:p0 + per_page]
        m = len(page)
        rows, cols = grid_shape(m, 3)
        fig = out.figure(SINGLE if m == 1 else DOUBLE, 0.35 + rows * (2.6 if m == 1 else 2.0))
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, (ax, ((key, g), (w, a))) in enumerate(zip(axes.flat, page)):
            ax.scatter(w, a, s=9, color=color(0), linewidths=0, alpha=0.85, label=f"{w.size} pairs")
            line = draw_fit(ax, w, a, color=color(3), linewidth=1.0)
            text = stat_text(scalar(g, "pearson_r", float("nan")), scalar(g, "pearson_p", float("nan")),
                             scalar(g, "spearman_rho", float("nan")))
            if line is not None:
                line.set_label(f"fit: {text}")
            else:
                ax.plot([], [], " ", label=text)
            ax.set_title(key, fontsize=7)
            ax.set_xlabel("weight overlap (cosine)")
            if i % cols == 0:
                ax.set_ylabel("activation overlap")
            ax.legend(loc="best", fontsize=5)
        hide_unused(axes, m)
        pages = (n + per_page - 1) // per_page
        page_note = f" ({p0 // per_page + 1}/{pages})" if pages > 1 else ""
        fig.suptitle("Weight vs activation overlap per layer" + page_note)
        out.save(fig, "weight_vs_activation_layers" + (f"_p{p0 // per_page + 1}" if p0 else ""))

    # Layer MSOs against each other.
    if n >= 3:
        wm = np.array([scalar(g, "weight_mso", float("nan")) for _, g in layers])
        am = np.array([scalar(g, "activation_mso", float("nan")) for _, g in layers])
        fig = out.figure(SINGLE, 2.8)
        ax = fig.subplots()
        ax.scatter(wm, am, s=14, color=color(0), zorder=3)
        for (key, g), x, y in zip(layers, wm, am):
            if n <= 16:
                ax.annotate(layer_label(g, key), (x, y), textcoords="offset points", xytext=(3, 2), fontsize=5)
        line = draw_fit(ax, wm, am, color=color(3), linewidth=1.0)
        nan = float("nan")
        text = stat_text(scalar(c, "layer_mso_pearson_r", nan), scalar(c, "layer_mso_pearson_p", nan),
                         scalar(c, "layer_mso_spearman_rho", nan))
        if line is not None:
            line.set_label(f"{n} layers: {text}")
            ax.legend(loc="best")
        ax.set_xlabel("weight MSO")
        ax.set_ylabel("activation MSO")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
        ax.set_title("Layer MSO: weights vs activations")
        out.save(fig, "mso_weight_vs_activation")
