"""/hessian/<split> (`moescope hessian`): top eigenvalues, traces and spectral densities per split.

Figures:
- hessian_eigenvalues: lambda_k against k for each split, error bars = the Ritz residual ||H v - lambda v|| of
  each pair (for a symmetric H an exact eigenvalue lies within it); log y when all are positive and span two
  decades or more;
- hessian_trace: the trace estimate per split with +-1 standard error bars (method and probes in the title);
- hessian_density: the SLQ spectral density (`density/grid`, `density/values`) per split on a log y axis, drawn
  down to 1e-8 of its peak (the Gaussian-smoothed tails go to 0, which a log axis cannot show);
- hessian_experts_<split> (`--params each-expert`): lambda_1 and the trace of every expert's block, one bar per
  expert, coloured by MoE layer, with residual and standard-error bars.
"""
import re

import numpy as np

from .common import (DOUBLE, SINGLE, ReportError, array, attr, child_groups, color, group, is_group, natural_key,
                     scalar)

KIND = "hessian"
DESCRIPTION = ("/hessian/<split>: top eigenvalues with residuals, trace +- s.e., SLQ density (log y), "
               "per-expert lambda_1 and trace")

SPLIT_ORDER = {"train": 0, "valid": 1, "test": 2}
EXPERT = re.compile(r"expert_(\d+)_(\d+)")


def splits(f):
    g = f["hessian"]
    names = child_groups(g)
    names.sort(key=lambda s: (SPLIT_ORDER.get(s, 3), natural_key(s)))
    return [(s, g[s]) for s in names]


def experts(g):
    """[(layer, expert, group)] of an each-expert split, in (layer, expert) order."""
    out = []
    for k in child_groups(g):
        m = EXPERT.fullmatch(k)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), g[k]))
    return sorted(out, key=lambda t: (t[0], t[1]))


def has_results(g):
    return "eigenvalues" in g or "trace" in g or "density" in g


def applies(f):
    if not is_group(f, "hessian"):
        return False
    return any(has_results(g) or experts(g) for _, g in splits(f))


def eigenpairs(g):
    ev = array(g, "eigenvalues", ndim=1)
    res = array(g, "residuals", length=ev.size) if "residuals" in g else np.full(ev.size, np.nan)
    return ev, res


def status_note(g):
    s = str(attr(g, "status", ""))
    return "" if s in ("", "converged", "ok", "success", "successful") else f" [{s}]"


def plot_eigenvalues(out, ss):
    fig = out.figure(SINGLE, 2.6)
    ax = fig.subplots()
    n = len(ss)
    width = 0.6
    allv = []
    log = False
    pairs = [(name, g, *eigenpairs(g)) for name, g in ss]
    for _, _, ev, _ in pairs:
        allv.extend(ev[np.isfinite(ev)].tolist())
    allv = np.array(allv)
    if allv.size and np.all(allv > 0) and allv.max() / allv.min() >= 100:
        log = True
    for i, (name, g, ev, res) in enumerate(pairs):
        k = np.arange(1, ev.size + 1) + (i - (n - 1) / 2) * (width / max(n, 1))
        if not log:
            ax.vlines(k, 0, ev, color=color(i), linewidth=0.8, alpha=0.6)
        ax.errorbar(k, ev, yerr=np.where(np.isfinite(res), res, 0), fmt="o", color=color(i), capsize=2,
                    elinewidth=0.8, label=f"{name}{status_note(g)}")
    if log:
        ax.set_yscale("log")
    else:
        ax.axhline(0, color="0.5", linewidth=0.5)
    K = max(ev.size for _, _, ev, _ in pairs)
    ax.set_xticks(range(1, K + 1) if K <= 20 else np.unique(np.linspace(1, K, 10).astype(int)))
    ax.set_xlabel("eigenvalue index k (largest first)")
    ax.set_ylabel("eigenvalue $\\lambda_k$ of $\\nabla^2 L$ (L in nats)")
    method = attr(ss[0][1], "method", "")
    ax.set_title("Top Hessian eigenvalues" + (f" ({method})" if method else ""))
    ax.legend(loc="best", title="split; bars: Ritz residual")
    out.save(fig, "hessian_eigenvalues")


def plot_trace(out, ss):
    fig = out.figure(SINGLE, 2.4)
    ax = fig.subplots()
    names = [s for s, _ in ss]
    tr = np.array([scalar(g, "trace") for _, g in ss])
    se = np.array([scalar(g, "trace_stderr", float("nan")) for _, g in ss])
    x = np.arange(len(ss))
    ax.bar(x, tr, yerr=np.where(np.isfinite(se), se, 0), capsize=3, width=0.6,
           color=[color(i) for i in range(len(ss))], error_kw={"elinewidth": 0.9})
    for xi, t, s in zip(x, tr, se):
        ax.annotate(f"{t:.4g}" + (f" ± {s:.2g}" if np.isfinite(s) else ""), (xi, t), textcoords="offset points",
                    xytext=(0, 3 if t >= 0 else -8), ha="center", fontsize=5.5)
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_xlabel("split")
    ax.set_ylabel("trace of $\\nabla^2 L$ (L in nats)")
    g0 = ss[0][1]
    method, probes = attr(g0, "trace_method", ""), attr(g0, "probes", "")
    ax.set_title("Hessian trace ± 1 s.e." + (f" ({method}, {probes} probes)" if method else ""))
    ax.axhline(0, color="0.5", linewidth=0.5)
    ax.margins(y=0.15)
    out.save(fig, "hessian_trace")


def plot_density(out, ss):
    fig = out.figure(SINGLE, 2.6)
    ax = fig.subplots()
    peak = 0.0
    for i, (name, g) in enumerate(ss):
        d = group(g, "density")
        grid = array(d, "grid", ndim=1)
        values = array(d, "values", length=grid.size)
        peak = max(peak, float(np.nanmax(values)) if values.size else 0.0)
        shown = np.where(values > 0, values, np.nan)
        mass = attr(d, "mass", "")
        label = name + (f" (mass {float(mass):.3g})" if mass != "" else "")
        ax.plot(grid, shown, color=color(i), label=label)
    ax.set_yscale("log")
    if peak > 0:
        ax.set_ylim(peak * 1e-8, peak * 3)
    ax.set_xlabel("eigenvalue $\\lambda$")
    ax.set_ylabel("spectral density (per unit $\\lambda$)")
    ax.set_title("Hessian spectral density (SLQ)")
    ax.legend(loc="best")
    out.save(fig, "hessian_density")


def plot_experts(out, split, g, ex):
    n = len(ex)
    layers = sorted({L for L, _, _ in ex})
    # Positions: experts of one layer side by side, one slot of space between layers.
    pos, x = [], 0
    prev = None
    for L, _, _ in ex:
        if prev is not None and L != prev:
            x += 1
        pos.append(x)
        x += 1
        prev = L
    pos = np.array(pos, dtype=float)
    cols = [color(layers.index(L)) for L, _, _ in ex]
    lam = np.array([eigenpairs(eg)[0][0] if eigenpairs(eg)[0].size else np.nan for _, _, eg in ex])
    lres = np.array([eigenpairs(eg)[1][0] if eigenpairs(eg)[1].size else np.nan for _, _, eg in ex])
    have_trace = all("trace" in eg for _, _, eg in ex)
    rows = 2 if have_trace else 1
    fig = out.figure(SINGLE if n <= 16 else DOUBLE, 0.4 + 1.8 * rows)
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True))
    ax = axes[0]
    ax.bar(pos, lam, yerr=np.where(np.isfinite(lres), lres, 0), color=cols, width=0.8, capsize=1.5,
           error_kw={"elinewidth": 0.7})
    ax.set_ylabel("$\\lambda_1$ of expert block")
    ax.set_title(f"Per-expert curvature, {split} split")
    if have_trace:
        tr = np.array([scalar(eg, "trace") for _, _, eg in ex])
        se = np.array([scalar(eg, "trace_stderr", float("nan")) for _, _, eg in ex])
        axes[1].bar(pos, tr, yerr=np.where(np.isfinite(se), se, 0), color=cols, width=0.8, capsize=1.5,
                    error_kw={"elinewidth": 0.7})
        axes[1].set_ylabel("trace of expert block")
    for a in axes:
        a.axhline(0, color="0.5", linewidth=0.5)
    last = axes[-1]
    last.set_xticks(pos)
    last.set_xticklabels([str(e) for _, e, _ in ex], fontsize=5.5 if n > 16 else 6)
    last.set_xlabel("expert (grouped by MoE layer)")
    if len(layers) > 1:
        from matplotlib.patches import Patch

        axes[0].legend(handles=[Patch(color=color(i), label=f"layer {L}") for i, L in enumerate(layers)],
                       loc="best", ncol=min(4, len(layers)))
    out.save(fig, f"hessian_experts_{split}")


def plot(f, out):
    ss = splits(f)
    eig = [(s, g) for s, g in ss if "eigenvalues" in g and g["eigenvalues"].shape not in ((0,),)]
    if eig:
        plot_eigenvalues(out, eig)
    tr = [(s, g) for s, g in ss if "trace" in g]
    if tr:
        plot_trace(out, tr)
    dens = [(s, g) for s, g in ss if "density" in g]
    if dens:
        plot_density(out, dens)
    for s, g in ss:
        ex = experts(g)
        if ex:
            plot_experts(out, s, g, ex)
    if not (eig or tr or dens or any(experts(g) for _, g in ss)):
        raise ReportError("'/hessian' has no eigenvalues, trace, density or expert_L_E groups")
