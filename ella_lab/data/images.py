"""Image data sets read from files on disk (never downloaded).

MNIST, Fashion-MNIST and KMNIST are read straight from their idx files (gzip-compressed or not), with no
torchvision: Fashion-MNIST by default from the Debian package ``dataset-fashion-mnist``
(:data:`DEBIAN_FASHION_MNIST`), or any of them from a folder in torchvision's layout
(``<root>/<Name>/raw/train-images-idx3-ubyte[.gz]``) or holding the four files itself. CIFAR-10 goes through
torchvision's reader (``download=False``). When the files are missing, :class:`DataUnavailable` (a
``FileNotFoundError``) says where it looked and how to get them, so a benchmark can skip the data set with that
message.

Training and validation images are disjoint, seeded subsets of the training split; test images a seeded
subset of the test split. Pixels are scaled to ``[0, 1]`` and standardised per channel with the statistics of
the training subset.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ella.checks import check_positive_int
from ella.utils import require, seeded_generator

from .mnist1d import Splits

__all__ = ["IMAGE_DATASETS", "DEBIAN_FASHION_MNIST", "DataUnavailable", "image_dataset", "read_idx", "synthetic_images"]

# ella's name -> the torchvision class whose folder layout the files follow
IMAGE_DATASETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR10"}
#: where the Debian package ``dataset-fashion-mnist`` puts the idx files (``dpkg -L dataset-fashion-mnist``)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataUnavailable(FileNotFoundError):
    """A data set's files are not on disk (ella never downloads them)."""


def read_idx(path) -> np.ndarray:
    """The array in an idx file (``.gz`` or not): a 4-byte magic number (two zero bytes, the element type,
    the number of dimensions), the dimensions as big-endian 32-bit integers, then the elements.

    Raises:
        ValueError: the file is not an idx file, or its length does not match its header.
    """
    path = Path(path)
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    offset = 4 + 4 * ndim
    if len(data) - offset != dtype.itemsize * int(np.prod(shape)):
        raise ValueError(f"{path} is malformed: its header gives shape {shape}, which its length does not match")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape)


def _idx_folder(name: str, root) -> Path:
    """The folder holding the four idx files of ``name``: ``root/<Name>/raw``, ``root`` itself, or for
    Fashion-MNIST without ``root`` the Debian package's folder."""
    if root is None:
        if name != "fashionmnist":
            raise DataUnavailable(f"{IMAGE_DATASETS[name]} needs `data_root`, the folder holding its idx files")
        candidates = [DEBIAN_FASHION_MNIST]
    else:
        candidates = [Path(root) / IMAGE_DATASETS[name] / "raw", Path(root)]
    for folder in candidates:
        if any((folder / f"train-images-idx3-ubyte{ext}").exists() for ext in ("", ".gz")):
            return folder
    where = " or ".join(str(c) for c in candidates)
    hint = (
        " (install the Debian package dataset-fashion-mnist: apt-get install dataset-fashion-mnist)"
        if name == "fashionmnist"
        else ""
    )
    raise DataUnavailable(f"{IMAGE_DATASETS[name]} files not found under {where}{hint}; ella never downloads data sets")


def _idx_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    def read(kind: str) -> np.ndarray:
        plain = folder / f"{prefix}-{kind}"
        return read_idx(plain if plain.exists() else plain.with_name(plain.name + ".gz"))

    x, y = read("images-idx3-ubyte"), read("labels-idx1-ubyte")
    if len(x) != len(y):
        raise ValueError(f"{folder}: {len(x)} {prefix} images but {len(y)} labels")
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)


def _torchvision_split(name: str, root, train: bool) -> tuple[np.ndarray, np.ndarray]:
    torchvision = require("torchvision", "torchvision", "vision", "reading CIFAR-10")
    if root is None:
        raise DataUnavailable(f"{IMAGE_DATASETS[name]} needs `data_root`, the folder holding its torchvision files")
    try:
        ds = getattr(torchvision.datasets, IMAGE_DATASETS[name])(str(root), train=train, download=False)
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise DataUnavailable(
            f"{IMAGE_DATASETS[name]} files not found under `data_root` = {root!s} "
            f"(torchvision: {e}); ella never downloads data sets"
        ) from None
    x = np.asarray(ds.data).astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # (N, H, W, 3) -> (N, 3, H, W)
    return x, np.asarray(ds.targets, dtype=np.int64)


def image_dataset(
    name: str, root=None, num_train: int = 10000, num_val: int = 1000, num_test: int = 10000, seed: int = 0
) -> Splits:
    """An image data set from files on disk, as seeded subsets.

    Args:
        name: one of :data:`IMAGE_DATASETS` (``"mnist"``, ``"fashionmnist"``, ``"kmnist"``, ``"cifar10"``).
        root: the folder holding the files (torchvision's layout, or the idx files themselves); ``None`` for
            Fashion-MNIST reads the Debian package ``dataset-fashion-mnist``.
        num_train, num_val: disjoint subsets of the training split (capped at its size).
        num_test: subset of the test split (capped at its size).
        seed: seed of the subsets.

    Raises:
        ValueError: unknown ``name``, or a malformed file.
        DataUnavailable: the files are not on disk.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"`name` must be one of {sorted(IMAGE_DATASETS)}, got {name!r}")
    for value, arg in ((num_train, "num_train"), (num_val, "num_val"), (num_test, "num_test")):
        check_positive_int(value, arg)
    if name == "cifar10":
        (x_tr, y_tr), (x_te, y_te) = (_torchvision_split(name, root, train) for train in (True, False))
        source = {"torchvision": IMAGE_DATASETS[name], "root": str(root)}
    else:
        folder = _idx_folder(name, root)
        (x_tr, y_tr), (x_te, y_te) = _idx_split(folder, "train"), _idx_split(folder, "t10k")
        source = {"idx files": str(folder)}
    g = seeded_generator(seed)
    order = torch.randperm(len(x_tr), generator=g).numpy()
    train_ix = order[: min(num_train, len(order) - 1)]
    val_ix = order[len(train_ix) : len(train_ix) + num_val]
    test_ix = torch.randperm(len(x_te), generator=g).numpy()[:num_test]
    mean = x_tr[train_ix].mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr[train_ix].std(axis=(0, 2, 3), keepdims=True) + 1e-8

    def make(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy((x - mean) / std), torch.from_numpy(y))

    meta = {
        "seed": int(seed),
        **source,
        "normalisation": "per-channel mean/std of the training subset",
        "mean": mean.ravel().tolist(),
        "std": std.ravel().tolist(),
    }
    return Splits(
        make(x_tr[train_ix], y_tr[train_ix]),
        make(x_tr[val_ix], y_tr[val_ix]),
        make(x_te[test_ix], y_te[test_ix]),
        int(y_tr.max()) + 1,
        tuple(x_tr.shape[1:]),
        name=name,
        meta=meta,
    )


def synthetic_images(n: int, seed: int = 0) -> TensorDataset:
    """``n`` CIFAR-shaped images: ten smooth class templates plus noise (the cost of a fit is what is measured)."""
    g = torch.Generator().manual_seed(seed)
    templates = nn.functional.interpolate(torch.randn(10, 3, 4, 4, generator=g), size=32, mode="bilinear")
    y = torch.randint(0, 10, (n,), generator=g)
    return TensorDataset(templates[y] + torch.randn(n, 3, 32, 32, generator=g), y)
