"""The shape every eigen-solver shares: ``fit(kernel, x)``, ``psi = solver(x)``, ``solver.eigenvalues``."""

from __future__ import annotations

import torch

from ..kernels.base import Kernel


def top_eigenpairs(matrix: torch.Tensor, k: int, rank_tol: float,
                   name: str = "Gram matrix") -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` eigenpairs ``(e, q)`` of a symmetric matrix, decreasing; a ``ValueError`` if ``k``
    exceeds its numerical rank (eigenvalues above ``rank_tol * e_1``)."""
    evals, evecs = torch.linalg.eigh(matrix)
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    if evals[-1] <= rank_tol * evals[0]:
        rank = int((evals > rank_tol * evals[0]).sum())
        raise ValueError(f"`k` = {k} exceeds the numerical rank ({rank}) of the {name}")
    return evals, evecs


class EigenSolver:
    """Top-``k`` eigenpairs ``(mu_j, psi_j)`` of a kernel's integral operator on an empirical measure.

    Conventions: ``psi(x)`` has shape ``(B, C, k)`` with unit mean square over the training rows
    ``(x_n, c)``; ``mu_j`` are operator eigenvalues (Gram eigenvalues divided by the number of rows), in
    decreasing order, so that ``kappa(x, x') ~= sum_j mu_j psi_j(x) psi_j(x')^T``.
    """

    k: int
    _eigenvalues: torch.Tensor | None = None

    def _check_fit(self, kernel: Kernel, x: torch.Tensor) -> int:
        """Validate the arguments of ``fit`` and return C, the kernel's number of outputs."""
        if not isinstance(kernel, Kernel):
            raise TypeError(f"`kernel` must be an ella.kernels.Kernel, got {type(kernel).__name__}")
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or len(x) == 0:
            raise ValueError("`x` must be a non-empty tensor of inputs (N, ...)")
        kernel.check(x)
        C = kernel.infer_num_outputs(x[:1])
        if self.k > len(x) * C:
            raise ValueError(f"`k` = {self.k} is larger than the number of rows N * C = {len(x) * C}")
        rank = getattr(kernel, "max_rank", None)  # a kernel of known finite rank, e.g. the SGD-trajectory one
        if rank is not None and self.k > rank:
            raise ValueError(f"`k` = {self.k} is larger than the rank of the kernel ({type(kernel).__name__} has "
                             f"rank at most {rank})")
        return C

    def _check_fitted(self) -> None:
        if self._eigenvalues is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call `fit(kernel, x)` first")

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``mu`` of shape ``(k,)``: eigenvalues of the integral operator."""
        self._check_fitted()
        return self._eigenvalues

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``Psi(x) = psi(x) diag(sqrt(mu))``, shape ``(B, C, k)``, so that ``kappa ~= Psi Psi^T``."""
        return self(x) * self.eigenvalues.clamp_min(0).sqrt()
