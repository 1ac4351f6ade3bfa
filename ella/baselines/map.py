"""The MAP baseline: the trained network's own outputs, no uncertainty over the weights."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_likelihood, check_loader, check_model, check_positive_int
from .._utils import batched


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")
    return float(value)


def _prepare_input(model: nn.Module, x) -> torch.Tensor:
    """Move ``x`` to the model's device (and floating inputs to its dtype)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"`x` must be a non-empty batch of inputs, got shape {tuple(x.shape)}")
    p = next(model.parameters())
    return x.to(device=p.device, dtype=p.dtype) if x.dtype.is_floating_point else x.to(p.device)


class MAP:
    """The MAP network as a method: ``predict`` is ``softmax(model(x))`` (classification) or
    ``(model(x), sigma_noise^2)`` (regression); the latent covariance is zero.

    Parameters
    ----------
    model : the trained ``nn.Module`` (call ``.eval()`` first if it has dropout or batch-norm layers).
    likelihood : ``"classification"`` or ``"regression"``.
    sigma_noise : observation noise standard deviation for regression (ignored for classification).
    batch_size : inputs per forward pass in ``predict``.
    """

    name = "map"
    link = None

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        sigma_noise: float = 1.0,
        batch_size: int = 1024,
    ) -> None:
        check_model(model)
        self.likelihood = check_likelihood(likelihood)
        self.model = model
        self.sigma_noise = _positive_float(sigma_noise, "sigma_noise")
        self.batch_size = check_positive_int(batch_size, "batch_size")

    def fit(self, train_loader=None, val_loader=None) -> "MAP":
        """Nothing to fit: the MAP network is the method. Returns ``self``."""
        if train_loader is not None:
            check_loader(train_loader, "train_loader")
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
        return self

    @torch.no_grad()
    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        x = _prepare_input(self.model, x)
        out = batched(self.model, x, self.batch_size)
        if out.ndim != 2:
            raise ValueError(f"`model` must return outputs of shape (batch, C), got shape {tuple(out.shape)}")
        return out

    @torch.no_grad()
    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent moments ``(model(x) (B, C), zeros (B, C, C))``."""
        mean = self._outputs(x)
        B, C = mean.shape
        return mean, mean.new_zeros(B, C, C)

    @torch.no_grad()
    def predict(self, x: torch.Tensor):
        """Class probabilities ``softmax(model(x))`` (B, C), or ``(mean, var)`` with ``var = sigma_noise^2``."""
        mean = self._outputs(x)
        if self.likelihood == "classification":
            return torch.softmax(mean, dim=-1)
        return mean, torch.full_like(mean, self.sigma_noise**2)

    def __repr__(self) -> str:
        return f"MAP(likelihood={self.likelihood!r})"
