"""/correlation (`moescope correlate -o`): x against y with the least-squares line.

Figure correlation: the points, the fitted line, and in the legend Pearson r with its two-sided p-value and
percentile bootstrap interval, and Spearman rho with its p-value and interval, all as stored in the report.
Axis labels are the report's x_path and y_path attributes.
"""
import re

import numpy as np

from .common import SINGLE, array, attr, color, draw_fit, fmt_p, is_group, scalar

KIND = "correlation"
DESCRIPTION = "/correlation: x vs y scatter with fitted line, Pearson r, p and bootstrap interval"


def applies(f):
    return is_group(f, "correlation") and "x" in f["correlation"] and "y" in f["correlation"]


def level_text(g):
    m = re.search(r"level\s+([0-9.]+)", str(attr(g, "ci", "")))
    return f"{float(m.group(1)) * 100:g}% bootstrap CI" if m else "bootstrap CI"


def plot(f, out):
    g = f["correlation"]
    x = array(g, "x", ndim=1)
    y = array(g, "y", length=x.size)
    r, p = scalar(g, "pearson_r", float("nan")), scalar(g, "pearson_p", float("nan"))
    lo, hi = scalar(g, "ci_low", float("nan")), scalar(g, "ci_high", float("nan"))
    rho, rp = scalar(g, "spearman_rho", float("nan")), scalar(g, "spearman_p", float("nan"))
    slo, shi = scalar(g, "spearman_ci_low", float("nan")), scalar(g, "spearman_ci_high", float("nan"))
    ci = level_text(g)

    fig = out.figure(SINGLE, 2.9)
    ax = fig.subplots()
    ax.scatter(x, y, s=14, color=color(0), zorder=3, label=f"n = {int(np.sum(np.isfinite(x) & np.isfinite(y)))}")
    line = draw_fit(ax, x, y, color=color(3), linewidth=1.0, label="least-squares fit")
    text = f"Pearson r = {r:+.3f}, {fmt_p(p)}"
    if np.isfinite(lo) and np.isfinite(hi):
        text += f"\n  {ci} [{lo:+.3f}, {hi:+.3f}]"
    ax.plot([], [], " ", label=text)
    if np.isfinite(rho):
        stext = f"Spearman ρ = {rho:+.3f}, {fmt_p(rp)}"
        if np.isfinite(slo) and np.isfinite(shi):
            stext += f"\n  {ci} [{slo:+.3f}, {shi:+.3f}]"
        ax.plot([], [], " ", label=stext)
    del line
    ax.set_xlabel(str(attr(g, "x_path", "x")) or "x")
    ax.set_ylabel(str(attr(g, "y_path", "y")) or "y")
    ax.set_title("Correlation across reports")
    ax.legend(loc="best", fontsize=5.5)
    out.save(fig, "correlation")
