"""``ELLA``: the linearised Laplace approximation of a trained network, reduced to a k x k posterior.

Pipeline (data flows one way)::

    MAP model -> kernel (empirical NTK) -> eigenfunctions psi (NeuralEF, Nystrom or exact; k of them)
              -> Psi(x) = psi(x) sqrt(mu) -> G = sum_i Psi_i^T Lambda_i Psi_i + delta I_k
              -> f(x) ~ N(g(x), Psi(x) G^{-1} Psi(x)^T) -> probabilities

ELLA is :class:`~ella.methods.linearised.LinearisedLaplace` in the feature space of the ``k`` eigenfunctions,
learned on ``kernel_points`` training inputs; the curvature ``G`` is accumulated over the whole training loader.

With the SGD-trajectory kernel the default is the predictive of the trajectory GP itself, without the
likelihood update: ``G = delta I_k``, so ``f(x) ~ N(g(x), Psi Psi^T / delta)`` with ``delta`` the inverse kernel
scale, tuned on validation NLL (``tuning=Tuning(fold_in="tune")`` adds the update).

The k eigenfunctions span the directions many training points pin down: at large N the posterior variance in
their span vanishes at any prior, and what exact LLA keeps is the prior variance outside it. With the NTK the
predictive keeps it as ``Sigma(x) += (r(x) / delta) I_C``, ``r(x) = (t(x) - ||Psi(x)||_F^2) / C``, where
``t(x)`` stands for ``tr kappa(x, x)``: ``residual="learned"`` predicts it from ``Psi(x)`` by a ridge regression
fitted at the kernel points (:func:`~ella.posterior.fit_trace_model`; free at prediction), ``"mean"`` takes the
kernel's mean diagonal there, ``residual=S'`` estimates ``t(x)`` at every input from S' random weight directions
(Hutchinson; S' more forward passes per prediction). The default ``"auto"`` scores the predictive without a
residual, with the ``"mean"`` and with the ``"learned"`` one on validation NLL, each with its prior, and keeps the
best (``residual_``).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .. import batches, distributed, files, names
from ..checks import check_finite_outputs, check_positive_int
from ..eigen import REGISTRY, EigenSolver, Nystrom, RankError
from ..kernels import EmpiricalNTK, Kernel
from ..posterior import fit_trace_model, kernel_trace, modelled_residual, residual_variance
from . import persistence
from .linearised import LinearisedLaplace
from .settings import Predictive, Tuning
from .survey import Survey

TRACE_POINTS, TRACE_SAMPLES = 1000, 16  # kernel points and random directions the trace model is fitted on
# random directions of the default NTK: ELLA reads the kernel's top k and its trace, not its eigenvectors one by
# one. On Fashion-MNIST (the 784-200-200-10 MLP) the test NLL at S = 64, 128, 256, 500, 1000 was .3081, .3079,
# .3078, .3078, .3078 while the kernel stage cost 11.6 to 21.4 s; the CNN's 256 directions cost 137 s of its fit
NTK_SAMPLES = 256
AUTO_JACOBIAN = 2**24  # entries of the M x P Jacobian rows "auto" may form for Nystrom (64 MiB in float32)


class ELLA(LinearisedLaplace):
    """ELLA posterior of a MAP-trained network.

    Args:
        model: the trained network ``g(x, theta_MAP)`` with outputs ``(B, C)`` (logits or regression outputs;
            a tensor or an object with ``logits``), in eval mode. It is never modified.
        likelihood: ``"classification"`` or ``"regression"``.
        k: number of eigenfunctions, the size of the posterior (default 20, or the ``solver``'s own ``k``). The
            default takes fewer where the Gram matrix a Nystrom or exact solver decomposes has fewer eigenpairs
            above round-off (``fit`` warns; ``k_`` is the number used); a ``k`` given is refused there.
        kernel: ``"ntk"`` (the empirical NTK, :class:`~ella.kernels.EmpiricalNTK` by forward-mode JVPs with
            :data:`NTK_SAMPLES` random directions and ``seed``)
            or any :class:`~ella.kernels.Kernel`: ``EmpiricalNTK(model, estimator="fd", num_samples=250)``,
            ``SGDTrajectoryKernel(trajectory)`` (pass the SWA network as ``model``), ...
        solver: ``"auto"`` (default: ``"nystrom"`` on all the kernel points for a small problem, ``"neuralef"``
            otherwise; see below), ``"neuralef"`` (learned eigenfunctions: prediction costs one network forward),
            ``"nystrom"`` (the ELLA paper's exact JVP features from an M x M Jacobian Gram matrix), ``"exact"``
            (eigendecomposition of the Gram matrix on all kernel points) or any :class:`~ella.eigen.EigenSolver`,
            e.g. ``NeuralEF(k=20, steps=2000, lr=5e-3)``. A solver given here is copied before fitting, never
            changed. ``"auto"`` picks Nystrom on all M kernel points when they are the whole training set
            (``N <= kernel_points``), the kernel is the NTK, ``k <= M`` and the ``M x P`` Jacobian rows hold at
            most :data:`AUTO_JACOBIAN` entries: a fit of seconds, with its prediction at ``k`` JVPs per input.
            Otherwise NeuralEF, whose fit has a fixed cost (its steps) and whose prediction costs one forward of
            its network (``python benchmarks/small.py`` measures both on small tabular problems).
        kernel_points: M, the training inputs (a seeded uniform sample of the loader) the kernel's eigenfunctions
            are learned on; memory and forward passes of the kernel stage are O(M C S). The default 2000 is the
            ELLA paper's; on MNIST-1D the test NLL is the same from M = 250 to 3,500 within the seed spread
            while memory grows linearly (``python benchmarks/scale.py --parts m``).
        tuning: the posterior's hyperparameters, each fixed or searched (:class:`~ella.methods.settings.Tuning`:
            ``prior_precision``, ``sigma_noise``, their grids, ``fold_in``, ``residual``). ELLA's defaults:

            - ``fold_in="tune"``: the ELLA paper's selection of the number of training points folded into the
              curvature, from tenths of the training set, with the prior on validation NLL (``"all"`` without
              validation data; 0, the prior alone ``G = delta I_k``, with a kernel that has its own predictive,
              the SGD-trajectory kernel's). On the MNIST-1D CNN folding in all 3,500 points gave a test NLL of
              .1841 and the tuned tenth .1761 (temperature scaling .1787); on Fashion-MNIST's MLP the search keeps
              all 54,000 (3 s more of fit).
            - ``residual="auto"``: the prior variance ``r(x) / delta`` the k eigenfunctions leave out, added to every
              output (see :meth:`residual_variance`; NTK kernel only). ``"none"`` is the ELLA of the paper, whose
              predictive variance lives in the span of the eigenfunctions; ``"learned"`` predicts
              ``tr kappa(x, x)`` from ``Psi(x)`` by a ridge regression on Hutchinson estimates at the kernel points
              (:data:`TRACE_SAMPLES` directions on up to :data:`TRACE_POINTS` of them); ``"mean"`` takes their
              mean: prediction costs nothing more with either; an integer ``S'`` estimates it at every input with
              S' random weight directions by the NTK's estimator: S' more forward passes (or JVPs) per prediction.
              ``"auto"``: ``"none"``, ``"mean"`` or ``"learned"``, whichever gives the lowest validation NLL with
              its prior (the NTK kernel and validation data; ``"none"`` otherwise). On Fashion-MNIST (54,000
              points) the paper's ELLA is MAP at every prior and the residual is what calibrates the MLP
              (``benchmarks/fashion_mnist.py``).
        predictive: the link (``"margin"``, ``"probit"`` or ``"mc"``), its Monte-Carlo samples and the batch size of
            prediction (:class:`~ella.methods.settings.Predictive`; ``batch_size`` 512 by default).
        seed: seed of the kernel's directions, the kernel-point sample, the solver and the ``"mc"`` draws.
        progress: show progress bars.

    Arguments of earlier versions (``prior_precision=``, ``link=``, ``posterior_update=``, ``features=``, ...) raise
    a ``TypeError`` that says where they went.

    Fitted: besides the base class's, ``solver_`` (the fitted eigen-solver: what ``"auto"`` chose),
    ``num_kernel_points_`` (M), ``residual_`` (``"none"``, ``"learned"``, ``"mean"`` or ``S'``: what ``"auto"``
    chose) and ``trace_models_`` (``{"mean": w, "learned": w}``, the trace models' weights in
    :func:`~ella.posterior.trace_design` order; the mean's are zero but the intercept).
    """

    solver_: EigenSolver | None = None

    default_fold_in = "tune"
    has_residual = True  # (with the NTK: checked in the constructor)

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        k: int | None = None,
        kernel: str | Kernel = "ntk",
        solver: str | EigenSolver = "auto",
        *,
        kernel_points: int = 2000,
        tuning: Tuning | None = None,
        predictive: Predictive | None = None,
        seed: int = 0,
        progress: bool = True,
    ):
        super().__init__(model, likelihood, tuning=tuning, predictive=predictive, seed=seed, progress=progress)
        if kernel == "ntk":
            kernel = EmpiricalNTK(model, num_samples=NTK_SAMPLES, seed=self.seed, progress=self.progress)
        elif not isinstance(kernel, Kernel):
            raise ValueError(f"`kernel` must be 'ntk' or an ella.kernels.Kernel, got {kernel!r}")
        # the default k (none given) adapts to the numerical rank of a Gram matrix the solver decomposes
        self._adapt_k = k is None and not isinstance(solver, EigenSolver)
        if isinstance(solver, EigenSolver):
            if k is not None and k != solver.k:
                raise ValueError(f"`k` = {k} must equal the k = {solver.k} of the `solver`")
            k = solver.k
        elif solver == "auto" or solver in names.SOLVERS:
            k = check_positive_int(20 if k is None else k, "k")
            solver = solver if solver == "auto" else self._named_solver(solver, k)
        else:
            raise ValueError(
                f"`solver` must be 'auto', one of {names.SOLVERS} or an ella.eigen.EigenSolver, got {solver!r}"
            )
        # the network is given once: an NTK (or a solver's network) built on another one would describe that one
        ntk_model = getattr(kernel, "model", None) if kernel.in_weight_space else None
        for name, other in (("kernel", ntk_model), ("solver", getattr(solver, "model", None))):
            if other is not None and other is not model:
                raise ValueError(
                    f"`{name}` is built on another network than `model`: build it on `model` "
                    "(the posterior describes one network)"
                )
        self.kernel, self.solver, self.k = kernel, solver, k
        self.kernel_points = check_positive_int(kernel_points, "kernel_points")
        self.residual = "auto" if self.tuning.residual is None else self.tuning.residual
        ntk = kernel.in_weight_space  # the kernel's trace at any input can be estimated: the residual
        if self.residual not in ("auto", "none") and not ntk:
            raise ValueError(
                f"`tuning.residual` = {self.residual!r} needs the NTK kernel (kernel='ntk' or an EmpiricalNTK), "
                f"got {type(kernel).__name__}"
            )
        # "auto" chooses with the prior on validation NLL: no residual, or the mean or the learned trace model's
        self.isotropic_choices = (
            (("none", "mean", "learned") if ntk else ("none",)) if self.residual == "auto" else (self.residual,)
        )
        if self.tuning.fold_in is None and not kernel.posterior_update:
            self.fold_in = 0  # the kernel's own predictive (the SGD-trajectory GP's): the prior alone, G = delta I

    def _auto_solver(self, data: Survey) -> EigenSolver:
        """What ``solver="auto"`` fits: Nystrom on all M kernel points when they are the whole training set, the
        kernel is the NTK, ``k <= M`` and the M x P Jacobian rows hold at most :data:`AUTO_JACOBIAN` entries; NeuralEF
        otherwise."""
        M = batches.num_rows(data.sample)
        small = (
            data.num_train <= self.kernel_points
            and self.kernel.in_weight_space
            and self.k <= M
            and M * self.kernel.num_params <= AUTO_JACOBIAN
        )
        return Nystrom(self.k, M, seed=self.seed) if small else self._named_solver("neuralef", self.k)

    def _named_solver(self, name: str, k: int) -> EigenSolver:
        return REGISTRY[name].named(k, seed=self.seed, progress=self.progress)

    # ---------------------------------------------------------------- the features
    def _num_features(self) -> int:
        return self.solver_.k  # (the configured k, or fewer where the kernel has fewer eigenpairs)

    def _prepare(self, data: Survey, train_loader) -> None:
        """Learn the eigenfunctions on the kernel points; the residual's trace models there."""
        x = batches.to_model(data.sample, self.model)
        self.num_kernel_points_ = batches.num_rows(x)
        with torch.no_grad():  # before the solver: a model output that is not finite there is named now
            check_finite_outputs(batches.outputs(self.model, x, self.batch_size), "the kernel points of train_loader")
        with distributed.sharing():  # every process holds the same kernel points: they split the solver's work
            solver = self._auto_solver(data) if self.solver == "auto" else copy.copy(self.solver)
            try:
                self.solver_ = solver.fit(self.kernel, x)
            except RankError as e:  # fewer eigenpairs than the default k: as many as there are
                if not self._adapt_k or e.rank < 1:
                    raise
                warnings.warn(
                    f"{e}: ELLA uses k = {e.rank}, the eigenpairs there are (pass `k` to choose)",
                    UserWarning,
                    stacklevel=4,
                )
                self.solver_ = solver.with_k(e.rank).fit(self.kernel, x)
        self._set_scale()
        self.trace_models_, self._kernel_diagonal = {}, None
        if {"mean", "learned"} & set(self.isotropic_choices):
            # tr kappa(x, x) by Hutchinson's estimator at (up to TRACE_POINTS of) the kernel points, a uniform
            # sample; the trace model fitted to it, and its mean (the intercept alone)
            sample = batches.take(x, slice(0, TRACE_POINTS))
            features = self.kernel.resampled(TRACE_SAMPLES, self.kernel.seed + 1).features(sample)
            trace = kernel_trace(features)
            self._kernel_diagonal = features.double().pow(2).mean(0).sum(-1) / features.shape[-1]  # E kappa_cc (C,)
            with torch.no_grad():
                psi = torch.cat([self._features(piece)[1] for piece in batches.chunks(sample, self.batch_size)])
            learned = fit_trace_model(psi, trace)
            mean = torch.zeros_like(learned)
            mean[-1] = trace.mean()
            self.trace_models_ = {"mean": mean, "learned": learned}

    def _set_scale(self) -> None:
        # Psi(x) = psi(x) sqrt(mu); the residual's directions are seeded apart from the kernel's own
        self.feature_scale_ = self.solver_.eigenvalues.double().clamp_min(0).sqrt()
        self.residual_kernel_ = (
            self.kernel.resampled(self.residual, self.kernel.seed + 1) if isinstance(self.residual, int) else None
        )

    def _features(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        mean, psi = self.solver_.outputs_and_eigenfunctions(self.model, x)  # one forward pass with net="head"
        psi = psi.to(mean.dtype)  # (the exact solver works in float64)
        return mean, psi * self.feature_scale_.to(psi)

    def _left_out_curvature(self, num_points: int, rho: torch.Tensor, captured: float) -> tuple[float, int] | None:
        # the GGN's trace is the kernel's diagonal summed over the training points, sum_i sum_c kappa_cc(x_i) / rho_c^2
        # (its mean at the kernel points); the GGN has at most min(P, n C) directions, k of them in the features
        if self._kernel_diagonal is None:
            return None
        total = num_points * float((self._kernel_diagonal / rho.double().pow(2)).sum())
        return max(total - captured, 0.0), min(self.kernel.num_params, num_points * len(rho)) - self.solver_.k

    def _isotropic(self, x, phi: torch.Tensor, option) -> torch.Tensor | None:
        if isinstance(option, int):  # tr kappa(x, x) at every input
            return residual_variance(kernel_trace(self.residual_kernel_.features(x)), phi)
        if option in self.trace_models_:  # predicted from Psi(x) by the trace model (or its mean)
            return modelled_residual(phi, self.trace_models_[option])
        return None

    @property
    def k_(self) -> int:
        """The number of eigenfunctions the fitted posterior uses: ``k``, or, for the default ``k``, fewer where the
        kernel has fewer eigenpairs (the numerical rank of the Gram matrix the solver decomposes; ``fit`` warns)."""
        self._check_fitted()
        return self.solver_.k

    @property
    def residual_(self) -> str | int:
        """The residual the fitted predictive adds: ``"none"``, ``"learned"``, ``"mean"`` or ``S'`` (what ``"auto"``
        chose)."""
        self._check_fitted()
        return self.isotropic_

    # ---------------------------------------------------------------- derived quantities
    def feature_map(self, x) -> torch.Tensor:
        """``Psi(x) = psi(x) sqrt(mu)``, shape ``(B, C, k)``."""
        return self._stream(x, lambda piece: self._features(piece)[1])

    def residual_variance(self, x) -> torch.Tensor:
        """``r(x) / delta``, shape ``(B,)``: the prior variance the k eigenfunctions leave out, added to every
        output's predictive variance when the fitted posterior has a residual (``residual_`` is not ``"none"``).

        ``r(x) = max(0, tr kappa(x, x) - ||Psi(x)||_F^2) / C``, with ``tr kappa(x, x)`` predicted from ``Psi(x)`` by
        the trace model (``"learned"``, or its mean over the kernel points for ``"mean"``) or Hutchinson's estimate
        at ``x`` from ``S'`` random weight directions (``residual=S'``).
        """
        if self.residual_ == "none":
            raise ValueError(
                f"`residual_variance` needs a residual: the fitted posterior has none (`residual` = {self.residual!r})"
            )

        def piece(x):
            return self._isotropic(x, self._features(x)[1], self.isotropic_) / self.prior_precision_

        return self._stream(x, piece)

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``mu``: the kernel eigenvalues behind the feature map."""
        self._check_fitted()
        return self.solver_.eigenvalues

    @property
    def name(self) -> str:
        kind = self.solver_.kind if self.solver_ is not None else getattr(self.solver, "kind", "auto")
        if self.kernel.row_name:  # (the SGD-trajectory kernel's rows)
            row = f"ella_{self.kernel.row_name}"
            return row if kind == "neuralef" else f"{row}_{kind}"
        return f"ella_{kind}_residual" if isinstance(self.residual, int) else f"ella_{kind}"

    # ---------------------------------------------------------------- persistence
    def _config(self) -> dict:
        return {
            **super()._config(),
            "k": self.k,
            "solver": "auto" if self.solver == "auto" else None,
            "kernel_points": self.kernel_points,
            "adapt_k": self._adapt_k,
        }

    def _fitted_meta(self) -> dict:
        return {"num_kernel_points": self.num_kernel_points_}

    def _feature_state(self) -> tuple[dict, dict]:
        kernel = (
            {"kind": "ntk", "config": self.kernel.config}
            if self.kernel.in_weight_space
            else {"kind": type(self.kernel).__name__}
        )
        solver_meta, solver_tensors = files.split(self.solver_.state_dict())
        tensors = {"solver": solver_tensors}
        if self.trace_models_:
            tensors["trace_models"] = dict(self.trace_models_)
        return {"kernel": kernel, "solver": solver_meta}, tensors

    @classmethod
    def load(cls, path, model: nn.Module, kernel: Kernel | None = None, net: nn.Module | None = None) -> "ELLA":
        """Load a posterior written by :meth:`save` onto ``model`` (the same trained network); files of format
        every earlier version is read too.

        Args:
            path: the file.
            model: the network it was fitted to (checked: parameter count, its modules, and a fingerprint of its
                parameters and buffers).
            kernel: the kernel, for posteriors fitted with a kernel other than the NTK (which is rebuilt from
                its saved settings).
            net: the eigenfunction network's architecture, for a NeuralEF fitted with a custom ``net`` (or SpIN).

        Raises:
            ValueError: the file is not an ella posterior of a supported version, is malformed or corrupted, or
                ``model`` is not the network it was fitted to. Nothing in the file is unpickled.
        """
        return super().load(path, model, kernel=kernel, net=net)

    @classmethod
    def _rebuild(
        cls,
        model,
        config: dict,
        meta: dict,
        tensors: dict,
        where: str,
        kernel: Kernel | None = None,
        net: nn.Module | None = None,
    ) -> "ELLA":
        kind = files.require(meta, "kernel", dict, where).get("kind")
        if kind == "ntk":  # rebuilt from its saved settings unless given
            if kernel is None:
                settings = files.require(meta["kernel"], "config", dict, where)
                try:
                    kernel = EmpiricalNTK(model, **settings, progress=False)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{where} is malformed: its kernel settings: {e}") from None
            elif not getattr(kernel, "in_weight_space", False):
                raise ValueError(
                    f"the posterior in {where} was fitted with the NTK: `kernel` must be an EmpiricalNTK "
                    f"(or None, to rebuild it), got {type(kernel).__name__}"
                )
        elif kernel is None or type(kernel).__name__ != kind:
            raise ValueError(f"the posterior in {where} was fitted with a {kind} kernel: pass it as `kernel`")
        solver_state = {**files.require(meta, "solver", dict, where), **files.require(tensors, "solver", dict, where)}
        solver_kind = solver_state.get("kind")
        if solver_kind not in names.SOLVERS:
            raise ValueError(f"{where} is malformed: unknown solver kind {solver_kind!r}")
        k = solver_state.get("k", config["k"])  # (fewer than the configured k where the kernel has fewer)
        solver = REGISTRY[solver_kind].named(k, model=model, net=net)
        settings = persistence.settings(
            {key: value for key, value in config.items() if key not in ("k", "solver", "adapt_k")}, where
        )
        post = cls(model, kernel=kernel, solver=solver, progress=False, **settings)
        post.k, post._adapt_k = config["k"], bool(config.get("adapt_k", False))  # the configuration as saved
        if config.get("solver") == "auto":
            post.solver = "auto"
        post.solver_ = copy.copy(solver).load_state_dict(solver_state, kernel)
        post.trace_models_ = dict(tensors.get("trace_models", {}))
        C, k = post.solver_.num_outputs_, post.solver_.k
        for key, weights in post.trace_models_.items():
            files.check_tensor(weights, (2 * C * k + 1,), where, f"trace_models/{key}")
        post._set_scale()
        return post

    def _restore(self, fitted: dict, tensors: dict, where: str) -> None:
        super()._restore(fitted, tensors, where)
        if self.isotropic_ in ("mean", "learned") and self.isotropic_ not in self.trace_models_:
            raise ValueError(f"{where} is malformed: residual choice {self.isotropic_!r} without its trace model")
        self.num_kernel_points_ = fitted.get("num_kernel_points")
