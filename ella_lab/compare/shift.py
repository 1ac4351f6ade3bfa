"""Shifted and out-of-distribution test sets, all generated locally and deterministically.

MNIST-1D shift curves turn one generator argument up at a time (:data:`MNIST1D_SHIFTS`), through the
generator's own arguments, for the TEST signals only (the model was trained on the standard ones):

* ``iid_noise``: ``iid_noise_scale`` (standard 0.02), i.i.d. Gaussian noise added to every sample;
* ``translation``: ``max_translation`` (standard 48), the largest circular shift of the padded signal
  (72 samples long, so 72 allows every position);
* ``shear``: ``shear_scale`` (standard 0.75), the range of the random linear trend added to the signal.

Every level of every curve uses the same test seed, so the levels differ only in the argument that moves
(common random numbers), and the first level of each curve is the standard generator.

Out-of-distribution sets (MNIST-1D): ``shuffled``, the generator's own ``shuffle_seq=True`` (each signal's
40 samples permuted by one fixed permutation), and ``noise``, i.i.d. standard normal inputs (the scale of
the standardised signals). Their labels are meaningless; only the predictive entropy and the top-class
probability are scored.

Digits: the test images rotated by increasing angles (bilinear, zero fill), re-standardised with the
training statistics.

Image data sets (:func:`ella_lab.data.images.image_dataset`, one channel): the test images rotated by the
same angles, and two out-of-distribution sets: ``digits``, scikit-learn's 8 x 8 handwritten digits scaled up to
the images' size (for Fashion-MNIST, the classic MNIST-like far-OOD set, available offline), and ``noise``,
uniform random pixels. Both are standardised with the training statistics, as the test images are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ella.checks import check_positive_int
from ella.utils import seeded_generator

__all__ = [
    "MNIST1D_SHIFTS",
    "DIGITS_ANGLES",
    "mnist1d_shift_sets",
    "mnist1d_ood_sets",
    "digits_rotation_sets",
    "image_rotation_sets",
    "image_ood_sets",
]

# curve name -> (generator argument, levels); the first level is the standard generator's value
MNIST1D_SHIFTS = {
    "iid_noise": ("iid_noise_scale", (0.02, 0.2, 0.4, 0.8)),
    "translation": ("max_translation", (48, 56, 64, 72)),
    "shear": ("shear_scale", (0.75, 2.0, 4.0, 8.0)),
}
DIGITS_ANGLES = (0, 15, 30, 45, 60, 90)
SHIFT_TEST_SEED = 2  # differs from the standard set's (42) and from the main test set's (1)


def mnist1d_shift_sets(
    shifts: dict | None = None, num_test: int = 1000, test_seed: int = SHIFT_TEST_SEED
) -> dict[str, list[tuple[float, TensorDataset]]]:
    """MNIST-1D test sets along each shift curve: ``{curve: [(level, dataset), ...]}``.

    Args:
        shifts: ``{curve: (generator argument, levels)}``; default :data:`MNIST1D_SHIFTS`.
        num_test: signals per level.
        test_seed: seed of every level's signals.
    """
    from ..data import mnist1d
    from ..data.mnist1d import MNIST1D_GENERATOR_ARGS

    shifts = MNIST1D_SHIFTS if shifts is None else shifts
    check_positive_int(num_test, "num_test")
    for curve, (arg, levels) in shifts.items():
        if arg not in MNIST1D_GENERATOR_ARGS:
            raise ValueError(
                f"shift curve {curve!r}: {arg!r} is not an MNIST-1D generator argument ({list(MNIST1D_GENERATOR_ARGS)})"
            )
        if not levels:
            raise ValueError(f"shift curve {curve!r} has no levels")
    return {
        curve: [(level, mnist1d(num_test=num_test, test_seed=test_seed, **{arg: level}).test) for level in levels]
        for curve, (arg, levels) in shifts.items()
    }


def mnist1d_ood_sets(num: int = 2000, seed: int = SHIFT_TEST_SEED) -> dict[str, TensorDataset]:
    """``{"shuffled": ..., "noise": ...}``: out-of-distribution inputs for MNIST-1D (labels are placeholders)."""
    from ..data import mnist1d

    check_positive_int(num, "num")
    shuffled = mnist1d(num_test=num, test_seed=seed, shuffle_seq=True).test
    x = torch.randn(num, shuffled.tensors[0].shape[1], generator=seeded_generator(seed))  # N(0, I) inputs
    return {"shuffled": shuffled, "noise": TensorDataset(x, torch.zeros(num, dtype=torch.long))}


def rotate_images(images: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``(N, H, W)`` images by ``angle`` degrees about their centre (bilinear, zero fill)."""
    from scipy.ndimage import rotate

    if angle == 0:
        return images.copy()
    return rotate(images, angle, axes=(2, 1), reshape=False, order=1, mode="constant", cval=0.0)


def digits_rotation_sets(splits, angles=DIGITS_ANGLES) -> list[tuple[float, TensorDataset]]:
    """The digits test images rotated by each angle: ``[(angle, dataset), ...]``.

    ``splits`` is :func:`ella_lab.data.digits`'s output; its ``meta`` holds the per-pixel training mean and
    standard deviation, which map the test inputs back to pixels and the rotated pixels back to inputs.
    """
    meta = getattr(splits, "meta", {})
    if "feature_mean" not in meta or "feature_std" not in meta:
        raise ValueError("`splits` must come from ella_lab.data.digits() (its meta holds the pixel statistics)")
    mean, std = np.asarray(meta["feature_mean"]), np.asarray(meta["feature_std"])
    x, y = splits.test.tensors
    pixels = np.round(x.double().numpy() * std + mean).reshape(-1, 8, 8)  # raw intensities 0..16
    out = []
    for angle in angles:
        rotated = rotate_images(pixels, float(angle)).reshape(len(pixels), 64)
        xs = torch.from_numpy(((rotated - mean) / std).astype(np.float32))
        out.append((float(angle), TensorDataset(xs, y.clone())))
    return out


def _image_statistics(splits) -> tuple[float, float]:
    meta = getattr(splits, "meta", {})
    if len(meta.get("mean", ())) != 1 or len(meta.get("std", ())) != 1:
        raise ValueError(
            "`splits` must be a one-channel image data set from "
            "ella_lab.data.images.image_dataset (its meta holds the pixel statistics)"
        )
    return float(meta["mean"][0]), float(meta["std"][0])


def image_rotation_sets(splits, angles=DIGITS_ANGLES, num: int = 2000) -> list[tuple[float, TensorDataset]]:
    """The first ``num`` test images rotated by each angle, re-standardised: ``[(angle, dataset), ...]``."""
    mean, std = _image_statistics(splits)
    x, y = splits.test.tensors[0][:num], splits.test.tensors[1][:num]
    pixels = x[:, 0].double().numpy() * std + mean  # back to [0, 1]
    return [
        (
            float(angle),
            TensorDataset(
                torch.from_numpy(((rotate_images(pixels, float(angle)) - mean) / std).astype(np.float32))[:, None],
                y.clone(),
            ),
        )
        for angle in angles
    ]


def image_ood_sets(splits, num: int = 2000, seed: int = SHIFT_TEST_SEED) -> dict[str, TensorDataset]:
    """``{"digits": ..., "noise": ...}`` at the size of ``splits``' images (labels are placeholders)."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    check_positive_int(num, "num")
    mean, std = _image_statistics(splits)
    side = splits.input_shape[-1]
    digits = load_digits().images[:num] / 16.0  # (n, 8, 8) in [0, 1]
    big = np.clip(zoom(digits, (1, side / 8, side / 8), order=1), 0, 1)  # bilinear, to (n, side, side)
    noise = torch.rand(num, side, side, generator=seeded_generator(seed)).numpy()

    def dataset(pixels: np.ndarray) -> TensorDataset:
        x = torch.from_numpy(((pixels - mean) / std).astype(np.float32))[:, None]
        return TensorDataset(x, torch.zeros(len(x), dtype=torch.long))

    return {"digits": dataset(big), "noise": dataset(noise)}
