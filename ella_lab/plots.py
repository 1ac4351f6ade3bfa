"""Figures of a comparison: reliability diagrams, shift curves and regression bands (matplotlib Figure API, Agg;
no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ella.metrics import ECE_BINS, calibration_bins

_METRICS = (("nll", "NLL"), ("ece", "ECE"), ("acc", "accuracy"))


def _save(fig, path, title: str | None, dpi: int = 110) -> Path:
    """Title ``fig`` and write it to the PNG ``path`` (its folder made if needed); returns the path."""
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _draw_reliability(fig, spec, probs, labels, title, bins):
    counts, acc, conf = calibration_bins(probs, labels, bins)
    sub = spec.subgridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
    ax, axh = fig.add_subplot(sub[0]), fig.add_subplot(sub[1])
    edges = np.linspace(0.0, 1.0, bins + 1)
    lo, w, nonempty = edges[:-1], 1.0 / bins, counts > 0
    ax.bar(lo, acc, width=w, align="edge", color="tab:blue", edgecolor="black", lw=0.5, label="accuracy")
    ax.bar(
        lo[nonempty],
        (conf - acc)[nonempty],
        bottom=acc[nonempty],
        width=w,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        lw=0.5,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", xticklabels=[])
    ax.legend(loc="upper left", fontsize="small")
    e = float(np.sum(counts / counts.sum() * np.abs(acc - conf)))
    ax.set_title(f"{title + ': ' if title else ''}ECE = {100 * e:.2f}% ({bins} bins)", fontsize="medium")
    axh.bar(lo, counts, width=w, align="edge", color="gray", edgecolor="black", lw=0.5)
    axh.set(xlim=(0, 1), xlabel="confidence (top label)", ylabel="count")


def reliability_diagrams(results: dict, path, title: str | None = None, bins: int = ECE_BINS) -> Path:
    """Write a PNG with one reliability diagram per entry of ``results`` (``name -> (probs, labels)``), side by
    side: per-bin accuracy bars against the diagonal, a histogram of bin counts, and the ECE in each panel
    title. Uses matplotlib's Agg renderer (no display). Returns the path."""
    from matplotlib.figure import Figure

    if not isinstance(results, dict) or not results:
        raise ValueError("`results` must be a non-empty dict mapping names to (probs, labels)")
    for name, pair in results.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"`results[{name!r}]` must be a (probs, labels) pair")
        calibration_bins(*pair, bins)
    fig = Figure(figsize=(4.2 * len(results), 4.8), layout="constrained")
    grid = fig.add_gridspec(1, len(results))
    for spec, (name, (p, y)) in zip(grid, results.items()):
        _draw_reliability(fig, spec, p, y, name, bins)
    return _save(fig, path, title, dpi=100)


def shift_curves(shift: dict, path, title: str = "") -> Path:
    """One column per shift curve, one row per metric (NLL, ECE, accuracy), one line per method.

    Args:
        shift: ``{curve: {method: [{"level", "nll", "ece", "acc"}, ...]}}`` (the ``shift`` section of a result).
        path: the PNG to write.
    """
    from matplotlib.figure import Figure

    if not shift:
        raise ValueError("`shift` is empty: no shift curve to draw")
    from matplotlib import colormaps

    curves = list(shift)
    methods = list(dict.fromkeys(m for curve in shift.values() for m in curve))
    colour = {m: colormaps["tab20"](i % 20) for i, m in enumerate(methods)}
    fig = Figure(figsize=(4.2 * len(curves) + 2.0, 8.5), layout="constrained")
    axes = fig.subplots(len(_METRICS), len(curves), squeeze=False)
    for j, curve in enumerate(curves):
        for name, points in shift[curve].items():
            levels = [p["level"] for p in points]
            for i, (key, label) in enumerate(_METRICS):
                if key in points[0]:
                    style = "--" if name == "map" else ("-o" if name.startswith("ella") else "-")
                    axes[i, j].plot(
                        levels,
                        [p[key] for p in points],
                        style,
                        label=name,
                        ms=3,
                        lw=1.2,
                        color="black" if name == "map" else colour[name],
                    )
                    axes[i, j].set_ylabel(label)
        axes[-1, j].set_xlabel(curve)
        axes[0, j].set_title(curve)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return _save(fig, path, title)


def regression_bands(
    x: np.ndarray, predictions: dict, path, train: tuple | None = None, truth=None, title: str = "", columns: int = 4
) -> Path:
    """One panel per method: predictive mean and +-2 standard deviations (observation noise included).

    Args:
        x: sorted 1-D test inputs ``(n,)``.
        predictions: ``{method: (mean (n,), var (n,))}``.
        train: ``(x_train, y_train)`` drawn as points.
        truth: a function drawn as the noiseless target.
    """
    from matplotlib.figure import Figure

    if not predictions:
        raise ValueError("`predictions` is empty")
    x = np.asarray(x).reshape(-1)
    names = list(predictions)
    rows = -(-len(names) // columns)
    fig = Figure(figsize=(3.6 * min(columns, len(names)), 2.9 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, min(columns, len(names)), squeeze=False)).reshape(-1)
    for ax, name in zip(axes, names):
        mean, var = (np.asarray(a).reshape(-1) for a in predictions[name])
        std = np.sqrt(var)
        ax.fill_between(x, mean - 2 * std, mean + 2 * std, color="tab:blue", alpha=0.25, lw=0, label="+-2 std")
        ax.plot(x, mean, color="tab:blue", lw=1.2, label="mean")
        if truth is not None:
            ax.plot(x, truth(x), "k:", lw=1, label="truth")
        if train is not None:
            ax.plot(np.asarray(train[0]).reshape(-1), np.asarray(train[1]).reshape(-1), "k.", ms=2.5, label="train")
        ax.set_title(name, fontsize="medium")
        ax.set_ylim(-3, 3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small", loc="lower left")
    return _save(fig, path, title)
