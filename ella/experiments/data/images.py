"""torchvision image data sets, used only when their files are already on disk (never downloaded).

``image_dataset(name, root)`` reads a torchvision data set with ``download=False``; if its files are not
under ``root`` it raises :class:`DataUnavailable` (a ``FileNotFoundError``) saying where it looked, so a
benchmark can skip it with that message. Training and validation images are disjoint, seeded subsets of
the training split; test images a seeded subset of the test split. Pixels are scaled to ``[0, 1]`` and
standardised per channel with the statistics of the training subset.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..._checks import check_positive_int
from ..._utils import require, seeded_generator
from .mnist1d import Splits

__all__ = ["IMAGE_DATASETS", "DataUnavailable", "image_dataset"]

# ella's name -> torchvision class name
IMAGE_DATASETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR10"}


class DataUnavailable(FileNotFoundError):
    """A data set's files are not on disk (ella never downloads them)."""


def _load(name: str, root, train: bool):
    torchvision = require("torchvision", "torchvision", "vision", "reading image data sets")

    cls = getattr(torchvision.datasets, IMAGE_DATASETS[name])
    try:
        return cls(str(root), train=train, download=False)
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise DataUnavailable(f"{IMAGE_DATASETS[name]} files not found under `data_root` = {root!s} "
                              f"(torchvision: {e}); ella never downloads data sets") from None


def _arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, channels, H, W)`` in ``[0, 1]`` (float32) and labels (int64)."""
    x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    x = x.astype(np.float32) / 255.0
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # grey (N, H, W) or colour (N, H, W, 3)
    y = np.asarray(ds.targets, dtype=np.int64)
    return x, y


def image_dataset(name: str, root, num_train: int = 10000, num_val: int = 1000, num_test: int = 10000,
                  seed: int = 0) -> Splits:
    """A torchvision data set from files under ``root``, as seeded subsets.

    Args:
        name: one of :data:`IMAGE_DATASETS` (``"mnist"``, ``"fashionmnist"``, ``"kmnist"``, ``"cifar10"``).
        root: the ``root`` torchvision would be given (the folder holding e.g. ``MNIST/raw``).
        num_train, num_val: disjoint subsets of the training split (capped at its size).
        num_test: subset of the test split (capped at its size).
        seed: seed of the subsets.

    Raises:
        ValueError: unknown ``name``.
        DataUnavailable: the files are not under ``root``.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"`name` must be one of {sorted(IMAGE_DATASETS)}, got {name!r}")
    if root is None:
        raise DataUnavailable(f"{IMAGE_DATASETS[name]} needs `data_root`, the folder holding its torchvision files")
    for value, arg in ((num_train, "num_train"), (num_val, "num_val"), (num_test, "num_test")):
        check_positive_int(value, arg)
    x_tr, y_tr = _arrays(_load(name, root, train=True))
    x_te, y_te = _arrays(_load(name, root, train=False))
    g = seeded_generator(seed)
    order = torch.randperm(len(x_tr), generator=g).numpy()
    train_ix = order[: min(num_train, len(order) - 1)]
    val_ix = order[len(train_ix) : len(train_ix) + num_val]
    test_ix = torch.randperm(len(x_te), generator=g).numpy()[:num_test]
    mean = x_tr[train_ix].mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr[train_ix].std(axis=(0, 2, 3), keepdims=True) + 1e-8

    def make(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy((x - mean) / std), torch.from_numpy(y))

    meta = {"seed": int(seed), "root": str(root), "torchvision": IMAGE_DATASETS[name],
            "normalisation": "per-channel mean/std of the training subset"}
    return Splits(make(x_tr[train_ix], y_tr[train_ix]), make(x_tr[val_ix], y_tr[val_ix]),
                  make(x_te[test_ix], y_te[test_ix]), int(y_tr.max()) + 1, tuple(x_tr.shape[1:]), name=name,
                  meta=meta)
