"""The augmentation (contrastive) kernel of a data distribution and an augmentation: known through pairs of views.

For clean inputs ``xbar ~ p_d`` and an augmentation ``p(x | xbar)``, the joint of two views of one clean input is
``p(x, x') = E_{xbar ~ p_d}[p(x | xbar) p(x' | xbar)]`` and the kernel is ``kappa(x, x') = p(x, x') / (p(x) p(x'))``.
Its integral operator on the views' marginal ``p(x)`` is ``(T f)(x) = E_{p(x' | x)}[f(x')]``: positive
semi-definite, with top eigenvalue 1 (the constant function). No Gram block exists; a solver reads the kernel through
pairs of views, ``R_ij = E_{p(x, x')}[psi_i(x) psi_j(x')]``, estimated from two augmentations of each clean input of a
batch as ``(1/B) sum_b psi_i(x_b) psi_j(x'_b)`` (Deng, Shi et al., "Neural Eigenfunctions Are Structured
Representation Learners"). Its top eigenfunctions are the representation that NeuralEF learns: ordered, so that a
code can be cut to its first ``d`` coordinates.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import batches
from .base import Kernel

Augment = Callable[[torch.Tensor], torch.Tensor]


class AugmentationKernel(Kernel):
    """``kappa(x, x') = p(x, x') / (p(x) p(x'))`` for the augmentation ``augment`` (see the module docstring).

    Args:
        augment: ``xbar (B, ...) -> x (B, ...)``, one random augmentation of each clean input (a batch in, a batch
            of the same size out; it may draw from torch's global generator, which the solver seeds).

    Raises:
        TypeError: ``augment`` is not callable.
    """

    num_outputs = 1
    row_name = "augmentation"
    paired = True

    def __init__(self, augment: Augment):
        if not callable(augment):
            raise TypeError(f"`augment` must be callable, xbar (B, ...) -> x (B, ...), got {type(augment).__name__}")
        self.augment = augment

    def views(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent augmentations of each clean input of ``x`` ``(B, ...)``, each ``(B, ...)``.

        Raises:
            ValueError: ``augment`` returns something other than a batch of ``B`` finite views.
        """
        B = batches.num_rows(x)
        pair = self.augment(x), self.augment(x)
        for view in pair:
            if not isinstance(view, torch.Tensor) or batches.check_inputs(view, "augment(x)") != B:
                raise ValueError(f"`augment` must return a tensor batch of {B} views for {B} clean inputs")
        return pair

    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        raise TypeError(
            "the augmentation kernel has no Gram block: it is known through pairs of views (NeuralEF trains on it; "
            "Nystrom and the exact solver need Gram blocks)"
        )

    def infer_num_outputs(self, x) -> int:
        return 1
