"""Neural Eigenmap (Deng, Shi et al., "Neural Eigenfunctions Are Structured Representation Learners"): an encoder
trained by NeuralEF on the augmentation kernel of its data, giving codes ordered by eigenvalue.

::

    eigenmap = NeuralEigenmap(encoder, k=64, augment=augment).fit(images)   # (N, ...) clean inputs, or a loader
    codes = eigenmap(x)            # (B, 64), the eigenfunctions psi(x), decreasing eigenvalues
    short = eigenmap(x, dim=8)     # the first 8: the code cut to the directions that matter most

The objective is NeuralEF's, with the kernel's quotients estimated from two augmentations of each clean input
(:class:`~ella.kernels.AugmentationKernel`); the solver is :class:`~ella.eigen.NeuralEF` itself.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import batches
from ..checks import check_positive_int
from ..kernels.augmentation import Augment, AugmentationKernel
from .nets import EigenfunctionNet
from .neuralef import NeuralEF


class NeuralEigenmap:
    """An encoder trained to the top-``k`` eigenfunctions of the augmentation kernel.

    Args:
        encoder: ``x (B, ...) -> (B, k)``, the network whose outputs become the code (its last layer has ``k``
            outputs); a copy is trained, the given one is never changed.
        k: the code length, the number of eigenfunctions.
        augment: ``xbar (B, ...) -> x (B, ...)``, one random augmentation of each clean input (it may draw from
            torch's global generator, which ``fit`` seeds from ``seed``).
        steps: NeuralEF's Adam steps (cosine learning-rate decay).
        batch_size: clean inputs per step (two views of each).
        lr: Adam's learning rate.
        seed: seed of the batches and the augmentations.
        progress: show a progress bar.

    Fitted: ``solver_`` (the fitted :class:`~ella.eigen.NeuralEF`), ``eigenvalues_`` ``(k,)``, decreasing: the
    eigenvalues of ``f -> E_{p(x' | x)}[f(x')]`` (the top one is 1, the constant function, which an encoder need not
    learn exactly).
    """

    def __init__(
        self,
        encoder: nn.Module,
        k: int,
        augment: Augment,
        *,
        steps: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        seed: int = 0,
        progress: bool = True,
    ):
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"`encoder` must be an nn.Module, got {type(encoder).__name__}")
        self.k = check_positive_int(k, "k")
        self.kernel = AugmentationKernel(augment)
        self.solver = NeuralEF(
            self.k,
            net=EigenfunctionNet(encoder, 1, self.k),
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
        )

    def fit(self, data) -> NeuralEigenmap:
        """Train on the clean inputs ``data``: a tensor ``(N, ...)`` or a loader of batches (``x`` or ``(x, ...)``;
        read once, into memory). Returns ``self``."""
        x = data if isinstance(data, torch.Tensor) else torch.cat([batches.split_batch(b, "data")[0] for b in data])
        self.solver_ = copy.copy(self.solver).fit(self.kernel, x)
        self.eigenvalues_ = self.solver_.eigenvalues
        return self

    def __call__(self, x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """The code ``psi(x)`` of shape ``(B, k)``, or its first ``dim`` coordinates ``(B, dim)``."""
        if not hasattr(self, "solver_"):
            raise RuntimeError("NeuralEigenmap is not fitted: call `fit(data)` first")
        dim = self.k if dim is None else check_positive_int(dim, "dim")
        if dim > self.k:
            raise ValueError(f"`dim` = {dim} exceeds the code length k = {self.k}")
        return self.solver_(x)[:, 0, :dim]

    def state_dict(self) -> dict:
        """The fitted encoder and eigenvalues (:meth:`NeuralEF.state_dict`)."""
        return self.solver_.state_dict()

    def load_state_dict(self, state: dict) -> NeuralEigenmap:
        """Restore a fitted eigenmap into this one's encoder architecture; returns ``self``."""
        self.solver_ = copy.copy(self.solver).load_state_dict(state, self.kernel)
        self.eigenvalues_ = self.solver_.eigenvalues
        return self
