"""The k x k ELLA posterior: pure functions.

With the feature map ``Psi(x)`` in ``R^{C x k}`` (``kappa ~= Psi Psi^T``) and the likelihood curvature
``Lambda(x)`` at the MAP outputs, the linearised Laplace posterior in feature space has precision

    G = sum_i Psi(x_i)^T Lambda(x_i) Psi(x_i) + delta I_k,

and the latent predictive is ``f(x) ~ N(g(x, theta_MAP), Psi(x) G^{-1} Psi(x)^T)``. G is accumulated in
float64 and only used through its Cholesky factor ``G = L L^T``: the predictive covariance is ``F F^T``
with ``F(x) = (L^{-1} Psi(x)^T)^T`` of shape ``(C, k)``.

The k eigenfunctions carry only part of the kernel: ``kappa(x, x) - Psi(x) Psi(x)^T`` is prior variance that
the k x k posterior never sees, and it is largest away from the training data. Optionally its trace is kept
as prior variance, an isotropic term (the deterministic-training-conditional correction of sparse Gaussian
processes; it over-counts the directions past the top k that the data do constrain):

    r(x) = (tr kappa(x, x) - ||Psi(x)||_F^2) / C,    Sigma(x) = Psi G^{-1} Psi^T + (r(x) / delta) I_C.
"""

from __future__ import annotations

import torch

from .predictive import hessian_factor, link_probs

DEFAULT_PRIOR_GRID = torch.logspace(-4, 4, 33, dtype=torch.float64)  # prior precisions tuned over


def curvature(psi: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``sum_i Psi_i^T Lambda_i Psi_i`` in float64, shape ``(k, k)``; ``psi`` ``(N, C, k)``, ``lam`` ``(N, C, C)``."""
    psi = psi.double()
    return torch.einsum("nck,ncd,ndl->kl", psi, lam.double(), psi)


def cumulative_curvature(psi: torch.Tensor, lam: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """``sum_{i < n} Psi_i^T Lambda_i Psi_i`` for each ``n`` in ``counts`` (increasing): ``(len(counts), k, k)``."""
    out, total, start = [], 0, 0
    for n in counts:
        total = total + curvature(psi[start:n], lam[start:n])
        out.append(total)
        start = n
    return torch.stack(out)


def cholesky_precision(curv: torch.Tensor, prior_precision: float) -> torch.Tensor:
    """Lower Cholesky factor ``L`` of ``G = curv + delta I`` (float64)."""
    eye = torch.eye(curv.shape[-1], dtype=curv.dtype, device=curv.device)
    return torch.linalg.cholesky(curv + prior_precision * eye)


def inverse_factor(chol: torch.Tensor) -> torch.Tensor:
    """``L^{-1}`` by one triangular solve (float64); ``G^{-1} = L^{-T} L^{-1}`` is never formed."""
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
    return torch.linalg.solve_triangular(chol, eye, upper=False)


def predictive_factor(psi: torch.Tensor, chol_inv: torch.Tensor) -> torch.Tensor:
    """``F(x) = Psi(x) L^{-T}`` of shape ``(B, C, k)``, so that ``F F^T = Psi G^{-1} Psi^T``.

    ``chol_inv`` is ``L^{-1}`` from :func:`inverse_factor` (or ``L^{-1} diag(s)`` to also scale ``psi`` by
    ``s``): applying it is one ``(B C, k) x (k, k)`` product.
    """
    return psi @ chol_inv.to(psi.dtype).T


def residual_variance(phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """``r(x) = max(0, tr kappa(x, x) - ||Psi(x)||_F^2) / C`` per input, shape ``(B,)``.

    Args:
        phi: kernel features ``(B, C, S)`` with ``kappa(x, x) ~= Phi Phi^T / S``, so that
            ``tr kappa(x, x) ~= ||Phi(x)||_F^2 / S`` (Hutchinson's estimator for random-direction features).
        psi: the feature map ``Psi(x)``, ``(B, C, k)``.
    """
    trace = phi.double().pow(2).sum((1, 2)) / phi.shape[-1]  # tr kappa(x, x)
    return ((trace - psi.double().pow(2).sum((1, 2))) / phi.shape[1]).clamp_min(0)


def with_isotropic(factor: torch.Tensor, variance: torch.Tensor | None) -> torch.Tensor:
    """``[F, sqrt(v) I_C]`` of shape ``(B, C, k + C)``, whose outer product is ``F F^T + v I_C``; ``variance``
    is ``(B,)`` (``None`` returns ``factor``). Every link then sees the extra variance unchanged."""
    if variance is None:
        return factor
    eye = torch.eye(factor.shape[1], dtype=factor.dtype, device=factor.device)
    return torch.cat([factor, variance.to(factor.dtype).sqrt()[:, None, None] * eye], dim=-1)


def predictive_nll(mean: torch.Tensor, factor: torch.Tensor, targets: torch.Tensor, likelihood: str,
                   link: str = "margin", sigma_noise: float = 1.0, n_samples: int = 512,
                   generator: torch.Generator | None = None) -> float:
    """Mean negative log predictive density of ``targets`` under ``f ~ N(mean, F F^T)``: through the
    ``link`` for classification, ``N(y; mean, diag(F F^T) + sigma^2)`` for regression."""
    if likelihood == "classification":
        probs = link_probs(mean, factor, link, n_samples, generator)
        return -probs.gather(1, targets.reshape(-1, 1).long()).clamp_min(1e-12).log().mean().item()
    var = factor.pow(2).sum(-1) + sigma_noise**2
    normal = torch.distributions.Normal(mean, var.sqrt())
    return normal.log_prob(targets.reshape(mean.shape).double()).neg().mean().item()


def validation_nll(mean: torch.Tensor, psi: torch.Tensor, targets: torch.Tensor, chol: torch.Tensor,
                   likelihood: str, link: str = "margin", sigma_noise: float = 1.0,
                   extra_variance: torch.Tensor | None = None) -> float:
    """Mean negative log predictive density of ``targets`` under the posterior with factor ``chol`` (plus
    ``extra_variance`` ``(V,)`` on every output, see :func:`with_isotropic`)."""
    factor = with_isotropic(predictive_factor(psi.double(), inverse_factor(chol)), extra_variance)
    return predictive_nll(mean.double(), factor, targets, likelihood, link, sigma_noise,
                          generator=torch.Generator().manual_seed(0))


def tune_prior(curvs: torch.Tensor, grid: torch.Tensor, mean: torch.Tensor, psi: torch.Tensor,
               targets: torch.Tensor, likelihood: str, link: str = "margin",
               sigma_noise: float = 1.0, residual: torch.Tensor | None = None) -> tuple[int, float, torch.Tensor]:
    """Grid search of the prior precision (and of the number of folded-in training points) on validation data.

    Args:
        curvs: ``(T, k, k)`` curvatures, one per candidate number of folded-in training points.
        grid: candidate prior precisions ``delta``.
        mean, psi, targets: MAP outputs ``(V, C)``, features ``(V, C, k)`` and targets of the validation set.
        residual: ``r(x)`` ``(V,)`` of :func:`residual_variance` (the predictive then adds ``r / delta``), or None.

    Returns:
        ``(t, delta, scores)``: the best curvature index, the best ``delta`` and the ``(T, len(grid))``
        table of validation NLLs.
    """
    scores = torch.full((len(curvs), len(grid)), float("inf"), dtype=torch.float64)
    for t, curv in enumerate(curvs):
        for j, delta in enumerate(grid.tolist()):
            chol = cholesky_precision(curv, delta)
            extra = None if residual is None else residual / delta
            scores[t, j] = validation_nll(mean, psi, targets, chol, likelihood, link, sigma_noise, extra)
    t, j = divmod(int(torch.argmin(scores)), len(grid))
    return t, float(grid[j]), scores


__all__ = ["curvature", "cumulative_curvature", "cholesky_precision", "inverse_factor", "predictive_factor",
           "residual_variance", "with_isotropic", "validation_nll", "tune_prior", "hessian_factor", "predictive_nll",
           "DEFAULT_PRIOR_GRID"]
