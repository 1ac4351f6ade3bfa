"""laplace-torch 0.3's own ELLA (``laplace.ELLA``, a Nystrom feature map), wrapped in ella's method protocol.

What laplace-torch does (``baselaplace.py``): ``M = subsample_size`` training inputs, each with one output
index drawn at random, give Jacobian rows ``J_M`` (``M x P``); the top ``k`` eigenpairs ``(p_j, q_j)`` of
``J_M J_M^T`` give parameter directions ``V = J_M^T q / sqrt(p)``; the features are ``Psi(x) = J(x) V``
(``k`` forward-mode JVPs); ``G = sum_i Psi_i^T Lambda_i Psi_i + delta I_k`` over the whole training loader;
and ``delta`` is chosen by laplace-torch's own grid search (``optimize_prior_precision(method="gridsearch")``:
``logspace(-4, 4, grid_size)`` scored by validation NLL under its probit link). This wrapper only drives
those calls; predictions use ella's links on laplace-torch's latent moments, so every Gaussian-predictive
method is compared under the same link.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_labels, check_likelihood, check_loader, check_model, check_positive_int
from .._utils import batched, collect, model_device_dtype, residual_rms, seeded_generator
from ..predictive import LINKS, moments_probs
from .laplace_torch import _as_dataloader
from .map import _prepare_input

__all__ = ["LaplaceTorchELLA"]


class LaplaceTorchELLA:
    """laplace-torch's ``ELLA`` (Nystrom features, its own validation grid search for ``delta``).

    Args:
        model: the trained network (eval mode) with outputs ``(B, C)``.
        likelihood: ``"classification"`` or ``"regression"``.
        k: ``n_eigenvalues``, the number of Nystrom directions.
        subsample_size: ``M``, training inputs behind the Nystrom basis (capped at the training set size;
            2000 as in the ELLA paper).
        grid_size: candidate prior precisions in laplace-torch's grid search (its default, 100).
        link: ella's link for the predictions (``"margin"``, ``"probit"`` or ``"mc"``).
        n_samples: Monte-Carlo samples of the ``"mc"`` link.
        sigma_noise: regression observation noise; ``None`` uses the training RMSE of the MAP.
        batch_size: inputs per prediction batch.
        seed: laplace-torch's ``seed`` (the subsample and its output indices) and the ``"mc"`` link's.
        progress: show laplace-torch's progress bar while fitting.
    """

    name = "laplace_torch_ella"

    def __init__(self, model: nn.Module, likelihood: str = "classification", k: int = 20,
                 subsample_size: int = 2000, grid_size: int = 100, link: str = "margin", n_samples: int = 512,
                 sigma_noise: float | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = True):
        check_model(model)
        self.model, self.likelihood = model, check_likelihood(likelihood)
        self.k = check_positive_int(k, "k")
        self.subsample_size = check_positive_int(subsample_size, "subsample_size")
        if self.k > self.subsample_size:
            raise ValueError(f"`k` = {k} must be at most `subsample_size` = {subsample_size}")
        self.grid_size = check_positive_int(grid_size, "grid_size")
        if link not in LINKS:
            raise ValueError(f"`link` must be one of {LINKS}, got {link!r}")
        self.link = link if self.likelihood == "classification" else None
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.sigma_noise = sigma_noise
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed, self.progress = seed, progress
        self._la = None

    def fit(self, train_loader, val_loader=None) -> "LaplaceTorchELLA":
        """laplace-torch's ``fit`` on the training loader, then its grid search on ``val_loader``."""
        from laplace import ELLA as LaplaceELLA

        train_loader = _as_dataloader(train_loader, "train_loader")
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
            val_loader = _as_dataloader(val_loader, "val_loader")
        device, dtype = model_device_dtype(self.model)
        x, y = collect(train_loader, "train_loader", device, dtype)
        out = batched(self.model, x).reshape(len(x), -1)
        if self.likelihood == "classification":
            check_labels(y, out.shape[1], "train_loader")
            sigma = 1.0
        else:
            sigma = self.sigma_noise or residual_rms(out, y)
        self.sigma_noise = sigma if self.likelihood == "regression" else None
        la = LaplaceELLA(self.model, self.likelihood, subsample_size=min(self.subsample_size, len(x)),
                         n_eigenvalues=self.k, sigma_noise=sigma, seed=self.seed)
        la.fit(train_loader, progress_bar=self.progress)
        if val_loader is not None:  # laplace-torch's own tuning: logspace(-4, 4, grid_size), probit val NLL
            la.optimize_prior_precision(pred_type="gp", method="gridsearch", val_loader=val_loader,
                                        grid_size=self.grid_size)
        self._la = la
        return self

    @property
    def la(self):
        """The fitted ``laplace.ELLA`` object."""
        self._check_fitted()
        return self._la

    @property
    def prior_precision(self) -> float | None:
        return None if self._la is None else float(self._la.prior_precision)

    def _check_fitted(self) -> None:
        if self._la is None:
            raise RuntimeError("LaplaceTorchELLA is not fitted: call `fit(train_loader, val_loader)` first")

    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """laplace-torch's latent ``(mean (B, C), cov (B, C, C))``, in batches of ``batch_size``."""
        self._check_fitted()
        x = _prepare_input(self.model, x)
        parts = [self._la.predictive_moments(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return torch.cat([m for m, _ in parts]).detach(), torch.cat([c for _, c in parts]).detach()

    def predict(self, x: torch.Tensor):
        """Probabilities ``(B, C)`` by ella's ``link``, or ``(mean, var + sigma^2)`` for regression."""
        mean, cov = self.predictive_moments(x)
        if self.likelihood == "classification":
            return moments_probs(mean, cov, self.link, self.n_samples, seeded_generator(self.seed))
        return mean, cov.diagonal(dim1=-2, dim2=-1) + self.sigma_noise**2

    def __repr__(self) -> str:
        return f"LaplaceTorchELLA(likelihood={self.likelihood!r}, k={self.k}, M={self.subsample_size})"
