#!/usr/bin/env python3
"""Kill -9 harness for moescope's writers (issue 15).

Starts `train`, `landscape`, `hessian`, `geometry`, `activations` and `sweep` on small inputs and sends SIGKILL at many points:
after N bytes written (the process's write_bytes in /proc/PID/io, polled from here), after N steps (step folders
appearing), after N grid points (lines in the landscape journal), and at random times within an uninterrupted run's
duration. After each kill it checks:
  - no partial file under a final name: every report (*.h5) and checkpoint (step_N/model.safetensors) that exists
    is whole (HDF5 opens and holds its datasets; safetensors parse; state.json is JSON); temporary names
    (*.tmp, step_N.tmp/) are the only ones allowed to hold partial data;
  - the next run (`--resume` for train and landscape, the same command again for the others) finishes with results
    equal bit for bit at the same thread count to an uninterrupted run (train: the final weights and the training
    log; landscape: the surface; hessian, geometry, activations: every dataset of the report);
  - temporary files are cleaned up or reused by that run (none left afterwards).
Then a full disk: each command runs under `ulimit -f` (RLIMIT_FSIZE; moescope ignores SIGXFSZ so that the write
fails with EFBIG) with a good report already in place: it must exit 1 or 2 with one line naming the file, leave the
good report as it was, and leave no temporary file.

usage: kill_harness.py --moescope PATH [--workdir DIR] [--table FILE] [--long]
Quick mode (ctest, CI): 3-4 kill points per command, about four minutes on 2 cores (217 s measured on a busy machine). --long (or MOESCOPE_KILL_LONG=1):
about 15 per command. Prints the table: command, kill points tried, resumed results equal. Exit 1 on any failure.
Needs numpy and h5py (Debian: /usr/bin/python3)."""
import argparse
import glob
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

THREADS = "1"  # the same thread count everywhere: results are compared bit for bit


class Failure(Exception):
    pass


def run(cmd, env=None, fsize=None, check=True):
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=limit)
    if check and r.returncode != 0:
        raise Failure("%s exited %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-800:]))
    return r


def write_bytes_of(pid):
    """Bytes the process has handed to write() so far (wchar of /proc/PID/io: counted when written, not when the
    page cache reaches the disk as write_bytes is), or None when it is gone."""
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def start_and_kill(cmd, when, env=None):
    """Starts cmd and SIGKILLs it when `when(pid, elapsed)` says so. Returns (killed, seconds)."""
    # its own session, and the kill goes to the whole group: sweep's workers die with it, as under a node failure
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    t0 = time.monotonic()
    killed = False
    while p.poll() is None:
        if when(p.pid, time.monotonic() - t0):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed = True
            break
        time.sleep(0.002)
    p.wait()
    if killed:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # children that outlived the leader
        except ProcessLookupError:
            pass
    return killed, time.monotonic() - t0


# ------------------------------------------------------------------------------------------------- file checks
def check_safetensors(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise Failure("%s: shorter than a safetensors header" % path)
        n = struct.unpack("<Q", head)[0]
        if 8 + n > size:
            raise Failure("%s: header runs past the end (a partial file under a final name)" % path)
        header = json.loads(f.read(n))
    end = max([v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"] + [0])
    if 8 + n + end != size:
        raise Failure("%s: %d data bytes for a header that lists %d (partial file)" % (path, size - 8 - n, end))


def check_h5(path):
    try:
        with h5py.File(path, "r") as f:
            names = []
            f.visit(names.append)
            for n in names:
                if isinstance(f[n], h5py.Dataset):
                    f[n][()]
    except Exception as e:  # noqa: BLE001 - any failure to read is a partial file
        raise Failure("%s: not a whole report (%s)" % (path, e))


def check_tree(root):
    """No partial file under a final name anywhere under root."""
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.endswith(".tmp"):
            continue  # step_N.tmp/: a checkpoint being written
        for name in filenames:
            p = os.path.join(dirpath, name)
            if name.endswith(".tmp") or name.endswith(".partial"):
                continue
            if name.endswith(".h5"):
                check_h5(p)
            elif name.endswith(".safetensors"):
                check_safetensors(p)
            elif name.endswith(".json"):
                with open(p) as f:
                    try:
                        json.load(f)
                    except ValueError as e:
                        raise Failure("%s: not whole JSON (%s)" % (p, e))


def temporaries(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, d) for d in dirnames if d.endswith(".tmp")]
        out += [os.path.join(dirpath, f) for f in filenames if f.endswith(".tmp")]
    return sorted(out)


def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def is_timing(name):
    """Wall-clock measurements differ between runs of the same work; they are named by their unit (the naming
    rule of study/collect.hpp's is_timing_column: `*_ms`, `*_ms_per_sample`) and left out of comparisons."""
    leaf = name.rsplit("/", 1)[-1]
    return leaf.endswith("_ms") or leaf.endswith("_ms_per_sample")


def datasets(path, skip=()):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not is_timing(name) and not any(name.startswith(s) for s in skip):
                v = obj[()]
                if isinstance(v, np.ndarray) and v.dtype.kind == "O":  # variable-length strings: the values, not
                    out[name] = repr(v.tolist())                        # the pointers tobytes() would give
                else:
                    out[name] = v.tobytes() if isinstance(v, np.ndarray) else repr(v)
        f.visititems(visit)
    return out


# ------------------------------------------------------------------------------------------------- the commands
class Harness:
    def __init__(self, moescope, work, long_mode, seed=15):
        self.m = moescope
        self.work = work
        self.long = long_mode
        self.rng = random.Random(seed)
        self.rows = []
        self.failures = []
        self.env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")

    def cli(self, *args):
        return [self.m, "--threads", THREADS, "--log-level", "warn"] + list(args)

    def points(self, quick, full):
        return full if self.long else quick

    def record(self, command, tried, equal, notes=""):
        self.rows.append((command, tried, equal, notes))

    def fail(self, what):
        self.failures.append(what)
        print("FAIL:", what, file=sys.stderr)

    # -- fixtures
    def make_inputs(self):
        w = self.work
        self.ckpt = os.path.join(w, "ckpt.safetensors")
        run(self.cli("synth", "mixtral", "-o", self.ckpt, "--layers", "4", "--experts", "8", "--hidden", "256",
                     "--intermediate", "512", "--dtype", "BF16", "--seed", "3"), env=self.env)
        self.config = os.path.join(w, "run.json")
        with open(self.config, "w") as f:
            json.dump({"name": "k", "seed": 7,
                       "model": {"type": "classifier", "backbone": "mlp", "backbone_widths": [32], "head": "sparse",
                                 "head_hidden": 16, "experts": 4, "top_k": 2, "noisy": True, "dropout": 0.1},
                       "data": {"name": "clustered", "clustered": {"samples": 2000, "dim": 16, "clusters": 4,
                                                                   "classes": 4}, "seed": 1},
                       "train": {"steps": 120, "batch_size": 32, "checkpoint_every": 10, "eval_every": 40,
                                 "log_every": 1}}, f)
        self.refruns = os.path.join(w, "ref_runs")
        run(self.cli("train", "--config", self.config, "--out-dir", self.refruns), env=self.env)
        self.run = os.path.join(self.refruns, "k")

    # -- train
    def train(self):
        ref_dir = self.run
        ref_final = tensors(os.path.join(ref_dir, "step_120", "model.safetensors"))
        ref_log = datasets(os.path.join(ref_dir, "log.h5"))
        t0 = time.monotonic()
        run(self.cli("train", "--config", self.config, "--out-dir", os.path.join(self.work, "timing")), env=self.env)
        duration = time.monotonic() - t0
        kills = [("after %d steps" % s, "steps", s) for s in self.points([20, 70], [10, 20, 30, 50, 70, 90, 110])]
        kills += [("after %d KB written" % (b // 1024), "bytes", b) for b in self.points([150_000], [30_000, 150_000, 600_000])]
        kills += [("at %.2f s" % t, "time", t) for t in
                  sorted(self.rng.uniform(0.3, duration) for _ in range(self.points(2, 6)))]
        equal_all = True
        for label, kind, value in kills:
            out = os.path.join(self.work, "train_kill")
            shutil.rmtree(out, ignore_errors=True)
            rundir = os.path.join(out, "k")

            def when(pid, elapsed):
                if kind == "steps":
                    return os.path.isdir(os.path.join(rundir, "step_%d" % value))
                if kind == "bytes":
                    b = write_bytes_of(pid)
                    return b is not None and b >= value
                return elapsed >= value
            killed, _ = start_and_kill(self.cli("train", "--config", self.config, "--out-dir", out), when, self.env)
            try:
                check_tree(out)
                run(self.cli("train", "--config", self.config, "--out-dir", out, "--resume"), env=self.env)
                left = temporaries(out)
                if left:
                    raise Failure("temporary files left after --resume: %s" % left)
                check_tree(out)
                eq = tensors(os.path.join(rundir, "step_120", "model.safetensors")) == ref_final
                log_eq = datasets(os.path.join(rundir, "log.h5")) == ref_log
                if not eq:
                    raise Failure("train killed %s: resumed final weights differ" % label)
                if not log_eq:
                    raise Failure("train killed %s: resumed training log differs" % label)
            except Failure as e:
                equal_all = False
                self.fail("train killed %s%s: %s" % (label, "" if killed else " (finished first)", e))
        self.record("train (120 steps, checkpoint every 10; weights and log)", [k[0] for k in kills], equal_all)

    # -- landscape
    def landscape(self):
        ref = os.path.join(self.work, "land_ref.h5")
        args = ["landscape", self.run, "--dirs", "filter", "--x", "-1:1:9", "--y", "-1:1:7", "--split", "train,test",
                "--max-samples", "400", "--seed", "5"]
        t0 = time.monotonic()
        run(self.cli(*args, "-o", ref), env=self.env)
        duration = time.monotonic() - t0
        ref_data = datasets(ref)
        kills = [("after %d points" % n, "points", n) for n in self.points([5, 40], [1, 5, 20, 40, 62])]
        kills += [("after %d KB written" % (b // 1024), "bytes", b) for b in self.points([4000], [2000, 4000, 8000])]
        kills += [("at %.2f s" % t, "time", t) for t in
                  sorted(self.rng.uniform(0.2, duration) for _ in range(self.points(2, 6)))]
        equal_all = True
        for label, kind, value in kills:
            out = os.path.join(self.work, "land_kill.h5")
            for f in glob.glob(out + "*"):
                os.remove(f)

            def when(pid, elapsed):
                if kind == "points":
                    try:
                        with open(out + ".partial") as f:
                            return sum(1 for line in f if line.startswith("p ")) >= value
                    except OSError:
                        return False
                if kind == "bytes":
                    b = write_bytes_of(pid)
                    return b is not None and b >= value
                return elapsed >= value
            killed, _ = start_and_kill(self.cli(*args, "-o", out), when, self.env)
            try:
                if os.path.exists(out) and killed:
                    check_h5(out)  # the report is written last: whole if it is there
                r = run(self.cli(*args, "-o", out, "--resume"), env=self.env)
                left = [f for f in glob.glob(out + "*") if f != out]
                if left:
                    raise Failure("left after the resumed run: %s" % left)
                if datasets(out) != ref_data:
                    raise Failure("resumed surface differs")
            except Failure as e:
                equal_all = False
                self.fail("landscape killed %s%s: %s" % (label, "" if killed else " (finished first)", e))
        self.record("landscape (9 x 7 grid, train and test)", [k[0] for k in kills], equal_all)

    # -- one-shot commands: hessian, geometry, activations
    def one_shot(self, name, args, label_of_run, skip=()):
        ref = os.path.join(self.work, name + "_ref.h5")
        t0 = time.monotonic()
        run(self.cli(*args, "-o", ref), env=self.env)
        duration = time.monotonic() - t0
        ref_data = datasets(ref, skip)
        kills = [("at %.2f s" % t, "time", t) for t in
                 sorted(self.rng.uniform(0.05, duration) for _ in range(self.points(3, 12)))]
        kills += [("after %d KB written" % (b // 1024), "bytes", b) for b in self.points([64_000], [16_000, 64_000, 256_000])]
        kills += [("once %s.tmp appears (report being written)" % os.path.basename(name + "_kill.h5"), "tmp", 0)]
        equal_all = True
        out = os.path.join(self.work, name + "_kill.h5")
        for label, kind, value in kills:
            def when(pid, elapsed):
                if kind == "tmp":
                    return os.path.exists(out + ".tmp")
                if kind == "bytes":
                    b = write_bytes_of(pid)
                    return b is not None and b >= value
                return elapsed >= value
            # the previous run's report stays in place: a killed run must not damage it
            had = open(out, "rb").read() if os.path.exists(out) else None
            killed, _ = start_and_kill(self.cli(*args, "-o", out), when, self.env)
            try:
                if os.path.exists(out):
                    check_h5(out)
                    # either the previous report, untouched, or (the kill came after the rename) a whole new one
                    if killed and had is not None and open(out, "rb").read() != had and \
                            datasets(out, skip) != ref_data:
                        raise Failure("the killed run left a report that is neither the previous one nor a whole new one")
                run(self.cli(*args, "-o", out), env=self.env)
                if os.path.exists(out + ".tmp"):
                    raise Failure("%s.tmp left after the next run" % out)
                if datasets(out, skip) != ref_data:
                    raise Failure("the rerun's report differs from the uninterrupted run's")
            except Failure as e:
                equal_all = False
                self.fail("%s killed %s%s: %s" % (name, label, "" if killed else " (finished first)", e))
        self.record(label_of_run, [k[0] for k in kills], equal_all)

    # -- sweep
    def sweep(self):
        spec = os.path.join(self.work, "sweep.json")
        with open(spec, "w") as f:
            json.dump({"name": "kill", "description": "kill harness",
                       "base": {"data": {"name": "clustered",
                                         "clustered": {"samples": 400, "dim": 6, "clusters": 3, "classes": 3}},
                                "model": {"type": "classifier", "backbone": "mlp", "backbone_widths": [12],
                                          "head": "sparse", "head_hidden": 6, "experts": 4, "top_k": 2},
                                "train": {"steps": 30, "batch_size": 32, "log_every": 5, "checkpoint_every": 10}},
                       "axes": {"train.regularisers.weight_orth": [0, 0.5], "seed": [0, 1]},
                       "analyses": {"geometry": {},
                                    "landscape": {"dirs": "random", "x": "-1:1:5", "max-samples": 100}}}, f)
        args = ["sweep", spec, "--jobs", "1"]
        ref = os.path.join(self.work, "sweep_ref")
        t0 = time.monotonic()
        run(self.cli(*args, "-o", ref), env=self.env)
        duration = time.monotonic() - t0
        ref_data = datasets(os.path.join(ref, "sweep.h5"))
        kills = [("after %d points' reports" % n, "points", n) for n in self.points([1], [1, 2, 3])]
        kills += [("at %.2f s" % t, "time", t) for t in
                  sorted(self.rng.uniform(0.2, duration) for _ in range(self.points(1, 5)))]
        equal_all = True
        for label, kind, value in kills:
            out = os.path.join(self.work, "sweep_kill")
            shutil.rmtree(out, ignore_errors=True)

            def when(pid, elapsed):
                if kind == "points":
                    return len(glob.glob(os.path.join(out, "points", "*", "landscape.h5"))) >= value
                return elapsed >= value
            killed, _ = start_and_kill(self.cli(*args, "-o", out), when, self.env)
            try:
                check_tree(out)
                run(self.cli(*args, "-o", out), env=self.env)
                left = temporaries(out)
                if left:
                    raise Failure("temporary files left after the rerun: %s" % left)
                check_tree(out)
                if datasets(os.path.join(out, "sweep.h5")) != ref_data:
                    raise Failure("the rerun's sweep table differs from the uninterrupted run's")
            except Failure as e:
                equal_all = False
                self.fail("sweep killed %s%s: %s" % (label, "" if killed else " (finished first)", e))
        self.record("sweep (2 x 2 points: train 30 steps, geometry, landscape; the table)", [k[0] for k in kills],
                    equal_all)

    # -- full disk
    def full_disk(self):
        cases = [
            ("geometry", ["geometry", self.ckpt], 6000),
            ("hessian", ["hessian", self.run, "--max-samples", "200", "--top-k", "2", "--trace", "hutchinson",
                         "--probes", "5"], 4000),
            ("landscape", ["landscape", self.run, "--dirs", "random", "--x", "-1:1:5", "--max-samples", "100"], 4000),
            ("activations", ["activations", self.run, "--max-tokens", "200"], 6000),
        ]
        for name, args, limit in cases:
            out = os.path.join(self.work, "disk_" + name + ".h5")
            run(self.cli(*args, "-o", out), env=self.env)
            good = open(out, "rb").read()
            for f in glob.glob(out + ".partial"):
                os.remove(f)
            r = run(self.cli(*args, "-o", out), env=self.env, fsize=limit, check=False)
            lines = [l for l in r.stderr.splitlines() if l.startswith("moescope: ")]
            ok = (r.returncode in (1, 2) and len(lines) == 1 and out in lines[0] and open(out, "rb").read() == good
                  and not os.path.exists(out + ".tmp"))
            if not ok:
                self.fail("%s with ulimit -f %d B: exit %d, stderr %r, report intact %s, tmp left %s" % (
                    name, limit, r.returncode, r.stderr[-500:], open(out, "rb").read() == good,
                    os.path.exists(out + ".tmp")))
            self.record("%s, disk full (ulimit -f %d B)" % (name, limit), ["writing the report"], ok,
                        "exit %d: %s" % (r.returncode, lines[0] if lines else r.stderr.strip()[-200:]))
        # train: checkpoints cannot be written
        out = os.path.join(self.work, "disk_train")
        r = run(self.cli("train", "--config", self.config, "--out-dir", out), env=self.env, fsize=20000, check=False)
        lines = [l for l in r.stderr.splitlines() if l.startswith("moescope: ")]
        ok = r.returncode in (1, 2) and len(lines) == 1
        try:
            check_tree(out)
        except Failure as e:
            ok = False
            self.fail("train with ulimit -f: %s" % e)
        if not ok:
            self.fail("train with ulimit -f 20000 B: exit %d, stderr %r" % (r.returncode, r.stderr[-500:]))
        self.record("train, disk full (ulimit -f 20000 B)", ["writing a checkpoint"], ok,
                    "exit %d: %s" % (r.returncode, lines[0] if lines else r.stderr.strip()[-200:]))

    def table(self):
        out = ["| command | kill points tried | resumed results equal |", "|---|---|---|"]
        for command, tried, equal, notes in self.rows:
            out.append("| %s | %s | %s%s |" % (command, ", ".join(tried), "yes" if equal else "**no**",
                                                 (" (" + notes.replace("|", "\\|") + ")") if notes else ""))
        return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moescope", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--table")
    ap.add_argument("--long", action="store_true", default=os.environ.get("MOESCOPE_KILL_LONG") == "1")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="moescope-kill-")
    os.makedirs(work, exist_ok=True)
    h = Harness(os.path.abspath(a.moescope), work, a.long)
    t0 = time.monotonic()
    try:
        h.make_inputs()
        h.train()
        h.landscape()
        h.one_shot("hessian", ["hessian", h.run, "--max-samples", "300", "--top-k", "3", "--trace", "hutch++",
                               "--probes", "12", "--density", "--density-steps", "20"],
                   "hessian (top 3, Hutch++, density)")
        h.one_shot("geometry", ["geometry", h.ckpt], "geometry (4 layers x 8 experts, bf16, 100 MB)")
        h.one_shot("activations", ["activations", h.run, "--max-tokens", "1500", "--batch-size", "50", "--geometry"],
                   "activations (with --geometry)")
        h.sweep()
        h.full_disk()
    except Failure as e:
        h.fail("harness: %s" % e)
    table = h.table()
    print(table)
    print("%d failures, %.0f s" % (len(h.failures), time.monotonic() - t0))
    if a.table:
        with open(a.table, "w") as f:
            f.write(table + "\n")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if h.failures else 0


if __name__ == "__main__":
    sys.exit(main())
