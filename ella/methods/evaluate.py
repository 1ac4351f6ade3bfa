"""Scoring a fitted method on a loader: its predictions over every batch, and the metrics of :mod:`ella.metrics`."""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import batches
from ..checks import check_loader
from ..metrics import ECE_BINS, classification_metrics, mean_max_prob, ood_auroc, regression_metrics
from ..utils import progress as progress_bar
from .base import Method


def predict_all(method: Method, loader, name: str = "loader", progress: bool = False):
    """Run ``method.predict`` over every batch of ``loader``.

    Returns ``(predictions, targets, seconds)``: probabilities ``(N, C)`` for classification or ``(mean, var)``
    for regression (``var`` including the observation noise), as numpy arrays; the targets (``None`` if the
    loader yields inputs only); and the wall-clock seconds spent inside ``predict``.
    """
    if not isinstance(method, Method):
        raise TypeError(f"`method` must be an ella method (ella.methods.Method), got {type(method).__name__}")
    check_loader(loader, name)
    outs, ys, seconds = [], [], 0.0
    total = batches.num_batches(loader)
    with torch.no_grad():
        for batch in progress_bar(loader, progress, desc=f"evaluate {name}", total=total):
            x, y = batches.split_batch(batch, name)
            start = time.perf_counter()
            out = method.predict(x)
            seconds += time.perf_counter() - start
            outs.append(tuple(o.cpu().numpy() for o in out) if isinstance(out, tuple) else out.cpu().numpy())
            ys.append(None if y is None else y.cpu().numpy())
    if not outs:
        raise ValueError(f"`{name}` is empty: it yielded no data")
    targets = None if any(y is None for y in ys) else np.concatenate(ys)
    if method.likelihood == "regression":
        return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])), targets, seconds
    return np.concatenate(outs), targets, seconds


def evaluate(method: Method, loader, ood_loader=None, progress: bool = False) -> dict[str, float]:
    """Metrics of a fitted ``method`` on the ``(x, y)`` batches of ``loader``.

    Classification: ``acc``, ``nll``, ``ece``, ``mce``, ``brier``, ``ece_bins`` (= 15, top-label equal-width
    bins as netcal), ``n`` and ``predict_seconds``. With ``ood_loader`` (batches ``x`` or ``(x, y)``) also
    ``mean_max_prob``, ``ood_mean_max_prob`` and ``ood_auroc`` (predictive entropy as the score, OOD positive).
    Regression: ``nll`` (with the observation noise), ``rmse``, ``n`` and ``predict_seconds``.
    """
    regression = getattr(method, "likelihood", None) == "regression"
    if regression and ood_loader is not None:
        raise ValueError("`ood_loader` is only supported for classification methods")
    if ood_loader is not None:
        check_loader(ood_loader, "ood_loader")
    preds, targets, seconds = predict_all(method, loader, "loader", progress)
    if targets is None:
        raise ValueError("`loader` must yield (x, y) batches")
    if regression:
        return {**regression_metrics(*preds, targets), "n": len(targets), "predict_seconds": seconds}
    out = {**classification_metrics(preds, targets), "ece_bins": ECE_BINS, "n": len(preds), "predict_seconds": seconds}
    if ood_loader is not None:
        probs_out, _, _ = predict_all(method, ood_loader, "ood_loader", progress)
        out.update(
            mean_max_prob=mean_max_prob(preds),
            ood_mean_max_prob=mean_max_prob(probs_out),
            ood_auroc=ood_auroc(preds, probs_out),
        )
    return out
