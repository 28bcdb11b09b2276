"""/activations (`moescope activations`): activation overlap per layer, routing load and importance per expert.

Figures: activation_overlap (mean per-token cosine of expert outputs on the same tokens, per layer, RdBu_r from
-1 to 1), router_load (fraction of router assignments per expert) and router_importance (mean router
probability per expert). Load and importance sum to 1 over a layer's experts, so a dashed line marks the
uniform share 1/E. Up to 8 layers get one bar panel each; more layers get one heat map (layer x expert) of the
share relative to 1/E, on a diverging scale centred at 1.
"""
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from .common import (DOUBLE, ReportError, SINGLE, array, color, expert_ticks, grid_shape, has_layers, heatmap_grid,
                     hide_unused, layer_groups, layer_label, scalar, square)

KIND = "activations"
DESCRIPTION = "/activations: activation overlap heat map per layer, router load and importance per expert"


def applies(f):
    return has_layers(f, "activations")


def layers(f):
    return layer_groups(f, "activations")


def overlap(g):
    return square(g, "overlap")


def per_expert(g, name):
    E = overlap(g).shape[0]
    return array(g, name, length=E)


def shares(out, ls, name, what, ylabel, figname):
    n = len(ls)
    if n <= 8:
        rows, cols = grid_shape(n, 4)
        width = SINGLE if n == 1 else DOUBLE
        fig = out.figure(width, 0.3 + rows * (2.2 if n == 1 else 1.7))
        axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
        for i, (ax, (key, g)) in enumerate(zip(axes.flat, ls)):
            v = per_expert(g, name)
            E = v.size
            ax.bar(np.arange(E), v, width=0.75, color=color(0))
            ax.axhline(1.0 / E, color=color(3), linestyle="--", linewidth=0.9, label="uniform 1/E")
            entropy = scalar(g, "router_entropy", float("nan"))
            extra = f", H {entropy:.3g} nats (max {np.log(E):.3g})" if np.isfinite(entropy) else ""
            ax.set_title(f"{key}{extra}", fontsize=6.5)
            expert_ticks(ax, E, "x")
            ax.set_xlabel("expert")
            if i % cols == 0:
                ax.set_ylabel(ylabel)
            if i == 0:
                ax.legend(loc="upper right")
        hide_unused(axes, n)
    else:
        E = per_expert(ls[0][1], name).size
        for key, g in ls:
            if per_expert(g, name).size != E:
                raise ReportError(f"'{g.name}/{name}': layers have different expert counts")
        m = np.stack([per_expert(g, name) * E for _, g in ls])
        fig = out.figure(DOUBLE, min(9.0, 1.0 + 0.12 * n))
        ax = fig.subplots()
        vmax = max(2.0, float(np.nanmax(m)))
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=vmax),
                       interpolation="nearest")
        ax.set_yticks(range(n))
        ax.set_yticklabels([layer_label(g, k) for k, g in ls], fontsize=5)
        expert_ticks(ax, E, "x")
        ax.set_xlabel("expert")
        ax.set_ylabel("MoE layer")
        fig.colorbar(im, ax=ax, label=f"{what} x E (1 = uniform)")
    fig.suptitle(f"Router {what} per expert")
    out.save(fig, figname)


def plot(f, out):
    ls = layers(f)
    heatmap_grid(
        out, ls, overlap,
        lambda key, g, n: f"{key}: act. MSO {scalar(g, 'mso'):.3g}" if n <= 8 else layer_label(g, key),
        "mean cosine of expert outputs (same tokens)", "activation_overlap", "Expert activation overlap")
    shares(out, ls, "load", "load", "fraction of assignments", "router_load")
    if all("importance" in g for _, g in ls):
        shares(out, ls, "importance", "importance", "mean router probability", "router_importance")
