"""Temperature scaling (Guo et al., 2017): one scalar fitted on validation NLL, no weight uncertainty.

Classification: ``p(y | x) = softmax(g(x) / T)``. With the inverse temperature ``beta = 1 / T`` the
validation NLL

    L(beta) = (1/V) sum_v [ logsumexp_c(beta z_vc) - beta z_{v y_v} ],   z = g(x_v, theta_MAP),

is convex in ``beta`` (a log-sum-exp of linear functions minus a linear function), with derivative

    L'(beta) = (1/V) sum_v [ E_{p_beta}[z_v] - z_{v y_v} ],   p_beta = softmax(beta z_v),

which increases monotonically. Its root, the NLL-optimal ``beta``, is found by bisection on ``log beta``
(to machine precision, in float64), so the result does not depend on an optimiser's step size.

Regression: the analogue is the predictive variance. ``p(y | x) = N(g(x), s^2)`` with the NLL-optimal
``s^2 = (1/(V D)) sum_v ||y_v - g(x_v)||^2`` on validation data (closed form).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_labels, check_likelihood, check_model
from .._utils import batched, collect, model_device_dtype, residual_rms
from .map import _prepare_input

__all__ = ["TemperatureScaling", "optimal_temperature", "temperature_nll"]


def temperature_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean NLL ``-(1/V) sum_v log softmax(z_v / T)_{y_v}`` (float64)."""
    z = logits.double() / temperature
    return (z.logsumexp(-1) - z.gather(1, labels.reshape(-1, 1).long())[:, 0]).mean().item()


def _nll_slope(z: torch.Tensor, labels: torch.Tensor, beta: float) -> float:
    """``L'(beta) = mean_v (E_{softmax(beta z_v)}[z_v] - z_{v y_v})``."""
    p = torch.softmax(beta * z, dim=-1)
    return ((p * z).sum(-1) - z.gather(1, labels.reshape(-1, 1).long())[:, 0]).mean().item()


def optimal_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds=(1e-3, 1e3),
                        iterations: int = 200) -> float:
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


class TemperatureScaling:
    """The MAP network with one scalar tuned on validation NLL.

    Args:
        model: the trained network (eval mode) with outputs ``(B, C)``; never modified.
        likelihood: ``"classification"`` (a temperature ``T``) or ``"regression"`` (a noise variance ``s^2``).
        bounds: search interval of ``T`` (classification).
        batch_size: inputs per forward pass.

    Attributes:
        temperature: ``T`` after :meth:`fit` (classification).
        sigma_noise: ``s`` after :meth:`fit` (regression).
    """

    name = "temperature_scaling"
    link = None

    def __init__(self, model: nn.Module, likelihood: str = "classification", bounds=(1e-3, 1e3),
                 batch_size: int = 1024):
        check_model(model)
        self.model, self.likelihood = model, check_likelihood(likelihood)
        if not (len(bounds) == 2 and 0 < bounds[0] < bounds[1] < math.inf):
            raise ValueError(f"`bounds` must be (T_min, T_max) with 0 < T_min < T_max, got {bounds!r}")
        self.bounds, self.batch_size = tuple(float(b) for b in bounds), batch_size
        self.temperature: float | None = None
        self.sigma_noise: float | None = None

    def fit(self, train_loader=None, val_loader=None) -> "TemperatureScaling":
        """Fit ``T`` (or ``s^2``) on ``val_loader``; the training data are not used. Returns ``self``."""
        if val_loader is None:
            raise ValueError("`val_loader` is required: temperature scaling is fitted on validation NLL")
        device, dtype = model_device_dtype(self.model)
        x, y = collect(val_loader, "val_loader", device, dtype)
        out = batched(self.model, x, self.batch_size).reshape(len(x), -1)  # z = g(x_v, theta_MAP)
        if self.likelihood == "classification":
            check_labels(y, out.shape[1], "val_loader")
            self.temperature = optimal_temperature(out, y, self.bounds)
        else:
            if y.numel() != out.numel():
                raise ValueError(f"targets of `val_loader` must have {out.shape[1]} values per input")
            self.sigma_noise = residual_rms(out.double(), y.double())
        return self

    def _check_fitted(self) -> None:
        if self.temperature is None and self.sigma_noise is None:
            raise RuntimeError("TemperatureScaling is not fitted: call `fit(train_loader, val_loader)` first")

    @torch.no_grad()
    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g(x) / T, 0)`` (classification) or ``(g(x), 0)``: no latent covariance."""
        self._check_fitted()
        out = batched(self.model, _prepare_input(self.model, x), self.batch_size).reshape(len(x), -1)
        mean = out / self.temperature if self.likelihood == "classification" else out
        return mean, mean.new_zeros(*mean.shape, mean.shape[1])

    def predict(self, x: torch.Tensor):
        """``softmax(g(x) / T)`` ``(B, C)``, or ``(g(x), s^2)`` for regression."""
        mean, _ = self.predictive_moments(x)
        if self.likelihood == "classification":
            return mean.softmax(-1)
        return mean, torch.full_like(mean, self.sigma_noise**2)

    def __repr__(self) -> str:
        return f"TemperatureScaling(likelihood={self.likelihood!r}, T={self.temperature}, s={self.sigma_noise})"
