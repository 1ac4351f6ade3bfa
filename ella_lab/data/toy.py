"""A 1-D toy regression problem with a gap between two clusters of training inputs.

Training and validation inputs are drawn uniformly from ``[-1, -0.3] U [0.3, 1]``; the test inputs are an
even grid over ``[-1.5, 1.5]``, so they cover the gap ("in-between" uncertainty) and both sides beyond the
data. Targets are ``y = sin(3 x) + noise_std * eps`` with standard normal ``eps``.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset

from ella.checks import check_positive_int
from ella.utils import seeded_generator

from .mnist1d import Splits

__all__ = ["toy_regression", "toy_function"]


def toy_function(x: torch.Tensor) -> torch.Tensor:
    """The noiseless regression function ``sin(3 x)``."""
    return torch.sin(3.0 * x)


def _gap_inputs(n: int, inner: float, outer: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` points uniform on ``[-outer, -inner] U [inner, outer]``, shape ``(n, 1)``."""
    u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
    sign = torch.where(torch.rand(n, 1, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return sign * (inner + (outer - inner) * u)


def toy_regression(
    num_train: int = 100,
    num_val: int = 50,
    num_test: int = 300,
    noise_std: float = 0.1,
    gap: float = 0.3,
    domain: float = 1.0,
    test_domain: float = 1.5,
    seed: int = 0,
) -> Splits:
    """The 1-D toy regression split with an in-between gap.

    Args:
        num_train: Number of training points.
        num_val: Number of validation points (same distribution as the training points).
        num_test: Number of test points, an even grid over ``[-test_domain, test_domain]``.
        noise_std: Standard deviation of the Gaussian observation noise (all splits).
        gap: Training inputs avoid ``(-gap, gap)``.
        domain: Training inputs lie in ``[-domain, domain]``.
        test_domain: Half-width of the test grid.
        seed: Seed of all random draws: the same seed gives the same tensors.

    Returns:
        A ``Splits`` with x and y float32 of shape ``(N, 1)`` and ``num_classes=None``.
    """
    for value, name in ((num_train, "num_train"), (num_val, "num_val"), (num_test, "num_test")):
        check_positive_int(value, name)
    for value, name in ((noise_std, "noise_std"), (gap, "gap"), (domain, "domain"), (test_domain, "test_domain")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"`{name}` must be a finite non-negative number, got {value!r}")
    if not gap < domain:
        raise ValueError(f"`gap` must be smaller than `domain`, got gap={gap}, domain={domain}")

    g = seeded_generator(seed)
    x_train = _gap_inputs(num_train, gap, domain, g)
    x_val = _gap_inputs(num_val, gap, domain, g)
    x_test = torch.linspace(-test_domain, test_domain, num_test, dtype=torch.float64).unsqueeze(1)

    def make(x: torch.Tensor) -> TensorDataset:
        y = toy_function(x) + noise_std * torch.randn(x.shape, generator=g, dtype=torch.float64)
        return TensorDataset(x.float(), y.float())

    train, val, test = make(x_train), make(x_val), make(x_test)
    meta = {
        "seed": int(seed),
        "noise_std": float(noise_std),
        "gap": float(gap),
        "domain": float(domain),
        "test_domain": float(test_domain),
        "function": "sin(3x)",
    }
    return Splits(train, val, test, None, (1,), name="toy_regression", meta=meta)
