"""The exact linearised Laplace approximation (full GGN over all weights): the ground truth for small nets.

Around the MAP weights the network is linearised, ``f(x) ~= g(x, theta_MAP) + J(x) (theta - theta_MAP)``,
and the weight posterior is Gaussian with the full generalised Gauss-Newton precision

    H = GGN + delta I_P,    GGN = sum_i J(x_i)^T Lambda(x_i) J(x_i),

with ``Lambda = diag(p) - p p^T`` (classification) or ``diag(1 / sigma^2)`` (regression). This is
:class:`~ella.methods.linearised.LinearisedLaplace` with the Jacobian ``J(x)`` as the features (``D = P``): the
GGN is accumulated densely (float64) over the training loader and eigendecomposed once, so every ``delta`` (and
noise) of the search is a rescaling, and the latent predictive factor is ``F(x) = J(x) W`` (``C x P``).

Cost: ``O(N C P^2)`` for the GGN, ``O(P^3)`` for its eigendecomposition and ``O(C P^2)`` per prediction, so
it is refused for networks with more than ``max_params`` weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_positive_int
from ..functional import jacobians
from ..utils import num_parameters
from .linearised import LinearisedLaplace
from .settings import Predictive, Tuning

MAX_PARAMS = 8000  # a P x P float64 GGN of 8k weights is 512 MB and its eigh takes minutes on 2 cores


class ExactLLA(LinearisedLaplace):
    """Linearised Laplace with the full GGN over all weights, eigendecomposed once.

    Args:
        model: the trained network (eval mode) with outputs ``(B, C)``; never modified.
        likelihood: ``"classification"`` or ``"regression"``.
        max_params: refuse networks with more weights than this (the GGN is ``P x P``).

    Raises:
        ValueError: at construction, if the network has more than ``max_params`` weights.

    ``tuning``, ``predictive``, ``seed`` and ``progress`` are as for
    :class:`~ella.methods.linearised.LinearisedLaplace` (prediction ``batch_size`` 256 by default).
    """

    name = "exact_lla"
    default_batch_size = 256

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        *,
        max_params: int = MAX_PARAMS,
        tuning: Tuning | None = None,
        predictive: Predictive | None = None,
        seed: int = 0,
        progress: bool = True,
    ):
        super().__init__(model, likelihood, tuning=tuning, predictive=predictive, seed=seed, progress=progress)
        self.max_params = check_positive_int(max_params, "max_params")
        P = num_parameters(model)
        if P > self.max_params:
            raise ValueError(
                f"`model` has P = {P:,} weights: exact LLA forms a dense P x P GGN and is limited to "
                f"`max_params` = {self.max_params:,} (raise it if you have the memory and time)"
            )
        self.num_params = P

    def _num_features(self) -> int:
        return self.num_params

    def _config(self) -> dict:
        return {**super()._config(), "max_params": self.max_params}

    def _features(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        J, out = jacobians(self.model, x, return_outputs=True)  # (B, C, P), (B, C)
        return out, J

    def __repr__(self) -> str:
        return f"ExactLLA(likelihood={self.likelihood!r}, P={self.num_params}, link={self.link!r})"
