"""Likelihood curvature and link approximations for Gaussian function-space predictives.

A latent predictive ``f(x) ~ N(m(x), Sigma(x))`` with ``m`` of shape ``(B, C)`` is given either by its
covariance ``(B, C, C)`` or by a factor ``F`` of shape ``(B, C, r)`` with ``Sigma = F F^T`` (ELLA's
factor has ``r = k``).
"""

from __future__ import annotations

import math

import torch

LINKS = ("margin", "probit", "mc")


def hessian_factor(outputs: torch.Tensor, likelihood: str, sigma_noise: float = 1.0) -> torch.Tensor:
    """``Lambda(x)``, the Hessian of the negative log-likelihood in the outputs, shape ``(B, C, C)``.

    Classification: ``diag(p) - p p^T`` with ``p = softmax(g(x))``. Regression: ``I / sigma^2``.
    """
    B, C = outputs.shape
    if likelihood == "classification":
        p = outputs.softmax(-1)
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    eye = torch.eye(C, dtype=outputs.dtype, device=outputs.device)
    return eye.expand(B, C, C) / sigma_noise**2


def covariance_factor(cov: torch.Tensor, jitter: float = 1e-10) -> torch.Tensor:
    """A factor ``F`` with ``F F^T = cov`` (Cholesky, with relative jitter on the diagonal if needed)."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[:, None, None]
    for j in (0.0, jitter, 1e3 * jitter, 1e6 * jitter):
        L, info = torch.linalg.cholesky_ex(cov + j * scale * eye)
        if not info.any():
            return L
    evals, evecs = torch.linalg.eigh(cov)
    return evecs * evals.clamp_min(0).sqrt()[:, None, :]


def probit_probs(mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Probit approximation ``softmax(m / sqrt(1 + pi/8 diag(Sigma)))``; ``variance`` is ``(B, C)``."""
    return torch.softmax(mean / torch.sqrt(1 + math.pi / 8 * variance), dim=-1)


def margin_probs(mean: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Probit on the margins against the top class: ``softmax_c(d_c / sqrt(1 + pi/8 Var[f_c - f_t]))``.

    ``d_c = m_c - m_t`` with ``t = argmax m``. Each class competes with the top class through the binary
    probit approximation ``E[sigmoid(d)] ~= sigmoid(d / sqrt(1 + pi/8 Var d))``, so for ``C = 2`` this is
    the binary probit exactly. Unlike the plain probit it is invariant to adding a constant to all logits,
    uses the full covariance (``Var[f_c - f_t] = ||F_c - F_t||^2``) and never changes the predicted class.
    """
    top = mean.argmax(-1, keepdim=True)  # t: (B, 1)
    margin = mean - mean.gather(1, top)  # d_c = m_c - m_t
    factor_top = factor.gather(1, top[:, :, None].expand(-1, 1, factor.shape[-1]))
    var = (factor - factor_top).pow(2).sum(-1)  # Var[f_c - f_t]
    return torch.softmax(margin / torch.sqrt(1 + math.pi / 8 * var), dim=-1)


def mc_probs(mean: torch.Tensor, factor: torch.Tensor, n_samples: int = 512,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte-Carlo average ``(1/S) sum_s softmax(m + F z_s)`` with ``z_s ~ N(0, I_r)``, seeded by ``generator``."""
    B, C, r = factor.shape
    z = torch.randn(n_samples, B, r, generator=generator, dtype=factor.dtype, device="cpu").to(factor.device)
    f = mean + torch.einsum("bcr,sbr->sbc", factor, z)  # samples of f(x): (S, B, C)
    return f.softmax(-1).mean(0)


def link_probs(mean: torch.Tensor, factor: torch.Tensor, link: str = "margin", n_samples: int = 512,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Class probabilities of ``N(mean, F F^T)`` under the ``"margin"``, ``"probit"`` or ``"mc"`` link."""
    if link == "margin":
        return margin_probs(mean, factor)
    if link == "probit":
        return probit_probs(mean, factor.pow(2).sum(-1))
    if link == "mc":
        return mc_probs(mean, factor, n_samples, generator)
    raise ValueError(f"`link` must be one of {LINKS}, got {link!r}")


def moments_probs(mean: torch.Tensor, cov: torch.Tensor, link: str = "margin", n_samples: int = 512,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`link_probs` for a predictive given by its covariance ``(B, C, C)`` instead of a factor."""
    return link_probs(mean, covariance_factor(cov), link, n_samples, generator)
