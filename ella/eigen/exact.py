"""Exact references for the eigen-solvers.

* :class:`ExactEigen`: the full eigendecomposition of the ``N C x N C`` Gram matrix on the training rows
  (float64), extended to new inputs by the Nystrom formula ``psi_j(x) = kappa(x, X) v_j / (N C mu_j)``.
* :class:`RBFGaussianEigen`: the closed form of the RBF kernel's operator under a 1-D Gaussian density
  (Rasmussen & Williams, GPML section 4.3.1). With ``a = 1/(4 s^2)``, ``b = 1/(2 l^2)``,
  ``c = sqrt(a^2 + 2 a b)``, ``A = a + b + c``, ``B = b / A``:

      mu_j = variance * sqrt(2 a / A) * B^j,
      psi_j(x) = (c / a)^(1/4) exp(-(c - a) x^2) h_j(sqrt(2 c) x),

  where ``h_j = H_j / sqrt(2^j j!)`` are the normalised physicists' Hermite polynomials, so that
  ``E_{x ~ N(0, s^2)}[psi_i(x) psi_j(x)] = delta_ij`` (unit mean square under the density).
"""

from __future__ import annotations

import math

import torch

from .. import batches
from ..checks import check_float, check_gram, check_positive_int
from ..kernels.base import FeatureKernel, Kernel
from ..kernels.classic import RBF
from .solver import EigenSolver, KernelExtendedSolver, top_eigenpairs


class ExactEigen(KernelExtendedSolver):
    """Top-``k`` eigenpairs of the Gram matrix on all ``N C`` training rows, the reference for the solvers.

    With ``K v_j = N C mu_j v_j`` and ``||v_j||^2 = N C`` (unit mean square on the rows), new inputs get
    ``psi_j(x) = kappa(x, X) v_j / (N C mu_j)``. A :class:`~ella.kernels.FeatureKernel` is extended through
    its features, ``kappa(x, X) v = Phi(x) (Phi_X^T v) / S``, so only ``(S, k)`` directions are stored; when
    ``S < N C`` the ``S x S`` matrix ``Phi^T Phi / S`` (same non-zero eigenvalues) is decomposed instead.

    Args:
        k: number of eigenpairs kept.
        rank_tol: eigenvalues below ``rank_tol * mu_1`` count as zero; asking for them is an error.

    Fitted attributes: ``eigenvalues_``, ``kernel_``, ``train_psi_`` (``psi`` on the training rows), and either
    ``directions_`` ``(S, k)`` (a feature kernel) or ``train_x_`` with ``coef_`` (a Gram-block kernel).
    """

    kind = "exact"
    _extension = ("directions", "train_x", "coef")

    def __init__(self, k: int, rank_tol: float = 1e-10):
        self.k = check_positive_int(k, "k")
        self.rank_tol = check_float(rank_tol, "rank_tol")

    def fit(self, kernel: Kernel, x) -> "ExactEigen":
        """Form the Gram matrix on ``x`` (float64), check it, eigendecompose it."""
        C = self._check_fit(kernel, x)
        N = batches.num_rows(x)
        n = N * C  # N C rows
        self.kernel_, self.num_outputs_ = kernel, C
        self.directions_ = self.train_x_ = self.coef_ = None
        if isinstance(kernel, FeatureKernel):
            phi = kernel.features(x).double().flatten(0, 1)  # (n, S)
            if not torch.isfinite(phi).all():
                raise ValueError("`kernel` gave non-finite features (nan or inf)")
            S = phi.shape[1]
            if S < n:  # dual: K = Phi Phi^T / S and Phi^T Phi / S share their non-zero eigenvalues
                evals, w = top_eigenpairs(phi.T @ phi / S, self.k, self.rank_tol)
                # q_j = Phi w_j / sqrt(S e_j); the extension direction Phi^T v_j / (S e_j) is w_j sqrt(n / (S e_j))
                self.directions_ = w * (n / (S * evals)).sqrt()
            else:
                evals, q = top_eigenpairs(phi @ phi.T / S, self.k, self.rank_tol)
                self.directions_ = phi.T @ (q * math.sqrt(n) / evals) / S  # Phi^T v_j / (S n mu_j): (S, k)
            self.train_psi_ = (phi @ self.directions_).reshape(N, C, self.k)
        else:
            gram = kernel.gram(x).double()
            check_gram(gram)
            evals, q = top_eigenpairs(gram, self.k, self.rank_tol)
            # v_j = sqrt(n) q_j; psi_j(x) = kappa(x, X) v_j / (n mu_j), with n mu_j = the Gram eigenvalue e_j
            self.train_x_, self.coef_ = x, q * math.sqrt(n) / evals
            self.train_psi_ = (q * math.sqrt(n)).reshape(N, C, self.k)
        self.eigenvalues_ = evals / n
        return self

    def __call__(self, x) -> torch.Tensor:
        """``psi(x)`` of shape ``(B, C, k)`` (float64)."""
        self._check_fitted()
        with torch.no_grad():
            if self.directions_ is not None:
                return self.kernel_.features(x).double() @ self.directions_
            cross = self.kernel_.gram(x, self.train_x_).double()  # kappa(x, X): (B C, N C)
            return (cross @ self.coef_).reshape(batches.num_rows(x), self.num_outputs_, self.k)


def rbf_gaussian_eigenvalues(k: int, lengthscale: float = 1.0, std: float = 1.0, variance: float = 1.0) -> torch.Tensor:
    """``mu_j = variance sqrt(2 a / A) B^j``, ``j = 0 .. k-1``, float64 (see the module docstring)."""
    a, b = 1 / (4 * std**2), 1 / (2 * lengthscale**2)
    c = math.sqrt(a**2 + 2 * a * b)
    A = a + b + c
    return variance * math.sqrt(2 * a / A) * (b / A) ** torch.arange(k, dtype=torch.float64)


def rbf_gaussian_eigenfunctions(x: torch.Tensor, k: int, lengthscale: float = 1.0, std: float = 1.0) -> torch.Tensor:
    """``psi_j(x)``, ``j = 0 .. k-1``, for 1-D inputs ``x`` of shape ``(B,)`` or ``(B, 1)``; returns ``(B, k)``.

    The normalised Hermite polynomials come from the stable three-term recurrence
    ``h_{j+1}(u) = sqrt(2/(j+1)) u h_j(u) - sqrt(j/(j+1)) h_{j-1}(u)``, ``h_0 = 1``.
    """
    x = x.reshape(-1).double()
    a, b = 1 / (4 * std**2), 1 / (2 * lengthscale**2)
    c = math.sqrt(a**2 + 2 * a * b)
    u = math.sqrt(2 * c) * x
    h = [torch.ones_like(u), math.sqrt(2) * u]
    for j in range(1, k - 1):
        h.append(math.sqrt(2 / (j + 1)) * u * h[j] - math.sqrt(j / (j + 1)) * h[j - 1])
    # (c/a)^(1/4): normaliser;  exp(-(c - a) x^2): envelope;  h_j(sqrt(2c) x): Hermite factor
    envelope = (c / a) ** 0.25 * torch.exp(-(c - a) * x**2)
    return envelope[:, None] * torch.stack(h[:k], dim=1)


class RBFGaussianEigen(EigenSolver):
    """Closed-form eigenpairs of ``RBF(lengthscale, variance)`` under the density ``N(0, std^2)`` on R.

    Already "fitted": ``eigenvalues`` and ``psi(x)`` (shape ``(B, 1, k)``) are available at once, and
    ``kernel_`` is the matching :class:`~ella.kernels.RBF`. Sample training inputs with :meth:`sample`.
    """

    kind = "rbf-gaussian"

    def __init__(self, k: int, lengthscale: float = 1.0, std: float = 1.0, variance: float = 1.0):
        self.k = check_positive_int(k, "k")
        self.kernel_ = RBF(lengthscale, variance)
        self.lengthscale, self.variance = self.kernel_.lengthscale, self.kernel_.variance
        self.std = check_float(std, "std")
        self.eigenvalues_ = rbf_gaussian_eigenvalues(k, lengthscale, std, variance)

    def sample(self, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
        """``n`` seeded draws from ``N(0, std^2)``, shape ``(n, 1)``."""
        g = torch.Generator().manual_seed(int(seed))
        return (self.std * torch.randn(check_positive_int(n, "n"), 1, generator=g, dtype=torch.float64)).to(dtype)

    def fit(self, kernel: Kernel | None = None, x: torch.Tensor | None = None) -> "RBFGaussianEigen":
        """Nothing to fit: the answer is known in closed form."""
        return self

    def state_dict(self) -> dict:
        """The closed form's parameters (its eigenpairs follow from them)."""
        return {
            "kind": self.kind,
            "k": self.k,
            "lengthscale": self.lengthscale,
            "std": self.std,
            "variance": self.variance,
        }

    def load_state_dict(self, state: dict, kernel: Kernel | None = None) -> "RBFGaussianEigen":
        """Nothing to restore but a check that ``state`` holds this closed form's parameters."""
        state = self._check_state(state)
        if (state["lengthscale"], state["std"], state["variance"]) != (self.lengthscale, self.std, self.variance):
            raise ValueError("the state holds another RBF kernel or input density")
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim > 2 or (x.ndim == 2 and x.shape[1] != 1):
            raise ValueError(f"`x` must hold 1-D inputs, shape (B,) or (B, 1), got {tuple(x.shape)}")
        return rbf_gaussian_eigenfunctions(x, self.k, self.lengthscale, self.std).unsqueeze(1)
