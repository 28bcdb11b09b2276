#!/usr/bin/python3
"""Tests of the seed-study notebooks (notebooks/*.ipynb) and their helper (notebooks/studylib.py); unittest, run by
ctest with /usr/bin/python3 (label python).

- studylib's settings, means, standard deviations, changes and correlations against values computed here by hand
  on a sweep.h5 written with h5py exactly as `moescope sweep` writes it (src/study/collect.cpp).
- Each notebook executed headless, with its sweep variables pointing at the committed fixture sweeps
  (data/studies/fixtures/sweeps/, made by the real binary with data/studies/fixtures/make_sweeps.sh): once by
  running its code cells in order in one namespace (needs only h5py, numpy, matplotlib), and once with Debian's
  `jupyter-nbconvert --execute` and python3-ipykernel (skipped when they are absent). Both must finish without an
  error, print our numbers next to the paper's, and save their figures.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
FIXTURES = os.path.join(ROOT, "data", "studies", "fixtures", "sweeps")
sys.path.insert(0, NOTEBOOKS)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import studylib as sl  # noqa: E402

STR = h5py.string_dtype("utf-8")

# Each notebook, the sweeps it reads (variable -> fixture), the figures it saves, and lines its output must hold.
CASES = {
    "kim2026": ({"KIM_LM_SWEEP": "kim2026-lm", "KIM_FMNIST_SWEEP": "kim2026-fmnist"},
                ["kim2026_lm.png", "kim2026_fmnist.png"],
                ["weight MSO vs activation overlap over the 3 strengths' means: Pearson r =",
                 "Pearson weight MSO vs activation overlap | r = -0.293, p = 0.523 (n = 7)"]),
    "vision-moe": ({"VISION_SWEEP": "vision-moe"},
                   ["vision_curvature_cnn.png", "vision_landscape_1d_cnn.png", "vision_landscape_2d_cnn.png"],
                   ["### backbone: cnn", "sharpest of dense/gated/sparse", "cnn: 8 mean curves drawn"]),
    "omoe": ({"OMOE_SWEEP": "omoe"}, ["omoe.png"], ["| omoe-skip2 | parameter variance vs AdamW |"]),
    "guo2025": ({"GUO_SWEEP": "guo2025"}, ["guo2025.png"], ["| routing variance, both vs LB", "| LB+Lo+Lv |"]),
}


def write_sweep(path, axes, coords, metrics, strength="", seed="seed", spec=None):
    """A /sweep table as `moescope sweep --collect` writes it."""
    n = len(next(iter(metrics.values())))
    with h5py.File(path, "w") as f:
        g = f.create_group("sweep")
        g.attrs["spec"] = json.dumps(spec or {"name": "t"})
        g.attrs["axes"] = json.dumps(axes)
        g.attrs["strength_axis"] = strength
        g.attrs["seed_axis"] = seed
        g.create_dataset("point", data=[f"p{i}" for i in range(n)], dtype=STR)
        g.create_dataset("status", data=["complete"] * n, dtype=STR)
        c = g.create_group("coords")
        for k in axes:
            v = coords[k]
            if isinstance(v[0], str):
                c.create_dataset(k, data=v, dtype=STR)
                c[k].attrs["kind"] = "text"
            else:
                c.create_dataset(k, data=np.asarray(v, dtype=float))
                c[k].attrs["kind"] = "numeric"
        m = g.create_group("metrics")
        for k, v in metrics.items():
            m.create_dataset(k, data=np.asarray(v, dtype=float))


class StudyLib(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_settings_means_changes_and_correlation(self):
        # 3 strengths x 2 seeds, one NaN (a failed point) in mso_mean.
        s = [0.0, 0.0, 0.01, 0.01, 1.0, 1.0]
        seed = [0, 1, 0, 1, 0, 1]
        mso = [1.0, 3.0, 4.0, float("nan"), 2.0, 2.5]
        act = [0.5, 0.7, 0.4, 0.6, 0.9, 0.8]
        path = os.path.join(self.tmp, "sweep.h5")
        write_sweep(path, ["train.regularisers.weight_orth", "seed"],
                    {"train.regularisers.weight_orth": s, "seed": seed},
                    {"mso_mean": mso, "activation_overlap": act}, strength="train.regularisers.weight_orth",
                    spec={"name": "t", "summary": {"reference": {"claim": "text"}}})
        sw = sl.Sweep(path)
        self.assertEqual(sw.n, 6)
        self.assertEqual(sw.reference(), {"claim": "text"})
        self.assertIs(sw.column("weight_orth"), sw.coords["train.regularisers.weight_orth"])
        x, sets = sl.by_strength(sw)
        np.testing.assert_array_equal(x, [0.0, 0.01, 1.0])
        self.assertEqual([st.rows for st in sets], [[0, 1], [2, 3], [4, 5]])
        self.assertEqual(sets[0].mean("mso_mean"), 2.0)
        self.assertAlmostEqual(sets[0].sd("mso_mean"), math.sqrt(2.0), places=14)  # ddof = 1
        self.assertEqual(sets[1].mean("mso_mean"), 4.0)  # the NaN is left out
        self.assertTrue(math.isnan(sets[1].sd("mso_mean")))  # one value: no s.d.
        means = [st.mean("mso_mean") for st in sets]
        np.testing.assert_allclose(sl.change_percent(means), [0.0, 100.0, 12.5])
        # Pearson over the settings' means against numpy's r; the p-value is scipy's (tested in test_plot.py).
        a = [st.mean("activation_overlap") for st in sets]
        r, p, n = sl.correlate(means, a)
        self.assertEqual(n, 3)
        self.assertAlmostEqual(r, float(np.corrcoef(means, a)[0, 1]), places=12)
        self.assertTrue(0.0 <= p <= 1.0)
        self.assertEqual(sl.mean_sd(sets[0], "mso_mean"), "2 ± 1.4")
        self.assertEqual(sl.value_text(0.0001), "0.0001")
        self.assertEqual(sl.value_text(3.0), "3")

    def test_categorical_settings_and_reports(self):
        path = os.path.join(self.tmp, "sweep.h5")
        write_sweep(path, ["model.head", "seed"], {"model.head": ["dense", "dense", "gated", "gated"],
                                                    "seed": [0, 1, 0, 1]},
                    {"lambda_1_train": [1.0, 2.0, 5.0, 7.0]})
        sw = sl.Sweep(path)
        sets = sw.settings()
        self.assertEqual([st.get("head") for st in sets], ["dense", "gated"])
        self.assertEqual(sets[1].mean("lambda_1_train"), 6.0)
        self.assertEqual(sets[1].points(), ["p2", "p3"])
        os.makedirs(os.path.join(self.tmp, "points", "p2"))
        open(os.path.join(self.tmp, "points", "p2", "landscape_1d.h5"), "w").close()
        self.assertTrue(sw.report("p2", "landscape_1d").endswith("points/p2/landscape_1d.h5"))
        self.assertIsNone(sw.report("p3", "landscape_1d"))

    def test_sweep_file_reads_the_variable_or_the_default(self):
        os.environ["STUDYLIB_TEST_SWEEP"] = self.tmp
        try:
            self.assertEqual(sl.sweep_file("STUDYLIB_TEST_SWEEP", "x"), os.path.join(self.tmp, "sweep.h5"))
        finally:
            del os.environ["STUDYLIB_TEST_SWEEP"]
        self.assertEqual(sl.sweep_file("STUDYLIB_TEST_SWEEP", "out/x/sweep.h5"), os.path.join(ROOT, "out/x/sweep.h5"))

    def test_a_damaged_table_is_refused(self):
        path = os.path.join(self.tmp, "sweep.h5")
        with h5py.File(path, "w") as f:
            f.create_group("other")
        with self.assertRaises(ValueError):
            sl.Sweep(path)


def notebook_env(variables, figures):
    env = dict(os.environ, MPLBACKEND="Agg", MOESCOPE_NOTEBOOK_FIGURES=figures)
    for var, fixture in variables.items():
        env[var] = os.path.join(FIXTURES, fixture)
    return env


def code_cells(name):
    with open(os.path.join(NOTEBOOKS, name + ".ipynb")) as f:
        nb = json.load(f)
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


class Notebooks(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def check(self, name, output, figures):
        _, pngs, lines = CASES[name]
        for line in lines:
            self.assertIn(line, output, name)
        self.assertNotIn("no sweep at", output)
        for png in pngs:
            path = os.path.join(figures, png)
            self.assertTrue(os.path.exists(path) and os.path.getsize(path) > 1000, f"{name}: {png}")

    def test_code_cells_run_in_order(self):
        """The notebooks' code as plain Python (what nbconvert runs, without a kernel)."""
        for name, (variables, _, _) in CASES.items():
            with self.subTest(notebook=name):
                figures = os.path.join(self.tmp, name + "-plain")
                script = os.path.join(self.tmp, name + ".py")
                with open(script, "w") as f:
                    f.write("\n\n".join(code_cells(name)))
                r = subprocess.run([sys.executable, script], cwd=NOTEBOOKS, env=notebook_env(variables, figures),
                                   capture_output=True, text=True, timeout=300)
                self.assertEqual(r.returncode, 0, r.stderr[-3000:])
                self.check(name, r.stdout, figures)

    def test_nbconvert_executes_them(self):
        nbconvert = shutil.which("jupyter-nbconvert")
        if nbconvert is None:
            self.skipTest("jupyter-nbconvert is not installed (Debian: jupyter-nbconvert python3-ipykernel)")
        if subprocess.run([sys.executable, "-c", "import ipykernel"], capture_output=True).returncode != 0:
            self.skipTest("python3-ipykernel is not installed")
        for name, (variables, _, _) in CASES.items():
            with self.subTest(notebook=name):
                figures = os.path.join(self.tmp, name + "-nbconvert")
                r = subprocess.run([nbconvert, "--to", "notebook", "--execute", "--output-dir", self.tmp,
                                    "--ExecutePreprocessor.timeout=300", os.path.join(NOTEBOOKS, name + ".ipynb")],
                                   env=notebook_env(variables, figures), capture_output=True, text=True, timeout=600)
                self.assertEqual(r.returncode, 0, r.stderr[-3000:])
                with open(os.path.join(self.tmp, name + ".ipynb")) as f:
                    nb = json.load(f)
                text = []
                for c in nb["cells"]:
                    for o in c.get("outputs", []):
                        self.assertNotEqual(o.get("output_type"), "error", f"{name}: {o.get('evalue')}")
                        if o.get("name") == "stdout":
                            text.append("".join(o["text"]))
                self.check(name, "".join(text), figures)


if __name__ == "__main__":
    unittest.main()
