"""The linearised (GLM) predictive shared by the weight-space Laplace baselines.

Around the MAP parameters the network is linearised, ``f(x) ~= g(x, theta_MAP) + J(x) (theta - theta_MAP)``,
so a Gaussian weight posterior ``N(theta_MAP, Sigma)`` gives the latent predictive
``f(x) ~ N(g(x, theta_MAP), J(x) Sigma J(x)^T)``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .._utils import progress
from ..functional import jacobians


def glm_moments(model: nn.Module, x: torch.Tensor, apply_covariance: Callable[[torch.Tensor], torch.Tensor],
                chunk_size: int = 64, progress_bar: bool = False,
                desc: str = "GLM predictive") -> tuple[torch.Tensor, torch.Tensor]:
    """Latent GLM predictive moments ``(g(x, theta_MAP) (B, C), J(x) Sigma J(x)^T (B, C, C))``.

    ``apply_covariance(Js)`` maps a chunk of Jacobians ``(b, C, P)`` to ``Js Sigma Js^T`` ``(b, C, C)``
    (e.g. laplace-torch's ``la.functional_variance``). Jacobians are formed and consumed ``chunk_size``
    inputs at a time, so memory stays bounded whatever the number of inputs.
    """
    if not callable(apply_covariance):
        raise TypeError("`apply_covariance` must be a function Js (b, C, P) -> Js Sigma Js^T (b, C, C)")
    means, covs = [], []
    starts = range(0, len(x), chunk_size)
    for i in progress(starts, progress_bar, desc, total=len(starts)):
        J, out = jacobians(model, x[i : i + chunk_size], chunk_size=chunk_size, return_outputs=True)
        with torch.no_grad():
            cov = apply_covariance(J)  # J Sigma J^T
        means.append(out)
        covs.append(cov.detach())
    return torch.cat(means), torch.cat(covs)
