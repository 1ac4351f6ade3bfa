"""Calibration and accuracy metrics of predictions (pure functions; the reliability diagram is drawn in
:mod:`ella_lab.plots`).

Every function accepts torch tensors or numpy arrays, validates its input (``ValueError`` naming the
argument) and returns Python floats. Classification metrics take ``probs`` of shape (N, C) (rows sum to 1)
and integer ``labels`` of shape (N,); regression metrics take ``mean``/``var``/``targets`` of shape (N,) or
(N, D).

ECE and MCE reproduce netcal 1.4's ``ECE(bins=15)`` / ``MCE(bins=15)`` for multi-class input: top-label
confidence ``c_i = max_c p_ic`` (after netcal's clipping of ``p`` to ``[eps, 1 - eps]``, ``eps`` the machine
epsilon of the input dtype), edges ``np.linspace(0, 1, bins + 1)``, bins closed on the left,
``lo <= c < hi`` (the last bin is ``[lo, 1]``), and empty bins contribute zero. Unlike netcal, the top label is
used even when the labels take at most two distinct values (netcal then switches to a binary mode).
"""

from __future__ import annotations

import numpy as np
import torch

from .predictive import PROB_FLOOR, class_nll
from .predictive import gaussian_nll as _gaussian_nll

ECE_BINS = 15
_SUM_TOL = 1e-3


def _np(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"`{name}` must be a torch tensor or numpy array, got {type(x).__name__}") from e


def _floats(x, name: str) -> np.ndarray:
    a = _np(x, name)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` has non-finite values")
    return a


def _check_probs(probs, name: str = "probs") -> np.ndarray:
    p = _floats(probs, name)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-D array of shape (N, C), got shape {tuple(p.shape)}")
    if p.min() < -_SUM_TOL or p.max() > 1 + _SUM_TOL:
        raise ValueError(f"`{name}` must hold probabilities in [0, 1], got range [{p.min():.4g}, {p.max():.4g}]")
    err = np.abs(p.sum(1, dtype=np.float64) - 1)
    if err.max() > _SUM_TOL:
        i = int(err.argmax())
        raise ValueError(f"rows of `{name}` must sum to 1 (tolerance {_SUM_TOL}); row {i} sums to {p[i].sum():.6g}")
    return p


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probs(probs)
    y = _np(labels, "labels")
    if y.ndim != 1:
        raise ValueError(f"`labels` must be a 1-D array of class indices, got shape {tuple(y.shape)}")
    if not (np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"`labels` must be integer class indices, got dtype {y.dtype}")
    if len(y) != len(p):
        raise ValueError(f"`labels` has {len(y)} entries but `probs` has {len(p)} rows")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"`labels` must lie in [0, {p.shape[1]}), got range [{int(y.min())}, {int(y.max())}]")
    return p, y.astype(np.int64)


def accuracy(probs, labels) -> float:
    """Top-1 accuracy: ``(1/N) sum_i [argmax_c p_ic == y_i]``."""
    p, y = _check(probs, labels)
    return float(np.mean(p.argmax(1) == y))


def nll(probs, labels) -> float:
    """Negative log-likelihood ``-(1/N) sum_i log max(p_{i, y_i}, PROB_FLOOR)`` (:func:`ella.predictive.class_nll`)."""
    p, y = _check(probs, labels)
    return float(class_nll(torch.from_numpy(p.astype(np.float64)), torch.from_numpy(y)).mean())


def calibration_bins(probs, labels, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin counts ``N_b``, accuracies ``acc(b)`` and mean confidences ``conf(b)`` (0 in empty bins),
    binned as netcal 1.4 does (see the module docstring)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be a positive integer, got {bins!r}")
    p, y = _check(probs, labels)
    eps = np.finfo(p.dtype).eps
    p = np.clip(p, eps, 1.0 - eps)
    correct = (p.argmax(1) == y).astype(np.float64)
    conf = p.max(1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)  # lo <= c < hi; c = 1 joins the last bin
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    safe = np.maximum(counts, 1)
    acc = np.bincount(idx, weights=correct, minlength=bins) / safe
    mean_conf = np.bincount(idx, weights=conf.astype(np.float64), minlength=bins) / safe
    return counts, acc, mean_conf


def ece(probs, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error ``sum_b (N_b / N) |acc(b) - conf(b)|`` over ``bins`` equal-width bins of the
    top-label confidence (netcal's ``ECE(bins)``; bins ``[lo, hi)``, last bin closed)."""
    counts, acc, conf = calibration_bins(probs, labels, bins)
    return float(np.sum(counts / counts.sum() * np.abs(acc - conf)))


def mce(probs, labels, bins: int = ECE_BINS) -> float:
    """Maximum calibration error ``max_b |acc(b) - conf(b)|`` (empty bins count as 0; netcal's ``MCE(bins)``)."""
    counts, acc, conf = calibration_bins(probs, labels, bins)
    return float(np.max(np.abs(acc - conf)))


def brier(probs, labels) -> float:
    """Brier score ``(1/N) sum_i sum_c (p_ic - [c == y_i])^2``."""
    p, y = _check(probs, labels)
    onehot = np.zeros(p.shape, dtype=np.float64)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p.astype(np.float64) - onehot) ** 2, axis=1)))


def predictive_entropy(probs) -> np.ndarray:
    """Per-point entropy ``H_i = -sum_c p_ic log p_ic`` (with ``0 log 0 = 0``), a float64 array of shape (N,)."""
    p = _check_probs(probs).astype(np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.maximum(p, PROB_FLOOR)), 0.0), axis=1)


def mean_max_prob(probs) -> float:
    """Mean top-label confidence ``(1/N) sum_i max_c p_ic``."""
    return float(np.mean(_check_probs(probs).max(1)))


def ood_auroc(probs_in, probs_out) -> float:
    """AUROC of separating out-of-distribution (positive class) from in-distribution points with the
    predictive entropy as the score; 1 is perfect, 0.5 is chance.

    The Mann-Whitney statistic ``(R_out - n_out (n_out + 1) / 2) / (n_in n_out)``, ``R_out`` the sum of the
    out-of-distribution points' ranks among all scores (tied scores share their mean rank): the area under the
    ROC curve with ties counted as half, as ``sklearn.metrics.roc_auc_score`` computes it."""
    h_in = predictive_entropy(_check_probs(probs_in, "probs_in"))
    h_out = predictive_entropy(_check_probs(probs_out, "probs_out"))
    scores = np.concatenate([h_in, h_out])
    # mean ranks (1-based): the values' first and last positions in sorted order, averaged over each tie
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    ranks = (last - (counts - 1) / 2.0)[inverse]
    n_in, n_out = len(h_in), len(h_out)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2.0) / (n_in * n_out))


def _regression(mean, targets, var=None):
    m, t = _floats(mean, "mean").astype(np.float64), _floats(targets, "targets").astype(np.float64)
    m = m.reshape(len(m), -1) if m.ndim == 1 else m
    t = t.reshape(len(t), -1) if t.ndim == 1 else t
    if m.ndim != 2 or m.shape != t.shape or len(m) == 0:
        raise ValueError(
            f"`mean` and `targets` must have the same shape (N,) or (N, D), got "
            f"{tuple(_np(mean, 'mean').shape)} and {tuple(_np(targets, 'targets').shape)}"
        )
    if var is None:
        return m, t, None
    v = _floats(var, "var").astype(np.float64)
    if v.ndim == 3:  # a (N, D, D) covariance: its diagonal
        v = np.diagonal(v, axis1=1, axis2=2)
    v = v.reshape(len(v), -1) if v.ndim == 1 else v
    if v.shape != m.shape:
        raise ValueError(f"`var` must have the shape of `mean` {tuple(m.shape)} (or (N, D, D)), got {tuple(v.shape)}")
    if v.min() <= 0:
        raise ValueError(f"`var` must be positive, got minimum {v.min():.4g}")
    return m, t, v


def gaussian_nll(mean, var, targets) -> float:
    """Gaussian NLL ``(1/(N D)) sum_{i,d} [ log(2 pi v_id) / 2 + (y_id - m_id)^2 / (2 v_id) ]``.

    ``var`` is the predictive variance including observation noise; a (N, D, D) covariance is reduced to its
    diagonal."""
    m, t, v = _regression(mean, targets, var)
    return float(_gaussian_nll(*(torch.as_tensor(a.copy()) for a in (m, v, t))).mean())


def rmse(mean, targets) -> float:
    """Root mean squared error ``sqrt((1/(N D)) sum_{i,d} (y_id - m_id)^2)``."""
    m, t, _ = _regression(mean, targets)
    return float(np.sqrt(np.mean((t - m) ** 2)))


def classification_metrics(probs, labels, bins: int = ECE_BINS) -> dict[str, float]:
    """``acc``, ``nll``, ``ece``, ``mce``, ``brier`` of class probabilities against labels."""
    return {
        "acc": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "ece": ece(probs, labels, bins),
        "mce": mce(probs, labels, bins),
        "brier": brier(probs, labels),
    }


def regression_metrics(mean, var, targets) -> dict[str, float]:
    """``nll`` (Gaussian, see :func:`gaussian_nll`) and ``rmse``."""
    return {"nll": gaussian_nll(mean, var, targets), "rmse": rmse(mean, targets)}


def metrics_of(preds, targets: torch.Tensor, likelihood: str = "classification") -> dict[str, float]:
    """:func:`classification_metrics` of probabilities, or :func:`regression_metrics` of ``(mean, var)``."""
    if likelihood == "regression":
        return regression_metrics(*preds, targets)
    return classification_metrics(preds, targets)
