"""Nystrom: exact eigendecomposition of an ``M x M`` Gram matrix, extended out of sample.

``M`` rows ``(x_m, c_m)`` are drawn from the training rows: ``M`` inputs without replacement, each with
one output index drawn uniformly (so the matrix-valued kernel becomes a scalar kernel on pairs, as in
the ELLA paper). With ``K_M v_j = M mu_j v_j`` and ``||v_j||^2 = M``,

    psi_j(x) = kappa(x, X_M) v_j / (M mu_j),

which reproduces ``v_j`` on the ``M`` rows. For the empirical NTK the extension is done without any
kernel evaluation against ``X_M``: ``kappa(x, X_M) v_j = J(x) (J_M^T v_j)``, i.e. one forward-mode JVP
along the fixed direction ``w_j = J_M^T v_j / (M mu_j)`` (the ELLA feature map).
"""

from __future__ import annotations

import math

import torch

from .._checks import check_positive_int
from .._utils import seeded_generator
from ..kernels.base import Kernel
from .solver import EigenSolver, top_eigenpairs


class Nystrom(EigenSolver):
    """Top-``k`` eigenpairs from ``num_points`` (M) sampled rows.

    Args:
        k: number of eigenpairs.
        num_points: M, the number of sampled ``(x, c)`` rows (capped at the number of inputs).
        seed: seed of the sampled rows.
        rank_tol: eigenvalues below ``rank_tol * mu_1`` count as zero; asking for them is an error.
    """

    def __init__(self, k: int, num_points: int = 2000, seed: int = 0, rank_tol: float = 1e-10):
        self.k = check_positive_int(k, "k")
        self.num_points = check_positive_int(num_points, "num_points")
        self.seed, self.rank_tol = seed, rank_tol

    def fit(self, kernel: Kernel, x: torch.Tensor) -> "Nystrom":
        """Sample the rows, eigendecompose their Gram matrix (float64) and set up the extension."""
        C = self._check_fit(kernel, x)
        M = min(self.num_points, len(x))
        if self.k > M:
            raise ValueError(f"`k` = {self.k} is larger than the number of Nystrom rows M = {M}")
        gen = seeded_generator(self.seed)
        idx = torch.randperm(len(x), generator=gen)[:M].to(x.device)
        classes = torch.randint(0, C, (M,), generator=gen).to(x.device)
        self.kernel, self.num_outputs = kernel, C
        if hasattr(kernel, "jacobian_rows"):
            rows = kernel.jacobian_rows(x[idx], classes)  # J_M: (M, P)
            gram = rows.double() @ rows.double().T
        else:
            full = kernel.gram(x[idx]).double()
            sel = torch.arange(M, device=x.device) * C + classes
            gram = full[sel][:, sel]
        evals, evecs = top_eigenpairs(gram, self.k, self.rank_tol, "Nystrom Gram matrix")
        # v_j = sqrt(M) q_j; psi_j(x) = kappa(x, X_M) v_j / (M mu_j) with M mu_j = p_j
        coef = evecs * math.sqrt(M) / evals
        dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
        if hasattr(kernel, "jacobian_rows"):
            self._directions = (rows.double().T @ coef).to(rows.dtype)  # w_j = J_M^T v_j / (M mu_j): (P, k)
        else:
            self._x, self._classes, self._coef = x[idx], classes, coef.to(dtype)
        self._eigenvalues = (evals / M).to(dtype)
        return self

    def state_dict(self) -> dict:
        """The fitted solver; only the Jacobian (NTK) form can be saved, since it needs no kernel object."""
        self._check_fitted()
        if not hasattr(self, "_directions"):
            raise ValueError("only a Nystrom solver fitted to an EmpiricalNTK can be saved")
        return {"kind": "nystrom", "k": self.k, "eigenvalues": self._eigenvalues, "directions": self._directions}

    def load_state_dict(self, state: dict, kernel: Kernel) -> "Nystrom":
        """Restore a fitted NTK Nystrom solver on ``kernel`` (an EmpiricalNTK of the same model)."""
        self.kernel, self._directions, self._eigenvalues = kernel, state["directions"], state["eigenvalues"]
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``psi(x)``, shape ``(B, C, k)``."""
        self._check_fitted()
        with torch.no_grad():
            if hasattr(self, "_directions"):
                return self.kernel.jvp(x, self._directions)  # J(x) w_j
            M, C = len(self._x), self.num_outputs
            cross = self.kernel.gram(x, self._x).reshape(len(x), C, M, C)
            cross = cross[:, :, torch.arange(M, device=x.device), self._classes]  # kappa(x, x_m)[:, c_m]
            return cross.to(self._coef.dtype) @ self._coef
