"""/train (a run's log.h5, written by `moescope train`): training curves.

Figures:
- training_curves: batch cross-entropy (faint) with its running mean over the last max(1, n/50) logged steps,
  the total loss with regularisers where it differs, validation loss at each evaluation, the test loss as a
  star at the last step; validation accuracy, batch accuracy (running mean) and test accuracy; validation
  perplexity in a third panel for language models;
- training_lr: the learning rate per step;
- training_expert_load: the share of routing per expert of the first MoE layer over steps (heat map);
- training_regularisers: each regulariser term that was on (not all NaN), unweighted, per MoE layer.
"""
import json

import numpy as np

from .common import (DOUBLE, SINGLE, ReportError, array, attr, auto_log_y, color, expert_ticks, grid_shape, group,
                     hide_unused, is_dataset, is_group, scalar)

KIND = "train"
DESCRIPTION = "/train (log.h5): loss, validation loss/accuracy, learning rate, expert load (layer 0), regularisers"


def applies(f):
    if not is_group(f, "train") or not is_dataset(f["train"], "step"):
        return False
    return f["train"]["step"].shape not in ((), (0,))


def running_mean(x, y):
    """Trailing running mean of y over w = max(1, n // 50) points, ignoring NaN; returns (x, mean, w)."""
    n = y.size
    w = max(1, n // 50)
    if w == 1:
        return x, y, 1
    ok = np.isfinite(y)
    s = np.convolve(np.where(ok, y, 0.0), np.ones(w), "valid")
    c = np.convolve(ok.astype(float), np.ones(w), "valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        return x[w - 1:], np.where(c > 0, s / np.maximum(c, 1), np.nan), w


def is_lm(t):
    """True for a language-model run (its /train@config has model.type "lm"): perplexity is drawn for those."""
    try:
        cfg = json.loads(str(attr(t, "config", "")) or "{}")
    except ValueError:
        return False
    model = cfg.get("model", {}) if isinstance(cfg, dict) else {}
    return isinstance(model, dict) and model.get("type") == "lm"


def has_finite(a):
    return a.size > 0 and np.any(np.isfinite(a))


def plot(f, out):
    t = f["train"]
    step = array(t, "step", ndim=1)
    n = step.size
    loss = array(t, "loss", length=n)
    total = array(t, "total_loss", length=n) if "total_loss" in t else None
    batch_acc = array(t, "batch_acc", length=n) if "batch_acc" in t else None
    vstep = array(t, "val_step", ndim=1) if "val_step" in t else np.array([])
    m = vstep.size
    vloss = array(t, "val_loss", length=m) if m else np.array([])
    vacc = array(t, "val_acc", length=m) if m and "val_acc" in t else np.full(m, np.nan)
    vppl = array(t, "val_perplexity", length=m) if m and "val_perplexity" in t else np.full(m, np.nan)
    test_loss = scalar(t, "test_loss", float("nan"))
    test_acc = scalar(t, "test_acc", float("nan"))
    test_ppl = scalar(t, "test_perplexity", float("nan"))
    last = max(step[-1], vstep[-1]) if m else step[-1]  # the final evaluation follows the last step

    want_ppl = is_lm(t) and (has_finite(vppl) or np.isfinite(test_ppl))
    panels = 3 if want_ppl else 2
    fig = out.figure(DOUBLE, 2.4)
    axes = fig.subplots(1, panels)
    ax = axes[0]
    ax.plot(step, loss, color=color(0), alpha=0.3, linewidth=0.6)
    xs, ys, w = running_mean(step, loss)
    ax.plot(xs, ys, color=color(0), label="train batch" + (f" (mean of {w})" if w > 1 else ""))
    if total is not None and has_finite(total) and not np.allclose(total, loss, equal_nan=True):
        xt, yt, _ = running_mean(step, total)
        ax.plot(xt, yt, color=color(4), linestyle="--", label="train total (with regularisers)")
    if has_finite(vloss):
        ax.plot(vstep, vloss, color=color(1), marker="o", label="validation")
    if np.isfinite(test_loss):
        ax.plot([last], [test_loss], color=color(2), marker="*", markersize=7, linestyle="none", label="test")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("Loss")
    ax.legend(loc="best")

    ax = axes[1]
    if batch_acc is not None and has_finite(batch_acc):
        xa, ya, w = running_mean(step, batch_acc)
        ax.plot(xa, ya, color=color(0), alpha=0.7, label="train batch" + (f" (mean of {w})" if w > 1 else ""))
    if has_finite(vacc):
        ax.plot(vstep, vacc, color=color(1), marker="o", label="validation")
    if np.isfinite(test_acc):
        ax.plot([last], [test_acc], color=color(2), marker="*", markersize=7, linestyle="none",
                label=f"test ({test_acc:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title("Accuracy")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    if want_ppl:
        ax = axes[2]
        if has_finite(vppl):
            ax.plot(vstep, vppl, color=color(1), marker="o", label="validation")
        if np.isfinite(test_ppl):
            ax.plot([last], [test_ppl], color=color(2), marker="*", markersize=7, linestyle="none", label="test")
        ax.set_xlabel("step")
        ax.set_ylabel("perplexity (per token)")
        auto_log_y(ax, np.concatenate([vppl, [test_ppl]]))
        ax.set_title("Perplexity")
        ax.legend(loc="best")
    out.save(fig, "training_curves")

    if "lr" in t:
        lr = array(t, "lr", length=n)
        fig = out.figure(SINGLE, 2.2)
        ax = fig.subplots()
        ax.plot(step, lr, color=color(0))
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.set_title("Learning-rate schedule")
        out.save(fig, "training_lr")

    if "expert_load" in t:
        load = array(t, "expert_load", ndim=3)
        if load.shape[0] != n:
            raise ReportError(f"'{t.name}/expert_load' has {load.shape[0]} steps, '{t.name}/step' {n}")
        if load.shape[1] > 0 and load.shape[2] > 0:
            E = load.shape[2]
            fig = out.figure(DOUBLE, 2.3)
            ax = fig.subplots()
            # Cells centred on the logged steps (which need not be evenly spaced), edges half-way between.
            if n > 1:
                mid = 0.5 * (step[1:] + step[:-1])
                edges = np.concatenate([[step[0] - (mid[0] - step[0])], mid, [step[-1] + (step[-1] - mid[-1])]])
            else:
                edges = np.array([step[0] - 0.5, step[0] + 0.5])
            im = ax.pcolormesh(edges, np.arange(E + 1) - 0.5, load[:, 0, :].T, cmap="cividis", vmin=0,
                               shading="flat")
            expert_ticks(ax, E, "y")
            ax.set_xlabel("step")
            ax.set_ylabel("expert (first MoE layer)")
            fig.colorbar(im, ax=ax, label=f"share of routing (1/E = {1 / E:.3g})")
            ax.set_title("Expert load over training, first MoE layer")
            out.save(fig, "training_expert_load")

    if "regularisers" in t:
        r = group(t, "regularisers")
        terms = []
        for name in sorted(r.keys()):
            v = array(r, name, ndim=2)
            if v.shape[0] != n:
                raise ReportError(f"'{r.name}/{name}' has {v.shape[0]} steps, '{t.name}/step' {n}")
            if has_finite(v):
                terms.append((name, v))
        if terms:
            k = len(terms)
            rows, cols = grid_shape(k, 3)
            fig = out.figure(SINGLE if k == 1 else DOUBLE, 0.35 + rows * 1.9)
            axes = fig.subplots(rows, cols, squeeze=False)
            for i, (ax, (name, v)) in enumerate(zip(axes.flat, terms)):
                L = v.shape[1]
                if L <= 8:
                    for layer in range(L):
                        ax.plot(step, v[:, layer], color=color(layer), linewidth=0.9, label=f"MoE layer {layer}")
                else:
                    with np.errstate(all="ignore"):
                        ax.fill_between(step, np.nanmin(v, axis=1), np.nanmax(v, axis=1), color=color(0), alpha=0.25,
                                        linewidth=0, label=f"min-max over {L} layers")
                        ax.plot(step, np.nanmean(v, axis=1), color=color(0), label="mean over layers")
                auto_log_y(ax, v)
                ax.set_title(name.replace("_", " "))
                ax.set_xlabel("step")
                if i % cols == 0:
                    ax.set_ylabel("unweighted value")
                if i == 0:
                    ax.legend(loc="best")
            hide_unused(axes, k)
            fig.suptitle("Regularisers per MoE layer (before weighting)")
            out.save(fig, "training_regularisers")
