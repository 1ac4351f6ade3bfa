"""What ella's laplace-torch baselines share (:class:`~ella.methods.KFACLLA`, :class:`~ella.methods.DiagLLA`,
:class:`~ella.methods.LastLayerLLA`): the laplace-torch fit, the hyperparameters and the GLM predictive.

laplace-torch fits the curvature; the predictive ``f(x) ~ N(g(x), J(x) P^{-1} J(x)^T)`` with the posterior
precision ``P = H / sigma^2 + delta I`` is evaluated by ella, from laplace-torch's ``H``, for any ``(delta, sigma)``
without changing laplace-torch's object, through per-sample ``torch.func`` Jacobians in chunks instead of
laplace-torch's whole-batch ``jacrev`` (whose cost is quadratic in the batch size).

Hyperparameters (``prior``): by validation NLL over a log grid through the one search of
:mod:`ella.methods.search` (``"gridsearch"``), by the Laplace marginal likelihood (``"marglik"``, laplace-torch's
own optimiser), a fixed positive number, or ``"auto"`` (default): the grid search when a validation loader is
given, else the marginal likelihood. For regression the observation noise (one value for all outputs, as
laplace-torch models it) is searched with the prior on validation NLL, or optimised jointly with it by the
marginal likelihood.

Layers the curvature backend does not model (KFAC: anything but ``nn.Linear`` and ``nn.Conv2d``, such as batch
norm, layer norm or embeddings) are left out of the curvature, as laplace-torch's own documentation advises: the
method works on a copy of the network whose parameters in those layers are frozen, and names them in
``excluded_layers`` and a warning.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import batches
from ..checks import check_choice, check_float, check_grid, check_loader, check_positive_int
from ..functional import jacobians
from ..predictive import covariance_factor, predictive_nll
from ..utils import progress, require
from .base import GaussianMethod
from .search import DEFAULT_NOISE_GRID, DEFAULT_PRIOR_GRID, search
from .survey import Survey, survey

PRIORS = ("auto", "gridsearch", "marglik")
JACOBIAN_CACHE = 2**27  # entries of validation Jacobians kept across grid searches (512 MiB in float32)
JACOBIAN_PIECE = 2**24  # entries of the Jacobians one piece of work forms at most (64 MiB in float32)


def _as_dataloader(loader, name: str) -> DataLoader:
    """laplace-torch needs ``len(loader.dataset)``; any other iterable of (x, y) batches is gathered into one."""
    check_loader(loader, name)
    if isinstance(loader, DataLoader) or hasattr(loader, "dataset"):
        return loader
    x, y = batches.collect(loader, name)
    return DataLoader(TensorDataset(x, y), batch_size=256, shuffle=False)


def closed_form_evidence(la, eigenvalues, prior_precision, sigma_noise, likelihood: str) -> torch.Tensor:
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


class LaplaceBaseline(GaussianMethod):
    """A laplace-torch posterior with ella's GLM predictive; subclasses name the laplace-torch structure and give
    the Jacobians and the covariance ``J P^{-1} J^T`` for a given ``(delta, sigma)``.

    Args:
        model: trained ``nn.Module`` in eval mode; never modified (see :attr:`excluded_layers`).
        likelihood: ``"classification"`` or ``"regression"``.
        prior: ``"auto"``, ``"gridsearch"``, ``"marglik"`` or a positive number (see the module docstring).
        link: ``"margin"``, ``"probit"`` or ``"mc"`` (as for :class:`~ella.methods.base.GaussianMethod`).
        n_samples: Monte-Carlo samples of the ``"mc"`` link.
        sigma_noise: regression: the observation noise, one number for all outputs (default: searched).
        prior_grid: the grid of prior precisions searched.
        noise_grid: the grid of noise scales searched, relative to the validation RMSE.
        marglik_steps: Adam steps on the log hyperparameters (``prior="marglik"``).
        marglik_lr: their learning rate.
        seed: seed of the ``"mc"`` link's draws.
        batch_size: inputs per piece of ``predict``.
        progress: show progress bars.

    Fitted: ``la_`` (laplace-torch's object), ``prior_precision_``, ``noise_``, ``search_``.
    """

    _subset_of_weights = "all"
    _hessian_structure = "kron"
    _label = "LLA"

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        prior="auto",
        link: str = "margin",
        n_samples: int = 512,
        sigma_noise=None,
        prior_grid=None,
        noise_grid=None,
        marglik_steps: int = 100,
        marglik_lr: float = 0.1,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = True,
    ):
        super().__init__(
            model,
            likelihood,
            link=link,
            n_samples=n_samples,
            sigma_noise=sigma_noise,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        require("laplace", "laplace-torch", "laplace", type(self).__name__)
        if isinstance(self.sigma_noise, tuple):
            raise ValueError(
                f"laplace-torch models one `sigma_noise` for all outputs: give one number, got {len(self.sigma_noise)}"
            )
        self.prior = check_choice(prior, "prior", PRIORS) if isinstance(prior, str) else check_float(prior, "prior")
        self.prior_grid = DEFAULT_PRIOR_GRID if prior_grid is None else check_grid(prior_grid, "prior_grid")
        self.noise_grid = DEFAULT_NOISE_GRID if noise_grid is None else check_grid(noise_grid, "noise_grid")
        self.marglik_steps = check_positive_int(marglik_steps, "marglik_steps")
        self.marglik_lr = check_float(marglik_lr, "marglik_lr")
        if self._subset_of_weights == "last_layer" and not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ValueError("`model` has no nn.Linear layer: last-layer Laplace needs a linear output layer")
        self.network, self.excluded_layers = self._curvature_network(model)

    # ---------------------------------------------------------------- the network laplace-torch sees
    def _supported(self, module: nn.Module) -> bool:
        """Whether the curvature backend models this layer's own parameters (the last layer's alone are in a
        last-layer posterior: nothing else is left out)."""
        return True

    def _curvature_network(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        """``model`` itself, or a copy with the parameters of unsupported layers frozen, and those layers' names."""
        excluded = [
            f"{name or '<root>'} ({type(m).__name__})"
            for name, m in model.named_modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))
            and not self._supported(m)
            and self._subset_of_weights != "last_layer"
        ]
        if not excluded:
            return model, []
        network = copy.deepcopy(model)
        for _, m in network.named_modules():
            if not self._supported(m):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)
        if not any(p.requires_grad for p in network.parameters()):
            raise ValueError(
                f"laplace-torch's {self._label} models none of the parameterised layers of `model` "
                f"({', '.join(excluded)})"
            )
        warnings.warn(
            f"{self._label}: laplace-torch's curvature does not model these layers of `model`, so their "
            f"parameters are left out of the posterior: {', '.join(excluded)}",
            UserWarning,
            stacklevel=3,
        )
        return network, excluded

    # ---------------------------------------------------------------- what a subclass gives
    def _jacobians(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Js (B, C, P), g(x) (B, C))`` for a piece of inputs: laplace-torch's closed-form ones of a last-layer
        posterior, per-sample ``torch.func`` Jacobians otherwise."""
        if self._subset_of_weights == "last_layer":
            Js, f = self.la_.backend.last_layer_jacobians(x)
            return Js.detach(), f.detach()
        return jacobians(self.network, x, return_outputs=True)

    def _project(self, Js: torch.Tensor) -> torch.Tensor:
        """What :meth:`_covariance` needs of the Jacobians, computed once for every ``(delta, sigma)``."""
        return Js

    def _covariance(self, projected: torch.Tensor, prior_precision: float, sigma: float) -> torch.Tensor:
        """``J P^{-1} J^T`` ``(B, C, C)`` with ``P = H / sigma^2 + delta I`` from laplace-torch's ``H``, for the
        :meth:`_project`-ed Jacobians."""
        raise NotImplementedError

    def _log_marglik(self, prior_precision: torch.Tensor, sigma_noise: torch.Tensor | None) -> torch.Tensor:
        """The Laplace log evidence as a differentiable function of the hyperparameters."""
        return self.la_.log_marginal_likelihood(prior_precision=prior_precision, sigma_noise=sigma_noise)

    def _h_factor(self, sigma: float) -> float:
        """``1 / (sigma^2 T)``: laplace-torch's scale of ``H`` in the posterior precision."""
        return 1.0 / (sigma**2 * float(self.la_.temperature))

    @property
    def _sigma(self) -> float:
        return 1.0 if self.noise_ is None else float(self.noise_[0])

    # ---------------------------------------------------------------- fit
    def _fit(self, train_loader, val_loader) -> None:
        data = survey(self.model, self.likelihood, train_loader, val_loader, progress_bar=False)
        self.input_spec_ = data.input_spec
        if self.prior == "gridsearch" and not data.num_val:
            raise ValueError("`prior='gridsearch'` needs a `val_loader` to score the validation NLL")
        from laplace import Laplace

        rho = None if data.output_scale is None else float(data.output_scale.pow(2).mean().sqrt())
        sigma0 = self.sigma_noise if self.sigma_noise is not None else (rho or 1.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            la = Laplace(
                self.network,
                self.likelihood,
                subset_of_weights=self._subset_of_weights,
                hessian_structure=self._hessian_structure,
                sigma_noise=sigma0,
                prior_precision=self.prior if isinstance(self.prior, float) else 1.0,
                backend=self._backend(),
            )
            la.fit(_as_dataloader(train_loader, "train_loader"), progress_bar=self.progress)
        self.la_ = la
        # inputs whose (rows, C, P) Jacobians hold at most JACOBIAN_PIECE entries: the memory of any piece of work
        self._jacobian_rows = max(1, JACOBIAN_PIECE // (data.num_outputs * la.n_params))
        self._tune(data, val_loader, rho)

    def _backend(self):
        return None  # laplace-torch's default (CurvlinopsGGN)

    def _tune(self, data: Survey, val_loader, rho: float | None) -> None:
        regression = self.likelihood == "regression"
        method = self.prior if isinstance(self.prior, str) else "fixed"
        if method == "auto":
            method = "gridsearch" if data.num_val else "marglik"
        tune_noise = regression and self.sigma_noise is None
        delta = self.prior if method == "fixed" else 1.0
        sigma = self.sigma_noise if self.sigma_noise is not None else (rho or 1.0)
        self.search_ = None
        if method == "marglik" or (tune_noise and not data.num_val):
            delta, sigma = self._optimize_marglik(method == "marglik", tune_noise)
        elif method == "gridsearch" or tune_noise:
            self.search_ = search(
                self._validation_score(val_loader, delta, rho),
                self.prior_grid if method == "gridsearch" else None,
                self.noise_grid if tune_noise else None,
                "validation NLL",
            )
            delta = self.search_.prior_precision or delta
            sigma = sigma if self.search_.noise_scale is None else self.search_.noise_scale * rho
        self.prior_precision_ = float(delta)
        self.noise_ = torch.tensor([sigma], dtype=self._dtype).expand(data.num_outputs) if regression else None

    def _optimize_marglik(self, optimize_prior: bool, optimize_sigma: bool) -> tuple[float, float]:
        """Adam on the log hyperparameters maximising the Laplace evidence (scalar prior precision), started
        at prior precision 1 and, for regression, sigma_noise at the training RMSE. This is laplace-torch's
        ``optimize_prior_precision(method="marglik")`` (same start, optimiser, steps and learning rate),
        extended to sigma_noise as laplace-torch's documentation does for regression."""
        la = self.la_
        dev, dt = la._device, la._dtype
        log_prior = la.prior_precision.detach().log().mean().reshape(1).to(dev, dt)
        if optimize_prior:
            log_prior = torch.zeros(1, device=dev, dtype=dt, requires_grad=True)
        params = [log_prior] if optimize_prior else []
        log_sigma = None
        if self.likelihood == "regression":
            log_sigma = la.sigma_noise.detach().log().reshape(1).to(dev, dt)
            if optimize_sigma:
                # la.loss = 0.5 * sum of squared training residuals
                rmse = math.sqrt(max(2.0 * float(la.loss) / max(1, la.n_data * la.n_outputs), 1e-12))
                log_sigma = torch.tensor([math.log(rmse)], device=dev, dtype=dt, requires_grad=True)
                params.append(log_sigma)
        opt = torch.optim.Adam(params, lr=self.marglik_lr)
        for _ in progress(range(self.marglik_steps), self.progress, "marginal likelihood"):
            opt.zero_grad()
            nlml = -self._log_marglik(log_prior.exp(), None if log_sigma is None else log_sigma.exp())
            nlml.backward()
            opt.step()
        sigma = 1.0 if log_sigma is None else float(log_sigma.detach().exp())
        return float(log_prior.detach().exp()), sigma

    @torch.no_grad()
    def _validation_score(self, loader, prior_precision: float, rho: float | None):
        """``score(priors, noises)``: validation NLL of this method's predictive. The (projected) Jacobians of each
        validation piece serve the whole grid; they are kept for later calls (a widened grid) while they hold at
        most :data:`JACOBIAN_CACHE` entries, and recomputed otherwise, so memory stays bounded by one piece
        (all-weights KFAC on a 199k-weight MLP: 6,000 validation points would hold 48 GB)."""
        inputs = []
        for batch in loader:
            x, y = batches.split_batch(batch, "val_loader")
            x = batches.to_model(x, self.model)
            step = min(self.batch_size, self._jacobian_rows)
            for start in range(0, batches.num_rows(x), step):
                inputs.append((batches.take(x, slice(start, start + step)), y[start : start + step]))

        def jacobian_pieces():
            for part, y in inputs:
                with torch.enable_grad():
                    Js, f = self._jacobians(part)
                yield self._project(Js.detach()), f, y.to(f.device)

        count = sum(batches.num_rows(part) for part, _ in inputs)
        with torch.enable_grad():  # the projected Jacobian of one input: its size tells whether all fit the cache
            per_input = self._project(self._jacobians(batches.take(inputs[0][0], slice(0, 1)))[0].detach()).numel()
        cache = list(jacobian_pieces()) if count * per_input <= JACOBIAN_CACHE else None
        sigma0 = self.sigma_noise or 1.0

        def score(priors, noises):
            priors = [prior_precision] if priors is None else priors.tolist()
            noises = [None] if noises is None else noises.tolist()
            table = torch.zeros(1, len(priors), len(noises), dtype=torch.float64)
            pieces = cache if cache is not None else jacobian_pieces()
            for Js, f, y in progress(pieces, self.progress, "prior grid search", total=len(inputs)):
                for i, delta in enumerate(priors):
                    for j, s in enumerate(noises):
                        sigma = sigma0 if s is None else s * rho
                        try:
                            factor = covariance_factor(self._covariance(Js, delta, sigma))
                        except torch.linalg.LinAlgError:  # not numerically positive definite at this prior
                            table[0, i, j] = math.inf
                            continue
                        table[0, i, j] += (
                            predictive_nll(f, factor, y, self.likelihood, self.link, sigma, self.n_samples, self.seed)
                            .sum()
                            .double()
                            .cpu()
                        )
            return table / count

        return score

    # ---------------------------------------------------------------- predict
    def _mean_and_factor(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        means, factors = [], []
        for part in batches.chunks(x, self._jacobian_rows):  # the Jacobians of a few inputs at a time
            with torch.enable_grad():
                Js, f = self._jacobians(part)
            projected = self._project(Js.detach())
            means.append(f.detach())
            factors.append(covariance_factor(self._covariance(projected, self.prior_precision_, self._sigma)))
        return torch.cat(means), torch.cat(factors)

    @torch.no_grad()
    def laplace_predict(self, x, link_approx: str | None = None, batch_size: int = 100):
        """laplace-torch's own GLM predictive ``la(x, pred_type="glm", link_approx=...)`` at the fitted
        hyperparameters, in batches of ``batch_size``, for comparison and timing. Regression returns
        ``(mean, var + sigma^2)``.

        laplace-torch takes the Jacobians of a whole batch with one ``jacrev`` over all ``batch * C`` outputs,
        so time and memory grow with ``batch_size^2`` (on the 6k-parameter test CNN a batch of 1000 needs
        more than 24 GB); keep batches small."""
        self._check_fitted()
        check_positive_int(batch_size, "batch_size")
        la = copy.copy(self.la_)  # laplace-torch's predictive reads the hyperparameters off the object
        la.prior_precision = torch.tensor(self.prior_precision_, device=la._device, dtype=la._dtype)
        if self.likelihood == "regression":
            la.sigma_noise = torch.tensor(self._sigma, device=la._device, dtype=la._dtype)
        x = batches.to_model(x, self.model)
        link_approx = link_approx or (self.link if self.link in ("probit", "mc") else "probit")
        outs = [
            la(piece, pred_type="glm", link_approx=link_approx, n_samples=self.n_samples)
            for piece in batches.chunks(x, batch_size)
        ]
        if self.likelihood == "classification":
            return torch.cat(outs)
        mean = torch.cat([o[0] for o in outs])
        var = torch.cat([o[1].diagonal(dim1=-2, dim2=-1) for o in outs])
        return mean, var + self._sigma**2

    def __repr__(self) -> str:
        return f"{type(self).__name__}(likelihood={self.likelihood!r}, prior={self.prior!r}, link={self.link!r})"
