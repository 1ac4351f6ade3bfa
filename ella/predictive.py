"""Likelihood curvature, link approximations and the predictive NLL of Gaussian function-space predictives.

A latent predictive ``f(x) ~ N(m(x), Sigma(x))`` with ``m`` of shape ``(B, C)`` is given by a factor ``F`` of
shape ``(B, C, r)`` with ``Sigma = F F^T`` (ELLA's factor has ``r = k``; a method without latent uncertainty has
``r = 0``) or by its covariance ``(B, C, C)`` (:func:`covariance_factor` turns it into a factor). The links and
the NLL also take an ``isotropic`` variance ``v`` ``(B,)``, ``Sigma = F F^T + v I_C``, without widening ``F``.
"""

from __future__ import annotations

import math

import torch

from .names import LINKS

PROB_FLOOR = 1e-12  # probabilities are floored here inside every log (NLL of a confidently wrong prediction)


def noise_tensor(noise, num_outputs: int, like: torch.Tensor) -> torch.Tensor:
    """Observation noise standard deviations ``sigma`` as a ``(C,)`` tensor (a scalar is shared by all outputs)."""
    return torch.as_tensor(noise, dtype=like.dtype, device=like.device).expand(num_outputs)


def hessian_parts(outputs: torch.Tensor, likelihood: str, noise=1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``Lambda(x) = diag(d) - u u^T``, the Hessian of the negative log-likelihood in the outputs, as ``d`` ``(B, C)``
    and ``u`` ``(B, C)`` (or ``None``): memory linear in C.

    Classification: ``d = u = p = softmax(g(x))``. Regression: ``d = 1 / sigma_c^2`` for the observation noise
    ``sigma`` (a scalar or one value per output), no ``u``.
    """
    B, C = outputs.shape
    if likelihood == "classification":
        p = outputs.softmax(-1)
        return p, p
    return noise_tensor(noise, C, outputs).pow(-2).expand(B, C), None


def hessian_factor(outputs: torch.Tensor, likelihood: str, noise=1.0) -> torch.Tensor:
    """``Lambda(x)`` of :func:`hessian_parts` as a dense ``(B, C, C)`` tensor (for small C and for checks)."""
    d, u = hessian_parts(outputs, likelihood, noise)
    dense = torch.diag_embed(d)
    return dense if u is None else dense - u[:, :, None] * u[:, None, :]


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


def margin_probs(mean: torch.Tensor, factor: torch.Tensor, isotropic: torch.Tensor | None = None) -> torch.Tensor:
    """Probit on the margins against the top class: ``softmax_c(d_c / sqrt(1 + pi/8 Var[f_c - f_t]))``.

    ``d_c = m_c - m_t`` with ``t = argmax m``. Each class competes with the top class through the binary
    probit approximation ``E[sigmoid(d)] ~= sigmoid(d / sqrt(1 + pi/8 Var d))``, so for ``C = 2`` this is
    the binary probit exactly. Unlike the plain probit it is invariant to adding a constant to all logits,
    uses the full covariance (``Var[f_c - f_t] = ||F_c - F_t||^2``, plus ``2 v`` for ``c != t`` with an
    ``isotropic`` variance ``v``) and never changes the predicted class.
    """
    top = mean.argmax(-1, keepdim=True)  # t: (B, 1)
    margin = mean - mean.gather(1, top)  # d_c = m_c - m_t
    factor_top = factor.gather(1, top[:, :, None].expand(-1, 1, factor.shape[-1]))
    var = (factor - factor_top).pow(2).sum(-1)  # Var[f_c - f_t]
    if isotropic is not None:  # v I_C adds v to Var f_c and to Var f_t (f_t - f_t has none)
        var = (var + 2 * isotropic.to(var)[:, None]).scatter_(1, top, 0.0)
    return torch.softmax(margin / torch.sqrt(1 + math.pi / 8 * var), dim=-1)


def standard_normals(n_samples: int, width: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """``z_s ~ N(0, I_r)``, ``(S, r)``, drawn on the CPU from ``seed`` alone: the same draws for every input."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_samples, width, generator=g, dtype=like.dtype).to(like.device)


def mc_probs(mean: torch.Tensor, factor: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo average ``(1/S) sum_s softmax(m + F z_s)`` over the common draws ``z`` ``(S, r)``.

    Every input uses the same ``z_s`` (common random numbers), so an input's probabilities depend on that input
    and the seed alone, not on the other inputs of its batch.
    """
    f = factor @ z.T  # F z_s for every sample: (B, C, S), one matrix product
    f += mean[:, :, None]  # samples of f(x), in place
    return f.softmax(1).mean(2)


def with_isotropic(factor: torch.Tensor, variance: torch.Tensor | None) -> torch.Tensor:
    """``[F, sqrt(v) I_C]`` of shape ``(B, C, r + C)``, whose outer product is ``F F^T + v I_C``; ``variance``
    is ``(B,)`` (``None`` returns ``factor``)."""
    if variance is None:
        return factor
    eye = torch.eye(factor.shape[1], dtype=factor.dtype, device=factor.device)
    return torch.cat([factor, variance.to(factor.dtype).sqrt()[:, None, None] * eye], dim=-1)


def marginal_variance(factor: torch.Tensor, isotropic: torch.Tensor | None = None) -> torch.Tensor:
    """``diag(F F^T) + v``, shape ``(B, C)``."""
    var = factor.pow(2).sum(-1)
    return var if isotropic is None else var + isotropic.to(var)[:, None]


def link_probs(
    mean: torch.Tensor,
    factor: torch.Tensor,
    link: str = "margin",
    n_samples: int = 512,
    seed: int = 0,
    isotropic: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class probabilities of ``N(mean, F F^T + v I_C)`` under the ``"margin"``, ``"probit"`` or ``"mc"`` link
    (``isotropic``: ``v`` ``(B,)``, or ``None`` for none)."""
    if link == "margin":
        return margin_probs(mean, factor, isotropic)
    if link == "probit":
        return probit_probs(mean, marginal_variance(factor, isotropic))
    if link == "mc":
        factor = with_isotropic(factor, isotropic)  # the samples need the isotropic directions too
        return mc_probs(mean, factor, standard_normals(n_samples, factor.shape[-1], seed, factor))
    raise ValueError(f"`link` must be one of {LINKS}, got {link!r}")


def class_nll(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-log max(p_y, PROB_FLOOR)`` per input, shape ``(B,)``."""
    return -probs.gather(1, labels.reshape(-1, 1).long())[:, 0].clamp_min(PROB_FLOOR).log()


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``sum_c [log(2 pi v_c) / 2 + (y_c - m_c)^2 / (2 v_c)] / C`` per input, shape ``(B,)``."""
    return (0.5 * torch.log(2 * math.pi * var) + (targets - mean).pow(2) / (2 * var)).mean(-1)


def predictive_nll(
    mean: torch.Tensor,
    factor: torch.Tensor,
    targets: torch.Tensor,
    likelihood: str,
    link: str = "margin",
    noise=1.0,
    n_samples: int = 512,
    seed: int = 0,
    isotropic: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative log predictive density of each target under ``f ~ N(mean, F F^T + v I_C)``, shape ``(B,)``:
    through the ``link`` for classification, ``N(y; mean, diag(F F^T) + v + sigma^2)`` for regression."""
    if likelihood == "classification":
        return class_nll(link_probs(mean, factor, link, n_samples, seed, isotropic), targets)
    var = marginal_variance(factor, isotropic) + noise_tensor(noise, mean.shape[1], mean).pow(2)
    return gaussian_nll(mean, var, targets.reshape(mean.shape).to(mean.dtype))
