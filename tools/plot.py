#!/usr/bin/python3
"""Figures from moescope HDF5 reports (PNG at 150 dpi and PDF), for every report kind a file holds.

Usage: /usr/bin/python3 tools/plot.py REPORT.h5 [REPORT2.h5 ...] -o DIR [--format png,pdf] [--only KIND,...]
       /usr/bin/python3 tools/plot.py --list-kinds
`moescope plot` runs this script. Prints the path of every figure written. With several reports each figure
name starts with the report's file stem (its folder's name too where stems repeat, e.g. two log.h5 files).
Exit status: 0 done, 2 bad usage or a report that cannot be plotted (one line naming the file), 1 internal error.
Needs Debian's python3-h5py, python3-matplotlib and python3-numpy.
"""
import argparse
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import moescope_plot  # noqa: E402
from moescope_plot import common, landscape, sweep  # noqa: E402

PROG = "moescope plot"
FORMATS = ("png", "pdf", "svg")


def fail(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def prefixes(paths):
    """'' for one report; else each report's stem, with its folder's name where stems repeat, then a number."""
    if len(paths) == 1:
        return [""]
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    out = []
    for p, s in zip(paths, stems):
        if stems.count(s) > 1:
            parent = os.path.basename(os.path.dirname(os.path.abspath(p)))
            s = f"{parent}_{s}" if parent else s
        out.append(s)
    seen = {}
    final = []
    for s in out:
        seen[s] = seen.get(s, 0) + 1
        final.append(common.sanitise(s if seen[s] == 1 else f"{s}-{seen[s]}") + "_")
    return final


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="*", metavar="REPORT.h5")
    ap.add_argument("-o", "--output", metavar="DIR",
                    help="folder for the figures (default: REPORT_figures next to the first report)")
    ap.add_argument("--format", default="png,pdf", help="comma-separated formats: png, pdf, svg (default png,pdf)")
    ap.add_argument("--only", metavar="KIND", help="comma-separated kinds to draw (see --list-kinds)")
    ap.add_argument("--list-kinds", action="store_true", help="print the kinds of report this draws and exit")
    ap.add_argument("--levels", type=int, default=20, help="landscape: contour levels of 2-D surfaces (default 20)")
    ap.add_argument("--vmax", type=float, default=None, help="landscape: clip 2-D losses above this value")
    ap.add_argument("--sweep-pair", action="append", default=[], metavar="X,Y",
                    help="sweep: scatter metric Y against metric X over points (repeatable; default "
                         "mso_mean,activation_overlap when both exist)")
    a = ap.parse_args(argv)

    if a.list_kinds:
        print("\n".join(moescope_plot.list_kinds()))
        return 0
    if not a.reports:
        return fail("no report given (usage: plot.py REPORT.h5 [...] -o DIR)")
    formats = [s.strip().lower() for s in a.format.split(",") if s.strip()]
    bad = [s for s in formats if s not in FORMATS]
    if not formats or bad:
        return fail(f"--format: unknown format '{bad[0] if bad else a.format}' (known: {', '.join(FORMATS)})")
    only = None
    if a.only:
        only = [s.strip() for s in a.only.split(",") if s.strip()]
        unknown = [s for s in only if s not in moescope_plot.BY_NAME]
        if unknown or not only:
            return fail(f"--only: unknown kind '{unknown[0] if unknown else a.only}' "
                        f"(known: {', '.join(moescope_plot.BY_NAME)})")
    if a.levels < 2:
        return fail("--levels must be at least 2")
    pairs = []
    for p in a.sweep_pair:
        parts = [s.strip() for s in p.split(",")]
        if len(parts) != 2 or not all(parts):
            return fail(f"--sweep-pair: '{p}' is not X,Y")
        pairs.append(tuple(parts))
    landscape.options.update(levels=a.levels, vmax=a.vmax)
    sweep.options.update(pairs=pairs)

    for r in a.reports:
        if not os.path.isfile(r):
            return fail(f"{r}: no such file")
    out_dir = a.output or os.path.splitext(a.reports[0])[0] + "_figures"
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        return fail(f"{out_dir}: cannot create the output folder ({e.strerror})")

    status = 0
    for report, prefix in zip(a.reports, prefixes(a.reports)):
        out = common.Output(out_dir, formats, prefix=prefix, source=common.short_path(report))
        try:
            moescope_plot.render(report, out, only)
        except common.ReportError as e:
            status = fail(f"{report}: {e}")
        except Exception as e:  # a bug here, not in the report: say so and show where
            traceback.print_exc()
            print(f"{PROG}: internal error: {report}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
