"""/sweep (`moescope sweep --collect`): every metric against the strength axis, and metric pairs over points.

Schema read (any metric names):
  /sweep                    attrs spec (JSON), axes (JSON list of axis keys), strength_axis (may be ""),
                            seed_axis ("seed" or "")
  /sweep/point, /status     [N] strings
  /sweep/coords/<axis key>  [N] float64 (numeric axis) or strings (categorical)
  /sweep/metrics/<name>     [N] float64, NaN where missing; attrs label, source

Figures:
- sweep_<metric> for every metric (a column <m>_stderr is drawn as error bars on <m>, not as a metric of its
  own): the metric against the strength axis, one panel per value of the categorical axes, one line per value
  of any other numeric axis. Points that differ only in the seed axis are pooled: the line is their mean and the
  error bars +-1 sample standard deviation (ddof = 1) over seeds, with each seed's value as a faint dot (carrying
  its own +-1 s.e. bar when <m>_stderr exists). With one seed per point the error bars are <m>_stderr when it
  exists. NaN (missing, failed points) is left out; the legend says over how many seeds. A metric with the same
  value at every point (e.g. steps) gets no figure (it is in sweep.csv).
  x scale: linear, unless the positive strengths span two decades or more; then log, or, when 0 (or a negative
  value) is among the strengths, symlog with its linear part [0, smallest positive strength] one decade wide,
  so 0 sits one decade left of the smallest non-zero strength on an otherwise logarithmic axis (a broken axis
  would need two axes per panel; symlog keeps one axis and shared y). Ticks at the strengths when ten or fewer.
- With no strength axis (categorical-only sweeps) sweep_<metric> is a bar chart: one group of bars per value of
  the first varying axis, one bar per value of the others, mean ± s.d. over seeds.
- sweep_<x>_vs_<y>: metric y against metric x over all points (each seed its own point), colour = strength,
  marker = categorical value, the least-squares line and Pearson r, p (Student t, n - 2 df, as scipy) over the
  points. By default weight MSO (mso_mean) against activation overlap (activation_overlap); --sweep-pair X,Y
  chooses others.
"""
import json

import h5py
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm

from .common import (DOUBLE, LINESTYLES, MARKERS, SINGLE, ReportError, array, attr, color, draw_fit, fmt_p,
                     grid_shape, group, hide_unused, is_group, pearson, sanitise, spans_decades, strings)

KIND = "sweep"
DESCRIPTION = ("/sweep: each metric vs the strength axis (mean +- s.d. over seeds, a panel per categorical value), "
               "weight MSO vs activation overlap over points")

options = {"pairs": []}  # [(x metric, y metric)]; empty: the default pair when both exist

DEFAULT_X = ["mso_mean", "weight_mso", "mso"]
DEFAULT_Y = ["activation_overlap", "activation_mso", "activation_mean_overlap"]


def applies(f):
    return is_group(f, "sweep") and is_group(f["sweep"], "metrics") and len(f["sweep"]["metrics"].keys()) > 0


class Table:
    """The sweep table, validated: coordinates per axis (float array or list of str), metrics, attributes."""

    def __init__(self, g):
        self.g = g
        self.n = None
        if "point" in g:
            self.points = strings(g, "point")
            self.n = len(self.points)
        self.metrics = {}
        self.labels = {}
        mg = g["metrics"]
        for name in mg.keys():
            v = array(mg, name, ndim=1)
            if self.n is None:
                self.n = v.size
            if v.size != self.n:
                raise ReportError(f"'{mg[name].name}' has {v.size} entries, /sweep/point {self.n}")
            self.metrics[name] = v
            self.labels[name] = str(attr(mg[name], "label", "")) or name
        self.status = strings(g, "status", self.n) if "status" in g else ["complete"] * self.n
        self.coords = {}
        cg = group(g, "coords") if "coords" in g else {}
        for key in cg.keys():
            ds = cg[key]
            if isinstance(ds, h5py.Dataset) and h5py.check_string_dtype(ds.dtype) is not None:
                self.coords[key] = strings(cg, key, self.n)
            else:
                self.coords[key] = array(cg, key, length=self.n)
        axes_text = attr(g, "axes", "")
        if axes_text:
            try:
                self.axes = [str(a) for a in json.loads(axes_text)]
            except (ValueError, TypeError) as e:
                raise ReportError(f"'/sweep' attribute axes is not a JSON list ({e})") from None
        else:
            self.axes = sorted(self.coords)
        for a in self.axes:
            if a not in self.coords:
                raise ReportError(f"'/sweep/coords/{a}' is missing (axis listed in /sweep@axes)")
        self.strength = str(attr(g, "strength_axis", ""))
        self.seed = str(attr(g, "seed_axis", ""))
        if self.strength and self.strength not in self.coords:
            raise ReportError(f"'/sweep/coords/{self.strength}' is missing (the strength_axis)")
        if self.strength and self.categorical(self.strength):
            raise ReportError(f"'/sweep/coords/{self.strength}': the strength axis must be numeric")
        others = [a for a in self.axes if a not in (self.strength, self.seed) and len(self.values(a)) > 1]
        self.panel_axes = [a for a in others if self.categorical(a)]
        self.line_axes = [a for a in others if not self.categorical(a)]

    def categorical(self, key):
        return isinstance(self.coords[key], list)

    def values(self, key):
        """Distinct values of an axis: numeric sorted, categorical in order of first appearance."""
        c = self.coords[key]
        if isinstance(c, list):
            return list(dict.fromkeys(c))
        u = np.unique(c[np.isfinite(c)])
        return [float(v) for v in u]

    def combos(self, keys):
        """Distinct value tuples of several axes, in order, and each point's index into them."""
        if not keys:
            return [()], np.zeros(self.n, dtype=int)
        tuples = [tuple(self.coords[k][i] if self.categorical(k) else float(self.coords[k][i]) for k in keys)
                  for i in range(self.n)]
        order = {k: {v: j for j, v in enumerate(self.values(k))} for k in keys}
        distinct = sorted(set(tuples), key=lambda t: tuple(order[k].get(v, 1e9) for k, v in zip(keys, t)))
        index = {t: j for j, t in enumerate(distinct)}
        return distinct, np.array([index[t] for t in tuples], dtype=int)

    def plotted_metrics(self):
        names = sorted(self.metrics)
        out = []
        for m in names:
            if m.endswith("_stderr") and m[: -len("_stderr")] in self.metrics:
                continue
            v = self.metrics[m][np.isfinite(self.metrics[m])]
            if v.size and (v.size == 1 or np.any(v != v[0])):  # a column equal at every point (steps) says nothing
                out.append(m)
        return out

    def stderr(self, m):
        return self.metrics.get(m + "_stderr")


def short(key):
    return key.rsplit(".", 1)[-1]


def axis_label(text, width=28):
    """A long metric name (landscape_1d.surface_test_max_increase) broken after a '.' or '_' so that it fits
    beside an axis of a small figure instead of running off its edges."""
    if len(text) <= width:
        return text
    lines, rest = [], text
    while len(rest) > width:
        cut = max(rest.rfind(".", 0, width + 1), rest.rfind("_", 0, width + 1))
        if cut <= 0:
            break
        lines.append(rest[:cut + 1])
        rest = rest[cut + 1:]
    return "\n".join(lines + [rest])


def legend_above_data(ax, rows):
    """Room above the data (its error bars included) for a legend of `rows` lines at the top of the axes, so the
    legend never covers a bar or a point; returns the loc to give it."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + (0.1 + 0.09 * rows) * (hi - lo))
    return "upper left"


def combo_text(keys, combo):
    return ", ".join(f"{short(k)} = {v if isinstance(v, str) else f'{v:g}'}" for k, v in zip(keys, combo))


def set_strength_scale(ax, values):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    pos = v[v > 0]
    if spans_decades(pos):
        if np.any(v <= 0):
            ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=1.0)
        else:
            ax.set_xscale("log")
    u = np.unique(v)
    if 0 < u.size <= 10:
        ax.set_xticks(u)
        ax.set_xticklabels([f"{x:g}" for x in u], rotation=45 if u.size > 5 else 0, fontsize=6)
        ax.minorticks_off()


def aggregate(vals, ses):
    """Mean, sample s.d. (ddof 1, NaN for one value) and count of the finite values; the single s.e. when one."""
    ok = np.isfinite(vals)
    v = vals[ok]
    if v.size == 0:
        return np.nan, np.nan, 0, np.nan
    sd = float(np.std(v, ddof=1)) if v.size >= 2 else np.nan
    se = float(ses[ok][0]) if ses is not None and v.size == 1 else np.nan
    return float(v.mean()), sd, int(v.size), se


def plot_metric_vs_strength(t, out, m):
    y = t.metrics[m]
    se_col = t.stderr(m)
    s = t.coords[t.strength]
    panels, pidx = t.combos(t.panel_axes)
    lines, lidx = t.combos(t.line_axes)
    P = len(panels)
    rows, cols = grid_shape(P, 3)
    fig = out.figure(SINGLE if P == 1 else DOUBLE, 0.45 + rows * (2.3 if P == 1 else 1.9))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    max_seeds = 0
    for pi, (ax, pc) in enumerate(zip(axes.flat, panels)):
        for li, lc in enumerate(lines):
            sel = (pidx == pi) & (lidx == li) & np.isfinite(s)
            xs = np.unique(s[sel])
            stats = [aggregate(y[sel & (s == x)], se_col[sel & (s == x)] if se_col is not None else None)
                     for x in xs]
            mean = np.array([a[0] for a in stats])
            sd = np.array([a[1] for a in stats])
            cnt = np.array([a[2] for a in stats])
            se1 = np.array([a[3] for a in stats])
            keep = cnt > 0
            if not np.any(keep):
                continue
            max_seeds = max(max_seeds, int(cnt.max()))
            col, mk = color(li), MARKERS[li % len(MARKERS)]
            if cnt.max() >= 2:
                yerr = np.where(np.isfinite(sd), sd, 0)
                pts = sel & np.isfinite(y)
                yerr_pts = None if se_col is None else np.where(np.isfinite(se_col[pts]), se_col[pts], 0)
                ax.errorbar(s[pts], y[pts], yerr=yerr_pts, linestyle="none", marker=".", markersize=2.5,
                            color=col, alpha=0.35, elinewidth=0.5)
            else:
                yerr = np.where(np.isfinite(se1), se1, 0) if se_col is not None else None
            ax.errorbar(xs[keep], mean[keep], yerr=None if yerr is None else yerr[keep], color=col, marker=mk,
                        linestyle=LINESTYLES[(li // len(MARKERS)) % len(LINESTYLES)], capsize=2, elinewidth=0.8,
                        label=combo_text(t.line_axes, lc) if t.line_axes else None)
        set_strength_scale(ax, s)
        if t.panel_axes:
            ax.set_title(combo_text(t.panel_axes, pc), fontsize=7)
        ax.set_xlabel(f"{t.strength} (strength)", fontsize=6.5)
        if pi % cols == 0:
            ax.set_ylabel(axis_label(t.labels[m]))
    hide_unused(axes, P)
    if max_seeds >= 2:
        note = f"mean ± s.d. over seeds (up to {max_seeds})"
    elif se_col is not None:
        note = "bars: ±1 s.e. of the estimate"
    else:
        note = "one run per point"
    failed = sum(1 for st in t.status if st == "failed")
    if failed:
        note += f"; {failed} failed point{'s' if failed > 1 else ''} left out"
    first = axes.flat[0]
    if not t.line_axes:
        first.plot([], [], " ", label=note)
    handles, labels = first.get_legend_handles_labels()
    kw = {"title": note} if t.line_axes else {"handlelength": 0}
    if P < rows * cols:  # a free panel: the legend goes there, off the data
        spare = axes.flat[P]
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(handles, labels, loc="center", **kw)
    else:
        first.legend(loc=legend_above_data(first, len(labels) + bool(t.line_axes)), **kw)
    fig.suptitle(f"{t.labels[m]} vs {short(t.strength)}")
    out.save(fig, f"sweep_{m}")


def plot_metric_bars(t, out, m):
    y = t.metrics[m]
    se_col = t.stderr(m)
    keys = [a for a in t.axes if a != t.seed and len(t.values(a)) > 1]
    groups, gidx = t.combos(keys[:1])
    bars, bidx = t.combos(keys[1:])
    G, B = len(groups), len(bars)
    fig = out.figure(SINGLE if G * B <= 8 else DOUBLE, 2.6)
    ax = fig.subplots()
    width = 0.8 / B
    max_seeds = 0
    for bi, bc in enumerate(bars):
        xs, means, errs = [], [], []
        for gi in range(G):
            sel = (gidx == gi) & (bidx == bi)
            mean, sd, cnt, se1 = aggregate(y[sel], se_col[sel] if se_col is not None else None)
            if cnt == 0:
                continue
            max_seeds = max(max_seeds, cnt)
            xs.append(gi + (bi - (B - 1) / 2) * width)
            means.append(mean)
            errs.append(sd if cnt >= 2 else se1)
        errs = np.array(errs, dtype=float)
        ax.bar(xs, means, width=width * 0.9, yerr=np.where(np.isfinite(errs), errs, 0), capsize=2, color=color(bi),
               label=combo_text(keys[1:], bc) if keys[1:] else None, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(G))
    ax.set_xticklabels([combo_text(keys[:1], gc) if keys else "all points" for gc in groups],
                       rotation=30 if G > 3 else 0, ha="right" if G > 3 else "center", fontsize=6)
    ax.set_xlabel(keys[0] if keys else "")
    ax.set_ylabel(axis_label(t.labels[m]))
    note = (f"mean ± s.d. over seeds (up to {max_seeds})" if max_seeds >= 2
            else "bars: ±1 s.e. of the estimate" if se_col is not None else "one run per point")
    if keys[1:]:
        ncol = min(B, 4)
        ax.legend(loc=legend_above_data(ax, 1 + -(-B // ncol)), title=note, ncol=ncol)
    else:
        ax.plot([], [], " ", label=note)
        ax.legend(loc=legend_above_data(ax, 1), handlelength=0)
    ax.set_title(t.labels[m])
    out.save(fig, f"sweep_{m}")


def default_pairs(t):
    def pick(cands, prefix):
        for c in cands:
            if c in t.metrics:
                return c
        for c in sorted(t.metrics):
            if c.startswith(prefix) and not c.endswith("_stderr"):
                return c
        return None

    x, y = pick(DEFAULT_X, "mso"), pick(DEFAULT_Y, "activation_")
    return [(x, y)] if x and y else []


def plot_pair(t, out, xm, ym):
    for m in (xm, ym):
        if m not in t.metrics:
            raise ReportError(f"'/sweep/metrics/{m}' is missing (--sweep-pair)")
    x, y = t.metrics[xm], t.metrics[ym]
    ok = np.isfinite(x) & np.isfinite(y)
    if not np.any(ok):
        return
    fig = out.figure(SINGLE, 3.0)
    ax = fig.subplots()
    panels, pidx = t.combos(t.panel_axes)
    if t.strength:
        sv = np.array(t.values(t.strength))
        rank = np.searchsorted(sv, t.coords[t.strength])
        cmap = colormaps["viridis"].resampled(max(len(sv), 1))
        norm = BoundaryNorm(np.arange(len(sv) + 1) - 0.5, cmap.N)
    for pi, pc in enumerate(panels):
        sel = ok & (pidx == pi)
        if not np.any(sel):
            continue
        kw = {"marker": MARKERS[pi % len(MARKERS)], "s": 16, "edgecolors": "black", "linewidths": 0.3,
              "label": combo_text(t.panel_axes, pc) if t.panel_axes else None}
        if t.strength:
            ax.scatter(x[sel], y[sel], c=rank[sel], cmap=cmap, norm=norm, **kw)
        else:
            ax.scatter(x[sel], y[sel], color=color(pi), **kw)
    r, p, n = pearson(x, y)
    line = draw_fit(ax, x[ok], y[ok], color="black", linewidth=1.0)
    text = f"{n} points: Pearson r = {r:+.3f}, {fmt_p(p)}" if np.isfinite(r) else f"{n} points: r undefined"
    if line is not None:
        line.set_label(text)
    else:
        ax.plot([], [], " ", label=text)
    if t.strength:
        cb = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=short(t.strength))
        cb.set_ticks(range(len(sv)))
        cb.set_ticklabels([f"{v:g}" for v in sv])
        cb.ax.tick_params(labelsize=5.5)
    ax.set_xlabel(t.labels[xm])
    ax.set_ylabel(t.labels[ym])
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
    ax.set_title(f"{t.labels[ym]} vs {t.labels[xm]}", fontsize=7)
    leg = ax.legend(loc="best", fontsize=5.5)
    if t.strength:  # marker keys in grey: colour means strength, not the first point's strength
        for h in getattr(leg, "legend_handles", None) or getattr(leg, "legendHandles", []):
            if hasattr(h, "set_array") and not hasattr(h, "get_xdata"):
                h.set_array(None)  # else the colour map paints over the face colour
                h.set_facecolor("0.6")
    out.save(fig, sanitise(f"sweep_{xm}_vs_{ym}"))


def plot(f, out):
    t = Table(f["sweep"])
    ms = t.plotted_metrics()
    if not ms:
        raise ReportError("'/sweep/metrics' has no metric with a finite value")
    for m in ms:
        if t.strength:
            plot_metric_vs_strength(t, out, m)
        else:
            plot_metric_bars(t, out, m)
    for xm, ym in options["pairs"] or default_pairs(t):
        plot_pair(t, out, xm, ym)
