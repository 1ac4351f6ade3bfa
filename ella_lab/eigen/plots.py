"""Figures of a solver against the exact answer (matplotlib Figure API, Agg; no global pyplot state).

* :func:`plot_spectrum`: learned vs exact eigenvalues on a log scale.
* :func:`plot_eigenfunctions`: 1-D inputs: learned curves over exact ones; 2-D inputs: heat maps of learned
  (top row) and exact (bottom row) eigenfunctions; other inputs: learned vs exact values on held-out rows.
  Learned eigenfunctions are sign-aligned with the exact ones first.
"""

from __future__ import annotations

import torch

from ella.eigen import EigenSolver


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _aligned(solver: EigenSolver, exact: EigenSolver, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(psi, psi*)`` on ``x`` as ``(B, C, k)`` float64, ``psi_j`` multiplied by ``sign <psi_j, psi*_j>``."""
    psi, ref = solver(x).double()[..., :k], exact(x).double()[..., :k]
    sign = torch.sign((psi * ref).sum(dim=(0, 1)))
    return psi * torch.where(sign == 0, 1.0, sign), ref


def plot_spectrum(solver: EigenSolver, exact: EigenSolver, path, title: str = "") -> None:
    """Eigenvalues ``mu_j`` of the solver (markers) and the exact ones (line), log scale."""
    fig = _figure(5, 3.5)
    ax = fig.add_subplot()
    mu_exact = exact.eigenvalues.double().cpu()
    ax.semilogy(range(1, len(mu_exact) + 1), mu_exact, "k.-", label="exact")
    mu = solver.eigenvalues.double().cpu()
    ax.semilogy(range(1, len(mu) + 1), mu.clamp_min(1e-300), "o", mfc="none", color="C3", label=type(solver).__name__)
    ax.set(xlabel="j", ylabel="eigenvalue $\\mu_j$", title=title or "spectrum")
    ax.legend()
    fig.savefig(path, dpi=110)


def plot_eigenfunctions(
    solver: EigenSolver,
    exact: EigenSolver,
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    path,
    k: int | None = None,
    title: str = "",
) -> None:
    """The first ``k`` (at most 6) learned eigenfunctions against the exact ones."""
    k = min(k or len(solver.eigenvalues), 6, len(solver.eigenvalues))
    D = x_train[0].numel()
    if D == 1:
        lo, hi = float(x_test.min()), float(x_test.max())
        grid = torch.linspace(lo, hi, 400, dtype=x_train.dtype).unsqueeze(1)
        psi, ref = _aligned(solver, exact, grid, k)
        fig = _figure(3 * k, 2.8)
        for j, ax in enumerate(fig.subplots(1, k, squeeze=False)[0]):
            ax.plot(grid[:, 0], ref[:, 0, j], "k-", lw=2, alpha=0.5, label="exact")
            ax.plot(grid[:, 0], psi[:, 0, j], "C3--", label=type(solver).__name__)
            ax.set_title(f"$\\psi_{j + 1}$")
        fig.axes[0].legend(fontsize=7)
    elif D == 2:
        lo, hi = x_train.min(0).values - 0.5, x_train.max(0).values + 0.5
        g0, g1 = (torch.linspace(float(lo[i]), float(hi[i]), 60, dtype=x_train.dtype) for i in range(2))
        mesh = torch.stack(torch.meshgrid(g0, g1, indexing="xy"), -1).reshape(-1, 2)
        psi, ref = _aligned(solver, exact, mesh, k)
        fig = _figure(2.4 * k, 4.6)
        axes = fig.subplots(2, k, squeeze=False)
        for j in range(k):
            for row, (vals, name) in enumerate(((psi, type(solver).__name__), (ref, "exact"))):
                ax = axes[row, j]
                ax.pcolormesh(g0, g1, vals[:, 0, j].reshape(60, 60), cmap="RdBu_r", shading="auto")
                ax.scatter(x_train[:, 0], x_train[:, 1], s=1, c="k", alpha=0.3)
                ax.set(xticks=[], yticks=[], title=f"{name} $\\psi_{j + 1}$")
    else:
        psi, ref = _aligned(solver, exact, x_test, k)
        fig = _figure(2.6 * k, 2.8)
        for j, ax in enumerate(fig.subplots(1, k, squeeze=False)[0]):
            ax.plot(ref[..., j].flatten(), psi[..., j].flatten(), ".", ms=2, alpha=0.5)
            ax.axline((0, 0), slope=1, color="k", lw=0.8)
            ax.set(
                xlabel="exact", ylabel=type(solver).__name__ if j == 0 else None, title=f"$\\psi_{j + 1}$ (held-out)"
            )
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
