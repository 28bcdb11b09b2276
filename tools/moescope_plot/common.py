"""Shared pieces of the figure modules: style, figure sizes, saving, reading a report, small statistics.

Figures are sized for a two-column paper: SINGLE (3.4 in) or DOUBLE (7.0 in) wide, saved without
`bbox_inches="tight"` so that a PNG at 150 dpi is exactly `width * 150` by `height * 150` pixels. Every figure
carries a footer naming its source report. Colours come from the Okabe-Ito palette (distinguishable under the
common colour-vision deficiencies); heat maps use RdBu_r (diverging, overlaps in [-1, 1]) and viridis/cividis
(sequential), all colour-blind safe.
"""
import math
import os
import re

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402
from matplotlib.ticker import AutoLocator, ScalarFormatter  # noqa: E402

SINGLE = 3.4  # in, one column of a two-column paper
DOUBLE = 7.0  # in, full text width
DPI = 150
FOOTER_IN = 0.14  # in reserved at the bottom of every figure for the source line

# Okabe & Ito (2008), "Color Universal Design": black first for a single series would be dull, so blue first.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"

STYLE = {
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6,
    "legend.title_fontsize": 6,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
    "axes.grid": False,
    "image.cmap": SEQUENTIAL,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by journals
    "savefig.dpi": DPI,
    "svg.hashsalt": "moescope",  # fixed element ids: same input, same SVG bytes
}


class ReportError(Exception):
    """A report that cannot be plotted as it stands (missing or malformed data); the message names the path."""


def color(i):
    """The i-th colour of the palette (cycling)."""
    return OKABE_ITO[i % len(OKABE_ITO)]


def natural_key(name):
    """Sort key that puts layer_2 before layer_10 and expert_1_10 after expert_1_9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def child_groups(g, pattern=None):
    """Names of the subgroups of g (optionally matching a regular expression), in natural order."""
    names = [k for k in g.keys() if isinstance(g.get(k, getlink=False), h5py.Group)]
    if pattern is not None:
        names = [k for k in names if re.fullmatch(pattern, k)]
    return sorted(names, key=natural_key)


def is_group(g, name):
    return name in g and isinstance(g[name], h5py.Group)


def group(g, name):
    """Subgroup g/name; ReportError naming the path when it is missing or not a group."""
    if name not in g:
        raise ReportError(f"'{g.name.rstrip('/')}/{name}' is missing")
    if not isinstance(g[name], h5py.Group):
        raise ReportError(f"'{g[name].name}' is not a group")
    return g[name]


def layer_groups(f, name):
    """(key, group) of every layer group under /name, in natural order."""
    g = f[name]
    return [(k, g[k]) for k in child_groups(g)]


def has_layers(f, name):
    """Whether /name is a group with at least one layer group."""
    return is_group(f, name) and len(child_groups(f[name])) > 0


def square(g, name):
    """A dataset that must be a square matrix (an E x E overlap), else a ReportError naming it."""
    m = array(g, name, ndim=2)
    if m.shape[0] != m.shape[1]:
        raise ReportError(f"'{g.name}/{name}' has shape {m.shape}, expected a square matrix")
    return m


def is_dataset(g, name):
    return name in g and isinstance(g[name], h5py.Dataset)


def array(g, name, ndim=None, length=None, shape=None):
    """Dataset g/name as a float64 array, checked for rank, length or shape; raises ReportError naming the path."""
    if name not in g:
        raise ReportError(f"'{g.name}/{name}' is missing")
    ds = g[name]
    if not isinstance(ds, h5py.Dataset):
        raise ReportError(f"'{ds.name}' is not a dataset")
    if h5py.check_string_dtype(ds.dtype) is not None or ds.dtype.kind not in "fiub":
        raise ReportError(f"'{ds.name}' is not numeric (dtype {ds.dtype})")
    a = np.asarray(ds[()], dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ReportError(f"'{ds.name}' has {a.ndim} dimensions {a.shape}, expected {ndim}")
    if length is not None and (a.ndim != 1 or a.shape[0] != length):
        raise ReportError(f"'{ds.name}' has shape {a.shape}, expected ({length},)")
    if shape is not None and a.shape != tuple(shape):
        raise ReportError(f"'{ds.name}' has shape {a.shape}, expected {tuple(shape)}")
    return a


def scalar(g, name, default=None):
    """Scalar dataset g/name as a float; `default` when absent (None: absence is an error)."""
    if name not in g:
        if default is not None:
            return default
        raise ReportError(f"'{g.name}/{name}' is missing")
    a = array(g, name)
    if a.size != 1:
        raise ReportError(f"'{g[name].name}' has shape {a.shape}, expected a scalar")
    return float(a.reshape(-1)[0])


def strings(g, name, length=None):
    """String dataset g/name as a list of str (fixed- or variable-length, as h5py and moescope write them)."""
    if name not in g:
        raise ReportError(f"'{g.name}/{name}' is missing")
    ds = g[name]
    if not isinstance(ds, h5py.Dataset) or h5py.check_string_dtype(ds.dtype) is None:
        raise ReportError(f"'{g.name}/{name}' is not a string dataset")
    values = ds.asstr()[()]
    out = [str(values)] if np.ndim(values) == 0 else [str(v) for v in values]
    if length is not None and len(out) != length:
        raise ReportError(f"'{ds.name}' has {len(out)} entries, expected {length}")
    return out


def attr(obj, name, default=""):
    """Attribute as str / number, bytes decoded; `default` when absent."""
    if name not in obj.attrs:
        return default
    v = obj.attrs[name]
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(-1)[0]
        if isinstance(v, (bytes, np.bytes_)):
            return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def fmt_p(p):
    """'p = 0.012' for a legend (two significant digits); 'p < 1e-300' for 0 (below the floating-point floor)."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    if p == 0:
        return "p < 1e-300"
    return f"p = {p:.2g}"


def fmt_num(v, digits=3):
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}"


def spans_decades(values, decades=2.0):
    """True when the positive finite values span at least `decades` orders of magnitude."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size >= 2 and v.max() / v.min() >= 10.0**decades


def auto_log_y(ax, values):
    """Log y axis when every finite value is positive and they span two decades or more."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size and np.all(v > 0) and spans_decades(v):
        ax.set_yscale("log")


def fit_line(x, y):
    """Least-squares slope and intercept of y on x over finite pairs; None when x has no spread."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.ptp(x) == 0:
        return None
    xm, ym = x.mean(), y.mean()
    slope = np.sum((x - xm) * (y - ym)) / np.sum((x - xm) ** 2)
    return slope, ym - slope * xm


def draw_fit(ax, x, y, **kw):
    """Draws the least-squares line over the range of x; returns the Line2D or None."""
    f = fit_line(x, y)
    if f is None:
        return None
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    xs = np.linspace(x.min(), x.max(), 2)
    (line,) = ax.plot(xs, f[1] + f[0] * xs, **kw)
    return line


def _betacf(a, b, x):
    # Continued fraction of the incomplete beta function, evaluated by the modified Lentz method.
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def pearson(x, y):
    """Pearson r over finite pairs and its two-sided p-value from Student's t with n - 2 degrees of freedom
    (as scipy.stats.pearsonr): p = I_{df/(df+t^2)}(df/2, 1/2). Returns (r, p, n); NaNs when n < 3 or a
    variable is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), n
    xm, ym = x - x.mean(), y - y.mean()
    r = float(np.sum(xm * ym) / math.sqrt(np.sum(xm * xm) * np.sum(ym * ym)))
    r = max(-1.0, min(1.0, r))
    df = n - 2
    if abs(r) == 1.0:
        return r, 0.0, n
    t2 = r * r * df / (1.0 - r * r)
    return r, betainc(df / 2.0, 0.5, df / (df + t2)), n


def short_path(path, limit=90):
    """The path as given, cut from the left to `limit` characters."""
    return path if len(path) <= limit else "..." + path[-(limit - 3):]


class Output:
    """Where figures go: folder, formats, file-name prefix and the footer text naming the source report.

    With keep=True figures stay open in `figures` (name -> Figure) for inspection, as the tests do; with no
    formats nothing is written."""

    def __init__(self, out_dir, formats=("png", "pdf"), prefix="", source="", keep=False, verbose=True):
        self.out_dir = out_dir
        self.formats = tuple(formats)
        self.prefix = prefix
        self.source = source
        self.keep = keep
        self.verbose = verbose  # print each figure's path
        self.written = []  # paths of every file written
        self.figures = {}  # name -> Figure, when keep

    def figure(self, width, height, **subplot_kw):
        """A figure of width x height inches with constrained layout above the footer line."""
        frac = FOOTER_IN / height
        fig = plt.figure(figsize=(width, height), dpi=DPI,
                         layout=ConstrainedLayoutEngine(rect=(0, frac, 1, 1 - frac), h_pad=0.02, w_pad=0.02))
        if self.source:
            fig.text(0.008, 0.025 / height, f"source: {self.source}", fontsize=5, color="0.4",
                     ha="left", va="bottom")
        return fig

    def save(self, fig, name):
        """Writes the figure in every format (atomically: NAME.ext.tmp, then renamed) and closes it."""
        name = self.prefix + sanitise(name)
        tidy_ticks(fig)
        for ext in self.formats:
            path = os.path.join(self.out_dir, f"{name}.{ext}")
            tmp = path + ".tmp"
            meta = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(ext)  # same input, same bytes
            fig.savefig(tmp, format=ext, dpi=DPI, metadata=meta)
            os.replace(tmp, path)
            self.written.append(path)
        if self.keep:
            self.figures[name] = fig
        else:
            plt.close(fig)
        if self.verbose and self.formats:
            print(os.path.join(self.out_dir, f"{name}.{self.formats[0]}"))


def tidy_ticks(fig):
    """Short tick labels on linear axes left to matplotlib's automatic ticks: scientific notation with a common
    factor outside [1e-3, 1e4] (0.000121, 0.000122 ... become 1.21, 1.22 ... x 1e-4), no additive offset. The
    factor goes into the axis label ('MSO [x 10^-4]') rather than over the axis, where it would hit the title."""
    touched = []
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "linear" or not isinstance(axis.get_major_locator(), AutoLocator):
                continue
            fmt = axis.get_major_formatter()
            if type(fmt) is ScalarFormatter:
                fmt.set_powerlimits((-3, 4))
                fmt.set_useMathText(True)
                fmt.set_useOffset(False)
                touched.append((axis, fmt))
    for axis, fmt in touched:
        fmt.set_locs(axis.get_majorticklocs())  # the factor, as drawing would choose it, without a draw
        off = fmt.get_offset()
        if off:
            axis.offsetText.set_visible(False)
            text = axis.label.get_text()
            axis.label.set_text(f"{text} [{off}]" if text else off)


def sanitise(name):
    """A file-name-safe version of a figure name (letters, digits, '_', '-', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def grid_shape(n, max_cols):
    cols = max(1, min(n, max_cols))
    return (n + cols - 1) // cols, cols


def hide_unused(axes, used):
    for ax in list(np.ravel(axes))[used:]:
        ax.set_visible(False)


def expert_ticks(ax, E, axis="both"):
    """Integer expert ticks: every expert up to 16, else matplotlib's integer locator."""
    from matplotlib.ticker import MaxNLocator

    for which in ("x", "y") if axis == "both" else (axis,):
        a = ax.xaxis if which == "x" else ax.yaxis
        if E <= 16:
            a.set_ticks(range(E))
        else:
            a.set_major_locator(MaxNLocator(integer=True, nbins=6))


def layer_label(g, key):
    """A short label of a layer group: 'L3' from its 'layer' attribute when the key is layer_NN, else the key."""
    m = re.fullmatch(r"layer_0*(\d+)", key)
    return f"L{m.group(1)}" if m else key


def heatmap_grid(out, groups, matrix_of, title_of, cbar_label, name, suptitle):
    """One panel per (key, group): a square matrix on RdBu_r with vmin -1 and vmax 1, a shared colour bar.

    More than 48 layers go onto pages NAME, NAME_p2, ... of 48 panels each."""
    per_page = 48
    pages = [groups[i:i + per_page] for i in range(0, len(groups), per_page)]
    for p, page in enumerate(pages):
        n = len(page)
        max_cols = 2 if n <= 2 else 4 if n <= 8 else 6 if n <= 24 else 8
        rows, cols = grid_shape(n, max_cols)
        width = SINGLE if n == 1 else DOUBLE
        cbar = 0.55
        panel = (width - cbar) / cols
        height = rows * (panel + 0.18) + 0.3
        fig = out.figure(width, height)
        axes = fig.subplots(rows, cols, squeeze=False)
        im = None
        for ax, (key, g) in zip(axes.flat, page):
            m = matrix_of(g)
            E = m.shape[0]
            im = ax.imshow(m, vmin=-1, vmax=1, cmap=DIVERGING, interpolation="nearest")
            ax.set_title(title_of(key, g, n), fontsize=7 if n <= 8 else 6)
            expert_ticks(ax, E)
            if n > 8:
                ax.tick_params(labelsize=5)
            ax.set_xlabel("expert j", fontsize=6.5 if n <= 8 else 5.5)
            ax.set_ylabel("expert i", fontsize=6.5 if n <= 8 else 5.5)
        hide_unused(axes, n)
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9 if rows > 1 else 1.0, label=cbar_label)
        fig.suptitle(suptitle if len(pages) == 1 else f"{suptitle} ({p + 1}/{len(pages)})")
        out.save(fig, name if p == 0 else f"{name}_p{p + 1}")
