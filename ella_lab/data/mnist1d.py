"""MNIST-1D (Greydanus, 2020), generated locally: no file is ever downloaded.

The standard split is what ``mnist1d.data.make_dataset(get_dataset_args())`` returns (5,000 signals,
seed 42, the first 4,000 for training): ``train`` is its first ``num_train`` training signals and ``val``
its last ``num_val``. The ``test`` set is a fresh draw of ``num_test`` signals from the same generator with
another seed (``test_seed``), optionally with changed generator arguments (noise, translation, shear,
shuffled sequence, ...) to build shifted or out-of-distribution test sets.

Normalisation. ``make_dataset`` standardises every set it generates by that set's *own* scalar mean and
standard deviation, which would silently undo part of a distribution shift. This module therefore runs the
same generation loop as ``make_dataset`` (same templates, same ``mnist1d.transform.transform``, same order
of random draws) but keeps the raw signals, then standardises *every* split with the scalar mean and
standard deviation of the raw standard 5,000-signal set. For the standard split this reproduces
``make_dataset``'s numbers exactly (checked in the tests); the test set lives in the same coordinates.

The generator seeds NumPy's and Python's global random state; both are saved and restored around every
call, so the user's global random streams are untouched. The raw standard set is cached in memory (a few
MB), so building several shifted test sets generates it once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella.checks import check_positive_int
from ella.utils import seeded_generator

__all__ = ["Splits", "mnist1d", "mnist1d_signals", "loaders", "MNIST1D_GENERATOR_ARGS"]

# Generator arguments that may be overridden for the test set. ``num_samples``, ``train_split`` and
# ``seed`` are set by ``mnist1d`` itself; ``final_seq_length`` fixes the input size and ``url`` is unused.
MNIST1D_GENERATOR_ARGS = (
    "template_len",
    "padding",
    "scale_coeff",
    "max_translation",
    "corr_noise_scale",
    "iid_noise_scale",
    "shear_scale",
    "shuffle_seq",
)


@dataclass
class Splits:
    """A train / validation / test split of one data set.

    Attributes:
        train: Training set, a ``TensorDataset`` of ``(x, y)``.
        val: Validation set (prior tuning, early stopping, temperature scaling).
        test: Test set.
        num_classes: Number of classes, or ``None`` for regression.
        input_shape: Shape of one input ``x`` (without the batch dimension).
        name: Short name of the data set.
        meta: Everything needed to reproduce or interpret the split (seeds, normalisation, generator
            arguments, ...).
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int | None
    input_shape: tuple[int, ...]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Splits(name={self.name!r}, train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )


def loaders(
    splits: Splits, batch_size: int = 128, seed: int = 0, eval_batch_size: int | None = None
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Data loaders for a split.

    Args:
        splits: The data.
        batch_size: Batch size of the training loader (and of the others unless ``eval_batch_size``).
        seed: Seed of the training loader's shuffling generator: the same seed gives the same batches.
        eval_batch_size: Batch size of the validation and test loaders; defaults to ``batch_size``.

    Returns:
        ``(train_loader, val_loader, test_loader)``; only the training loader shuffles.
    """
    if not isinstance(splits, Splits):
        raise TypeError(f"`splits` must be an ella_lab.data.Splits, got {type(splits).__name__}")
    check_positive_int(batch_size, "batch_size")
    eval_batch_size = batch_size if eval_batch_size is None else check_positive_int(eval_batch_size, "eval_batch_size")
    train = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=seeded_generator(seed))
    val = DataLoader(splits.val, batch_size=eval_batch_size, shuffle=False)
    test = DataLoader(splits.test, batch_size=eval_batch_size, shuffle=False)
    return train, val, test


def _generate_raw(args) -> tuple[np.ndarray, np.ndarray]:
    """The signals of ``mnist1d.data.make_dataset(args)`` before its standardisation and split.

    Mirrors ``make_dataset`` line by line (so the random draws happen in the same order) and restores
    NumPy's and Python's global random state afterwards.

    Returns:
        ``x`` of shape ``(num_samples_rounded, final_seq_length)`` (float64) and ``y`` (int64), where the
        number of samples is rounded down to a multiple of the number of classes, as in ``make_dataset``.
    """
    from mnist1d.data import get_templates
    from mnist1d.transform import transform
    from mnist1d.utils import set_seed

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        templates = get_templates()
        set_seed(args.seed)
        xs, ys = [], []
        samples_per_class = args.num_samples // len(templates["y"])
        for label_ix in range(len(templates["y"])):
            for _ in range(samples_per_class):
                x, _t = transform(templates["x"][label_ix], templates["t"], args)
                xs.append(x)
                ys.append(templates["y"][label_ix])
        batch_shuffle = np.random.permutation(len(ys))
        xs = np.stack(xs)[batch_shuffle]
        ys = np.stack(ys)[batch_shuffle]
        if args.shuffle_seq:
            xs = xs[..., np.random.permutation(args.final_seq_length)]
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return xs, ys.astype(np.int64)


@lru_cache(maxsize=4)
def _standard_raw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw signals of the standard set with ``seed`` (cached: shift sets reuse it), read-only."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.seed = seed
    x, y = _generate_raw(args)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _fresh(num: int, seed: int, generator_args: dict, mean: float, std: float) -> tuple[TensorDataset, dict]:
    """``num`` signals drawn afresh from the generator with ``seed`` (and ``generator_args``), standardised with
    ``mean`` and ``std``; and the generator's arguments."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.update(generator_args)
    num_classes = 10
    args.update(seed=int(seed), train_split=0.0, num_samples=-(-num // num_classes) * num_classes)
    x, y = _generate_raw(type(get_dataset_args())(args))  # ObjectView, as make_dataset expects
    args.pop("url", None)
    return _dataset(x[:num], y[:num], mean, std), args


def mnist1d_signals(num: int, seed: int, standard_seed: int = 42) -> TensorDataset:
    """``num`` MNIST-1D signals drawn afresh with ``seed`` from the standard generator, standardised like every
    split of :func:`mnist1d` (for training sets larger than the standard 4,000)."""
    check_positive_int(num, "num")
    x_std, _ = _standard_raw(int(standard_seed))
    if seed == standard_seed:
        raise ValueError(f"`seed` must differ from the standard set's seed {standard_seed}")
    return _fresh(num, seed, {}, float(x_std.mean()), float(x_std.std()))[0]


def _dataset(x: np.ndarray, y: np.ndarray, mean: float, std: float) -> TensorDataset:
    x = torch.from_numpy(((x - mean) / std).astype(np.float32))
    return TensorDataset(x, torch.from_numpy(np.array(y, dtype=np.int64, copy=True)))


def mnist1d(
    num_train: int = 3500,
    num_val: int = 500,
    num_test: int = 10000,
    seed: int = 42,
    test_seed: int = 1,
    **generator_args,
) -> Splits:
    """MNIST-1D, generated locally (no download).

    Args:
        num_train: Training signals: the first ``num_train`` of the standard set's 4,000 training signals.
        num_val: Validation signals: the last ``num_val`` of the standard training signals
            (``num_train + num_val <= 4000``, so train and validation never overlap).
        num_test: Test signals, generated afresh with seed ``test_seed``.
        seed: Seed of the standard set (42 is the published MNIST-1D).
        test_seed: Seed of the test set; must differ from ``seed`` (the same seed would repeat training
            signals in the test set).
        **generator_args: Overrides of the generator's arguments for the TEST set only, e.g.
            ``iid_noise_scale=0.2``, ``corr_noise_scale``, ``max_translation``, ``shear_scale``,
            ``scale_coeff``, ``shuffle_seq=True``; see ``MNIST1D_GENERATOR_ARGS``.

    Returns:
        A ``Splits`` with x float32 of shape ``(N, 40)`` and y int64 in ``[0, 10)``. Every split is
        standardised with the mean and standard deviation of the raw standard set (see the module
        docstring); ``meta`` holds these statistics and the test generator's arguments.

    Example:
        >>> data = mnist1d(num_test=2000, iid_noise_scale=0.2)   # a noisier (shifted) test set
    """
    from mnist1d.data import get_dataset_args

    check_positive_int(num_train, "num_train")
    check_positive_int(num_val, "num_val")
    check_positive_int(num_test, "num_test")
    for name, value in (("seed", seed), ("test_seed", test_seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}")
    if seed == test_seed:
        raise ValueError(
            f"`test_seed` must differ from `seed` (both {seed}): the test set would repeat training signals"
        )
    unknown = sorted(set(generator_args) - set(MNIST1D_GENERATOR_ARGS))
    if unknown:
        raise ValueError(
            f"unknown MNIST-1D generator argument(s) {unknown}; `generator_args` may set {list(MNIST1D_GENERATOR_ARGS)}"
        )

    args = get_dataset_args()
    num_standard_train = int(args.num_samples * args.train_split)
    if num_train + num_val > num_standard_train:
        raise ValueError(
            f"`num_train` + `num_val` must be at most {num_standard_train} (the standard training set), "
            f"got {num_train} + {num_val}"
        )
    x_std, y_std = _standard_raw(int(seed))
    mean, std = float(x_std.mean()), float(x_std.std())
    train = _dataset(x_std[:num_train], y_std[:num_train], mean, std)
    lo = num_standard_train - num_val
    val = _dataset(x_std[lo:num_standard_train], y_std[lo:num_standard_train], mean, std)

    test, test_args = _fresh(num_test, int(test_seed), generator_args, mean, std)
    meta = {
        "seed": int(seed),
        "test_seed": int(test_seed),
        "normalisation": {"mean": mean, "std": std, "source": "raw standard MNIST-1D set (all splits)"},
        "test_generator_args": test_args,
        "generator_overrides": dict(generator_args),
    }
    return Splits(train, val, test, 10, (int(x_std.shape[1]),), name="mnist1d", meta=meta)
