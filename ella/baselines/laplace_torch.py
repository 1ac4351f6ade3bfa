"""The shared machinery of ella's laplace-torch baselines (:class:`~ella.baselines.KFACLLA`,
:class:`~ella.baselines.DiagLLA`, :class:`~ella.baselines.LastLayerLLA`): argument checks, the laplace-torch
fit, the hyperparameters and the predictive with ella's links.

Hyperparameters: the prior precision by the Laplace marginal likelihood (``prior="marglik"``), by validation
NLL over a log grid (``prior="gridsearch"``, needs ``val_loader``), or fixed (a positive number); for
regression the observation noise ``sigma_noise`` by the marginal likelihood too (jointly with the prior
precision) or fixed. A subclass names laplace-torch's ``subset_of_weights`` and ``hessian_structure`` and
provides the latent moments ``_moments``.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .._checks import check_labels, check_likelihood, check_loader, check_model, check_positive_int
from .._utils import collect, progress, seeded_generator
from ..functional import jacobians
from ..predictive import LINKS
from ..predictive import moments_probs as link_probs
from .glm import glm_moments
from .map import _positive_float, _prepare_input

__all__ = ["_LaplaceBaseline", "_AllWeightsLLA"]

PRIORS = ("marglik", "gridsearch")


def _as_dataloader(loader, name: str) -> DataLoader:
    """laplace-torch needs ``len(loader.dataset)``; wrap any other iterable of (x, y) batches."""
    check_loader(loader, name)
    if isinstance(loader, DataLoader) or hasattr(loader, "dataset"):
        return loader
    x, y = collect(loader, name)
    return DataLoader(TensorDataset(x, y), batch_size=256, shuffle=False)


def _first_batch(loader, name: str):
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise ValueError(f"`{name}` is empty: it yielded no data") from None
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"`{name}` must yield (x, y) batches, got {type(batch).__name__}")
    return batch[0], batch[1]


def _closed_form_evidence(la, eigenvalues, prior_precision, sigma_noise, likelihood: str) -> torch.Tensor:
    """laplace-torch's Laplace log evidence for a scalar prior precision ``delta`` from the eigenvalues of the
    (unscaled) GGN, differentiable in both hyperparameters:
    ``log p(D | theta) - 0.5 (log det(GGN / sigma^2 + delta I) - P log delta + delta |theta - mu_0|^2)``.
    ``eigenvalues`` is a list of blocks, each ``[l]`` (a dense block) or ``[l1, l2]`` (a Kronecker pair)."""
    prior = prior_precision.reshape(())
    sigma = la.sigma_noise if sigma_noise is None else sigma_noise.reshape(())
    factor = 1.0 / (sigma**2 * la.temperature)
    log_lik = -factor * la.loss
    if likelihood == "regression":
        log_lik = log_lik - la.n_data * la.n_outputs * torch.log(sigma * math.sqrt(2 * math.pi))
    log_det_post = 0.0
    for block in eigenvalues:
        lam = block[0] if len(block) == 1 else torch.outer(block[0], block[1])
        log_det_post = log_det_post + torch.log(factor * lam.clamp_min(0) + prior).sum()
    delta = la.mean - la.prior_mean
    log_det_ratio = log_det_post - la.n_params * torch.log(prior)
    return log_lik - 0.5 * (log_det_ratio + prior * (delta @ delta))


class _LaplaceBaseline:
    """Shared machinery: argument checks, laplace-torch fit, hyperparameters, predictive and links."""

    name = "laplace"
    _subset_of_weights = "all"
    _hessian_structure = "kron"

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        prior: str | float = "marglik",
        link: str = "margin",
        n_samples: int = 512,
        sigma_noise: str | float | None = None,
        progress: bool = True,
        seed: int = 0,
        chunk_size: int | None = None,
        marglik_steps: int = 100,
        marglik_lr: float = 0.1,
        grid: torch.Tensor | list[float] | None = None,
    ) -> None:
        check_model(model)
        self.model = model
        self.likelihood = check_likelihood(likelihood)
        if isinstance(prior, str):
            if prior not in PRIORS:
                raise ValueError(f"`prior` must be one of {PRIORS} or a positive number, got {prior!r}")
            self.prior = prior
        else:
            self.prior = _positive_float(prior, "prior")
        if link not in LINKS:
            raise ValueError(f"`link` must be one of {LINKS}, got {link!r}")
        self.link = link if self.likelihood == "classification" else None
        self.n_samples = check_positive_int(n_samples, "n_samples")
        if self.likelihood == "classification":
            if sigma_noise not in (None, 1, 1.0):
                raise ValueError(f"`sigma_noise` applies to regression only, got {sigma_noise!r} for classification")
            self._sigma_spec: str | float = 1.0
        elif sigma_noise is None or sigma_noise == "marglik":
            self._sigma_spec = "marglik"
        elif isinstance(sigma_noise, str):
            raise ValueError(f"`sigma_noise` must be 'marglik' or a positive number, got {sigma_noise!r}")
        else:
            self._sigma_spec = _positive_float(sigma_noise, "sigma_noise")
        self.progress = bool(progress)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"`seed` must be an integer, got {seed!r}")
        self.seed = seed
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        self.marglik_steps = check_positive_int(marglik_steps, "marglik_steps")
        self.marglik_lr = _positive_float(marglik_lr, "marglik_lr")
        if grid is None:
            grid = torch.logspace(-4, 4, 33)
        grid = torch.as_tensor(grid, dtype=torch.float64).flatten()
        if grid.numel() == 0 or not (grid > 0).all():
            raise ValueError("`grid` must be a non-empty list of positive prior precisions")
        self.grid = grid
        self._check_architecture()
        self._la = None
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------------- hooks for subclasses
    def _check_architecture(self) -> None:
        pass

    def _jacobians(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Js (b, C, P), outputs (b, C)) for one chunk of inputs."""
        raise NotImplementedError

    def _covariance_fn(self):
        """A function Js -> Js Sigma Js^T for the current posterior."""
        return self._la.functional_variance

    def _chunk(self, x: torch.Tensor) -> int:
        raise NotImplementedError

    # ----------------------------------------------------------------- properties
    @property
    def la(self):
        """The fitted laplace-torch object."""
        self._check_fitted()
        return self._la

    @property
    def prior_precision(self) -> float | torch.Tensor | None:
        """The prior precision in use (a float when scalar); before ``fit`` the fixed value or None."""
        if self._la is None:
            return self.prior if isinstance(self.prior, float) else None
        p = self._la.prior_precision.detach()
        return float(p) if p.numel() == 1 else p.clone()

    @property
    def sigma_noise(self) -> float | None:
        """Observation noise standard deviation (regression; 1.0 for classification)."""
        if self._la is None:
            return self._sigma_spec if isinstance(self._sigma_spec, float) else None
        return float(self._la.sigma_noise)

    def _check_fitted(self) -> None:
        if self._la is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call `.fit(train_loader)` first")

    # ----------------------------------------------------------------- fitting
    def _check_data(self, train_loader) -> None:
        x, y = _first_batch(train_loader, "train_loader")
        x = _prepare_input(self.model, x)
        with torch.no_grad():
            out = self.model(x[:1])
        if out.ndim != 2:
            raise ValueError(f"`model` must return outputs of shape (batch, C), got shape {tuple(out.shape)}")
        if self.likelihood == "classification":
            check_labels(y, out.shape[-1], "train_loader")
        elif y.ndim != 2 or y.shape[-1] != out.shape[-1]:
            raise ValueError(
                f"regression targets of `train_loader` must have shape (batch, {out.shape[-1]}) like the "
                f"model's outputs, got {tuple(y.shape)}"
            )

    def _backend(self):
        return None  # laplace-torch's default (CurvlinopsGGN)

    def _make_laplace(self):
        from laplace import Laplace

        sigma0 = self._sigma_spec if isinstance(self._sigma_spec, float) else 1.0
        prior0 = self.prior if isinstance(self.prior, float) else 1.0
        return Laplace(
            self.model,
            self.likelihood,
            subset_of_weights=self._subset_of_weights,
            hessian_structure=self._hessian_structure,
            sigma_noise=sigma0,
            prior_precision=prior0,
            backend=self._backend(),
        )

    def fit(self, train_loader, val_loader=None):
        """Fit the Laplace posterior on ``train_loader`` and tune its hyperparameters. Returns ``self``."""
        train_loader = _as_dataloader(train_loader, "train_loader")
        if self.prior == "gridsearch":
            if val_loader is None:
                raise ValueError("`prior='gridsearch'` needs a `val_loader` to score the validation NLL")
        if val_loader is not None:
            check_loader(val_loader, "val_loader")
        self._check_data(train_loader)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            t0 = time.perf_counter()
            la = self._make_laplace()
            la.fit(train_loader, progress_bar=self.progress)
            self._la = la
            self.timings["fit"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            self._tune(val_loader)
            self.timings["tune"] = time.perf_counter() - t0
        return self

    def _tune(self, val_loader) -> None:
        optimize_sigma = self.likelihood == "regression" and self._sigma_spec == "marglik"
        if self.prior == "marglik" or optimize_sigma:
            self._optimize_marglik(optimize_prior=self.prior == "marglik", optimize_sigma=optimize_sigma)
        if self.prior == "gridsearch":
            self._gridsearch(val_loader)

    def _log_marglik(self, prior_precision: torch.Tensor, sigma_noise: torch.Tensor | None) -> torch.Tensor:
        """The Laplace log evidence as a differentiable function of the hyperparameters."""
        return self._la.log_marginal_likelihood(prior_precision=prior_precision, sigma_noise=sigma_noise)

    def _optimize_marglik(self, optimize_prior: bool, optimize_sigma: bool) -> None:
        """Adam on the log hyperparameters maximising the Laplace evidence (scalar prior precision), started
        at prior precision 1 and, for regression, sigma_noise at the training RMSE. This is laplace-torch's
        ``optimize_prior_precision(method="marglik")`` (same start, optimiser, steps and learning rate),
        extended to sigma_noise as laplace-torch's documentation does for regression."""
        la = self._la
        dev, dt = la._device, la._dtype
        if optimize_prior:
            log_prior = torch.zeros(1, device=dev, dtype=dt, requires_grad=True)
        else:
            log_prior = la.prior_precision.detach().log().mean().reshape(1).to(dev, dt)
        params = [log_prior] if optimize_prior else []
        log_sigma = None
        if self.likelihood == "regression":
            if optimize_sigma:
                # la.loss = 0.5 * sum of squared training residuals
                rmse = math.sqrt(max(2.0 * float(la.loss) / max(1, la.n_data * la.n_outputs), 1e-12))
                log_sigma = torch.tensor([math.log(rmse)], device=dev, dtype=dt, requires_grad=True)
                params.append(log_sigma)
            else:
                log_sigma = la.sigma_noise.detach().log().reshape(1).to(dev, dt)
        opt = torch.optim.Adam(params, lr=self.marglik_lr)
        for _ in progress(range(self.marglik_steps), self.progress, "Marginal likelihood"):
            opt.zero_grad()
            sigma = None if log_sigma is None else log_sigma.exp()
            nlml = -self._log_marglik(log_prior.exp(), sigma)
            nlml.backward()
            opt.step()
        la.prior_precision = log_prior.detach().exp()
        if log_sigma is not None:
            la.sigma_noise = log_sigma.detach().exp()

    @torch.no_grad()
    def _gridsearch(self, val_loader) -> None:
        """Prior precision minimising the validation NLL of this method's own predictive (same link, same
        seed for every grid value). Jacobians of each validation chunk are computed once for the whole grid."""
        la = self._la
        x, y = collect(val_loader, "val_loader")
        x = _prepare_input(self.model, x)
        y = y.to(x.device)
        grid = self.grid.to(device=la._device, dtype=la._dtype)
        nll = torch.zeros(len(grid), dtype=torch.float64)
        chunk = self._chunk(x)
        starts = range(0, len(x), chunk)
        sigma2 = float(la.sigma_noise) ** 2
        if self.likelihood == "classification":
            with torch.no_grad():
                check_labels(y, self.model(x[:1]).shape[-1], "val_loader")
        for i in progress(starts, self.progress, "Prior grid search", total=len(starts)):
            with torch.enable_grad():
                Js, f = self._jacobians(x[i : i + chunk])
            yc = y[i : i + chunk]
            for k, prec in enumerate(grid):
                la.prior_precision = prec
                try:
                    cov = self._covariance_fn()(Js)
                except torch.linalg.LinAlgError:  # posterior not numerically positive definite at this prior
                    nll[k] = math.inf
                    continue
                if self.likelihood == "classification":
                    gen = seeded_generator(self.seed + i)
                    p = link_probs(f, cov, self.link, self.n_samples, gen)
                    nll[k] -= p.gather(1, yc.long().reshape(-1, 1)).clamp_min(1e-40).log().sum().double().cpu()
                else:
                    var = cov.diagonal(dim1=-2, dim2=-1) + sigma2
                    term = 0.5 * (torch.log(2 * math.pi * var) + (yc - f) ** 2 / var)
                    nll[k] += term.sum().double().cpu()
        finite = torch.isfinite(nll)
        if not finite.any():
            raise RuntimeError("prior grid search: the validation NLL is not finite for any prior precision")
        nll[~finite] = math.inf
        best = int(torch.argmin(nll))
        la.prior_precision = grid[best]
        self.grid_nll = (nll / len(x)).float()

    # ----------------------------------------------------------------- prediction
    @torch.no_grad()
    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent GLM predictive ``f(x) ~ N(mean (B, C), cov (B, C, C))``."""
        self._check_fitted()
        x = _prepare_input(self.model, x)
        return self._moments(x)

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: torch.Tensor):
        """Classification: class probabilities (B, C) by ``self.link`` (MC seeded by ``seed``).
        Regression: ``(mean, var)`` (B, D) with ``var`` including ``sigma_noise^2``."""
        mean, cov = self.predictive_moments(x)
        if self.likelihood == "classification":
            return link_probs(mean, cov, self.link, self.n_samples, seeded_generator(self.seed))
        return mean, cov.diagonal(dim1=-2, dim2=-1) + float(self._la.sigma_noise) ** 2

    @torch.no_grad()
    def laplace_predict(self, x: torch.Tensor, link_approx: str | None = None, batch_size: int = 100):
        """laplace-torch's own GLM predictive ``la(x, pred_type="glm", link_approx=...)`` in batches of
        ``batch_size``, for comparison and timing. Regression returns ``(mean, var + sigma_noise^2)``.

        laplace-torch takes the Jacobians of a whole batch with one ``jacrev`` over all ``batch * C`` outputs,
        so time and memory grow with ``batch_size^2`` (on the 6k-parameter test CNN a batch of 1000 needs
        more than 24 GB); keep batches small."""
        self._check_fitted()
        check_positive_int(batch_size, "batch_size")
        x = _prepare_input(self.model, x)
        link_approx = link_approx or (self.link if self.link in ("probit", "mc") else "probit")
        outs = []
        starts = range(0, len(x), batch_size)
        for i in progress(starts, self.progress, "laplace-torch GLM predictive", total=len(starts)):
            xb = x[i : i + batch_size]
            outs.append(self._la(xb, pred_type="glm", link_approx=link_approx, n_samples=self.n_samples))
        if self.likelihood == "classification":
            return torch.cat(outs)
        mean = torch.cat([o[0] for o in outs])
        var = torch.cat([o[1].diagonal(dim1=-2, dim2=-1) for o in outs])
        return mean, var + float(self._la.sigma_noise) ** 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}(likelihood={self.likelihood!r}, prior={self.prior!r}, link={self.link!r})"


class _AllWeightsLLA(_LaplaceBaseline):
    """All weights (laplace-torch ``subset_of_weights="all"``) with ella's GLM predictive: per-sample
    ``torch.func`` Jacobians in chunks (:mod:`ella.baselines.glm`) instead of laplace-torch's whole-batch
    ``jacrev``. Subclasses name the ``_hessian_structure`` and a ``_label`` for the progress bar."""

    _subset_of_weights = "all"
    _label = "LLA"

    def _optimize_marglik(self, optimize_prior: bool, optimize_sigma: bool) -> None:
        if optimize_sigma or not optimize_prior:
            return super()._optimize_marglik(optimize_prior, optimize_sigma)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*link_approx.*")
            self._la.optimize_prior_precision(
                pred_type="glm",
                method="marglik",
                n_steps=self.marglik_steps,
                lr=self.marglik_lr,
                init_prior_prec=1.0,
                prior_structure="scalar",
                link_approx="probit",  # unused by the marglik objective
                progress_bar=self.progress,
            )

    def _chunk(self, x: torch.Tensor) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return max(1, min(256, 2**22 // ((self._la.n_outputs or 1) * self._la.n_params)))

    def _jacobians(self, x):
        return jacobians(self.model, x, chunk_size=len(x), return_outputs=True)

    def _moments(self, x):
        return glm_moments(self.model, x, self._covariance_fn(), chunk_size=self._chunk(x),
                           progress_bar=self.progress, desc=f"{self._label} GLM predictive")
