"""The exact linearised Laplace approximation (full GGN over all weights): the ground truth for small nets.

Around the MAP weights the network is linearised, ``f(x) ~= g(x, theta_MAP) + J(x) (theta - theta_MAP)``,
and the weight posterior is Gaussian with the full generalised Gauss-Newton precision

    H = GGN + delta I_P,    GGN = sum_i J(x_i)^T Lambda(x_i) J(x_i),

with ``Lambda = diag(p) - p p^T`` (classification) or ``I / sigma^2`` (regression). The GGN is formed densely
(float64) and eigendecomposed once, ``GGN = U diag(lambda) U^T``, so every prior precision ``delta`` costs
only a rescaling:

    Sigma = H^{-1} = U diag(1 / (lambda + delta)) U^T = W W^T,   W = U diag((lambda + delta)^{-1/2}),

and the latent predictive is ``f(x) ~ N(g(x, theta_MAP), F F^T)`` with the factor ``F(x) = J(x) W`` (C x P).
``delta`` is tuned exactly as ELLA's: a log grid scored by validation NLL under the same link.

Cost: ``O(N C P^2)`` for the GGN, ``O(P^3)`` for its eigendecomposition and ``O(C P^2)`` per prediction, so
it is refused for networks with more than ``max_params`` weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_likelihood, check_model, check_positive_int, check_targets
from .._utils import batched, collect, model_device_dtype, num_parameters, progress, residual_rms, seeded_generator
from ..functional import jacobians
from ..posterior import DEFAULT_PRIOR_GRID, predictive_nll
from ..predictive import LINKS, hessian_factor, link_probs
from .map import _positive_float, _prepare_input

__all__ = ["ExactLLA", "ggn_matrix", "MAX_PARAMS"]

MAX_PARAMS = 8000  # a P x P float64 GGN of 8k weights is 512 MB and its eigh takes minutes on 2 cores


def _chunk_size(model: nn.Module, num_outputs: int, chunk_size: int | None) -> int:
    """Inputs per chunk of dense Jacobians: about 2^22 Jacobian entries (16 MiB of float32) per chunk."""
    return chunk_size or max(1, min(256, 2**22 // (num_outputs * num_parameters(model))))


def ggn_matrix(model: nn.Module, x: torch.Tensor, likelihood: str = "classification", sigma_noise: float = 1.0,
               chunk_size: int | None = None, progress_bar: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense GGN ``sum_i J(x_i)^T Lambda(x_i) J(x_i)`` (float64, ``(P, P)``) and the outputs ``g(x)``.

    Each chunk's product ``(Lambda J)^T J`` is taken in the model's dtype and accumulated in float64.
    """
    outputs, total = [], None
    first = model(x[:1]).reshape(1, -1)
    chunk = _chunk_size(model, first.shape[1], chunk_size)
    starts = range(0, len(x), chunk)
    for i in progress(starts, progress_bar, "GGN", total=len(starts)):
        J, out = jacobians(model, x[i : i + chunk], chunk_size=chunk, return_outputs=True)  # (b, C, P), (b, C)
        lam = hessian_factor(out, likelihood, sigma_noise).to(J.dtype)  # Lambda(x_b): (b, C, C)
        lam_J = (lam @ J).flatten(0, 1)  # rows of Lambda J: (b C, P)
        part = (lam_J.T @ J.flatten(0, 1)).double()  # sum_b J_b^T Lambda_b J_b
        total = part if total is None else total + part
        outputs.append(out)
    return total, torch.cat(outputs)


class ExactLLA:
    """Linearised Laplace with the full GGN over all weights, eigendecomposed once.

    Args:
        model: the trained network (eval mode) with outputs ``(B, C)``; never modified.
        likelihood: ``"classification"`` or ``"regression"``.
        prior_precision: ``delta``; ``None`` tunes it on ``val_loader`` over ``prior_grid`` (validation NLL),
            or uses 1.0 without one.
        prior_grid: candidate ``delta`` values (default ``logspace(-4, 4, 33)``, as ELLA).
        link: ``"margin"``, ``"probit"`` or ``"mc"`` (see :mod:`ella.predictive`).
        n_samples: Monte-Carlo samples of the ``"mc"`` link.
        sigma_noise: regression observation noise; ``None`` uses the training RMSE of the MAP (as ELLA).
        max_params: refuse networks with more weights than this (the GGN is ``P x P``).
        chunk_size: inputs per chunk of dense Jacobians (``None``: about 16 MiB per chunk).
        seed: seed of the ``"mc"`` link.
        progress: show progress bars.

    Raises:
        ValueError: at construction, if the network has more than ``max_params`` weights.
    """

    name = "exact_lla"

    def __init__(self, model: nn.Module, likelihood: str = "classification", prior_precision: float | None = None,
                 prior_grid=None, link: str = "margin", n_samples: int = 512, sigma_noise: float | None = None,
                 max_params: int = MAX_PARAMS, chunk_size: int | None = None, seed: int = 0, progress: bool = True):
        check_model(model)
        self.model, self.likelihood = model, check_likelihood(likelihood)
        self.max_params = check_positive_int(max_params, "max_params")
        P = num_parameters(model)
        if P > self.max_params:
            raise ValueError(f"`model` has P = {P:,} weights: exact LLA forms a dense P x P GGN and is limited to "
                             f"`max_params` = {self.max_params:,} (raise it if you have the memory and time)")
        if link not in LINKS:
            raise ValueError(f"`link` must be one of {LINKS}, got {link!r}")
        self.link = link if self.likelihood == "classification" else None
        self.prior_precision = None if prior_precision is None else _positive_float(prior_precision, "prior_precision")
        grid = DEFAULT_PRIOR_GRID if prior_grid is None else torch.as_tensor(prior_grid, dtype=torch.float64).flatten()
        if grid.numel() == 0 or not (grid > 0).all():
            raise ValueError("`prior_grid` must be a non-empty list of positive prior precisions")
        self.prior_grid = grid
        self.sigma_noise = None if sigma_noise is None else _positive_float(sigma_noise, "sigma_noise")
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        self.seed, self.progress = seed, progress
        self.num_params = P
        self._factor: torch.Tensor | None = None

    # ---------------------------------------------------------------- fit
    def fit(self, train_loader, val_loader=None) -> "ExactLLA":
        """GGN on the training data -> eigendecomposition -> prior precision on validation NLL. Returns ``self``."""
        device, dtype = model_device_dtype(self.model)
        x, y = collect(train_loader, "train_loader", device, dtype)
        val = collect(val_loader, "val_loader", device, dtype) if val_loader is not None else None
        with torch.no_grad():
            C = self.model(x[:1]).reshape(1, -1).shape[1]
        check_targets(y, C, self.likelihood, "train_loader")
        if val is not None:
            check_targets(val[1], C, self.likelihood, "val_loader")
        if self.likelihood == "regression" and self.sigma_noise is None:
            self.sigma_noise = residual_rms(batched(self.model, x).reshape(len(x), -1), y)
        sigma = self.sigma_noise or 1.0

        ggn, _ = ggn_matrix(self.model, x, self.likelihood, sigma, self.chunk_size, self.progress)
        evals, evecs = torch.linalg.eigh(ggn)  # GGN = U diag(lambda) U^T
        self.eigenvalues, self.eigenvectors = evals.clamp_min(0), evecs  # PSD up to round-off

        if self.prior_precision is None and val is not None:
            self.prior_precision, self.tuning_scores = self._tune(*val)
        elif self.prior_precision is None:
            self.prior_precision = 1.0
        self._set_factor()
        return self

    def _scaled_basis(self, delta: float) -> torch.Tensor:
        """``W = U diag((lambda + delta)^{-1/2})`` (float64, ``(P, P)``), so that ``Sigma = W W^T``."""
        return self.eigenvectors * (self.eigenvalues + delta).rsqrt()

    def _set_factor(self) -> None:
        self._factor = self._scaled_basis(self.prior_precision).to(model_device_dtype(self.model)[1])

    @torch.no_grad()
    def _tune(self, xv: torch.Tensor, yv: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``delta`` minimising the validation NLL over ``prior_grid``; ``J(x) U`` is formed once for all deltas."""
        chunk = _chunk_size(self.model, self._num_outputs(xv), self.chunk_size)
        rotated, means = [], []
        for i in range(0, len(xv), chunk):
            J, out = jacobians(self.model, xv[i : i + chunk], chunk_size=chunk, return_outputs=True)
            rotated.append(J.double() @ self.eigenvectors)  # J(x) U: (b, C, P)
            means.append(out.double())
        JU, mean = torch.cat(rotated), torch.cat(means)
        sigma = self.sigma_noise or 1.0
        scores = torch.empty(len(self.prior_grid), dtype=torch.float64)
        for j, delta in enumerate(progress(self.prior_grid.tolist(), self.progress, "Exact LLA prior grid")):
            factor = JU * (self.eigenvalues + delta).rsqrt()  # F = J U diag((lambda + delta)^{-1/2})
            scores[j] = predictive_nll(mean, factor, yv, self.likelihood, self.link, sigma, self.n_samples,
                                       seeded_generator(self.seed))
        return float(self.prior_grid[int(torch.argmin(scores))]), scores

    # ---------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if self._factor is None:
            raise RuntimeError("ExactLLA is not fitted: call `fit(train_loader, val_loader)` first")

    def _mean_and_factor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_fitted()
        x = _prepare_input(self.model, x)
        chunk = _chunk_size(self.model, self._num_outputs(x), self.chunk_size)
        means, factors = [], []
        for i in range(0, len(x), chunk):
            J, out = jacobians(self.model, x[i : i + chunk], chunk_size=chunk, return_outputs=True)
            means.append(out)
            factors.append(J @ self._factor)  # F(x) = J(x) W: (b, C, P)
        return torch.cat(means), torch.cat(factors)

    @torch.no_grad()
    def _num_outputs(self, x: torch.Tensor) -> int:
        return self.model(x[:1]).reshape(1, -1).shape[1]

    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``f(x) ~ N(mean (B, C), cov (B, C, C))`` with ``cov = J(x) Sigma J(x)^T``."""
        mean, factor = self._mean_and_factor(x)
        return mean, factor @ factor.transpose(1, 2)

    def predict(self, x: torch.Tensor):
        """Classification: probabilities ``(B, C)`` by ``link``. Regression: ``(mean, var)`` with the noise."""
        mean, factor = self._mean_and_factor(x)
        if self.likelihood == "regression":
            return mean, factor.pow(2).sum(-1) + self.sigma_noise**2
        return link_probs(mean, factor, self.link, self.n_samples, seeded_generator(self.seed))

    @property
    def posterior_covariance(self) -> torch.Tensor:
        """``Sigma = (GGN + delta I)^{-1}`` (float64, ``(P, P)``)."""
        self._check_fitted()
        W = self._scaled_basis(self.prior_precision)
        return W @ W.T

    def __repr__(self) -> str:
        return f"ExactLLA(likelihood={self.likelihood!r}, P={self.num_params}, link={self.link!r})"
