"""The contract every eigen-solver keeps: ``fit(kernel, x)``, ``psi = solver(x)``, ``eigenvalues``,
``state_dict()`` and ``load_state_dict(state, kernel)``.

Configuration (the constructor's arguments) is never changed by ``fit``; what ``fit`` learns lives in
attributes with a trailing underscore (``eigenvalues_``, a trained network ``net_``, ...), all set anew by each
``fit``, so fitting twice with the same seed gives the same solver as fitting once.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import torch
from torch import nn

from .. import batches, files
from ..checks import check_positive_int
from ..kernels.base import Kernel


class RankError(ValueError):
    """``k`` exceeds the numerical rank of the matrix a solver decomposes; ``rank`` says how many eigenpairs it has."""

    def __init__(self, message: str, rank: int):
        super().__init__(message)
        self.rank = rank


def top_eigenpairs(
    matrix: torch.Tensor, k: int, rank_tol: float, name: str = "Gram matrix"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` eigenpairs ``(e, q)`` of a symmetric matrix, decreasing; a :class:`RankError` if ``k``
    exceeds its numerical rank (eigenvalues above ``rank_tol * e_1``)."""
    if k > len(matrix):
        raise RankError(f"`k` = {k} exceeds the rank of the {name}, at most its size {len(matrix)}", len(matrix))
    evals, evecs = torch.linalg.eigh(matrix)
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    if evals[-1] <= rank_tol * evals[0]:
        rank = int((evals > rank_tol * evals[0]).sum())
        raise RankError(f"`k` = {k} exceeds the numerical rank ({rank}) of the {name}", rank)
    return evals, evecs


#: every solver class with a ``kind``, by kind, filled as each is defined: what a solver's name
#: (``ELLA(solver="nystrom")``, :data:`ella.names.SOLVERS`) and a saved solver's ``kind`` refer to.
REGISTRY: dict[str, type[EigenSolver]] = {}


class EigenSolver(ABC):
    """Top-``k`` eigenpairs ``(mu_j, psi_j)`` of a kernel's integral operator on an empirical measure.

    Conventions: ``psi(x)`` has shape ``(B, C, k)`` with unit mean square over the training rows
    ``(x_n, c)``; ``mu_j`` are operator eigenvalues (Gram eigenvalues divided by the number of rows), in
    decreasing order, so that ``kappa(x, x') ~= sum_j mu_j psi_j(x) psi_j(x')^T``.
    """

    #: the name this solver is saved under (``state_dict()["kind"]``) and registered by (:data:`REGISTRY`).
    kind: str
    k: int
    eigenvalues_: torch.Tensor | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in vars(cls):
            REGISTRY[cls.kind] = cls

    @classmethod
    def named(
        cls, k: int, *, seed: int = 0, progress: bool = True, model: nn.Module | None = None, net=None
    ) -> EigenSolver:
        """This solver with its default settings for ``k`` eigenpairs: what a method builds from its name.

        Args:
            k: the number of eigenpairs.
            seed: the seed of its randomness, where it has any.
            progress: show a progress bar, where it trains.
            model: the trained network, for a solver whose eigenfunction network reuses its body.
            net: the eigenfunction network's architecture, where it trains one.

        Returns:
            An unfitted solver.
        """
        return cls(k)

    @abstractmethod
    def fit(self, kernel: Kernel, x) -> "EigenSolver":
        """Learn the top-``k`` eigenpairs of ``kernel`` on the inputs ``x`` ``(N, ...)``; returns ``self``."""

    @abstractmethod
    def __call__(self, x) -> torch.Tensor:
        """Eigenfunctions ``psi(x)`` of shape ``(B, C, k)``."""

    def outputs_and_eigenfunctions(self, model: nn.Module, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``model(x)`` ``(B, C)`` and ``psi(x)`` ``(B, C, k)``; a solver whose eigenfunctions are read off the
        model's own forward pass gives both from that one pass."""
        return batches.call(model, x), self(x)

    @abstractmethod
    def state_dict(self) -> dict:
        """The fitted state: tensors (and nested dicts of them) plus JSON-ready values, with ``"kind"``."""

    @abstractmethod
    def load_state_dict(self, state: dict, kernel: Kernel) -> "EigenSolver":
        """Restore a fitted state written by :meth:`state_dict`, evaluated with ``kernel`` where the solver needs
        one at prediction (Nystrom, exact); returns ``self``."""

    def with_k(self, k: int) -> "EigenSolver":
        """This solver's configuration with ``k`` eigenpairs instead (unfitted): what to fit when a
        :class:`RankError` says the kernel has only ``k``."""
        solver = copy.copy(self)
        solver.k = check_positive_int(k, "k")
        solver.eigenvalues_ = None
        return solver

    def _check_fit(self, kernel: Kernel, x) -> int:
        """Validate the arguments of ``fit`` and return C, the kernel's number of outputs."""
        if not isinstance(kernel, Kernel):
            raise TypeError(f"`kernel` must be an ella.kernels.Kernel, got {type(kernel).__name__}")
        if batches.check_inputs(x, "x") == 0:
            raise ValueError("`x` must be a non-empty batch of inputs (N, ...)")
        kernel.check(x)
        C = kernel.infer_num_outputs(batches.take(x, slice(0, 1)))
        rows = batches.num_rows(x) * C
        if self.k > rows:
            raise RankError(f"`k` = {self.k} is larger than the number of rows N * C = {rows}", rows)
        rank = getattr(kernel, "max_rank", None)  # a kernel of known finite rank, e.g. the SGD-trajectory one
        if rank is not None and self.k > rank:
            raise ValueError(
                f"`k` = {self.k} is larger than the rank of the kernel ({type(kernel).__name__} has "
                f"rank at most {rank})"
            )
        return C

    def _check_state(self, state) -> dict:
        if not isinstance(state, dict) or state.get("kind") != self.kind or state.get("k") != self.k:
            found = (state.get("kind"), state.get("k")) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"the state is not that of a {type(self).__name__} with k = {self.k} (found {found})")
        return state

    def _check_fitted(self) -> None:
        if self.eigenvalues_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call `fit(kernel, x)` first")

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``mu`` of shape ``(k,)``: eigenvalues of the integral operator."""
        self._check_fitted()
        return self.eigenvalues_

    def feature_map(self, x) -> torch.Tensor:
        """``Psi(x) = psi(x) diag(sqrt(mu))``, shape ``(B, C, k)``, so that ``kappa ~= Psi Psi^T``."""
        return self(x) * self.eigenvalues.clamp_min(0).sqrt()


class KernelExtendedSolver(EigenSolver):
    """A solver that extends its eigenfunctions to new inputs through its kernel (Nystrom, exact): it keeps
    ``kernel_`` and either feature-space ``directions_`` or inputs with coefficients ``coef_``."""

    #: the fitted tensors, besides the eigenvalues, that :meth:`state_dict` saves (each ``name_`` on the solver).
    _extension: tuple[str, ...]
    directions_: torch.Tensor | None = None
    coef_: torch.Tensor | None = None

    def state_dict(self) -> dict:
        """The fitted solver: eigenvalues and the extension (feature directions, or inputs and coefficients)."""
        self._check_fitted()
        extension = {name: getattr(self, f"{name}_") for name in self._extension}
        return {
            "kind": self.kind,
            "k": self.k,
            "num_outputs": self.num_outputs_,
            "eigenvalues": self.eigenvalues_,
            **{name: value for name, value in extension.items() if value is not None},
        }

    def load_state_dict(self, state: dict, kernel: Kernel) -> "KernelExtendedSolver":
        """Restore a fitted solver, extended to new inputs through ``kernel`` (the kernel it was fitted with)."""
        state = self._check_state(state)
        if not isinstance(kernel, Kernel):
            raise TypeError(
                f"{type(self).__name__} needs its `kernel` to evaluate new inputs, got {type(kernel).__name__}"
            )
        for name in self._extension:
            setattr(self, f"{name}_", state.get(name))
        if (self.directions_ is None) == (self.coef_ is None):
            raise ValueError(f"the {type(self).__name__} state holds neither feature directions nor coefficients")
        where = f"the saved {type(self).__name__}"
        self.eigenvalues_ = files.check_tensor(state.get("eigenvalues"), (self.k,), where, "eigenvalues")
        num_outputs = state.get("num_outputs")
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError(f"{where} has {num_outputs!r} outputs, not a positive integer")
        if self.directions_ is not None:
            P = getattr(kernel, "num_params", self.directions_.shape[0])
            files.check_tensor(self.directions_, (P, self.k), where, "directions")
        else:
            files.check_tensor(self.coef_, (getattr(self.coef_, "shape", (0,))[0], self.k), where, "coef")
        self.kernel_, self.num_outputs_ = kernel, num_outputs
        return self
