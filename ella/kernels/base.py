"""The one kernel interface of ella.

A kernel is matrix-valued, ``kappa(x, x') in R^{C x C}``; its inputs are the pairs ``(x, c)``. A batch
of ``B`` inputs therefore gives ``B * C`` rows, ordered input-major (row ``b * C + c``). Scalar kernels
are the case ``C = 1``.

Two ways to provide it, and an eigen-solver may use either:

* a Gram block ``K(X1, X2)`` of shape ``(B1 * C, B2 * C)`` (:meth:`Kernel.gram`);
* random features ``Phi(X)`` of shape ``(B, C, S)`` with ``K = Phi Phi^T / S``
  (:meth:`FeatureKernel.features`), which lets a solver work with ``S x k`` products instead of
  ``(B C)^2`` Gram blocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .. import batches


class Kernel(ABC):
    """A matrix-valued kernel ``kappa(x, x')`` in ``R^{C x C}``, positive semi-definite unless it says otherwise
    (:attr:`positive_semidefinite`).

    What a kernel offers beyond the interface is said by its capabilities (class attributes), never by its type:
    a method reads them instead of testing which kernel it was given.
    """

    #: C, the number of outputs per input.
    num_outputs: int
    #: the kernel is a network's ``J(x) J(x)^T`` in its weights (the empirical NTK): it offers ``jacobian_rows``,
    #: ``jvp``, ``resampled``, ``num_params`` and ``config``, so eigenfunctions extend by JVPs and the kernel's trace
    #: at any input can be estimated (ELLA's residual); it is rebuilt from ``config`` and the model on load.
    in_weight_space: bool = False
    #: whether an ELLA posterior folds the likelihood curvature in by default (``False``: the kernel is itself a
    #: posterior, as the SGD-trajectory kernel's GP is).
    posterior_update: bool = True
    #: the part of an ELLA row's name that says which kernel it used (``""``: the NTK's rows).
    row_name: str = ""
    #: ``False`` for a kernel with negative eigenvalues (a graph's normalised adjacency): NeuralEF then bounds the
    #: weight of its penalty (:data:`ella.eigen.neuralef.INDEFINITE_FLOOR`).
    positive_semidefinite: bool = True
    #: the kernel is known through pairs of views of each input (``views``; the augmentation kernel), not through Gram
    #: blocks or features: NeuralEF trains on their products.
    paired: bool = False

    # What a kernel in weight space (``in_weight_space``) offers besides Gram blocks; other kernels do not have it.
    #: P, the network's weights (a kernel in weight space).
    num_params: int
    #: the seed of its random directions (a kernel in weight space).
    seed: int

    @property
    def config(self) -> dict:
        """The settings a kernel in weight space is rebuilt from (with its model) when a posterior is loaded."""
        raise NotImplementedError(f"{type(self).__name__} is not a kernel in weight space: it has no `config`")

    def resampled(self, num_samples: int, seed: int) -> Kernel:
        """The same kernel estimated with ``num_samples`` other random directions from ``seed`` (in weight space)."""
        raise NotImplementedError(f"{type(self).__name__} is not a kernel in weight space: it cannot be resampled")

    def jacobian_rows(self, x, index: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """Rows ``J_{c_b}(x_b)`` ``(B, P)`` of the network's Jacobian, one output per input (in weight space)."""
        raise NotImplementedError(f"{type(self).__name__} is not a kernel in weight space: it has no Jacobian rows")

    def jvp(self, x, tangents: torch.Tensor) -> torch.Tensor:
        """Products ``J(x) v`` ``(B, C, S)`` with flat weight directions ``(S, P)`` (in weight space)."""
        raise NotImplementedError(f"{type(self).__name__} is not a kernel in weight space: it has no JVPs")

    @abstractmethod
    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        """Gram block ``K[b C + c, b' C + c'] = kappa(x1_b, x2_b')_{c c'}`` of shape ``(B1 C, B2 C)``."""

    def infer_num_outputs(self, x: torch.Tensor) -> int:
        """C, read off the kernel evaluated on the inputs ``x``."""
        return self.gram(x).shape[0] // batches.num_rows(x)

    def check(self, x: torch.Tensor) -> None:
        """Validate the kernel on (a few of) the inputs ``x`` before a long computation; raise a
        ``ValueError`` if it is malformed. The default checks nothing; user-supplied kernels override it."""

    def diagonal_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The ``C x C`` blocks ``kappa(x_b, x_b)``, shape ``(B, C, C)``."""
        C = self.num_outputs
        return torch.stack(
            [self.gram(batches.take(x, slice(b, b + 1))).reshape(C, C) for b in range(batches.num_rows(x))]
        )

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        return self.gram(x1, x2)


class FeatureKernel(Kernel):
    """A kernel given by features: ``kappa(x, x') = Phi(x) Phi(x')^T / S`` with ``Phi(x)`` in ``R^{C x S}``."""

    #: S, the number of features.
    num_features: int

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``Phi(x)`` of shape ``(B, C, S)``."""

    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        # K = Phi_1 Phi_2^T / S over the flattened (b, c) rows
        phi1 = self.features(x1).flatten(0, 1)
        phi2 = phi1 if x2 is None else self.features(x2).flatten(0, 1)
        return phi1 @ phi2.T / self.num_features

    def diagonal_blocks(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.features(x)
        return phi @ phi.transpose(1, 2) / self.num_features
