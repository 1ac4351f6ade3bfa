"""Point predictives, without uncertainty over the weights: the MAP network itself, and the base that temperature
scaling and SWA share.

A point predictive's latent covariance is zero (its factor has width 0), so classification probabilities are
``softmax(m(x))`` under every link. For regression the observation noise ``sigma_c = s rho_c`` is tuned on
validation NLL by the one search (:mod:`ella.methods.search`; ``rho_c`` is the network's RMSE of output ``c`` on
the validation data, so the optimum sits near ``s = 1``); without validation data it is the training RMSE, the
maximum-likelihood noise, with a warning.
"""

from __future__ import annotations

import warnings

import torch

from .. import batches
from ..predictive import gaussian_nll
from .base import GaussianMethod
from .search import DEFAULT_NOISE_GRID, search
from .survey import Survey, outputs_and_targets, survey


class PointPredictive(GaussianMethod):
    """``f(x) = m(x)`` exactly: a mean and a factor of width 0. Subclasses give the mean (:meth:`_outputs`) and may
    fit something of their own (:meth:`_fit_point`); the regression noise is tuned here."""

    def _outputs(self, x) -> torch.Tensor:
        """``m(x)`` ``(B, C)`` for a piece of inputs on the model's device."""
        return batches.call(self.model, x)

    def _fit_point(self, data: Survey, train_loader, val_loader) -> None:
        """Fit what the mean needs (the temperature, batch-norm statistics, ...)."""

    def _mean_and_factor(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self._outputs(x)
        return mean, mean.new_zeros(*mean.shape, 0)

    def _fit(self, train_loader, val_loader) -> None:
        if train_loader is None and val_loader is None:  # nothing to learn from: a classifier, or a fixed noise
            if self.likelihood == "regression" and self.sigma_noise is None:
                raise ValueError(
                    "a regression point predictive needs `val_loader` (or `train_loader`) to set its "
                    "noise, or a fixed `sigma_noise`"
                )
            self.noise_ = (
                None
                if self.sigma_noise is None
                else torch.as_tensor(self.sigma_noise, dtype=torch.float64).to(self._dtype).flatten()
            )
            return
        data = survey(self.model, self.likelihood, train_loader, val_loader, progress_bar=False)
        self.input_spec_ = data.input_spec
        self._fit_point(data, train_loader, val_loader)
        if self.likelihood == "regression":
            self.noise_ = self._tune_noise(data, val_loader)

    @torch.no_grad()
    def _tune_noise(self, data: Survey, val_loader) -> torch.Tensor:
        like = torch.zeros((), dtype=self._dtype)
        fixed = self._fixed_noise(data.num_outputs, like)
        if fixed is not None:
            return fixed
        rho = data.output_scale
        if not data.num_val:
            warnings.warn(
                "no `val_loader`: the regression noise is the training RMSE (its maximum-likelihood value), "
                "which is too small when the network overfits",
                UserWarning,
                stacklevel=4,
            )
            return rho.to(like)
        mean, y = outputs_and_targets(self._outputs, self.model, val_loader, "val_loader")
        y = y.reshape(mean.shape).double()

        def score(_, noises):
            return torch.stack(
                [gaussian_nll(mean, (s * rho).pow(2).expand_as(mean), y).mean() for s in noises.tolist()]
            ).reshape(1, 1, -1)

        self.search_ = search(score, None, DEFAULT_NOISE_GRID)
        return (self.search_.noise_scale * rho).to(like)


class MAP(PointPredictive):
    """The MAP network as a method: ``predict`` is ``softmax(model(x))`` (classification) or
    ``(model(x), sigma^2)`` (regression); the latent covariance is zero.

    Args:
        model: the trained ``nn.Module`` (call ``.eval()`` first if it has dropout or batch-norm layers).
        likelihood: ``"classification"`` or ``"regression"``.
        sigma_noise: regression only: the observation noise (a number or one per output); ``None`` tunes it
            (see the module docstring).
        batch_size: inputs per forward pass in ``predict``.

    A classifier needs no ``fit``.
    """

    name = "map"

    def __init__(self, model, likelihood: str = "classification", sigma_noise=None, batch_size: int = 1024):
        super().__init__(model, likelihood, sigma_noise=sigma_noise, batch_size=batch_size, progress=False)

    @property
    def is_fitted(self) -> bool:
        return self.likelihood == "classification" or self.fit_seconds_ is not None
