"""A kernel from user-supplied functions: a Gram function and/or a feature function.

``UserKernel(gram_fn=...)`` wraps ``gram_fn(x1, x2) -> (B1 C, B2 C)``; ``UserKernel(features_fn=...)`` wraps
``features_fn(x) -> (B, C, S)`` and is then a :class:`~ella.kernels.FeatureKernel` (solvers use the
features, never a ``(B C)^2`` Gram block). Every Gram block the user's function returns is checked: its
shape, finite entries and, for ``K(X, X)``, symmetry, so that a wrong function fails with a clear message
instead of silently wrong eigenpairs (``torch.linalg.eigh`` reads only one triangle).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..checks import check_gram, check_positive_int
from .base import FeatureKernel, Kernel

GramFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FeaturesFn = Callable[[torch.Tensor], torch.Tensor]


class UserKernel(Kernel):
    """A kernel given by ``gram_fn(x1, x2)`` (Gram block) and/or ``features_fn(x)`` (features).

    Args:
        gram_fn: ``(x1, x2) -> K`` of shape ``(B1 C, B2 C)``, rows input-major (row ``b C + c``).
        features_fn: ``x -> Phi`` of shape ``(B, C, S)`` with ``K = Phi Phi^T / S``; with it the kernel is a
            :class:`~ella.kernels.FeatureKernel`.
        num_outputs: C, the number of outputs per input.
        symmetry_rtol: tolerance of the symmetry check, relative to ``max |K|``.

    Raises:
        ValueError: if neither function is given, or a Gram block has the wrong shape, non-finite entries,
            or ``K(X, X)`` is not symmetric.
    """

    def __new__(cls, gram_fn: GramFn | None = None, features_fn: FeaturesFn | None = None, *args, **kwargs):
        if cls is UserKernel and features_fn is not None:
            cls = UserFeatureKernel  # a feature kernel, so that solvers use its features
        return super().__new__(cls)

    def __init__(
        self,
        gram_fn: GramFn | None = None,
        features_fn: FeaturesFn | None = None,
        num_outputs: int = 1,
        symmetry_rtol: float = 1e-6,
    ):
        if gram_fn is None and features_fn is None:
            raise ValueError("give `gram_fn` (x1, x2) -> (B1 C, B2 C) and/or `features_fn` x -> (B, C, S)")
        for name, fn in (("gram_fn", gram_fn), ("features_fn", features_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}")
        self.gram_fn, self.features_fn = gram_fn, features_fn
        self.num_outputs = check_positive_int(num_outputs, "num_outputs")
        self.symmetry_rtol = symmetry_rtol

    def infer_num_outputs(self, x: torch.Tensor) -> int:
        return self.num_outputs

    def check(self, x: torch.Tensor, max_inputs: int = 16) -> None:
        """Evaluate ``K(X, X)`` on the first ``max_inputs`` inputs and raise if it is malformed."""
        self.gram(x[:max_inputs])

    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        if self.gram_fn is None:
            return FeatureKernel.gram(self, x1, x2)
        K = self.gram_fn(x1, x1 if x2 is None else x2)
        C = self.num_outputs
        expected = (len(x1) * C, len(x1 if x2 is None else x2) * C)
        if not isinstance(K, torch.Tensor) or tuple(K.shape) != expected:
            got = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
            raise ValueError(f"`gram_fn` must return a tensor of shape (B1 C, B2 C) = {expected}, got {got}")
        if x2 is None:
            check_gram(K, "gram_fn", self.symmetry_rtol)
        elif not torch.isfinite(K).all():
            raise ValueError("`gram_fn` gave a Gram matrix with non-finite entries (nan or inf)")
        return K


class UserFeatureKernel(UserKernel, FeatureKernel):
    """:class:`UserKernel` built with ``features_fn``: also a :class:`~ella.kernels.FeatureKernel`."""

    @property
    def num_features(self) -> int:
        if getattr(self, "_num_features", None) is None:
            raise AttributeError("num_features is known after the first evaluation of `features_fn`")
        return self._num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.features_fn(x)
        C = self.num_outputs
        if not isinstance(phi, torch.Tensor) or phi.ndim != 3 or phi.shape[:2] != (len(x), C):
            got = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ValueError(f"`features_fn` must return a tensor of shape (B, C, S) = ({len(x)}, {C}, S), got {got}")
        if not torch.isfinite(phi).all():
            raise ValueError("`features_fn` returned non-finite features (nan or inf)")
        self._num_features = phi.shape[-1]
        return phi
