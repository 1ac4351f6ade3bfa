"""``ELLA``: the linearised Laplace approximation of a trained network, reduced to a k x k posterior.

Pipeline (data flows one way)::

    MAP model -> kernel (empirical NTK) -> eigenfunctions psi (NeuralEF or Nystrom, k of them)
              -> Psi(x) = psi(x) sqrt(mu) -> G = sum_i Psi_i^T Lambda_i Psi_i + delta I_k
              -> f(x) ~ N(g(x), Psi(x) G^{-1} Psi(x)^T) -> probabilities

With the SGD-trajectory kernel (``kernel="sgd-trajectory"``) the default is the predictive of the
trajectory GP itself, without the likelihood update: ``G = delta I_k``, so ``f(x) ~ N(g(x), Psi Psi^T / delta)``
with ``delta`` the inverse kernel scale, tuned on validation NLL (``posterior_update=True`` adds the update).

With ``residual_samples = S' > 0`` (NTK kernel) the prior variance the k eigenfunctions leave out is kept:
``Sigma(x) += (r(x) / delta) I_C`` with ``r(x) = (tr kappa(x, x) - ||Psi(x)||_F^2) / C``, ``tr kappa(x, x)``
estimated from S' random weight directions (Hutchinson), at S' extra forward passes per prediction.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import posterior as P
from ._checks import check_likelihood, check_model, check_positive_int, check_targets
from ._utils import (batched, collect, model_device_dtype, num_parameters, residual_rms, seeded_generator,
                     weights_fingerprint)
from .eigen import EigenSolver, NeuralEF, Nystrom
from .kernels import EmpiricalNTK, Kernel
from .kernels.sgd_trajectory import SGDTrajectoryKernel
from .predictive import LINKS, hessian_factor, link_probs

DEFAULT_PRIOR_GRID = P.DEFAULT_PRIOR_GRID
FORMAT = "ella-posterior"
FORMAT_VERSION = 3  # 2: the kernel name and `posterior_update` are saved; 3: `residual_samples`
KERNELS = ("ntk", "sgd-trajectory")
_SAVED = ("likelihood", "k", "link", "n_samples", "seed", "sigma_noise", "prior_precision", "num_folded",
          "fold_in", "kernel_kwargs", "feature_kwargs", "residual_samples")


class ELLA:
    """ELLA posterior of a MAP-trained network.

    Args:
        model: the trained network ``g(x, theta_MAP)`` with outputs ``(B, C)`` (logits or regression
            outputs), in eval mode. It is never modified.
        likelihood: ``"classification"`` or ``"regression"``.
        k: number of eigenfunctions (the size of the posterior).
        kernel: ``"ntk"`` (the empirical NTK), ``"sgd-trajectory"`` (the covariance of the functions along a
            recorded training run: ``kernel_kwargs={"trajectory": trajectory}``, see
            :class:`~ella.kernels.sgd_trajectory.SGDTrajectoryKernel`; pass the SWA model as ``model``) or a
            :class:`~ella.kernels.Kernel`.
        features: ``"neuralef"`` (learned eigenfunctions: prediction costs one network forward),
            ``"nystrom"`` (the ELLA paper's exact JVP features from an M x M Jacobian Gram matrix) or an
            :class:`~ella.eigen.EigenSolver`.
        kernel_kwargs: options of :class:`~ella.kernels.EmpiricalNTK` (estimator, num_samples, ...) or of
            :class:`~ella.kernels.sgd_trajectory.SGDTrajectoryKernel` (trajectory, source, ...).
        feature_kwargs: options of the eigen-solver (:class:`~ella.eigen.NeuralEF`: steps, batch_size,
            lr, net; :class:`~ella.eigen.Nystrom`: num_points).
        prior_precision: ``delta``; ``None`` tunes it on ``val_loader`` (log grid on validation NLL),
            or uses 1.0 without one.
        prior_grid: candidate ``delta`` values for the tuning.
        fold_in: number of training points folded into G: ``"all"``, an integer, or ``"tune"`` to choose
            it on validation data among tenths of the training set (the ELLA paper's model selection).
        sigma_noise: observation noise for regression; ``None`` estimates it from the training residuals.
        link: class probabilities from the Gaussian: ``"margin"`` (probit on the margins against the top
            class; deterministic, keeps the MAP class), ``"probit"`` (laplace-torch's) or ``"mc"``
            (Monte Carlo over the C-dim Gaussian, ``n_samples`` seeded samples).
        n_samples: Monte-Carlo samples of the ``"mc"`` link.
        seed: seed of every random choice (features, batches, fold-in order, MC samples).
        progress: show progress bars.
        posterior_update: fold the likelihood curvature into ``G`` (the ELLA posterior). ``False`` drops it:
            ``G = delta I_k`` and the predictive covariance is the kernel's ``Psi Psi^T`` scaled by ``1 / delta``.
            Default: ``True``, except for the SGD-trajectory kernel.
        residual_samples: ``S'``; ``0`` (default) is the ELLA of the paper, whose predictive variance lives in
            the span of the k eigenfunctions. ``S' > 0`` adds the left-out prior variance ``r(x) / delta`` to
            every output (see :meth:`residual_variance`), estimated with S' random weight directions by the
            kernel's estimator; prediction then costs S' more forward passes (or JVPs). NTK kernel only.
    """

    def __init__(self, model: nn.Module, likelihood: str = "classification", k: int = 20,
                 kernel: str | Kernel = "ntk", features: str | EigenSolver = "neuralef",
                 kernel_kwargs: dict | None = None, feature_kwargs: dict | None = None,
                 prior_precision: float | None = None, prior_grid=None, fold_in: str | int = "all",
                 sigma_noise: float | None = None, link: str = "margin", n_samples: int = 512,
                 seed: int = 0, progress: bool = True, posterior_update: bool | None = None,
                 residual_samples: int = 0):
        check_model(model)
        self.likelihood = check_likelihood(likelihood)
        self.k = check_positive_int(k, "k")
        if not (kernel in KERNELS or isinstance(kernel, Kernel)):
            raise ValueError(f"`kernel` must be one of {KERNELS} or an ella.kernels.Kernel, got {kernel!r}")
        if kernel == "sgd-trajectory" and "trajectory" not in (kernel_kwargs or {}):
            raise ValueError("`kernel`='sgd-trajectory' needs the recorded run: kernel_kwargs={'trajectory': ...}")
        trajectory_kernel = kernel == "sgd-trajectory" or isinstance(kernel, SGDTrajectoryKernel)
        posterior_update = not trajectory_kernel if posterior_update is None else posterior_update
        if not isinstance(posterior_update, bool):
            raise ValueError(f"`posterior_update` must be True, False or None, got {posterior_update!r}")
        if not (features in ("neuralef", "nystrom") or isinstance(features, EigenSolver)):
            raise ValueError(f"`features` must be 'neuralef', 'nystrom' or an EigenSolver, got {features!r}")
        if isinstance(features, EigenSolver) and features.k != self.k:
            raise ValueError(f"`k` = {self.k} must equal the k = {features.k} of the `features` solver")
        if link not in LINKS:
            raise ValueError(f"`link` must be one of {LINKS}, got {link!r}")
        if prior_precision is not None and not prior_precision > 0:
            raise ValueError(f"`prior_precision` must be positive, got {prior_precision!r}")
        if not (isinstance(residual_samples, int) and residual_samples >= 0):
            raise ValueError(f"`residual_samples` must be a non-negative integer, got {residual_samples!r}")
        if residual_samples and not (kernel == "ntk" or isinstance(kernel, EmpiricalNTK)):
            raise ValueError("`residual_samples` > 0 needs the NTK kernel (kernel='ntk' or an EmpiricalNTK), "
                             f"got kernel={kernel!r}")
        if not (fold_in in ("all", "tune") or (isinstance(fold_in, int) and fold_in > 0)):
            raise ValueError(f"`fold_in` must be 'all', 'tune' or a positive integer, got {fold_in!r}")
        self.model, self.kernel, self.features = model, kernel, features
        self.kernel_kwargs, self.feature_kwargs = dict(kernel_kwargs or {}), dict(feature_kwargs or {})
        self.prior_precision = prior_precision
        self.prior_grid = DEFAULT_PRIOR_GRID if prior_grid is None else torch.as_tensor(prior_grid, dtype=torch.float64)
        self.fold_in, self.sigma_noise, self.link, self.n_samples = fold_in, sigma_noise, link, n_samples
        self.seed, self.progress, self.posterior_update = seed, progress, posterior_update
        self.residual_samples = residual_samples
        self.solver: EigenSolver | None = None
        self._chol: torch.Tensor | None = None
        self._residual_ntk: EmpiricalNTK | None = None

    # ---------------------------------------------------------------- fit
    def fit(self, train_loader, val_loader=None) -> "ELLA":
        """Kernel -> eigenfunctions -> k x k posterior -> prior tuning. Returns ``self``."""
        device, dtype = model_device_dtype(self.model)
        x, y = collect(train_loader, "train_loader", device, dtype)
        val = collect(val_loader, "val_loader", device, dtype) if val_loader is not None else None
        outputs = batched(self.model, x).reshape(len(x), -1)  # g(x_i, theta_MAP)
        C = outputs.shape[1]
        check_targets(y, C, self.likelihood, "train_loader")
        if val is not None:
            check_targets(val[1], C, self.likelihood, "val_loader")
        self.solver = self._make_solver(len(x), C)
        kernel = self._make_kernel()

        self.solver.fit(kernel, x)
        psi = batched(self.solver.feature_map, x, 512)  # Psi(x_i): (N, C, k)

        if self.likelihood == "regression" and self.sigma_noise is None:
            self.sigma_noise = residual_rms(outputs, y)
        if self.posterior_update:
            lam = hessian_factor(outputs, self.likelihood, self.sigma_noise or 1.0)
            order = torch.randperm(len(x), generator=seeded_generator(self.seed)).to(device)
            counts = self._fold_in_counts(len(x), val is not None)
            curvs = P.cumulative_curvature(psi[order], lam[order], counts)
        else:  # no likelihood update: G = delta I_k, delta the inverse scale of the kernel
            counts, curvs = [0], torch.zeros(1, self.k, self.k, dtype=torch.float64, device=device)

        if self.prior_precision is None and val is not None:
            xv, yv = val
            mean_v = batched(self.model, xv).reshape(len(xv), -1)
            psi_v = batched(self.solver.feature_map, xv, 512)
            residual_v = self._residual(xv, psi_v) if self.residual_samples else None
            targets_v = yv.reshape(mean_v.shape) if self.likelihood == "regression" else yv
            t, delta, self.tuning_scores = P.tune_prior(curvs, self.prior_grid, mean_v, psi_v, targets_v,
                                                        self.likelihood, self.link, self.sigma_noise or 1.0, residual_v)
        else:
            t, delta = len(counts) - 1, self.prior_precision or 1.0
        self.prior_precision, self.num_folded = delta, counts[t]
        self.curvature = curvs[t]
        self._set_factor(P.cholesky_precision(self.curvature, delta))
        return self

    def _set_factor(self, chol: torch.Tensor) -> None:
        """Keep ``L`` and the map ``psi(x) -> F(x) = psi(x) diag(sqrt(mu)) L^{-T}`` used at prediction."""
        self._chol = chol
        dtype = model_device_dtype(self.model)[1]
        scale = self.solver.eigenvalues.double().clamp_min(0).sqrt()
        self._scale = scale.to(dtype)
        self._psi_to_factor = (P.inverse_factor(chol) * scale).to(dtype)

    def _residual(self, x: torch.Tensor, feature_map: torch.Tensor) -> torch.Tensor:
        """``r(x)`` from S' random directions of the NTK estimator, seeded apart from the kernel's own."""
        if self._residual_ntk is None:
            ntk = self.kernel if isinstance(self.kernel, EmpiricalNTK) else self._make_kernel()
            self._residual_ntk = ntk.resampled(self.residual_samples, ntk.seed + 1)
        return P.residual_variance(self._residual_ntk.features(x), feature_map)

    def _make_kernel(self) -> Kernel:
        if isinstance(self.kernel, Kernel):
            return self.kernel
        if self.kernel == "sgd-trajectory":
            return SGDTrajectoryKernel(**{"progress": self.progress, **self.kernel_kwargs})
        opts = {"seed": self.seed, "progress": self.progress, **self.kernel_kwargs}
        return EmpiricalNTK(self.model, **opts)

    def _make_solver(self, n: int, C: int) -> EigenSolver:
        if isinstance(self.features, EigenSolver):
            solver = self.features
        elif self.features == "nystrom":
            solver = Nystrom(self.k, **{"seed": self.seed, **self.feature_kwargs})
        else:
            opts = {"seed": self.seed, "progress": self.progress, "model": self.model, **self.feature_kwargs}
            solver = NeuralEF(self.k, **opts)
        limit = min(n, solver.num_points) if isinstance(solver, Nystrom) else n * C
        if solver.k > limit:
            raise ValueError(f"`k` = {solver.k} is larger than possible: at most {limit} for these data and features")
        return solver

    def _fold_in_counts(self, n: int, has_val: bool) -> list[int]:
        if self.fold_in == "all" or (self.fold_in == "tune" and not has_val):
            return [n]
        if self.fold_in == "tune":
            return sorted({max(1, math.ceil(n * i / 10)) for i in range(1, 11)})
        return [min(self.fold_in, n)]

    # ---------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if self._chol is None:
            raise RuntimeError("ELLA is not fitted: call `fit(train_loader, val_loader)` first")

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``Psi(x) = psi(x) sqrt(mu)``, shape ``(B, C, k)``."""
        self._check_fitted()
        return self.solver.feature_map(x)

    def _on_model(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device, floating inputs in its dtype."""
        device, dtype = model_device_dtype(self.model)
        return x.to(device=device, dtype=dtype if x.dtype.is_floating_point else None)

    @torch.no_grad()
    def _mean_and_factor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_fitted()
        x = self._on_model(x)
        mean = self.model(x).reshape(len(x), -1)
        psi = self.solver(x)
        # psi(x) -> Psi(x) = psi sqrt(mu) -> F(x) = Psi L^{-T}, with both maps folded into one k x k matrix
        factor = P.predictive_factor(psi, self._psi_to_factor)
        if not self.residual_samples:
            return mean, factor
        # F -> [F, sqrt(r / delta) I_C]: the prior variance outside the eigenfunctions' span
        return mean, P.with_isotropic(factor, self._residual(x, psi * self._scale) / self.prior_precision)

    @torch.no_grad()
    def residual_variance(self, x: torch.Tensor) -> torch.Tensor:
        """``r(x) / delta``, shape ``(B,)``: the prior variance the k eigenfunctions leave out, added to every
        output's predictive variance when ``residual_samples > 0``.

        ``r(x) = max(0, tr kappa(x, x) - ||Psi(x)||_F^2) / C``, with ``tr kappa(x, x)`` estimated by
        Hutchinson's estimator from ``residual_samples`` random weight directions.
        """
        self._check_fitted()
        if not self.residual_samples:
            raise ValueError("`residual_variance` needs `residual_samples` > 0")
        x = self._on_model(x)
        return self._residual(x, self.solver.feature_map(x)) / self.prior_precision

    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``f(x) ~ N(mean, cov)``: mean ``(B, C)`` and covariance ``(B, C, C)``."""
        mean, factor = self._mean_and_factor(x)
        return mean, factor @ factor.transpose(1, 2)

    def predict(self, x: torch.Tensor, link: str | None = None, n_samples: int | None = None):
        """Classification: class probabilities ``(B, C)`` by the ``link`` approximation.
        Regression: ``(mean, var)`` of the observations, ``var = diag(Psi G^-1 Psi^T) + sigma^2``."""
        mean, factor = self._mean_and_factor(x)
        if self.likelihood == "regression":
            return mean, factor.pow(2).sum(-1) + self.sigma_noise**2
        gen = seeded_generator(self.seed)
        return link_probs(mean, factor, link or self.link, n_samples or self.n_samples, gen)

    __call__ = predict

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the fitted posterior (not the model) to ``path``, with a format version and the model's
        parameter count and weight fingerprint, which :meth:`load` checks."""
        self._check_fitted()
        if not isinstance(self.features, str) or not isinstance(self.kernel, str):
            raise ValueError("only posteriors built from the named kernels and features ('ntk' / "
                             "'sgd-trajectory', 'neuralef' / 'nystrom') can be saved")
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, "num_params": num_parameters(self.model),
                    "fingerprint": weights_fingerprint(self.model), "features": self.features,
                    "config": {**{name: getattr(self, name) for name in _SAVED},
                               "feature_kwargs": {k: v for k, v in self.feature_kwargs.items() if k != "net"},
                               "kernel_kwargs": {k: v for k, v in self.kernel_kwargs.items() if k != "trajectory"},
                               "kernel": self.kernel, "posterior_update": self.posterior_update},
                    "curvature": self.curvature, "solver": self.solver.state_dict()}, path)

    @classmethod
    def load(cls, path, model: nn.Module, eigenfunction_net: nn.Module | None = None) -> "ELLA":
        """Load a posterior saved by :meth:`save` onto ``model`` (the same trained network).

        Raises:
            ValueError: if the file is not an ella posterior of a supported version, or ``model`` is not
                the network it was fitted to (parameter count or weights differ).
        """
        state = torch.load(path, map_location=next(model.parameters()).device, weights_only=False)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved ella posterior")
        if state["version"] > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {state['version']}; this ella reads up to {FORMAT_VERSION}")
        if state["num_params"] != num_parameters(model):
            raise ValueError(f"`model` has {num_parameters(model)} parameters but the posterior in {path} was "
                             f"fitted to a model with {state['num_params']}")
        if state["fingerprint"] != weights_fingerprint(model):
            raise ValueError(f"`model` has different weights from the model the posterior in {path} was fitted to")
        cfg = state["config"]
        kwargs = {name: cfg[name] for name in ("likelihood", "k", "link", "n_samples", "seed", "sigma_noise",
                                               "prior_precision", "fold_in", "kernel_kwargs", "feature_kwargs")}
        post = cls(model, features=state["features"], progress=False, residual_samples=cfg.get("residual_samples", 0),
                   **kwargs)
        post.kernel, post.posterior_update = cfg.get("kernel", "ntk"), cfg.get("posterior_update", True)
        post.num_folded, post.curvature = cfg["num_folded"], state["curvature"]
        if state["features"] == "nystrom":
            post.solver = Nystrom(post.k).load_state_dict(state["solver"], post._make_kernel())
        else:
            net_kw = {} if eigenfunction_net is None else {"net": eigenfunction_net}
            post.solver = NeuralEF(post.k, model=model, seed=post.seed, **net_kw).load_state_dict(state["solver"])
        post._set_factor(P.cholesky_precision(post.curvature, post.prior_precision))
        return post

    # ---------------------------------------------------------------- derived quantities
    @property
    def posterior_precision(self) -> torch.Tensor:
        """``G = sum_i Psi_i^T Lambda_i Psi_i + delta I_k`` (float64)."""
        self._check_fitted()
        return self._chol @ self._chol.T

    @property
    def posterior_covariance(self) -> torch.Tensor:
        """``G^{-1}`` (float64), from the Cholesky factor."""
        self._check_fitted()
        return torch.cholesky_inverse(self._chol)

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``mu``: the kernel eigenvalues behind the feature map."""
        self._check_fitted()
        return self.solver.eigenvalues

    @property
    def name(self) -> str:
        kind = self.features if isinstance(self.features, str) else type(self.features).__name__.lower()
        if self.kernel == "sgd-trajectory" or isinstance(self.kernel, SGDTrajectoryKernel):
            return "ella_sgd_trajectory" if kind == "neuralef" else f"ella_sgd_trajectory_{kind}"
        return f"ella_{kind}_residual" if self.residual_samples else f"ella_{kind}"
