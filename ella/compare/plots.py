"""Figures of a comparison: shift curves and the predictive bands of a 1-D regression (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["shift_curves", "regression_bands"]

_METRICS = (("nll", "NLL"), ("ece", "ECE"), ("acc", "accuracy"))


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
                    axes[i, j].plot(levels, [p[key] for p in points], style, label=name, ms=3, lw=1.2,
                                    color="black" if name == "map" else colour[name])
                    axes[i, j].set_ylabel(label)
        axes[-1, j].set_xlabel(curve)
        axes[0, j].set_title(curve)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    if title:
        fig.suptitle(title)
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out


def regression_bands(x: np.ndarray, predictions: dict, path, train: tuple | None = None, truth=None,
                     title: str = "", columns: int = 4) -> Path:
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
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small", loc="lower left")
    if title:
        fig.suptitle(title)
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
