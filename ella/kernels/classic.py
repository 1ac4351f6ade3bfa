"""Classic scalar kernels (``C = 1``): the squared-exponential ``RBF`` and the ``Polynomial`` kernel.

Inputs of any shape ``(B, ...)`` are flattened to vectors ``x in R^D``. Both kernels give their Gram block
in one matrix product and their diagonal blocks ``kappa(x, x)`` in ``O(B D)``, without any Gram matrix.
"""

from __future__ import annotations

import torch

from ..checks import check_float, check_positive_int
from .base import Kernel


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise ValueError(f"`{name}` must be a tensor of inputs (B, ...), got {type(x).__name__}")
    x = x.reshape(len(x), -1)
    return x if x.dtype.is_floating_point else x.to(torch.get_default_dtype())


def squared_distances(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``||x1_a - x2_b||^2 = ||x1_a||^2 + ||x2_b||^2 - 2 x1_a . x2_b``, clamped at 0 against round-off."""
    cross = x1 @ x2.T
    return (x1.pow(2).sum(1)[:, None] + x2.pow(2).sum(1)[None, :] - 2 * cross).clamp_min(0)


def rbf_gram(x1: torch.Tensor, x2: torch.Tensor, lengthscale: float = 1.0, variance: float = 1.0) -> torch.Tensor:
    """``K_ab = variance * exp(-||x1_a - x2_b||^2 / (2 l^2))`` for flattened inputs, shape ``(B1, B2)``."""
    return variance * torch.exp(-squared_distances(x1, x2) / (2 * lengthscale**2))


def polynomial_gram(
    x1: torch.Tensor, x2: torch.Tensor, degree: int = 2, offset: float = 1.0, scale: float = 1.0
) -> torch.Tensor:
    """``K_ab = (scale * x1_a . x2_b + offset)^degree`` for flattened inputs, shape ``(B1, B2)``."""
    return (scale * (x1 @ x2.T) + offset) ** degree


class RBF(Kernel):
    """Squared-exponential kernel ``kappa(x, x') = variance * exp(-||x - x'||^2 / (2 l^2))``.

    Its eigenpairs under a 1-D Gaussian input density are known in closed form
    (:class:`~ella.eigen.RBFGaussianEigen`).

    Args:
        lengthscale: ``l > 0``.
        variance: ``kappa(x, x) > 0``.
    """

    num_outputs = 1

    def __init__(self, lengthscale: float = 1.0, variance: float = 1.0):
        self.lengthscale = check_float(lengthscale, "lengthscale")
        self.variance = check_float(variance, "variance")

    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        a = _flat(x1, "x1")
        b = a if x2 is None else _flat(x2, "x2").to(a.dtype)
        return rbf_gram(a, b, self.lengthscale, self.variance)

    def infer_num_outputs(self, x: torch.Tensor) -> int:
        return 1

    def diagonal_blocks(self, x: torch.Tensor) -> torch.Tensor:
        # kappa(x, x) = variance for every input
        x = _flat(x, "x")
        return torch.full((len(x), 1, 1), self.variance, dtype=x.dtype, device=x.device)

    def __repr__(self) -> str:
        return f"RBF(lengthscale={self.lengthscale:g}, variance={self.variance:g})"


class Polynomial(Kernel):
    """Polynomial kernel ``kappa(x, x') = (scale * x . x' + offset)^degree``.

    Args:
        degree: positive integer power.
        offset: ``c >= 0`` (``c > 0`` makes the kernel include all lower degrees).
        scale: ``> 0``, multiplies the inner product.
    """

    num_outputs = 1

    def __init__(self, degree: int = 2, offset: float = 1.0, scale: float = 1.0):
        self.degree, self.scale = check_positive_int(degree, "degree"), check_float(scale, "scale")
        self.offset = check_float(offset, "offset", inclusive=True)

    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        a = _flat(x1, "x1")
        b = a if x2 is None else _flat(x2, "x2").to(a.dtype)
        return polynomial_gram(a, b, self.degree, self.offset, self.scale)

    def infer_num_outputs(self, x: torch.Tensor) -> int:
        return 1

    def diagonal_blocks(self, x: torch.Tensor) -> torch.Tensor:
        # kappa(x, x) = (scale ||x||^2 + offset)^degree
        x = _flat(x, "x")
        return ((self.scale * x.pow(2).sum(1) + self.offset) ** self.degree).reshape(-1, 1, 1)

    def __repr__(self) -> str:
        return f"Polynomial(degree={self.degree}, offset={self.offset:g}, scale={self.scale:g})"
