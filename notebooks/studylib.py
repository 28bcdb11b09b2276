"""What the seed-study notebooks share: reading a sweep's table (DIR/sweep.h5, written by `moescope sweep`), its
settings (the points that differ only in the seed) with mean and sample standard deviation over seeds, the change
against strength 0, Pearson correlations with scipy's two-sided p-value, a point's own reports, and tables that put
our numbers next to a paper's.

Only h5py, numpy and matplotlib (Debian's python3-h5py, python3-numpy, python3-matplotlib) and moescope's own figure
package (tools/moescope_plot, for its tested Pearson p-value) are used.

sweep.h5 as moescope writes it:
  /sweep                    attrs spec (the spec as JSON), axes (JSON list of axis keys), strength_axis, seed_axis
  /sweep/point, /status     [N] strings (status: complete, failed, partial)
  /sweep/coords/<axis key>  [N] float64 (numeric axis) or strings
  /sweep/metrics/<name>     [N] float64, NaN where a point lacks the value
"""
import json
import math
import os
import sys

import h5py
import numpy as np

NOTEBOOKS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(NOTEBOOKS)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from moescope_plot.common import pearson  # noqa: E402  (scipy.stats.pearsonr's r and two-sided p)


def sweep_file(variable, default):
    """The sweep.h5 a notebook reads: $variable when set, else `default` (relative to the repository root).
    A folder stands for the sweep.h5 inside it."""
    path = os.environ.get(variable) or default
    if not os.path.isabs(path):
        path = os.path.join(ROOT, path)
    if os.path.isdir(path):
        path = os.path.join(path, "sweep.h5")
    return path


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def value_text(v):
    """An axis value as the table prints it: integers without a fraction, others in their shortest form."""
    if isinstance(v, str):
        return v
    v = float(v)
    if math.isnan(v):
        return "nan"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class Sweep:
    """One sweep's table. `coords[key]` is a float array (numeric axis) or a list of strings; `metrics[name]` a
    float array with NaN where missing."""

    def __init__(self, path):
        self.path = path
        self.dir = os.path.dirname(os.path.abspath(path))
        with h5py.File(path, "r") as f:
            if "sweep" not in f or "point" not in f["sweep"]:
                raise ValueError(f"{path}: no /sweep table (made by `moescope sweep`)")
            g = f["sweep"]
            self.points = [_text(x) for x in g["point"][()]]
            self.status = [_text(x) for x in g["status"][()]]
            self.spec = json.loads(_text(g.attrs.get("spec", "{}")) or "{}")
            self.axes = json.loads(_text(g.attrs.get("axes", "[]")) or "[]")
            self.strength = _text(g.attrs.get("strength_axis", ""))
            self.seed = _text(g.attrs.get("seed_axis", ""))
            self.coords = {}
            for key in self.axes:
                ds = g["coords"][key]
                if h5py.check_string_dtype(ds.dtype) is not None:
                    self.coords[key] = [_text(x) for x in ds[()]]
                else:
                    self.coords[key] = np.asarray(ds[()], dtype=float)
            self.metrics = {name: np.asarray(g["metrics"][name][()], dtype=float) for name in g["metrics"].keys()}
        self.n = len(self.points)
        for name, col in list(self.metrics.items()) + [(k, v) for k, v in self.coords.items()]:
            if len(col) != self.n:
                raise ValueError(f"{path}: column {name} holds {len(col)} rows, /sweep/point {self.n}")

    @property
    def name(self):
        return self.spec.get("name", os.path.basename(self.dir))

    def reference(self):
        """The paper's claims the spec carries (summary.reference), as an ordered dict."""
        return self.spec.get("summary", {}).get("reference", {})

    def column(self, name):
        """A metric, or an axis by its key or its key's last component ("weight_orth"), as an array (numeric) or a
        list of strings; None when there is none."""
        if name in self.metrics:
            return self.metrics[name]
        if name in self.coords:
            return self.coords[name]
        hits = [k for k in self.coords if k.split(".")[-1] == name]
        return self.coords[hits[0]] if len(hits) == 1 else None

    def has(self, name):
        col = self.column(name)
        return col is not None and (not isinstance(col, np.ndarray) or np.isfinite(col).any())

    def settings(self):
        """The points grouped by every axis but the seed, in grid order: a list of Setting."""
        group_axes = [a for a in self.axes if a != self.seed]
        out, index = [], {}
        for row in range(self.n):
            key = tuple(value_text(self.coords[a][row]) for a in group_axes)
            if key not in index:
                index[key] = len(out)
                out.append(Setting(self, dict(zip(group_axes, key)), []))
            out[index[key]].rows.append(row)
        return out

    def report(self, point, name):
        """The path of a point's report NAME.h5 (points/<point>/NAME.h5 beside sweep.h5), or None when absent."""
        path = os.path.join(self.dir, "points", point, name + ".h5")
        return path if os.path.exists(path) else None


class Setting:
    """The points of one setting (coordinates but the seed)."""

    def __init__(self, sweep, labels, rows):
        self.sweep = sweep
        self.labels = labels  # axis key -> value text
        self.rows = rows

    def get(self, axis):
        """This setting's value of an axis (by key or last component), as text."""
        if axis in self.labels:
            return self.labels[axis]
        hits = [k for k in self.labels if k.split(".")[-1] == axis]
        return self.labels[hits[0]] if len(hits) == 1 else None

    def values(self, metric):
        """The finite values of a metric over this setting's seeds."""
        col = self.sweep.column(metric)
        if col is None:
            return np.array([])
        v = np.asarray([col[r] for r in self.rows], dtype=float)
        return v[np.isfinite(v)]

    def mean(self, metric):
        v = self.values(metric)
        return float(v.mean()) if v.size else float("nan")

    def sd(self, metric):
        """Sample standard deviation over seeds (ddof = 1; NaN with fewer than two)."""
        v = self.values(metric)
        return float(v.std(ddof=1)) if v.size > 1 else float("nan")

    def points(self):
        return [self.sweep.points[r] for r in self.rows]


def by_strength(sweep, series=None):
    """The settings of one series (a dict of other-axis values, e.g. {"model.head": "sparse"}; None: all) sorted by
    the strength axis; returns (strengths array, settings)."""
    sets = [s for s in sweep.settings()
            if not series or all(s.get(k) == v for k, v in series.items())]
    if not sweep.strength:
        return np.array([]), sets
    sets.sort(key=lambda s: float(s.labels[sweep.strength]))
    return np.array([float(s.labels[sweep.strength]) for s in sets]), sets


def change_percent(values):
    """100 (v - v0) / |v0| against the first value (strength 0 when the strengths are sorted)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.isfinite(values[0]) or values[0] == 0:
        return np.full(values.shape, float("nan"))
    return 100.0 * (values - values[0]) / abs(values[0])


def correlate(x, y):
    """Pearson r, two-sided p (Student t, n - 2 degrees of freedom, as scipy.stats.pearsonr) and n over the finite
    pairs; NaNs when n < 3 or a side is constant."""
    return pearson(x, y)


def fmt(v, digits=3):
    """A number for a table: NaN as n/a, otherwise `digits` significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}g}"


def mean_sd(setting, metric, digits=3):
    m, s = setting.mean(metric), setting.sd(metric)
    if math.isnan(m):
        return "n/a"
    return fmt(m, digits) + ("" if math.isnan(s) else " ± " + fmt(s, 2))


def print_table(headers, rows):
    """A plain-text table (Markdown pipes), column widths fitted."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))


def print_reference(sweep):
    """The paper's claims from the spec, one per line."""
    for k, v in sweep.reference().items():
        print(f"- {k}: {v}")


def status_line(sweep):
    from collections import Counter
    c = Counter(sweep.status)
    return (f"{sweep.path}: {sweep.n} points ({c.get('complete', 0)} complete, {c.get('failed', 0)} failed, "
            f"{c.get('partial', 0)} not finished)")


def strength_axis_scale(ax, strengths):
    """x axis for strengths that include 0 and span decades: symlog with 0 one decade left of the smallest positive
    strength (as moescope plot draws sweeps); linear otherwise."""
    pos = [s for s in strengths if s > 0]
    if len(pos) >= 2 and max(pos) / min(pos) >= 100:
        ax.set_xscale("symlog", linthresh=min(pos), linscale=1.0)
    ax.set_xticks(list(strengths))
    ax.set_xticklabels([value_text(s) for s in strengths], rotation=45, fontsize=7)
