"""scikit-learn's handwritten digits (8 x 8 images, 1,797 of them): ships with scikit-learn, no download."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .mnist1d import Splits

__all__ = ["digits"]


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1), got {value!r}")
    return float(value)


def digits(val_fraction: float = 0.15, test_fraction: float = 0.25, seed: int = 0) -> Splits:
    """The scikit-learn digits as a stratified, seeded train / validation / test split.

    Features are the 64 pixel intensities, standardised per feature with the mean and standard deviation of
    the training split (constant pixels keep standard deviation 1, so they stay at 0).

    Args:
        val_fraction: Fraction of all images used for validation.
        test_fraction: Fraction of all images used for testing.
        seed: Seed of the split: the same seed gives the same tensors.

    Returns:
        A ``Splits`` with x float32 of shape ``(N, 64)``, y int64 in ``[0, 10)``, ``num_classes=10``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    val_fraction = _fraction(val_fraction, "val_fraction")
    test_fraction = _fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"`val_fraction` + `test_fraction` must be below 1, got {val_fraction} + {test_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")

    data = load_digits()
    x, y = data.data.astype(np.float64), data.target.astype(np.int64)
    index = np.arange(len(y))
    rest, test_ix = train_test_split(index, test_size=test_fraction, stratify=y, random_state=int(seed))
    train_ix, val_ix = train_test_split(
        rest, test_size=val_fraction / (1.0 - test_fraction), stratify=y[rest], random_state=int(seed) + 1
    )
    mean = x[train_ix].mean(0)
    std = x[train_ix].std(0)
    std[std == 0] = 1.0

    def make(ix: np.ndarray) -> TensorDataset:
        xs = torch.from_numpy(((x[ix] - mean) / std).astype(np.float32))
        return TensorDataset(xs, torch.from_numpy(y[ix]))

    meta = {
        "seed": int(seed),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "normalisation": "per-feature mean/std of the training split",
        "feature_mean": mean.tolist(),
        "feature_std": std.tolist(),
    }  # to map inputs back to pixels
    return Splits(make(train_ix), make(val_ix), make(test_ix), 10, (64,), name="digits", meta=meta)
