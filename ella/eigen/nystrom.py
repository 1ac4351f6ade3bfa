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

from .. import batches
from ..checks import check_float, check_int, check_positive_int
from ..kernels.base import Kernel
from ..utils import seeded_generator
from .solver import KernelExtendedSolver, RankError, top_eigenpairs


class Nystrom(KernelExtendedSolver):
    """Top-``k`` eigenpairs from ``num_points`` (M) sampled rows.

    Args:
        k: number of eigenpairs.
        num_points: M, the number of sampled ``(x, c)`` rows (capped at the number of inputs).
        seed: seed of the sampled rows.
        rank_tol: eigenvalues below ``rank_tol * mu_1`` count as zero; asking for them is an error.

    Fitted attributes: ``eigenvalues_``, ``kernel_``, and either ``directions_`` ``(P, k)`` (a kernel
    ``in_weight_space``, the empirical NTK: ``psi(x) = J(x) W``) or the sampled rows ``rows_x_``, ``rows_c_`` with
    the coefficients ``coef_`` (any other kernel: ``psi(x) = kappa(x, X_M) coef``).
    """

    kind = "nystrom"
    _extension = ("directions", "rows_x", "rows_c", "coef")

    @classmethod
    def named(cls, k: int, *, seed: int = 0, progress: bool = True, model=None, net=None):
        return cls(k, seed=seed)

    def __init__(self, k: int, num_points: int = 2000, seed: int = 0, rank_tol: float = 1e-10):
        self.k = check_positive_int(k, "k")
        self.num_points = check_positive_int(num_points, "num_points")
        self.seed, self.rank_tol = check_int(seed, "seed", 0), check_float(rank_tol, "rank_tol")

    def fit(self, kernel: Kernel, x) -> "Nystrom":
        """Sample the rows, eigendecompose their Gram matrix (float64) and set up the extension."""
        C = self._check_fit(kernel, x)
        N = batches.num_rows(x)
        M = min(self.num_points, N)
        if self.k > M:
            raise RankError(f"`k` = {self.k} is larger than the number of Nystrom rows M = {M}", M)
        gen = seeded_generator(self.seed)
        device = batches.device(x)
        idx = torch.randperm(N, generator=gen)[:M].to(device)
        classes = torch.randint(0, C, (M,), generator=gen).to(device)
        xm = batches.take(x, idx)
        ntk = kernel.in_weight_space  # J_M: the extension is a JVP, no kernel evaluation against X_M
        if ntk:
            rows = kernel.jacobian_rows(xm, classes)  # J_M: (M, P)
            gram = rows.double() @ rows.double().T
        else:
            sel = torch.arange(M, device=device) * C + classes
            gram = kernel.gram(xm)[sel][:, sel]
            dtype, gram = gram.dtype, gram.double()
        evals, evecs = top_eigenpairs(gram, self.k, self.rank_tol, "Nystrom Gram matrix")
        # v_j = sqrt(M) q_j; psi_j(x) = kappa(x, X_M) v_j / (M mu_j) with M mu_j = p_j
        coef = evecs * math.sqrt(M) / evals
        self.kernel_, self.num_outputs_ = kernel, C
        self.directions_ = self.rows_x_ = self.rows_c_ = self.coef_ = None
        if ntk:
            self.directions_ = (rows.double().T @ coef).to(rows.dtype)  # w_j = J_M^T v_j / (M mu_j): (P, k)
            dtype = rows.dtype
        else:
            self.rows_x_, self.rows_c_, self.coef_ = xm, classes, coef.to(dtype)
        self.eigenvalues_ = (evals / M).to(dtype)
        return self

    def __call__(self, x) -> torch.Tensor:
        """``psi(x)``, shape ``(B, C, k)``."""
        self._check_fitted()
        with torch.no_grad():
            if self.directions_ is not None:
                return self.kernel_.jvp(x, self.directions_)  # J(x) w_j
            M, C, B = len(self.rows_c_), self.num_outputs_, batches.num_rows(x)
            cross = self.kernel_.gram(x, self.rows_x_).reshape(B, C, M, C)
            cross = cross[:, :, torch.arange(M, device=cross.device), self.rows_c_]  # kappa(x, x_m)[:, c_m]
            return cross.to(self.coef_.dtype) @ self.coef_
