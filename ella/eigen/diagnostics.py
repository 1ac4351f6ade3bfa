"""How far a solver's eigenpairs are from the exact ones: :func:`compare` and its :class:`EigenComparison`.

Per eigenpair ``j`` (``k`` = the solver's number of eigenpairs):

* relative eigenvalue error ``|mu_j - mu*_j| / mu*_j``;
* cosine ``|<psi_j, psi*_j>| / (||psi_j|| ||psi*_j||)`` over the held-out rows ``(x, c)`` (the absolute value
  aligns the arbitrary signs);

and for the whole set, on ``n`` held-out rows with ``Psi`` of shape ``(n, k)``:

* orthogonality error ``||Psi^T Psi / n - I||_F``;
* rank-k reconstruction error ``||K - Psi diag(mu) Psi^T||_F / ||K||_F`` with ``K`` the kernel's Gram matrix
  on the held-out inputs.

The exact answer's own orthogonality and reconstruction errors on the same rows are reported next to the
solver's: on held-out points even exact eigenfunctions are only approximately orthonormal, and no rank-k
approximation beats the exact one on the training rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..kernels.base import Kernel
from .solver import EigenSolver


@dataclass
class EigenComparison:
    """The result of :func:`compare` (all float64 tensors or floats)."""

    eigenvalues: torch.Tensor  # (k,) learned mu_j
    exact_eigenvalues: torch.Tensor  # (k,) exact mu*_j
    eigenvalue_error: torch.Tensor  # (k,) |mu_j - mu*_j| / mu*_j
    cosine: torch.Tensor  # (k,) sign-aligned cosine on the held-out rows
    orthogonality: float  # ||Psi^T Psi / n - I||_F, learned
    orthogonality_exact: float  # the same for the exact eigenfunctions
    reconstruction: float  # ||K - Psi diag(mu) Psi^T||_F / ||K||_F, learned
    reconstruction_exact: float  # the same for the exact eigenpairs
    num_rows: int  # n, held-out rows the functions were compared on

    def to_dict(self) -> dict:
        """JSON-ready: tensors become lists of floats."""
        return {
            key: value.tolist() if isinstance(value, torch.Tensor) else value for key, value in asdict(self).items()
        }

    def table(self, title: str = "") -> str:
        """A printable table, one row per eigenpair, then the whole-set errors."""
        lines = [title] if title else []
        lines.append(f"{'j':>3} {'mu (learned)':>13} {'mu (exact)':>13} {'rel. error':>10} {'cosine':>8}")
        for j in range(len(self.eigenvalues)):
            lines.append(
                f"{j + 1:>3} {self.eigenvalues[j]:>13.5g} {self.exact_eigenvalues[j]:>13.5g} "
                f"{self.eigenvalue_error[j]:>10.2%} {self.cosine[j]:>8.4f}"
            )
        lines.append(
            f"orthogonality ||Psi^T Psi/n - I||_F: {self.orthogonality:.4f} (exact {self.orthogonality_exact:.4f})"
        )
        lines.append(
            f"rank-k reconstruction ||K - Psi mu Psi^T||_F/||K||_F: {self.reconstruction:.4f} "
            f"(exact {self.reconstruction_exact:.4f})   [{self.num_rows} held-out rows]"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def cosines(psi: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``|<psi_j, psi*_j>| / (||psi_j|| ||psi*_j||)`` over the rows of ``(n, k)`` matrices."""
    return ((psi * exact).sum(0) / (psi.norm(dim=0) * exact.norm(dim=0)).clamp_min(1e-300)).abs()


def orthogonality_error(psi: torch.Tensor) -> float:
    """``||Psi^T Psi / n - I||_F`` for ``Psi`` of shape ``(n, k)``."""
    eye = torch.eye(psi.shape[1], dtype=psi.dtype, device=psi.device)
    return torch.linalg.matrix_norm(psi.T @ psi / len(psi) - eye).item()


def reconstruction_error(gram: torch.Tensor, psi: torch.Tensor, mu: torch.Tensor) -> float:
    """``||K - Psi diag(mu) Psi^T||_F / ||K||_F``."""
    return (torch.linalg.matrix_norm(gram - (psi * mu) @ psi.T) / torch.linalg.matrix_norm(gram)).item()


def compare(
    solver: EigenSolver, exact: EigenSolver, x_test: torch.Tensor, kernel: Kernel | None = None
) -> EigenComparison:
    """Compare a fitted solver's eigenpairs with exact ones on held-out inputs ``x_test``.

    Args:
        solver: a fitted :class:`~ella.eigen.EigenSolver` (NeuralEF, SpIN, Nystrom, ...).
        exact: the reference: an :class:`~ella.eigen.ExactEigen` fitted to the same kernel and training
            inputs, or an :class:`~ella.eigen.RBFGaussianEigen` (closed form); it must hold at least as
            many eigenpairs as ``solver``.
        x_test: held-out inputs ``(n, ...)``.
        kernel: the kernel for the reconstruction error; default ``exact.kernel_``.

    Returns:
        An :class:`EigenComparison`; ``print`` it for the table.
    """
    mu = solver.eigenvalues.double()  # raises if the solver is not fitted
    mu_exact = exact.eigenvalues.double()
    k = len(mu)
    if len(mu_exact) < k:
        raise ValueError(
            f"`exact` holds {len(mu_exact)} eigenpairs but `solver` has k = {k}: fit the exact reference with k >= {k}"
        )
    kernel = kernel if kernel is not None else getattr(exact, "kernel_", None)
    if not isinstance(kernel, Kernel):
        raise ValueError("`kernel` is needed for the reconstruction error (the exact reference has none)")
    if not isinstance(x_test, torch.Tensor) or len(x_test) == 0:
        raise ValueError("`x_test` must be a non-empty tensor of held-out inputs")
    mu_exact = mu_exact[:k]
    psi = solver(x_test).double().reshape(-1, k)  # (n, k) over the held-out rows (x, c)
    psi_exact = exact(x_test).double()[..., :k].reshape(-1, k)
    gram = kernel.gram(x_test).double()
    return EigenComparison(
        eigenvalues=mu,
        exact_eigenvalues=mu_exact,
        eigenvalue_error=(mu - mu_exact).abs() / mu_exact.abs(),
        cosine=cosines(psi, psi_exact),
        orthogonality=orthogonality_error(psi),
        orthogonality_exact=orthogonality_error(psi_exact),
        reconstruction=reconstruction_error(gram, psi, mu),
        reconstruction_exact=reconstruction_error(gram, psi_exact, mu_exact),
        num_rows=len(psi),
    )
