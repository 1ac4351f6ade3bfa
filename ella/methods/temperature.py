"""Temperature scaling (Guo et al., 2017): one scalar fitted on validation NLL, no weight uncertainty.

Classification: ``p(y | x) = softmax(g(x) / T)``. With the inverse temperature ``beta = 1 / T`` the
validation NLL

    L(beta) = (1/V) sum_v [ logsumexp_c(beta z_vc) - beta z_{v y_v} ],   z = g(x_v, theta_MAP),

is convex in ``beta`` (a log-sum-exp of linear functions minus a linear function), with derivative

    L'(beta) = (1/V) sum_v [ E_{p_beta}[z_v] - z_{v y_v} ],   p_beta = softmax(beta z_v),

which increases monotonically. Its root, the NLL-optimal ``beta``, is found by bisection on ``log beta``
(to machine precision, in float64), so the result does not depend on an optimiser's step size.

Regression: the analogue is the observation noise, tuned on validation NLL exactly as for the MAP baseline.
"""

from __future__ import annotations

import math

import torch

from .. import batches
from .map import PointPredictive
from .survey import outputs_and_targets

__all__ = ["TemperatureScaling", "optimal_temperature", "temperature_nll"]


def temperature_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean NLL ``-(1/V) sum_v log softmax(z_v / T)_{y_v}`` (float64)."""
    z = logits.double() / temperature
    return (z.logsumexp(-1) - z.gather(1, labels.reshape(-1, 1).long())[:, 0]).mean().item()


def _nll_slope(z: torch.Tensor, labels: torch.Tensor, beta: float) -> float:
    """``L'(beta) = mean_v (E_{softmax(beta z_v)}[z_v] - z_{v y_v})``."""
    p = torch.softmax(beta * z, dim=-1)
    return ((p * z).sum(-1) - z.gather(1, labels.reshape(-1, 1).long())[:, 0]).mean().item()


def optimal_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds=(1e-3, 1e3), iterations: int = 200) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` against ``labels``.

    Bisection on ``log beta`` (``beta = 1/T``) for the root of the monotone slope ``L'(beta)``; the search
    interval is ``beta in [1/bounds[1], 1/bounds[0]]`` and the result is clipped to it if the root lies
    outside (e.g. a perfectly separated validation set, whose NLL falls as ``T -> 0``).
    """
    z = logits.double()
    lo, hi = math.log(1 / bounds[1]), math.log(1 / bounds[0])
    if _nll_slope(z, labels, math.exp(lo)) >= 0:
        return 1 / math.exp(lo)
    if _nll_slope(z, labels, math.exp(hi)) <= 0:
        return 1 / math.exp(hi)
    for _ in range(iterations):  # invariant: L'(e^lo) < 0 < L'(e^hi)
        mid = 0.5 * (lo + hi)
        if _nll_slope(z, labels, math.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return 1 / math.exp(0.5 * (lo + hi))


class TemperatureScaling(PointPredictive):
    """The MAP network with one scalar tuned on validation NLL.

    Args:
        model: the trained network (eval mode) with outputs ``(B, C)``; never modified.
        likelihood: ``"classification"`` (a temperature ``T``) or ``"regression"`` (the observation noise, tuned
            as for :class:`~ella.methods.MAP`).
        bounds: search interval of ``T`` (classification).
        batch_size: inputs per forward pass.

    Fitted: ``temperature_`` (classification), ``noise_`` (regression).
    """

    name = "temperature_scaling"

    def __init__(self, model, likelihood: str = "classification", bounds=(1e-3, 1e3), batch_size: int = 1024):
        super().__init__(model, likelihood, batch_size=batch_size, progress=False)
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2 and 0 < bounds[0] < bounds[1] < math.inf):
            raise ValueError(f"`bounds` must be (T_min, T_max) with 0 < T_min < T_max, got {bounds!r}")
        self.bounds = tuple(float(b) for b in bounds)

    def _fit(self, train_loader, val_loader) -> None:
        if val_loader is None:
            raise ValueError("`val_loader` is required: temperature scaling is fitted on validation NLL")
        super()._fit(None, val_loader)  # the training data are not used

    def _fit_point(self, data, train_loader, val_loader) -> None:
        """``T`` on ``val_loader`` (classification)."""
        if self.likelihood == "classification":
            logits, labels = outputs_and_targets(
                lambda x: batches.call(self.model, x), self.model, val_loader, "val_loader"
            )  # z = g(x_v, theta_MAP)
            self.temperature_ = optimal_temperature(logits, labels, self.bounds)

    def _outputs(self, x) -> torch.Tensor:
        out = batches.call(self.model, x)
        return out / self.temperature_ if self.likelihood == "classification" else out

    def __repr__(self) -> str:
        return f"TemperatureScaling(likelihood={self.likelihood!r}, T={getattr(self, 'temperature_', None)})"
