"""Linearised Laplace in a feature space with the MAP network as the mean: what ELLA and exact LLA share.

A subclass gives features ``phi(x)`` in ``R^{C x D}`` (:meth:`LinearisedLaplace._features`): ELLA the feature map
``Psi(x)`` of ``k`` eigenfunctions, exact LLA the Jacobian ``J(x)``. Everything else is here, in the math of
:mod:`ella.posterior`:

1. the door pass (:func:`~ella.methods.survey.survey`) checks the data and keeps the sample the features are
   learned on;
2. one streamed pass over the training loader accumulates ``A = sum_i phi_i^T Lambda_i phi_i`` in float64,
   batch by batch (for ``fold_in="tune"`` one ``A`` per candidate number of folded-in points, in a seeded random
   order of the points); the training set is never held whole;
3. the validation loader gives the MAP means and the features ``(V, C, D)``, nothing more;
4. :func:`~ella.methods.search.search` picks the prior precision ``delta`` (and, for regression, the noise
   scale ``s``, with ``sigma_c = s rho_c``) on validation NLL, or by the Laplace evidence of the linearised
   model with its weight prior without validation data (regression); where the subclass offers several forms of
   the isotropic prior variance ``r(x) / delta`` outside the features' span
   (:attr:`LinearisedLaplace.isotropic_choices`, "none" among them), the best;
5. prediction is ``F(x) = phi(x) W`` with the ``D x D`` basis ``W`` of :func:`~ella.posterior.factor_basis`.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod

import torch
from torch import nn

from .. import batches, distributed, files
from ..checks import check_finite_outputs
from ..posterior import curvature, eigen_curvature, factor_basis, laplace_evidence, scales
from ..predictive import hessian_parts, predictive_nll, with_isotropic
from ..utils import progress, seeded_generator, timed, trainable_parameters
from . import persistence
from .base import GaussianMethod
from .search import DEFAULT_NOISE_GRID, DEFAULT_PRIOR_GRID, Choice, search
from .settings import Predictive, Tuning, check_moved, or_default
from .survey import Survey, survey


def _release_cuda_memory(model) -> None:
    """Between the stages of a fit on a GPU, hand the cached blocks of the last stage back to the device."""
    if next(model.parameters()).is_cuda:
        torch.cuda.empty_cache()


class LinearisedLaplace(GaussianMethod):
    """The linearised Laplace approximation in the feature space of :meth:`_features` (see the module docstring).

    Args:
        model: the trained network ``g(x, theta_MAP)`` (eval mode), outputs ``(B, C)`` or an object with
            ``logits``; never modified.
        likelihood: ``"classification"`` or ``"regression"``.
        tuning: the hyperparameters, each fixed or searched (:class:`~ella.methods.settings.Tuning`; default: all
            searched, ``fold_in`` the subclass's :attr:`default_fold_in`). Without validation data a classifier's
            ``delta`` is 1.0 (with a warning) and a regression's are set by the evidence.
        predictive: the link, its Monte-Carlo samples and the batch size of prediction
            (:class:`~ella.methods.settings.Predictive`; ``batch_size`` by default :attr:`default_batch_size`).
        seed: seed of the method's randomness (the fold-in order, the ``"mc"`` link's draws, a subclass's own).
        progress: show progress bars.

    Fitted: ``prior_precision_``, ``noise_`` (regression; ``noise_scale_`` is ``s``), ``num_folded_``, ``num_train_``,
    ``evals_`` and ``evecs_`` (the curvature's eigendecomposition, float64 whatever the model's dtype), ``basis_``
    (``W``, in the model's dtype), ``isotropic_`` (the option of :meth:`_isotropic` the predictive adds as
    ``r(x) / delta``), ``search_`` (the :class:`~ella.methods.search.Choice`, or ``None`` when nothing was tuned),
    ``stage_seconds_`` (wall-clock seconds of the ``survey``, ``features``, ``curvature`` and ``search`` stages).
    """

    prior_precision_: float | None = None
    #: ``fold_in`` where :class:`~ella.methods.settings.Tuning` leaves it as ``None``.
    default_fold_in: str | int = "all"
    #: ``batch_size`` where :class:`~ella.methods.settings.Predictive` leaves it as ``None``.
    default_batch_size: int = 512

    def __new__(cls, *args, **kwargs):
        check_moved(cls, kwargs)  # an argument of earlier versions: where it went
        return super().__new__(cls)

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        *,
        tuning: Tuning | None = None,
        predictive: Predictive | None = None,
        seed: int = 0,
        progress: bool = True,
    ):
        self.tuning = or_default(Tuning, tuning, "tuning")
        self.predictive = or_default(Predictive, predictive, "predictive")
        super().__init__(
            model,
            likelihood,
            link=self.predictive.link,
            n_samples=self.predictive.n_samples,
            sigma_noise=self.tuning.sigma_noise,
            seed=seed,
            batch_size=self.predictive.batch_size or self.default_batch_size,
            progress=progress,
        )
        self.fold_in = self.default_fold_in if self.tuning.fold_in is None else self.tuning.fold_in
        if self.tuning.residual is not None and self.tuning.residual != "none" and not self.has_residual:
            raise ValueError(f"`tuning.residual` = {self.tuning.residual!r}: {type(self).__name__} has no residual")

    # ---------------------------------------------------------------- what a subclass gives
    #: training inputs the door pass keeps for :meth:`_prepare` (ELLA's kernel points).
    kernel_points: int = 0
    #: the features offer a residual, the prior variance outside their span (a ``tuning.residual`` to choose).
    has_residual: bool = False
    #: the options of :meth:`_isotropic` scored on validation NLL with the prior, the best kept (without validation
    #: data: the first); ``"none"`` adds nothing.
    isotropic_choices: tuple = ("none",)

    def _prepare(self, data: Survey, train_loader) -> None:
        """Fit what the features need (ELLA: the kernel's eigenfunctions on ``data.sample``)."""

    @abstractmethod
    def _num_features(self) -> int:
        """D."""

    @abstractmethod
    def _features(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g(x) (B, C), phi(x) (B, C, D))`` for a piece of inputs on the model's device."""

    def _left_out_curvature(self, num_points: int, rho: torch.Tensor, captured: float) -> tuple[float, int] | None:
        """``(T, R)``: the trace and the number of directions of the regression curvature at unit noise (outputs
        whitened by ``rho`` ``(C,)``, over ``num_points`` training points) outside the features' span, whose trace is
        ``captured``; ``None`` where the features span it all (exact LLA) or it is unknown."""
        return None

    def _isotropic(self, x, phi: torch.Tensor, option) -> torch.Tensor | None:
        """Prior variance ``r(x)`` ``(B,)`` added as ``r / delta`` to every output with the isotropic ``option``
        (one of :attr:`isotropic_choices`), or ``None``."""
        return None

    # ---------------------------------------------------------------- fit
    # the tuning as the fit reads it: the defaults in place of what it leaves as None
    @property
    def prior_precision(self) -> float | None:
        return self.tuning.prior_precision

    @property
    def prior_grid(self) -> torch.Tensor:
        grid = self.tuning.prior_grid
        return DEFAULT_PRIOR_GRID if grid is None else torch.tensor(grid, dtype=torch.float64)

    @property
    def noise_grid(self) -> torch.Tensor:
        grid = self.tuning.noise_grid
        return DEFAULT_NOISE_GRID if grid is None else torch.tensor(grid, dtype=torch.float64)

    def _fit(self, train_loader, val_loader) -> None:
        self.stage_seconds_ = seconds = {}
        with timed(seconds, "survey"):
            data = survey(
                self.model, self.likelihood, train_loader, val_loader, self.kernel_points, self.seed, self.progress
            )
        self.num_train_, self.input_spec_ = data.num_train, data.input_spec
        C = data.num_outputs
        fixed = self._fixed_noise(C, torch.zeros((), dtype=torch.float64))  # (checked before the long work)
        with timed(seconds, "features"):
            self._prepare(data, train_loader)
            _release_cuda_memory(self.model)
        rho = None if self.likelihood == "classification" else (fixed if fixed is not None else data.output_scale)
        tune_noise = self.likelihood == "regression" and fixed is None
        tune_prior = self.prior_precision is None
        counts = self._fold_in_counts(data.num_train, data.num_val > 0)
        options = self.isotropic_choices if data.num_val else self.isotropic_choices[:1]
        need_evidence = not data.num_val and tune_noise
        with timed(seconds, "curvature"):
            stats = self._accumulate(train_loader, data.num_train, counts, rho, need_evidence)
            eig = [eigen_curvature(curv) for curv in stats["curvature"]]
            _release_cuda_memory(self.model)

        with timed(seconds, "search"):
            if data.num_val and (tune_prior or tune_noise or len(counts) * len(options) > 1):
                choice = search(
                    self._validation_score(val_loader, eig, rho, options),
                    self.prior_grid if tune_prior else None,
                    self.noise_grid if tune_noise else None,
                    "validation NLL",
                )
            elif need_evidence:
                warnings.warn(
                    "no `val_loader`: the regression noise (and prior precision) are set by the Laplace "
                    "marginal likelihood of the linearised model on the training data; validation data "
                    "are more reliable when the network overfits" + self._captured_note(eig[-1][0], stats, rho),
                    UserWarning,
                    stacklevel=3,
                )
                choice = search(
                    self._evidence_score(eig, stats, rho),
                    self.prior_grid if tune_prior else None,
                    self.noise_grid,
                    "negative log evidence",
                )
            else:
                if tune_prior:
                    warnings.warn(
                        "no `val_loader`: the prior precision is not tuned; using 1.0 (pass `val_loader` or "
                        "`prior_precision`)",
                        UserWarning,
                        stacklevel=3,
                    )
                choice = None
        # candidate index = t * len(options) + (which isotropic option)
        t, o = (len(counts) - 1, len(options) - 1) if choice is None else divmod(choice.index, len(options))
        self.isotropic_ = options[o]
        delta = self.prior_precision or (choice.prior_precision if choice and tune_prior else 1.0)
        s = choice.noise_scale if choice is not None and tune_noise else 1.0
        self.search_: Choice | None = choice
        self.prior_precision_, self.num_folded_ = delta, counts[t]
        self.noise_ = None if rho is None else (s * rho).to(self._dtype)
        self.evals_, self.evecs_ = eig[t]
        self.noise_scale_ = s
        self.basis_ = factor_basis(self.evals_, self.evecs_, delta, s).to(self._dtype)

    def _fold_in_counts(self, n: int, has_val: bool) -> list[int]:
        if self.fold_in == 0:  # the prior alone
            return [0]
        if self.fold_in == "all" or (self.fold_in == "tune" and not has_val):
            return [n]
        if self.fold_in == "tune":
            return sorted({max(1, -(-n * i // 10)) for i in range(1, 11)})
        return [min(self.fold_in, n)]

    @torch.no_grad()
    def _accumulate(self, loader, n: int, counts: list[int], rho, need_evidence: bool) -> dict:
        """One pass over the training loader: per fold-in candidate ``t`` the curvature ``A_t`` ``(D, D)`` and, for
        the evidence, ``c_t = sum r^T Lambda r`` and the number of values."""
        D, T = self._num_features(), len(counts)
        out = {
            "curvature": torch.zeros(T, D, D, dtype=torch.float64),
            "c": torch.zeros(T, dtype=torch.float64),
            "n": torch.zeros(T, dtype=torch.float64),
        }
        if counts == [0]:
            return out
        # the seeded random order of the points: point i is folded into candidate t when its rank < counts[t]
        rank = None
        if T > 1 or counts[0] < n:
            order = torch.randperm(n, generator=seeded_generator(self.seed))
            rank = torch.empty(n, dtype=torch.long)
            rank[order] = torch.arange(n)
        device = next(self.model.parameters()).device
        bounds = torch.tensor(counts, device=device)
        rank = None if rank is None else rank.to(device)
        out = {key: value.to(device) for key, value in out.items()}
        position = 0
        size = batches.num_batches(loader)
        for index, batch in enumerate(progress(loader, self.progress, "curvature", total=size)):
            x, y = batches.split_batch(batch, "train_loader")
            rows = batches.num_rows(x)
            position += rows
            if rows == 0 or not distributed.mine(index):  # another process folds this batch in
                continue
            mean, phi = self._features(batches.to_model(x, self.model))
            check_finite_outputs(mean, f"train_loader (batch {index})")
            d, u = hessian_parts(mean.double(), self.likelihood, 1.0 if rho is None else rho.to(device))
            # the first candidate holding each point (T: none); all points are in candidate 0 when nothing is tuned
            first = None if rank is None else torch.searchsorted(bounds, rank[position - rows : position], right=True)
            for t in range(T):
                sel = slice(None) if first is None else first == t
                out["curvature"][t] += curvature(phi[sel], d[sel], None if u is None else u[sel])
                if need_evidence:  # (regression: Lambda = diag(d))
                    r = (y.to(device).reshape(mean.shape).double() - mean.double())[sel]  # training residuals
                    out["c"][t] += (d[sel] * r * r).sum()
                    out["n"][t] += r.numel()
        # the sums of every process; candidate t holds the points of every candidate before it
        return {key: distributed.total(value).cumsum(0).cpu() for key, value in out.items()}

    @torch.no_grad()
    def _validation_score(self, loader, eig: list, rho, options=("none",)):
        """``score(priors, noises)``: the validation NLL of the predictive for every candidate (fold-in count ``t``
        and isotropic option ``o``, at index ``t * len(options) + o``) and grid value."""
        means, feats, extra, targets = [], [], [], []
        for index, batch in enumerate(loader):
            x, y = batches.split_batch(batch, "val_loader")
            if batches.num_rows(x) == 0 or not distributed.mine(index):  # another process scores this batch
                continue
            x = batches.to_model(x, self.model)
            mean, phi = self._features(x)
            means.append(mean.double().cpu())
            feats.append(phi.double().cpu())
            targets.append(y.cpu())
            extra.append(
                [
                    None if r is None else r.double().cpu()
                    for r in (self._isotropic(x, phi, option) for option in options)
                ]
            )
        if means:  # (a process may hold no validation batch when there are fewer batches than processes)
            mean, y = torch.cat(means), torch.cat(targets)
            iso = [None if extra[0][o] is None else torch.cat([e[o] for e in extra]) for o in range(len(options))]
            phi = torch.cat(feats)
        count = distributed.total(torch.tensor(float(sum(len(m) for m in means)), dtype=torch.float64))

        def score(priors, noises):
            priors = [self.prior_precision or 1.0] if priors is None else priors.tolist()
            noises = [1.0] if noises is None else noises.tolist()
            table = torch.zeros(len(eig) * len(options), len(priors), len(noises), dtype=torch.float64)
            for t, (evals, evecs) in enumerate(eig if means else ()):
                basis = phi @ evecs  # phi(x) U, one candidate at a time: the search rescales its columns
                for o in range(len(options)):
                    for i, delta in enumerate(priors):
                        for j, s in enumerate(noises):
                            variance = None if iso[o] is None else iso[o] / delta
                            noise = 1.0 if rho is None else s * rho
                            table[t * len(options) + o, i, j] = predictive_nll(
                                mean,
                                basis * scales(evals, delta, s),
                                y,
                                self.likelihood,
                                self.link,
                                noise,
                                self.n_samples,
                                self.seed,
                                variance,
                            ).sum()
            return distributed.total(table) / count  # the mean over the validation points of every process

        return score

    def _captured_note(self, evals: torch.Tensor, stats: dict, rho: torch.Tensor) -> str:
        """The share of the training curvature's trace the features hold (all points folded in), where some lies
        outside their span: without validation data nothing checks the predictive variance left there."""
        rest = self._left_out_curvature(int(stats["n"][-1]) // len(rho), rho, float(evals.sum()))
        if rest is None or rest[0] <= 0:
            return ""
        share = float(evals.sum()) / (float(evals.sum()) + rest[0])
        return (
            f" (here the {len(evals)} features hold {share:.0%} of the training curvature's trace, and nothing "
            "checks the predictive variance outside their span)"
        )

    def _evidence_score(self, eig: list, stats: dict, rho: torch.Tensor):
        """``score(priors, noises)``: the negative Laplace log evidence of the linearised model with its weight prior
        (regression; :func:`~ella.posterior.laplace_evidence`)."""
        weight_norm = float(sum(p.double().pow(2).sum() for p in trainable_parameters(self.model).values()))
        C = len(rho)
        rests = [
            self._left_out_curvature(int(n) // C, rho, float(evals.sum())) for (evals, _), n in zip(eig, stats["n"])
        ]

        def score(priors, noises):
            priors = [self.prior_precision or 1.0] if priors is None else priors.tolist()
            table = torch.empty(len(eig), len(priors), len(noises), dtype=torch.float64)
            for t, (evals, _) in enumerate(eig):
                for i, delta in enumerate(priors):
                    for j, s in enumerate(noises.tolist()):
                        table[t, i, j] = -laplace_evidence(
                            evals, float(stats["c"][t]), int(stats["n"][t]), weight_norm, delta, s, rests[t]
                        )
            return table

        return score

    # ---------------------------------------------------------------- predict
    def _mean_factor_isotropic(self, x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mean, phi = self._features(x)
        factor = phi @ self.basis_.to(phi)  # F(x) = phi(x) W
        iso = self._isotropic(x, phi, self.isotropic_)  # r(x): prior variance outside the features' span
        return mean, factor, None if iso is None else iso / self.prior_precision_

    def _mean_and_factor(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        mean, factor, iso = self._mean_factor_isotropic(x)
        return mean, with_isotropic(factor, iso)  # F -> [F, sqrt(r / delta) I_C]

    # ---------------------------------------------------------------- persistence
    def _config(self) -> dict:
        """The constructor's keyword arguments, JSON-ready (what :meth:`load` rebuilds the method from; ``progress``
        aside). A subclass adds its own."""
        return {
            "likelihood": self.likelihood,
            "tuning": self.tuning.as_dict(),
            "predictive": self.predictive.as_dict(),
            "seed": self.seed,
        }

    def _fitted_meta(self) -> dict:
        """Fitted values of a subclass that :meth:`save` records with the common ones (JSON-ready)."""
        return {}

    def _feature_state(self) -> tuple[dict, dict]:
        """``(meta, tensors)`` of what the fitted features need besides the model (ELLA: its kernel and solver)."""
        return {}, {}

    @classmethod
    def _rebuild(cls, model, config: dict, meta: dict, tensors: dict, where: str, **given) -> "LinearisedLaplace":
        """The unfitted method of ``config`` with its fitted features restored from :meth:`_feature_state`'s
        ``(meta, tensors)``; ``given`` are the objects :meth:`load` was handed."""
        if given:
            raise TypeError(f"{cls.__name__}.load takes no {sorted(given)}")
        return cls(model, **persistence.settings(config, where), progress=False)

    def _restore(self, fitted: dict, tensors: dict, where: str) -> None:
        """The fitted state from a file (:func:`~ella.methods.persistence.restore`); a subclass adds its own."""
        persistence.restore(self, fitted, tensors, where)

    def save(self, path) -> None:
        """Write the fitted posterior (not the model) to ``path``: an :mod:`ella.files` file (tensors and JSON,
        checksummed, written atomically) with the method's class, its configuration, its fitted state (the
        curvature's eigendecomposition, the prior and noise, the search record) and the model's parameter count,
        architecture and fingerprint, checked by :meth:`load` (the layout: :mod:`ella.methods.persistence`). Of several
        processes, the first writes it."""
        self._check_fitted()
        persistence.write(self, path)

    @classmethod
    def load(cls, path, model: nn.Module, **given) -> "LinearisedLaplace":
        """Load a posterior written by :meth:`save` onto ``model`` (the same trained network), its configuration
        as it was.

        Args:
            path: the file.
            model: the network it was fitted to (checked: parameter count, its modules, and a fingerprint of its
                parameters and buffers).
            given: objects the file cannot hold, where the method needs them (ELLA: ``kernel``, ``net``).

        Raises:
            ValueError: the file is not a posterior of this method in a supported version, is malformed or
                corrupted, or ``model`` is not the network it was fitted to. Nothing in the file is unpickled,
                and every value is checked before it is used.
        """
        where = str(path)
        meta, tensors = persistence.read(path, model, cls.__name__)
        config, fitted = files.require(meta, "config", dict, where), files.require(meta, "fitted", dict, where)
        try:
            post = cls._rebuild(
                model,
                config,
                files.require(meta, "features", dict, where),
                files.require(tensors, "features", dict, where),
                where,
                **given,
            )
            post._restore(fitted, tensors, where)
        except (KeyError, TypeError, RuntimeError, IndexError, AttributeError) as e:
            raise ValueError(f"{where} is malformed: {type(e).__name__}: {e}") from None
        except ValueError as e:  # a setting the constructor or a solver refuses
            if where in str(e):
                raise
            raise ValueError(f"{where} is malformed: {e}") from None
        return post

    @property
    def posterior_precision(self) -> torch.Tensor:
        """``G = A / s^2 + delta I_D`` (float64), from the curvature's eigendecomposition."""
        self._check_fitted()
        return (self.evecs_ * (self.evals_ / self.noise_scale_**2 + self.prior_precision_)) @ self.evecs_.T

    @property
    def posterior_covariance(self) -> torch.Tensor:
        """``G^{-1} = W W^T`` (float64)."""
        self._check_fitted()
        W = factor_basis(self.evals_, self.evecs_, self.prior_precision_, self.noise_scale_)
        return W @ W.T
