#!/usr/bin/python3
"""Tests of tools/plot.py and tools/moescope_plot (unittest; ctest runs this file with /usr/bin/python3).

Reports are built here with h5py following moescope's writers exactly (src/cli/cmd_*.cpp, src/train/trainer.cpp,
src/landscape/surface.cpp; the sweep table as `moescope sweep --collect` writes it), and real reports made by
the binary are read from tools/tests/data (tools/tests/data/make_reports.sh regenerates them).
"""
import contextlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
PLOT = os.path.join(TOOLS, "plot.py")
sys.path.insert(0, TOOLS)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import moescope_plot  # noqa: E402
import plot as plot_cli  # noqa: E402
from moescope_plot import common, landscape, sweep  # noqa: E402

STR = h5py.string_dtype("utf-8")
SINGLE_PX = round(common.SINGLE * common.DPI)  # 510
DOUBLE_PX = round(common.DOUBLE * common.DPI)  # 1050


# ----------------------------------------------------------------------------------------------- report builders

def provenance(f, command):
    f.attrs["moescope_version"] = "0.1.0+test"
    f.attrs["command_line"] = "moescope " + command
    f.attrs["created_utc"] = "2025-01-01T00:00:00Z"
    f.attrs["checkpoint"] = "runs/t/step_30"
    f.attrs["checkpoint_sha256"] = ""
    f.attrs["checkpoint_hash_scope"] = "none"
    f.attrs["seed"] = np.int64(0)
    f.attrs["device"] = "cpu"
    f.attrs["threads"] = np.int64(1)


def unit_vectors(rng, E, D):
    v = rng.standard_normal((E, D))
    return v, v / np.linalg.norm(v, axis=1, keepdims=True)


def mean_offdiag(m):
    E = m.shape[0]
    return float((m.sum() - np.trace(m)) / (E * (E - 1)))


def write_geometry(f, layers=3, E=4, D=50, seed=1):
    rng = np.random.default_rng(seed)
    g = f.create_group("geometry")
    g.attrs["family"] = "moescope"
    g.attrs["definition"] = "v_e = chosen matrices of expert e flattened ..."
    for layer in range(layers):
        v, u = unit_vectors(rng, E, D)
        ov = u @ u.T
        base = g.create_group(f"layer_{layer:02d}")
        base["mso"] = mean_offdiag(ov**2)
        base["overlap"] = ov
        base["gram"] = v @ v.T
        base["norms"] = np.linalg.norm(v, axis=1)
        base["param_variance"] = float(np.var(v, axis=0, ddof=1).mean())
        base["param_variance_normalized"] = float(np.var(u, axis=0, ddof=1).mean())
        base["mean_norm"] = float(np.linalg.norm(v, axis=1).mean())
        base.attrs["matrices"] = "up,down"
        base.attrs["layer"] = np.int64(layer)
        base.attrs["experts"] = np.int64(E)
        base.attrs["dim"] = np.int64(D)
        base.attrs["prefix"] = f"layers.{layer}.moe"
    return g


def write_activations(f, layers=3, E=4, seed=2):
    rng = np.random.default_rng(seed)
    g = f.create_group("activations")
    for k, v in {"inputs": "model", "description": "test split", "definition": "c_ij(t) = ...",
                 "family": "moescope", "split": "test", "data": "clustered"}.items():
        g.attrs[k] = v
    g.attrs["batch_size"] = np.int64(256)
    g.attrs["max_tokens"] = np.int64(500)
    g.attrs["samples"] = np.int64(500)
    for layer in range(layers):
        _, u = unit_vectors(rng, E, 6)
        ov = u @ u.T
        load = rng.dirichlet(np.ones(E))
        imp = rng.dirichlet(np.ones(E))
        base = g.create_group(f"layer_{layer:02d}")
        base["overlap"] = ov
        base["overlap_sq"] = ov**2
        base["pair_tokens"] = np.full((E, E), 500.0)
        base["mean_overlap"] = mean_offdiag(ov)
        base["mso"] = mean_offdiag(ov**2)
        base["routed_overlap"] = ov
        base["routed_tokens"] = np.full((E, E), 100.0)
        base["routed_mean_overlap"] = mean_offdiag(ov)
        base["routed_mso"] = mean_offdiag(ov**2)
        base["source_overlap"] = ov
        base["source_mean_overlap"] = mean_offdiag(ov)
        base["mean_norm"] = rng.uniform(1, 2, E)
        base["load"] = load
        base["importance"] = imp
        base["router_entropy"] = float(-(imp * np.log(imp)).sum())
        base["dropped_fraction"] = 0.0
        base["tokens"] = np.int64(500)
        base.attrs["layer"] = np.int64(layer)
        base.attrs["prefix"] = f"layers.{layer}.moe"
        base.attrs["experts"] = np.int64(E)
        base.attrs["dim"] = np.int64(6)
        base.attrs["out_dim"] = np.int64(6)
        base.attrs["routing_source"] = "model"
        base.attrs["capacity"] = np.int64(0)
        base.attrs["top_k"] = np.int64(2)
        base.attrs["expert_function"] = "relu"
    return g


def write_compare_spaces(f, layers=4, E=5, seed=3):
    rng = np.random.default_rng(seed)
    c = f.create_group("compare_spaces")
    c.attrs["weight_source"] = "geometry.h5"
    c.attrs["activation_source"] = "this report"
    c.attrs["definition"] = "per layer, expert pairs i<j ..."
    i, j = np.triu_indices(E, 1)
    keys, wm, am, allw, alla = [], [], [], [], []
    for layer in range(layers):
        w = rng.uniform(-0.1, 0.1, i.size)
        a = 2.0 * w + rng.normal(0, 0.05, i.size)
        key = f"layer_{layer:02d}"
        base = c.create_group(key)
        base["weight_overlap"] = w
        base["activation_overlap"] = a
        base["pair_i"] = i.astype(np.int64)
        base["pair_j"] = j.astype(np.int64)
        r, p, _ = common.pearson(w, a)
        base["pearson_r"] = r
        base["pearson_p"] = p
        base["spearman_rho"] = r
        base["spearman_p"] = p
        base["weight_mso"] = float(np.mean(w**2))
        base["activation_mso"] = float(np.mean(a**2))
        keys.append(key)
        wm.append(float(np.mean(w**2)))
        am.append(float(np.mean(a**2)))
        allw.append(w)
        alla.append(a)
    c.create_dataset("layers", data=keys, dtype=STR)
    c["weight_mso"] = np.array(wm)
    c["activation_mso"] = np.array(am)
    c["pairs"] = np.int64(sum(x.size for x in allw))
    r, p, _ = common.pearson(np.concatenate(allw), np.concatenate(alla))
    c["pearson_r"], c["pearson_p"], c["spearman_rho"], c["spearman_p"] = r, p, r, p
    r, p, _ = common.pearson(wm, am)
    c["layer_mso_pearson_r"], c["layer_mso_pearson_p"] = r, p
    c["layer_mso_spearman_rho"], c["layer_mso_spearman_p"] = r, p
    return c


TERMS = ["load_balance", "z_loss", "weight_orth", "guo_orth", "guo_var", "cv_importance"]


def write_train(f, n=60, L=2, E=4, seed=4, lm=False):
    rng = np.random.default_rng(seed)
    t = f.create_group("train")
    step = np.arange(n, dtype=np.int64) * 10
    loss = 2.3 * np.exp(-step / 300.0) + 0.2 + rng.normal(0, 0.05, n)
    t["step"] = step
    t["loss"] = loss
    t["total_loss"] = loss + 0.01
    t["lr"] = 1e-3 * 0.5 * (1 + np.cos(np.pi * step / step[-1]))
    t["grad_norm"] = rng.uniform(0.5, 2.0, n)
    t["batch_acc"] = np.clip(1 - loss / 2.5, 0, 1)
    for term in TERMS:
        v = np.full((n, L), np.nan) if term.startswith(("guo", "cv")) else rng.uniform(0.5, 1.5, (n, L))
        t.create_dataset(f"regularisers/{term}", data=v)
    t["regularisers"].attrs["meaning"] = "unweighted value of each term per logged step and MoE layer"
    load = rng.dirichlet(np.ones(E), size=(n, L))
    t["expert_load"] = load
    t["expert_load"].attrs["meaning"] = "fraction of (token, choice) assignments per expert"
    vs = step[::20]
    t["val_step"] = vs
    t["val_loss"] = 2.3 * np.exp(-vs / 300.0) + 0.25
    t["val_acc"] = 1 - (2.3 * np.exp(-vs / 300.0) + 0.25) / 2.5
    t["val_perplexity"] = np.exp(2.3 * np.exp(-vs / 300.0) + 0.25)
    t["test_loss"] = 0.3
    t["test_acc"] = 0.88
    t["test_perplexity"] = math.exp(0.3)
    t.attrs["config"] = json.dumps({"model": {"type": "lm" if lm else "classifier"}, "train": {}})
    t.attrs["total_steps"] = np.int64(step[-1] + 1)
    return t


HESSIAN_EIG = np.array([120.0, 40.0, 9.0, 2.0, 0.5])


def hessian_attrs(g, params):
    for k, v in {"method": "device_lanczos", "status": "converged", "which": "largest_algebraic", "params": params,
                 "trace_method": "hutch++", "trace_status": "converged"}.items():
        g.attrs[k] = v
    g.attrs["tol"] = 1e-6
    for k in ("parameters", "iterations", "eigen_matvecs", "probes", "trace_matvecs"):
        g.attrs[k] = np.int64(30)


def write_hessian(f, splits=("train", "valid", "test"), each_expert=False, seed=5):
    rng = np.random.default_rng(seed)
    h = f.create_group("hessian")
    h.attrs["definition"] = "Hessian of the mean cross-entropy ..."
    h.attrs["world_size"] = np.int64(1)
    for s, name in enumerate(splits):
        g = h.create_group(name)
        if each_expert:
            for layer in range(2):
                for e in range(4):
                    eg = g.create_group(f"expert_{layer}_{e}")
                    eg["eigenvalues"] = np.array([1.0 + layer + 0.1 * e])
                    eg["residuals"] = np.array([1e-3])
                    eg["residual_estimates"] = np.array([1e-3])
                    eg["matvecs"] = np.int64(30)
                    eg.create_dataset("param_names", data=[f"head.experts.{e}.fc1.weight"], dtype=STR)
                    eg["trace"] = 5.0 + e
                    eg["trace_stderr"] = 0.5
                    hessian_attrs(eg, "each-expert")
            g.attrs["layout"] = "expert_L_E per expert"
        else:
            ev = HESSIAN_EIG * (1 + 0.1 * s)
            g["eigenvalues"] = ev
            g["residuals"] = ev * 1e-3
            g["residual_estimates"] = ev * 1e-3
            g["matvecs"] = np.int64(150)
            g.create_dataset("param_names", data=["fc1.weight", "fc1.bias"], dtype=STR)
            g["trace"] = 300.0 + 20 * s
            g["trace_stderr"] = 15.0
            grid = np.linspace(-5, 130, 400)
            values = np.exp(-0.5 * (grid / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi))
            for lam in ev:
                values += 1e-4 * np.exp(-0.5 * ((grid - lam) / 0.5) ** 2)
            g["density/grid"] = grid
            g["density/values"] = values
            d = g["density"]
            d.attrs["variance"] = 0.25
            d.attrs["mass"] = 1.0
            d.attrs["runs"] = np.int64(1)
            d.attrs["steps"] = np.int64(100)
            d.attrs["status"] = "converged"
            d.attrs["matvecs"] = np.int64(100)
            hessian_attrs(g, "all")
        g["loss"] = 0.3 + rng.uniform(0, 0.1)
        g.attrs["samples"] = np.int64(1000)
        g.attrs["batch_size"] = np.int64(256)
        g.attrs["keep_graph"] = np.int64(0)
        g.attrs["params"] = "each-expert" if each_expert else "all"
    return h


def landscape_attrs(g, two_d):
    order = "values[i, j] at (xcoordinates[i], ycoordinates[j])" if two_d else "values[i] at xcoordinates[i]"
    g.attrs["index_order"] = order
    g.attrs["dimensions"] = np.int64(2 if two_d else 1)
    for k, v in {"dirs": "filter", "dirs_arg": "filter", "params": "all", "ignore": "biasbn", "splits": "train,test",
                 "accuracy": "fraction of argmax hits in [0, 1]", "x_direction_kind": "random",
                 "x_direction_normalization": "filter", "x_direction_source": ""}.items():
        g.attrs[k] = v
    if two_d:
        g.attrs["y_direction_kind"] = "random"
        g.attrs["y_direction_normalization"] = "filter"
    for name in g:
        if isinstance(g[name], h5py.Dataset) and name not in ("xcoordinates", "ycoordinates"):
            g[name].attrs["index_order"] = order


def bowl(x, y, x0, y0):
    """values[i, j] = a bowl with its minimum at (x0, y0): (x_i - x0)^2 + 2 (y_j - y0)^2 + 0.5."""
    return (x[:, None] - x0) ** 2 + 2.0 * (y[None, :] - y0) ** 2 + 0.5


def write_landscape_2d(f, x, y, x0, y0):
    g = f.create_group("landscape")
    g["xcoordinates"] = x
    g["ycoordinates"] = y
    z = bowl(x, y, x0, y0)
    g["train_loss"] = z
    g["train_acc"] = 1.0 / (1.0 + z)
    g["test_loss"] = z + 0.1
    g["test_acc"] = 1.0 / (1.1 + z)
    landscape_attrs(g, True)
    return g


def write_landscape_1d(f, sharpness=True):
    g = f.create_group("landscape")
    x = np.linspace(-1, 1, 21)
    g["xcoordinates"] = x
    g["train_loss"] = 0.3 + x**2
    g["train_acc"] = 0.9 - 0.3 * x**2
    g["test_loss"] = 0.35 + 1.2 * x**2
    g["test_acc"] = 0.88 - 0.3 * x**2
    landscape_attrs(g, False)
    if sharpness:
        r = np.array([0.01, 0.05, 0.1, 0.5, 1.0])
        inc = np.outer(r**2, np.array([0.8, 1.0, 1.2]))
        s = g.create_group("sharpness")
        s["radius"] = r
        s["mean_increase"] = inc.mean(axis=1)
        s["stderr_increase"] = inc.std(axis=1, ddof=1) / np.sqrt(3)
        s["max_increase"] = inc.max(axis=1)
        s["increases"] = inc
        s["base_loss"] = 0.3
        s.attrs["definition"] = "increases[r, m] = L(w0 + radius[r] d_m) - L(w0) ..."
    return g


def write_correlation(f):
    g = f.create_group("correlation")
    x = np.array([0.01, 0.02, 0.03, 0.05, 0.08])
    y = np.array([0.2, 0.25, 0.33, 0.41, 0.6])
    g["x"], g["y"] = x, y
    r, p, _ = common.pearson(x, y)
    g["pearson_r"], g["pearson_p"] = r, p
    g["spearman_rho"], g["spearman_p"] = 1.0, 0.0
    g["ci_low"], g["ci_high"] = 0.9, 1.0
    g["spearman_ci_low"], g["spearman_ci_high"] = 1.0, 1.0
    g.attrs["x_path"] = "geometry/layer_00/mso"
    g.attrs["y_path"] = "activations/layer_00/mso"
    g.attrs["p_value"] = "two-sided, Student t with n-2 df (as scipy.stats)"
    g.attrs["ci"] = "percentile bootstrap, 2000 resamples, level 0.95"
    return g


STRENGTHS = [0.0, 1e-4, 1e-3, 1e-2, 1e-1]
HEADS = ["sparse", "soft"]
SEEDS = [0, 1, 2]


def sweep_table(heads=HEADS, strengths=STRENGTHS, seeds=SEEDS, seed=6):
    """Rows of a full-factorial sweep: (head, strength, seed) and metric values; the last point failed."""
    rng = np.random.default_rng(seed)
    rows = [(h, s, sd) for h in heads for s in strengths for sd in seeds]
    n = len(rows)
    strength = np.array([r[1] for r in rows])
    offset = np.array([0.0 if r[0] == "sparse" else 0.05 for r in rows])
    m = {
        "test_acc": 0.8 + 0.3 * strength + offset + rng.normal(0, 0.01, n),
        "mso_mean": 1e-3 / (1 + 100 * strength) + rng.normal(0, 1e-5, n),
        "trace_test": 100 + 50 * strength + rng.normal(0, 2, n),
        "trace_test_stderr": rng.uniform(1, 3, n),
        "lambda_1_train": 5 + strength + rng.normal(0, 0.1, n),
        "never_measured": np.full(n, np.nan),
    }
    m["activation_overlap"] = 0.1 + 50 * m["mso_mean"] + rng.normal(0, 0.005, n)
    if n > 4:
        m["lambda_1_train"][3] = np.nan  # a point where one analysis is missing
    status = ["complete"] * n
    status[-1] = "failed"
    for v in m.values():
        v[-1] = np.nan
    return rows, m, status


def write_sweep(f, rows, metrics, status, axes, strength_axis, seed_axis, coords):
    g = f.create_group("sweep")
    g.attrs["spec"] = json.dumps({"axes": axes})
    g.attrs["axes"] = json.dumps(axes)
    g.attrs["strength_axis"] = strength_axis
    g.attrs["seed_axis"] = seed_axis
    g.create_dataset("point", data=[f"p{i:03d}" for i in range(len(rows))], dtype=STR)
    g.create_dataset("status", data=status, dtype=STR)
    for key, values in coords.items():
        if isinstance(values[0], str):
            g.create_dataset(f"coords/{key}", data=values, dtype=STR)
        else:
            g.create_dataset(f"coords/{key}", data=np.asarray(values, dtype=np.float64))
    for name, v in metrics.items():
        ds = g.create_dataset(f"metrics/{name}", data=v)
        ds.attrs["label"] = name.replace("_", " ")
        ds.attrs["source"] = "report.h5:/some/path"
    return g


def write_full_sweep(f):
    rows, m, status = sweep_table()
    coords = {"model.head": [r[0] for r in rows], "train.regularisers.weight_orth": [r[1] for r in rows],
              "seed": [float(r[2]) for r in rows]}
    write_sweep(f, rows, m, status, ["model.head", "train.regularisers.weight_orth", "seed"],
                "train.regularisers.weight_orth", "seed", coords)
    return rows, m


# ------------------------------------------------------------------------------------------------------ helpers

def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def build(path, *writers):
    with h5py.File(path, "w") as f:
        provenance(f, os.path.basename(path))
        for w in writers:
            w(f)
    return path


def find_line(ax, label):
    for line in ax.get_lines():
        if line.get_label() == label:
            return line
    raise AssertionError(f"no line labelled {label!r}; have {[l.get_label() for l in ax.get_lines()]}")


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="moescope-plot-test-")
        self.out = os.path.join(self.dir, "figures")
        landscape.options.update(levels=20, vmax=None)
        sweep.options.update(pairs=[])

    def tearDown(self):
        plt.close("all")
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def cli(self, *args):
        """plot.py's main in this process: (exit status, stdout, stderr)."""
        so, se = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            rc = plot_cli.main([str(a) for a in args])
        return rc, so.getvalue(), se.getvalue()

    def process(self, *args):
        """plot.py as its own process, as `moescope plot` runs it."""
        return subprocess.run([sys.executable, PLOT, *map(str, args)], capture_output=True, text=True, timeout=300)

    def keep(self, report, only=None):
        """Figures of a report kept open: name -> Figure."""
        out = common.Output(self.out, (), source=os.path.basename(report), keep=True, verbose=False)
        moescope_plot.render(report, out, only)
        return out.figures

    def assert_figures(self, expected, formats=("png",)):
        """Every expected figure exists in every format, non-empty, PNGs at the expected pixel size."""
        for name, size in expected.items():
            for ext in formats:
                p = os.path.join(self.out, f"{name}.{ext}")
                self.assertTrue(os.path.isfile(p), f"missing {name}.{ext}; have {sorted(os.listdir(self.out))}")
                self.assertGreater(os.path.getsize(p), 1000, p)
            w, h = png_size(os.path.join(self.out, f"{name}.png"))
            self.assertIn(w, (SINGLE_PX, DOUBLE_PX), f"{name}: width {w} px is no column width")
            if size is not None:
                self.assertEqual((w, h), size, f"{name}: pixel size")

    def assert_figure_basics(self, fig, source):
        """A title, labelled axes, and the footer naming the source report."""
        texts = [t.get_text() for t in fig.texts]
        self.assertTrue(any(t.startswith("source: ") and t.endswith(source) for t in texts), texts)
        axes = [a for a in fig.axes if a.get_visible() and a.get_label() != "<colorbar>"]
        titled = bool(fig._suptitle and fig._suptitle.get_text()) or any(a.get_title() for a in axes)
        self.assertTrue(titled, "no title")
        for a in axes:
            self.assertTrue(a.get_xlabel() or a.get_xticklabels() == [] or not a.xaxis.get_visible()
                            or any(b.get_xlabel() for b in axes), "an axis without x label")
        self.assertTrue(any(a.get_ylabel() for a in fig.axes), "no y label")


# -------------------------------------------------------------------------------------------------------- tests

class TestStatistics(unittest.TestCase):
    """The p-values drawn in legends (sweep pairs) against closed forms and scipy."""

    def test_betainc_closed_forms(self):
        # I_x(1, 1) = x;  I_x(a, 1) = x^a;  I_x(1/2, 1/2) = (2/pi) asin(sqrt x). Tolerance: double rounding.
        for x in (0.0, 1e-6, 0.1, 0.37, 0.5, 0.9, 0.999999, 1.0):
            self.assertAlmostEqual(common.betainc(1, 1, x), x, delta=1e-14)
            self.assertAlmostEqual(common.betainc(3.5, 1, x), x**3.5, delta=1e-14)
            self.assertAlmostEqual(common.betainc(0.5, 0.5, x), 2 / math.pi * math.asin(math.sqrt(x)), delta=1e-13)

    def test_betainc_against_scipy(self):
        # scipy.special.betainc 1.10.1, computed offline.
        for a, b, x, want in [(2.5, 0.5, 0.3, 0.01892712407194565), (10, 0.5, 0.95, 0.3171515754655451),
                              (0.5, 0.5, 0.01, 0.06376856085851987), (19, 0.5, 0.2, 7.491018942321013e-15)]:
            self.assertLess(abs(common.betainc(a, b, x) - want) / want, 1e-11, (a, b, x))

    def test_pearson_against_scipy(self):
        # scipy.stats.pearsonr 1.10.1 on x = arange(n), y = sin(1.3 x) + 0.1 x (first three) and
        # y = 2 x + 3 sin(x), computed offline. r to 1e-12, p to 1e-10 relative (far tails included).
        cases = [(5, lambda i: np.sin(1.3 * i) + 0.1 * i, -0.5603598726263698, 0.325859210412919),
                 (12, lambda i: np.sin(1.3 * i) + 0.1 * i, 0.4512002991489201, 0.140944778137775),
                 (40, lambda i: np.sin(1.3 * i) + 0.1 * i, 0.8469124044932126, 5.669020318530477e-12),
                 (30, lambda i: 2 * i + 3 * np.sin(i), 0.9927489024407059, 2.602683711591049e-27)]
        for n, fn, r_want, p_want in cases:
            x = np.arange(n, dtype=float)
            r, p, m = common.pearson(x, fn(x))
            self.assertEqual(m, n)
            self.assertAlmostEqual(r, r_want, delta=1e-12)
            self.assertLess(abs(p - p_want) / p_want, 1e-10, n)

    def test_pearson_degenerate(self):
        r, p, n = common.pearson([1, 2], [3, 4])
        self.assertTrue(math.isnan(r) and math.isnan(p))
        self.assertEqual(n, 2)
        r, p, n = common.pearson([1, 2, 3, np.nan], [2, 4, 6, 1])
        self.assertEqual((r, p, n), (1.0, 0.0, 3))
        r, _, _ = common.pearson([1, 1, 1], [1, 2, 3])
        self.assertTrue(math.isnan(r))


class TestCli(Base):
    def test_list_kinds(self):
        rc, out, _ = self.cli("--list-kinds")
        self.assertEqual(rc, 0)
        kinds = [line.split()[0] for line in out.splitlines()]
        self.assertEqual(kinds, ["geometry", "activations", "compare_spaces", "train", "hessian", "landscape",
                                 "correlation", "sweep"])
        self.assertTrue(all(len(line.split(None, 1)) == 2 for line in out.splitlines()))
        out.encode("ascii")  # the C++ --help prints it: plain ASCII

    def test_nothing_plottable_exits_2_naming_the_file(self):
        p = self.path("empty.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "geometry x")
            f.create_group("geometry")  # a group without layers: nothing to draw
        r = self.process(p, "-o", self.out)
        self.assertEqual(r.returncode, 2, r.stderr)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn(p, lines[0])
        self.assertIn("nothing to plot", lines[0])
        self.assertEqual(r.stdout, "")

    def test_not_hdf5_exits_2(self):
        p = self.path("notes.h5")
        with open(p, "w") as fh:
            fh.write("not an HDF5 file\n")
        r = self.process(p, "-o", self.out)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn(p, r.stderr)
        r = self.process(self.path("missing.h5"), "-o", self.out)
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.h5: no such file", r.stderr)

    def test_malformed_report_exits_2_naming_the_dataset(self):
        p = self.path("bad.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "geometry x")
            g = write_geometry(f, layers=1)
            del g["layer_00/overlap"]
            g["layer_00/overlap"] = np.zeros((4, 3))
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("bad.h5", err)
        self.assertIn("/geometry/layer_00/overlap", err)
        self.assertIn("square", err)

    def test_damaged_structure_exits_2(self):
        # Groups where datasets belong and the reverse: a one-line input error naming file and path, never a crash.
        def density_dataset(f):
            write_hessian(f, splits=("train",))
            del f["hessian/train/density"]
            f["hessian/train/density"] = np.zeros(3)

        def regularisers_dataset(f):
            write_train(f)
            del f["train/regularisers"]
            f["train/regularisers"] = np.zeros(3)

        def string_metric(f):
            write_full_sweep(f)
            del f["sweep/metrics/test_acc"]
            f["sweep/metrics"].create_dataset("test_acc", data=["a"] * 30, dtype=STR)

        def short_load(f):
            g = write_activations(f, layers=1, E=4)
            del g["layer_00/load"]
            g["layer_00/load"] = np.ones(3) / 3

        for writer, where in ((density_dataset, "/hessian/train/density"),
                              (regularisers_dataset, "/train/regularisers"),
                              (string_metric, "/sweep/metrics/test_acc"),
                              (short_load, "/activations/layer_00/load")):
            with self.subTest(where=where):
                p = build(self.path(f"{writer.__name__}.h5"), writer)
                rc, _, err = self.cli(p, "-o", self.out, "--format", "png")
                self.assertEqual(rc, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(f"{writer.__name__}.h5", err)
                self.assertIn(where, err)

    def test_bad_usage_exits_2(self):
        p = build(self.path("g.h5"), write_geometry)
        for args in (["--only", "nonsense"], ["--format", "gif"], ["--levels", "1"], ["--sweep-pair", "a"]):
            rc, _, err = self.cli(p, "-o", self.out, *args)
            self.assertEqual(rc, 2, args)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
        rc, _, err = self.cli(p, "-o", self.out, "--only", "hessian")
        self.assertEqual(rc, 2)
        self.assertIn("g.h5", err)
        self.assertIn("/hessian", err)

    def test_only_filters_kinds(self):
        p = build(self.path("a.h5"), write_geometry, write_activations, write_compare_spaces)
        rc, out, _ = self.cli(p, "-o", self.out, "--only", "geometry", "--format", "png")
        self.assertEqual(rc, 0)
        self.assertEqual(sorted(os.listdir(self.out)), ["geometry_mso.png", "geometry_overlap.png"])
        self.assertEqual(len(out.splitlines()), 2)

    def test_several_reports_get_prefixes_and_output_is_reproducible(self):
        a = build(self.path("a.h5"), write_geometry)
        os.makedirs(self.path("r1"))
        os.makedirs(self.path("r2"))
        l1 = build(self.path("r1/log.h5"), write_train)
        l2 = build(self.path("r2/log.h5"), write_train)
        rc, _, err = self.cli(a, l1, l2, "-o", self.out)
        self.assertEqual(rc, 0, err)
        names = set(os.listdir(self.out))
        for n in ("a_geometry_mso.png", "a_geometry_mso.pdf", "r1_log_training_curves.png",
                  "r2_log_training_curves.pdf"):
            self.assertIn(n, names)
        self.assertFalse(any(n.endswith(".tmp") for n in names))
        # Same report, same bytes (PNG and PDF: no time stamps).
        first = {n: read_bytes(os.path.join(self.out, n)) for n in names}
        shutil.rmtree(self.out)
        self.cli(a, l1, l2, "-o", self.out)
        for n in names:
            self.assertEqual(read_bytes(os.path.join(self.out, n)), first[n], n)


class TestKinds(Base):
    def test_geometry(self):
        p = build(self.path("geo.h5"), lambda f: write_geometry(f, layers=3))
        rc, _, err = self.cli(p, "-o", self.out, "--format", "png,pdf")
        self.assertEqual(rc, 0, err)
        self.assert_figures({"geometry_overlap": (1050, 394), "geometry_mso": (510, 375)}, ("png", "pdf"))
        figs = self.keep(p)
        for fig in figs.values():
            self.assert_figure_basics(fig, "geo.h5")
        # Heat maps on a fixed diverging scale, the matrix as stored.
        ax = figs["geometry_overlap"].axes[0]
        im = ax.get_images()[0]
        self.assertEqual(im.get_clim(), (-1.0, 1.0))
        with h5py.File(p) as f:
            np.testing.assert_array_equal(im.get_array(), f["geometry/layer_00/overlap"][()])
            mso = [f[f"geometry/layer_{i:02d}/mso"][()] for i in range(3)]
        bars = [r.get_height() for r in figs["geometry_mso"].axes[0].patches]
        np.testing.assert_allclose(bars, mso, rtol=0, atol=0)

    def test_geometry_many_layers_paginates(self):
        p = build(self.path("geo.h5"), lambda f: write_geometry(f, layers=50, E=3, D=20))
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"geometry_overlap": None, "geometry_overlap_p2": None, "geometry_mso": (1050, 375)})

    def test_activations(self):
        p = build(self.path("act.h5"), lambda f: write_activations(f, layers=2, E=4))
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"activation_overlap": (1050, 555), "router_load": (1050, 300),
                             "router_importance": (1050, 300)})
        figs = self.keep(p)
        ax = figs["router_load"].axes[0]
        with h5py.File(p) as f:
            load = f["activations/layer_00/load"][()]
        np.testing.assert_array_equal([r.get_height() for r in ax.patches], load)
        uniform = find_line(ax, "uniform 1/E")
        self.assertEqual(list(uniform.get_ydata()), [0.25, 0.25])

    def test_activations_many_layers_heat_map(self):
        p = build(self.path("act.h5"), lambda f: write_activations(f, layers=12, E=4))
        figs = self.keep(p)
        im = figs["router_load"].axes[0].get_images()[0]
        with h5py.File(p) as f:
            want = np.stack([f[f"activations/layer_{i:02d}/load"][()] * 4 for i in range(12)])
        np.testing.assert_allclose(im.get_array(), want, rtol=1e-15)

    def test_compare_spaces(self):
        p = build(self.path("cmp.h5"), lambda f: write_compare_spaces(f, layers=4))
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"weight_vs_activation": (510, 450), "weight_vs_activation_layers": (1050, 652),
                             "mso_weight_vs_activation": (510, 420)})
        figs = self.keep(p)
        ax = figs["weight_vs_activation"].axes[0]
        with h5py.File(p) as f:
            r, pv = f["compare_spaces/pearson_r"][()], f["compare_spaces/pearson_p"][()]
            w = np.concatenate([f[f"compare_spaces/layer_{i:02d}/weight_overlap"][()] for i in range(4)])
            a = np.concatenate([f[f"compare_spaces/layer_{i:02d}/activation_overlap"][()] for i in range(4)])
            r0 = f["compare_spaces/layer_00/pearson_r"][()]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        self.assertTrue(any(f"r = {r:+.3f}" in t and f"p = {pv:.2g}" in t for t in labels), labels)
        # The pooled line is the least-squares fit over all pairs (numpy's polyfit as reference).
        fit = [line for line in ax.get_lines() if line.get_label().startswith("pooled fit")][0]
        slope, icpt = np.polyfit(w, a, 1)
        xs, ys = fit.get_data()
        np.testing.assert_allclose(ys, icpt + slope * np.asarray(xs), rtol=1e-10)
        layer_labels = [t.get_text() for t in figs["weight_vs_activation_layers"].axes[0].get_legend().get_texts()]
        self.assertTrue(any(f"r = {r0:+.3f}" in t for t in layer_labels), layer_labels)

    def test_train(self):
        p = build(self.path("log.h5"), lambda f: write_train(f))
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"training_curves": (1050, 360), "training_lr": (510, 330),
                             "training_expert_load": (1050, 345), "training_regularisers": (1050, 337)})
        figs = self.keep(p)
        curves = figs["training_curves"]
        self.assertEqual(len([a for a in curves.axes if a.get_visible()]), 2)  # a classifier: no perplexity
        val = find_line(curves.axes[0], "validation")
        with h5py.File(p) as f:
            np.testing.assert_array_equal(val.get_xdata(), f["train/val_step"][()])
            load0 = f["train/expert_load"][()][:, 0, :]
        # Regularisers that were off (all NaN) get no panel: load_balance, weight_orth, z_loss remain.
        titles = [a.get_title() for a in figs["training_regularisers"].axes if a.get_visible()]
        self.assertEqual(titles, ["load balance", "weight orth", "z loss"])
        mesh = figs["training_expert_load"].axes[0].collections[0]
        np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(load0.T.shape), load0.T)

    def test_train_lm_has_perplexity(self):
        p = build(self.path("log.h5"), lambda f: write_train(f, lm=True))
        figs = self.keep(p)
        self.assertEqual([a.get_title() for a in figs["training_curves"].axes], ["Loss", "Accuracy", "Perplexity"])

    def test_hessian(self):
        p = build(self.path("hess.h5"), write_hessian)
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"hessian_eigenvalues": (510, 390), "hessian_trace": (510, 360),
                             "hessian_density": (510, 390)})
        figs = self.keep(p)
        ax = figs["hessian_eigenvalues"].axes[0]
        self.assertEqual(ax.get_yscale(), "log")  # 0.5 .. 120 spans two decades
        # Error bars are the residuals: each bar spans eigenvalue +- residual.
        bars = ax.containers[0]
        segs = bars.lines[2][0].get_segments()
        lo = np.array([s[0][1] for s in segs])
        hi = np.array([s[1][1] for s in segs])
        np.testing.assert_allclose((hi - lo) / 2, HESSIAN_EIG * 1e-3, rtol=1e-12)
        tr = figs["hessian_trace"].axes[0]
        np.testing.assert_allclose([b.get_height() for b in tr.patches], [300, 320, 340])
        self.assertEqual([t.get_text() for t in tr.get_xticklabels()], ["train", "valid", "test"])
        self.assertEqual(figs["hessian_density"].axes[0].get_yscale(), "log")

    def test_hessian_each_expert(self):
        p = build(self.path("hess.h5"), lambda f: write_hessian(f, splits=("train", "test"), each_expert=True))
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"hessian_experts_train": (510, 600), "hessian_experts_test": (510, 600)})
        figs = self.keep(p)
        lam = [b.get_height() for b in figs["hessian_experts_test"].axes[0].patches]
        np.testing.assert_allclose(lam, [1.0 + L + 0.1 * e for L in range(2) for e in range(4)])
        tr = [b.get_height() for b in figs["hessian_experts_test"].axes[1].patches]
        np.testing.assert_allclose(tr, [5.0 + e for L in range(2) for e in range(4)])

    def test_landscape_1d_and_sharpness(self):
        p = build(self.path("land.h5"), write_landscape_1d)
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"landscape_1d": (510, 405), "landscape_sharpness": (510, 375)})
        figs = self.keep(p)
        ax = figs["landscape_sharpness"].axes[0]
        self.assertEqual(ax.get_xscale(), "log")  # radii 0.01 .. 1
        labels = {line.get_label() for line in figs["landscape_1d"].axes[0].get_lines()}
        self.assertTrue({"train loss", "test loss"} <= labels)
        acc = {line.get_label() for line in figs["landscape_1d"].axes[1].get_lines()}
        self.assertEqual(acc, {"train accuracy", "test accuracy"})

    def test_correlation(self):
        p = build(self.path("corr.h5"), write_correlation)
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"correlation": (510, 435)})
        figs = self.keep(p)
        ax = figs["correlation"].axes[0]
        self.assertEqual(ax.get_xlabel(), "geometry/layer_00/mso")
        labels = " ".join(t.get_text() for t in ax.get_legend().get_texts())
        self.assertIn("95% bootstrap CI [+0.900, +1.000]", labels)
        self.assertIn("Pearson r", labels)


class TestLandscapeOrientation(Base):
    """2-D surfaces: values[i, j] lies at (xcoordinates[i], ycoordinates[j]) for any nx, ny."""

    def check(self, x, y, x0, y0):
        p = build(self.path("land.h5"), lambda f: write_landscape_2d(f, x, y, x0, y0))
        figs = self.keep(p)
        fig = figs["landscape_2d_train_loss"]
        ax = fig.axes[0]
        # The axes span x horizontally and y vertically.
        self.assertEqual(ax.get_xlim(), (x.min(), x.max()))
        self.assertEqual(ax.get_ylim(), (y.min(), y.max()))
        # The marked best point is the bowl's minimum (a grid point here).
        best = find_line(ax, "best grid point")
        self.assertEqual((best.get_xdata()[0], best.get_ydata()[0]), (x0, y0))
        # The lowest filled band of the contour surrounds the minimum: its vertices' mean lies within one grid
        # step of it (a transposed surface would put it at (y0, x0), away by more than that).
        band = ax.collections[0]
        verts = np.concatenate([pth.vertices for pth in band.get_paths()])
        self.assertLess(abs(verts[:, 0].mean() - x0), np.diff(x).max(), verts)
        self.assertLess(abs(verts[:, 1].mean() - y0), np.diff(y).max(), verts)
        # For accuracy the best point is the maximum, the same place.
        best = find_line(figs["landscape_2d_train_acc"].axes[0], "best grid point")
        self.assertEqual((best.get_xdata()[0], best.get_ydata()[0]), (x0, y0))
        return figs

    def test_non_square_grid(self):
        x = np.linspace(-2, 2, 9)  # 9 x 5: nx != ny
        y = np.linspace(-1, 1, 5)
        self.check(x, y, 1.0, -0.5)

    def test_square_grid_off_centre(self):
        # A square grid would plot without error if transposed: the minimum must still be at (0.5, -0.5).
        x = y = np.linspace(-1, 1, 9)
        self.check(x, y, 0.5, -0.5)

    def test_files_and_sizes(self):
        x, y = np.linspace(-2, 2, 9), np.linspace(-1, 1, 5)
        p = build(self.path("land.h5"), lambda f: write_landscape_2d(f, x, y, 1.0, -0.5))
        rc, _, err = self.cli(p, "-o", self.out, "--levels", "10", "--vmax", "3")
        self.assertEqual(rc, 0, err)
        self.assert_figures({f"landscape_2d_{s}_{w}": (510, 450) for s in ("train", "test") for w in ("loss", "acc")})

    def test_shape_mismatch_is_an_input_error(self):
        p = self.path("land.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "landscape")
            g = write_landscape_2d(f, np.linspace(-1, 1, 4), np.linspace(-1, 1, 3), 0, 0)
            del g["train_loss"]
            g["train_loss"] = np.zeros((3, 4))  # transposed: not as the writer stores it
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 2)
        self.assertIn("/landscape/train_loss", err)
        self.assertIn("(4, 3)", err)


class TestSweep(Base):
    def test_metrics_against_strength(self):
        p = self.path("sweep.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "sweep --collect")
            rows, m = write_full_sweep(f)
        rc, out, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        expected = {f"sweep_{k}": (1050, 352) for k in ("test_acc", "mso_mean", "trace_test", "lambda_1_train",
                                                       "activation_overlap")}
        expected["sweep_mso_mean_vs_activation_overlap"] = (510, 450)
        self.assert_figures(expected)
        # No figure of its own for a stderr column, none for a metric that is never finite.
        self.assertFalse(os.path.exists(os.path.join(self.out, "sweep_trace_test_stderr.png")))
        self.assertFalse(os.path.exists(os.path.join(self.out, "sweep_never_measured.png")))

        figs = self.keep(p)
        fig = figs["sweep_test_acc"]
        panels = [a for a in fig.axes if a.get_visible()]
        self.assertEqual([a.get_title() for a in panels], ["head = sparse", "head = soft"])
        strength = np.array([r[1] for r in rows])
        head = np.array([r[0] for r in rows])
        for ax, h in zip(panels, HEADS):
            # 0 among strengths spanning decades: symlog with its linear part up to the smallest non-zero one.
            self.assertEqual(ax.get_xscale(), "symlog")
            self.assertEqual(ax.xaxis.get_transform().linthresh, 1e-4)
            mean_line = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and len(ln.get_xdata()) == 5][0]
            want = [np.nanmean(m["test_acc"][(head == h) & (strength == s)]) for s in STRENGTHS]
            np.testing.assert_allclose(mean_line.get_ydata(), want, rtol=1e-14)
            # Error bars: sample s.d. over seeds (ddof 1), NaN left out.
            bars = [c for c in ax.containers if len(c.lines[2]) and len(c.lines[2][0].get_segments()) == 5][0]
            segs = bars.lines[2][0].get_segments()
            half = np.array([(s[1][1] - s[0][1]) / 2 for s in segs])
            sd = []
            for s in STRENGTHS:
                v = m["test_acc"][(head == h) & (strength == s)]
                sd.append(np.std(v[np.isfinite(v)], ddof=1))
            np.testing.assert_allclose(half, sd, rtol=1e-12)
        legend = " ".join(t.get_text() for t in panels[0].get_legend().get_texts())
        self.assertIn("over seeds (up to 3)", legend)
        self.assertIn("1 failed point left out", legend)

        pair = figs["sweep_mso_mean_vs_activation_overlap"].axes[0]
        r, pv, n = common.pearson(m["mso_mean"], m["activation_overlap"])
        self.assertEqual(n, len(rows) - 1)
        text = " ".join(t.get_text() for t in pair.get_legend().get_texts())
        self.assertIn(f"{n} points: Pearson r = {r:+.3f}, p = {pv:.2g}", text)

    def test_log_and_linear_strength_axes(self):
        for strengths, scale in (([1e-4, 1e-3, 1e-2], "log"), ([0.1, 0.2, 0.3], "linear")):
            rows, m, status = sweep_table(heads=["sparse"], strengths=strengths, seeds=[0])
            p = self.path(f"sweep_{scale}.h5")
            with h5py.File(p, "w") as f:
                provenance(f, "sweep --collect")
                write_sweep(f, rows, {"trace_test": m["trace_test"], "trace_test_stderr": m["trace_test_stderr"]},
                            status, ["w"], "w", "", {"w": [r[1] for r in rows]})
            figs = self.keep(p)
            ax = figs["sweep_trace_test"].axes[0]
            self.assertEqual(ax.get_xscale(), scale)
            # One run per point: the error bars are the stored standard errors.
            bars = [c for c in ax.containers if len(c.lines[2])][0]
            segs = bars.lines[2][0].get_segments()
            half = np.array([(s[1][1] - s[0][1]) / 2 for s in segs])
            want = m["trace_test_stderr"][np.isfinite(m["trace_test"])]
            np.testing.assert_allclose(half, want, rtol=1e-12)
            plt.close("all")

    def test_numeric_axis_besides_strength_gives_lines(self):
        # head (4 values: 4 panels on a 3-column grid), lr (a second numeric axis: one line each), strength, seed.
        rows = [(h, lr, s, sd) for h in ("dense", "sparse", "soft", "gated") for lr in (1e-3, 3e-3)
                for s in (0.0, 0.01, 0.1, 1.0) for sd in (0, 1)]
        acc = np.array([0.7 + 0.01 * i for i in range(len(rows))])
        p = self.path("sweep.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "sweep --collect")
            write_sweep(f, rows, {"test_acc": acc}, ["complete"] * len(rows),
                        ["model.head", "train.optim.lr", "w", "seed"], "w", "seed",
                        {"model.head": [r[0] for r in rows], "train.optim.lr": [r[1] for r in rows],
                         "w": [r[2] for r in rows], "seed": [float(r[3]) for r in rows]})
        fig = self.keep(p)["sweep_test_acc"]
        gated = fig.axes[3]
        self.assertEqual(gated.get_title(), "head = gated")
        for lr, marker in ((1e-3, "o"), (3e-3, "s")):
            bars = [c for c in gated.containers if c.get_label() == f"lr = {lr:g}"]
            self.assertEqual(len(bars), 1, [c.get_label() for c in gated.containers])
            line = bars[0].lines[0]  # an errorbar's data line; the label is the container's
            self.assertEqual(line.get_marker(), marker)
            want = [np.mean([a for r, a in zip(rows, acc) if r[0] == "gated" and r[1] == lr and r[2] == s])
                    for s in (0.0, 0.01, 0.1, 1.0)]
            np.testing.assert_allclose(line.get_ydata(), want, rtol=1e-14)
        # The legend sits in the free fifth panel, which shows no axes.
        spare = fig.axes[4]
        self.assertFalse(spare.axison)
        self.assertEqual([t.get_text() for t in spare.get_legend().get_texts()], ["lr = 0.001", "lr = 0.003"])

    def test_categorical_only_bars(self):
        rows, m, status = sweep_table(heads=["dense", "sparse", "soft"], strengths=[0.0], seeds=[0, 1])
        p = self.path("sweep_cat.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "sweep --collect")
            write_sweep(f, rows, {"test_acc": m["test_acc"]}, status, ["model.head", "seed"], "", "seed",
                        {"model.head": [r[0] for r in rows], "seed": [float(r[2]) for r in rows]})
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 0, err)
        self.assert_figures({"sweep_test_acc": (510, 390)})
        figs = self.keep(p)
        ax = figs["sweep_test_acc"].axes[0]
        head = np.array([r[0] for r in rows])
        want = [np.nanmean(m["test_acc"][head == h]) for h in ("dense", "sparse", "soft")]
        np.testing.assert_allclose([b.get_height() for b in ax.patches], want, rtol=1e-14)
        self.assertEqual([t.get_text() for t in ax.get_xticklabels()],
                         ["head = dense", "head = sparse", "head = soft"])
        # The note ("mean ± s.d. over seeds") sits above the bars and their error bars, never on them: before,
        # loc="best" put it over accuracy bars that fill the axes.
        fig = figs["sweep_test_acc"]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = ax.get_legend().get_window_extent(renderer)
        boxes = [b.get_window_extent(renderer) for b in ax.patches]
        boxes += [ln.get_window_extent(renderer) for ln in ax.lines if len(ln.get_xdata())]  # the caps
        for c in ax.collections:  # the error bars (a LineCollection has no window extent of its own)
            boxes += [matplotlib.transforms.Bbox(ax.transData.transform(seg)) for seg in c.get_segments()]
        self.assertEqual(len(boxes), 3 + 2 + 3)
        for box in boxes:
            self.assertFalse(legend.overlaps(box), f"the legend {legend} covers data at {box}")

    def test_long_metric_names_wrap_beside_the_axis(self):
        self.assertEqual(sweep.axis_label("test_acc"), "test_acc")
        self.assertEqual(sweep.axis_label("landscape_1d.surface_test_max_increase"),
                         "landscape_1d.surface_test_\nmax_increase")
        self.assertEqual(sweep.axis_label("landscape_2d.surface_train_centre_loss"),
                         "landscape_2d.surface_train_\ncentre_loss")
        self.assertEqual(sweep.axis_label("x" * 40), "x" * 40)  # nowhere to break: left as it is

    def test_sweep_pair_option_and_missing_metric(self):
        p = self.path("sweep.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "sweep --collect")
            write_full_sweep(f)
        rc, _, err = self.cli(p, "-o", self.out, "--sweep-pair", "trace_test,test_acc", "--format", "png")
        self.assertEqual(rc, 0, err)
        self.assertTrue(os.path.isfile(os.path.join(self.out, "sweep_trace_test_vs_test_acc.png")))
        self.assertFalse(os.path.isfile(os.path.join(self.out, "sweep_mso_mean_vs_activation_overlap.png")))
        rc, _, err = self.cli(p, "-o", self.out, "--sweep-pair", "trace_test,nope")
        self.assertEqual(rc, 2)
        self.assertIn("/sweep/metrics/nope", err)

    def test_malformed_sweep(self):
        p = self.path("sweep.h5")
        with h5py.File(p, "w") as f:
            provenance(f, "sweep --collect")
            write_full_sweep(f)
            f["sweep"].attrs["strength_axis"] = "model.head"
        rc, _, err = self.cli(p, "-o", self.out)
        self.assertEqual(rc, 2)
        self.assertIn("strength axis must be numeric", err)


class TestRealReports(Base):
    """Reports written by the moescope binary (tools/tests/data/make_reports.sh)."""

    CASES = {
        "real_geometry.h5": {"geometry_overlap": (510, 499), "geometry_mso": (510, 375)},
        "real_activations_geometry.h5": {
            "geometry_overlap": (1050, 394), "geometry_mso": (510, 375), "activation_overlap": (1050, 394),
            "router_load": (1050, 300), "router_importance": (1050, 300), "weight_vs_activation": (510, 450),
            "weight_vs_activation_layers": (1050, 352), "mso_weight_vs_activation": (510, 420)},
        "real_compare_spaces.h5": {"weight_vs_activation": (510, 450), "weight_vs_activation_layers": (510, 442)},
        "real_correlation.h5": {"correlation": (510, 435)},
        "real_hessian.h5": {"hessian_eigenvalues": (510, 390), "hessian_trace": (510, 360),
                            "hessian_density": (510, 390)},
        "real_hessian_each_expert.h5": {"hessian_experts_test": (510, 600)},
        "real_landscape_2d.h5": {"landscape_2d_train_loss": (510, 450), "landscape_2d_test_acc": (510, 450)},
        "real_landscape_1d_sharpness.h5": {"landscape_1d": (510, 405), "landscape_sharpness": (510, 375)},
        "real_train_log.h5": {"training_curves": (1050, 360), "training_lr": (510, 330),
                              "training_expert_load": (1050, 345), "training_regularisers": (510, 337)},
        "real_train_lm_log.h5": {"training_curves": (1050, 360), "training_regularisers": (1050, 337)},
    }

    def test_every_real_report(self):
        for name, expected in self.CASES.items():
            with self.subTest(report=name):
                out = os.path.join(self.dir, name)
                rc, _, err = self.cli(os.path.join(DATA, name), "-o", out, "--format", "png")
                self.assertEqual(rc, 0, err)
                self.out = out
                self.assert_figures(expected)

    def test_real_2d_surface_orientation(self):
        p = os.path.join(DATA, "real_landscape_2d.h5")
        with h5py.File(p) as f:
            x, y = f["landscape/xcoordinates"][()], f["landscape/ycoordinates"][()]
            z = f["landscape/train_loss"][()]
        self.assertNotEqual(x.size, y.size)
        figs = self.keep(p)
        ax = figs["landscape_2d_train_loss"].axes[0]
        self.assertEqual(ax.get_xlim(), (x.min(), x.max()))
        self.assertEqual(ax.get_ylim(), (y.min(), y.max()))
        i, j = np.unravel_index(np.argmin(z), z.shape)  # train_loss[i, j] at (x[i], y[j])
        best = find_line(ax, "best grid point")
        self.assertEqual((best.get_xdata()[0], best.get_ydata()[0]), (x[i], y[j]))
        for fig in figs.values():
            self.assert_figure_basics(fig, "real_landscape_2d.h5")


if __name__ == "__main__":
    unittest.main()
