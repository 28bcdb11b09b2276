"""/landscape (`moescope landscape`): loss and accuracy along one or two directions, and sharpness.

Figures:
- landscape_1d (1-D grids): loss (solid, left axis) and accuracy (dashed, right axis), one colour per split;
- landscape_2d_<surface> (2-D grids): filled contours with labelled contour lines of every surface
  (<split>_loss, <split>_acc, <split>_ppl), the origin (the run's weights) as '+', the grid's best point
  (lowest loss or perplexity, highest accuracy) as a star. The report stores values[i, j] at
  (xcoordinates[i], ycoordinates[j]); matplotlib's contour wants Z[row = y, column = x] on
  meshgrid(x, y), so it is given values.T. Any nx, ny;
- landscape_sharpness (`--sharpness`): the mean loss increase against the radius with +-1 standard error bars,
  every direction's increase as a faint dot, the largest as an open marker; log x when the radii span two
  decades or more.
Options: --levels N contour levels, --vmax V clips 2-D losses above V (as loss-landscape's plot_2D.py --vmax).
"""
import re

import numpy as np
from matplotlib.ticker import MaxNLocator

from .common import SINGLE, ReportError, array, attr, color, is_group, scalar, spans_decades

KIND = "landscape"
DESCRIPTION = "/landscape: 1-D loss/accuracy curves, 2-D filled contours per surface, sharpness vs radius"

SURFACE = re.compile(r"(.+)_(loss|acc|ppl)")
WHAT = {"loss": "loss (cross-entropy, nats)", "acc": "accuracy (fraction correct)", "ppl": "perplexity"}
SPLIT_ORDER = {"train": 0, "valid": 1, "test": 2}

options = {"levels": 20, "vmax": None}


def applies(f):
    return is_group(f, "landscape") and "xcoordinates" in f["landscape"]


def surfaces(g, shape):
    """Names of the <split>_<loss|acc|ppl> datasets, split order train, valid, test, then by name."""
    names = []
    for k in g.keys():
        m = SURFACE.fullmatch(k)
        if m and not is_group(g, k):
            array(g, k, shape=shape)  # checks the shape against the coordinates
            names.append(k)
    return sorted(names, key=lambda n: (SPLIT_ORDER.get(SURFACE.fullmatch(n).group(1), 3), n))


def axis_label(g, which):
    kind = str(attr(g, f"{which}_direction_kind", "") or attr(g, "dirs", ""))
    norm = str(attr(g, f"{which}_direction_normalization", ""))
    if kind in ("difference", "interpolation"):
        return f"{which}: interpolation coefficient (0 = this run, 1 = other run)"
    if kind == "eigen" and "eigenvalues" in g:
        ev = array(g, "eigenvalues", ndim=1)
        k = 0 if which == "x" else 1
        if k < ev.size:
            return f"{which}: step along Hessian eigenvector {k + 1} ($\\lambda$ = {ev[k]:.3g})"
    detail = f"{kind} direction" if kind else "direction"
    if norm and norm != "none":
        detail += f", {norm}-normalised"
    return f"{which}: step along the {detail}"


def label(name):
    split, what = SURFACE.fullmatch(name).groups()
    return f"{split} " + {"loss": "loss", "acc": "accuracy", "ppl": "perplexity"}[what]


def plot_1d(g, out, x):
    names = surfaces(g, (x.size,))
    if not names:
        raise ReportError(f"'{g.name}' has no <split>_loss / _acc surfaces")
    splits = []
    for n in names:
        s = SURFACE.fullmatch(n).group(1)
        if s not in splits:
            splits.append(s)
    fig = out.figure(SINGLE, 2.7)
    ax = fig.subplots()
    ax2 = None
    handles = []
    for i, s in enumerate(splits):
        if f"{s}_loss" in names:
            (h,) = ax.plot(x, array(g, f"{s}_loss"), color=color(i), marker="o" if x.size <= 30 else None,
                           markersize=2.5, label=f"{s} loss")
            handles.append(h)
        if f"{s}_acc" in names:
            ax2 = ax2 or ax.twinx()
            (h,) = ax2.plot(x, array(g, f"{s}_acc"), color=color(i), linestyle="--", label=f"{s} accuracy")
            handles.append(h)
    ax.axvline(0, color="0.6", linewidth=0.5, linestyle=":")
    ax.set_xlabel(axis_label(g, "x"))
    ax.set_ylabel(WHAT["loss"])
    if ax2 is not None:
        ax2.set_ylabel(WHAT["acc"] + ", dashed")
        ax2.set_ylim(0, 1.02)
    ax.legend(handles=handles, loc="upper center", ncol=2)
    ax.set_title(f"Loss along the {attr(g, 'dirs', 'chosen')} direction")
    out.save(fig, "landscape_1d")


def plot_2d(g, out, x, y):
    names = surfaces(g, (x.size, y.size))
    if not names:
        raise ReportError(f"'{g.name}' has no <split>_loss / _acc surfaces")
    X, Y = np.meshgrid(x, y)  # indexing "xy": X[j, i] = x[i], Y[j, i] = y[j]
    levels = int(options["levels"])
    vmax = options["vmax"]
    for n in names:
        what = SURFACE.fullmatch(n).group(2)
        z = array(g, n)
        Z = np.ma.masked_invalid(z.T)  # Z[j, i] = values[i, j], the value at (x[i], y[j])
        if vmax is not None and what in ("loss", "ppl"):
            Z = np.ma.minimum(Z, vmax)
        fig = out.figure(SINGLE, 3.0)
        ax = fig.subplots()
        finite = Z.compressed()
        if finite.size and np.ptp(finite) > 0:
            lv = np.linspace(finite.min(), finite.max(), levels + 1)
            cmap = "viridis" if what != "acc" else "viridis_r"
            cf = ax.contourf(X, Y, Z, levels=lv, cmap=cmap)
            cs = ax.contour(X, Y, Z, levels=lv[::4], colors="k", linewidths=0.4)
            ax.clabel(cs, inline=True, fontsize=5, fmt="%.3g")
            cb = fig.colorbar(cf, ax=ax, label=WHAT[what])
            cb.set_ticks(MaxNLocator(6).tick_values(lv[0], lv[-1]))
            cb.ax.set_ylim(lv[0], lv[-1])
        else:  # a constant surface has no contour lines
            pm = ax.pcolormesh(X, Y, Z, shading="nearest", cmap="viridis")
            fig.colorbar(pm, ax=ax, label=WHAT[what])
        if finite.size:
            flat = np.ma.argmax(Z) if what == "acc" else np.ma.argmin(Z)
            j, i = np.unravel_index(flat, Z.shape)
            ax.plot([x[i]], [y[j]], marker="*", color="white", markeredgecolor="black", markersize=8,
                    linestyle="none", label="best grid point")
        ax.plot([0], [0], "k+", markersize=8, label="the run's weights")
        ax.set_xlabel(axis_label(g, "x"), fontsize=6.5)
        ax.set_ylabel(axis_label(g, "y"), fontsize=6.5)
        ax.set_title(label(n))
        ax.legend(loc="upper right", fontsize=5)
        out.save(fig, f"landscape_2d_{n}")


def plot_sharpness(g, out):
    s = g["sharpness"]
    r = array(s, "radius", ndim=1)
    mean = array(s, "mean_increase", length=r.size)
    se = array(s, "stderr_increase", length=r.size) if "stderr_increase" in s else np.full(r.size, np.nan)
    fig = out.figure(SINGLE, 2.5)
    ax = fig.subplots()
    if "increases" in s:
        inc = array(s, "increases", ndim=2)
        if inc.shape[0] != r.size:
            raise ReportError(f"'{s.name}/increases' has shape {inc.shape}, expected ({r.size}, M)")
        xs = np.repeat(r, inc.shape[1])
        ax.plot(xs, inc.reshape(-1), linestyle="none", marker=".", markersize=2.5, color=color(0), alpha=0.3,
                label=f"each of {inc.shape[1]} directions")
    if "max_increase" in s:
        ax.plot(r, array(s, "max_increase", length=r.size), linestyle="none", marker="o", markerfacecolor="none",
                color=color(3), label="largest")
    ax.errorbar(r, mean, yerr=np.where(np.isfinite(se), se, 0), color=color(0), marker="s", capsize=2.5,
                label="mean ± 1 s.e.")
    if spans_decades(r):
        ax.set_xscale("log")
    ax.axhline(0, color="0.5", linewidth=0.5)
    ax.set_xlabel("radius r (multiples of a filter-normalised direction)")
    ax.set_ylabel("loss increase L(w0 + r d) - L(w0) (nats)")
    base = scalar(s, "base_loss", float("nan"))
    ax.set_title("Sharpness" + (f" (L(w0) = {base:.4g})" if np.isfinite(base) else ""))
    ax.legend(loc="best")
    out.save(fig, "landscape_sharpness")


def plot(f, out):
    g = f["landscape"]
    x = array(g, "xcoordinates", ndim=1)
    if "ycoordinates" in g:
        plot_2d(g, out, x, array(g, "ycoordinates", ndim=1))
    else:
        plot_1d(g, out, x)
    if is_group(g, "sharpness"):
        plot_sharpness(g, out)
