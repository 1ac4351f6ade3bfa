"""The registry of compared methods: one builder per row of a comparison table.

A builder takes the :class:`~ella_lab.compare.problems.Problem` (the MAP network, its data and recipe), the
:class:`Settings` and the progress flag, and returns an unfitted method of ella's protocol
(:class:`ella.methods.Method`). A builder raises :class:`NotApplicable` when the method cannot run on the
problem by design (e.g. exact LLA on a network too large for a dense GGN); that is reported as such, never
silently dropped. Any other exception is a failure of the method.

Register another method with::

    @register("my_method")
    def _(problem, settings, progress):
        return MyMethod(problem.model, problem.likelihood, ...)

The SGD-trajectory rows (``ella_sgd_trajectory``, ``swa``, ``swag``) come from
:func:`ella_lab.trajectory.trajectory_methods`, which records one trajectory continuing the MAP training and
builds all three from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from ella.eigen import NeuralEF, Nystrom
from ella.kernels import EmpiricalNTK
from ella.methods import (
    ELLA,
    KFACLLA,
    MAP,
    DiagLLA,
    ExactLLA,
    LaplaceTorchELLA,
    LastLayerKFAC,
    LastLayerLLA,
    Method,
    NativeLaplaceELLA,
    NativeVaLLA,
    Predictive,
    TemperatureScaling,
    Tuning,
)
from ella.utils import num_parameters

from ..trajectory import trajectory_methods

__all__ = ["Settings", "NotApplicable", "METHODS", "TRAJECTORY_METHODS", "register", "build", "check_methods"]


@dataclass
class Settings:
    """Hyperparameters of the compared methods (none of them chosen on test data).

    Attributes:
        k: eigenfunctions / Nystrom directions of every ELLA variant (ELLA paper: 20).
        link: the link of every Gaussian-predictive method (``"margin"``, ``"probit"`` or ``"mc"``).
        prior_grid: ``(log10 min, log10 max, points)`` of the validation grid of ELLA, exact LLA and the
            laplace-torch baselines' ``prior="gridsearch"``.
        fold_in: ELLA's number of folded-in training points (``"tune"``: chosen on validation NLL).
        ntk_estimator, ntk_samples: the NTK random features of ``ella_neuralef``.
        neuralef_steps, neuralef_lr: NeuralEF optimisation steps and Adam learning rate. The defaults (fd,
            250 samples, 2000 steps, lr 5e-3) were chosen on the MNIST-1D CNN's validation NLL by
            ``benchmarks/select_ella.py`` (the cheapest setting within 2 seed-std of the best).
        residual_samples: S' of ``ella_neuralef_residual``, the random weight directions estimating the prior
            variance outside the k eigenfunctions (relative noise of the trace about ``sqrt(2 / (C S'))``, 16%
            for 10 classes; prediction costs S' more forward passes).
        kernel_points: M of every ``ELLA`` row, the training inputs the eigenfunctions are learned on (5000:
            all of MNIST-1D's 3,500; ``ELLA``'s default is 2000).
        nystrom_points: M of ``ella_nystrom`` and ``laplace_torch_ella`` (ELLA paper: 2000).
        laplace_prior: prior precision of ``kfac_lla``, ``diag_lla``, ``last_layer_lla``: ``"gridsearch"``
            (validation NLL, like the others) or ``"marglik"`` (Laplace evidence).
        laplace_torch_grid: grid size of laplace-torch's own ELLA grid search (its default, 100).
        valla_inducing: inducing outputs of ``laplace_torch_valla`` (VaLLA paper's table: 100 and 500).
        exact_max_params: the largest network ``exact_lla`` runs on.
        trajectory: options of :func:`ella_lab.trajectory.trajectory_methods` (k, neuralef_steps, ...).
    """

    k: int = 20
    link: str = "margin"
    prior_grid: tuple = (-4.0, 4.0, 33)
    fold_in: str | int = "tune"
    ntk_estimator: str = "fd"
    ntk_samples: int = 250
    neuralef_steps: int = 2000
    neuralef_lr: float = 5e-3
    residual_samples: int = 8
    kernel_points: int = 5000
    nystrom_points: int = 2000
    laplace_prior: str = "gridsearch"
    laplace_torch_grid: int = 100
    valla_inducing: int = 100
    exact_max_params: int = 8000
    trajectory: dict = field(default_factory=lambda: {"k": 10, "neuralef_steps": 2000})

    def grid(self):
        import torch

        lo, hi, n = self.prior_grid
        return torch.logspace(lo, hi, int(n), dtype=torch.float64)

    def neuralef(self, model, seed: int = 0, progress: bool = False, steps: int | None = None) -> dict:
        """``ELLA(model, **settings.neuralef(model))``: the NTK estimator and the NeuralEF optimisation."""
        return {
            "kernel": EmpiricalNTK(model, self.ntk_estimator, self.ntk_samples, seed=seed, progress=progress),
            "solver": NeuralEF(
                self.k, steps=steps or self.neuralef_steps, lr=self.neuralef_lr, seed=seed, progress=progress
            ),
        }

    def to_dict(self) -> dict:
        return asdict(self)


class NotApplicable(Exception):
    """The method does not apply to this problem by design (the reason is reported in its row)."""


Builder = Callable[..., object]
METHODS: dict[str, Builder] = {}
TRAJECTORY_METHODS = ("ella_sgd_trajectory", "swa", "swag")


def register(name: str):
    """Decorator adding ``builder(problem, settings, progress)`` to :data:`METHODS` under ``name``."""

    def add(builder: Builder) -> Builder:
        METHODS[name] = builder
        return builder

    return add


def check_methods(names) -> None:
    """A ``ValueError`` naming every name in ``names`` that is not registered."""
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; registered: {list(METHODS)}")


def build(name: str, problem, settings: Settings, progress: bool = False):
    """The unfitted method ``name`` for ``problem``; ``ValueError`` for an unknown name."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {list(METHODS)}")
    try:
        return METHODS[name](problem, settings, progress)
    except ImportError as e:  # an optional dependency (laplace-torch) is not installed
        raise NotApplicable(str(e)) from e


# ------------------------------------------------------------------ builders
@register("map")
def _map(problem, settings, progress) -> Method:
    return MAP(problem.model, problem.likelihood)


@register("temperature_scaling")
def _temperature(problem, settings, progress) -> Method:
    return TemperatureScaling(problem.model, problem.likelihood)


def _laplace(cls, problem, settings, progress) -> Method:
    return cls(
        problem.model,
        problem.likelihood,
        prior=settings.laplace_prior,
        link=settings.link,
        prior_grid=settings.grid(),
        seed=problem.seed,
        progress=progress,
    )


@register("last_layer_kfac_marglik")
def _last_layer_kfac_marglik(problem, settings, progress) -> Method:
    """laplace-torch's default Laplace (last layer, KFAC) as its README shows it: the marginal-likelihood prior and
    the probit link."""
    return LastLayerKFAC(
        problem.model, problem.likelihood, prior="marglik", link="probit", seed=problem.seed, progress=progress
    )


@register("last_layer_lla_marglik")
def _last_layer_marglik(problem, settings, progress) -> Method:
    """Last-layer LLA with the full last-layer GGN, the marginal-likelihood prior and the probit link."""
    return LastLayerLLA(
        problem.model, problem.likelihood, prior="marglik", link="probit", seed=problem.seed, progress=progress
    )


@register("laplace_torch_native_ella")
def _native_ella(problem, settings, progress) -> Method:
    return NativeLaplaceELLA(
        problem.model,
        problem.likelihood,
        k=settings.k,
        subsample_size=settings.nystrom_points,
        grid_size=settings.laplace_torch_grid,
        seed=problem.seed,
        progress=progress,
    )


@register("laplace_torch_valla")
def _valla(problem, settings, progress) -> Method:
    return NativeVaLLA(
        problem.model, problem.likelihood, num_inducing=settings.valla_inducing, seed=problem.seed, progress=progress
    )


@register("last_layer_lla")
def _last_layer(problem, settings, progress) -> Method:
    return _laplace(LastLayerLLA, problem, settings, progress)


@register("diag_lla")
def _diag(problem, settings, progress) -> Method:
    return _laplace(DiagLLA, problem, settings, progress)


@register("kfac_lla")
def _kfac(problem, settings, progress) -> Method:
    return _laplace(KFACLLA, problem, settings, progress)


@register("laplace_torch_ella")
def _laplace_torch_ella(problem, settings, progress) -> Method:
    return LaplaceTorchELLA(
        problem.model,
        problem.likelihood,
        k=settings.k,
        subsample_size=settings.nystrom_points,
        seed=problem.seed,
        progress=progress,
        tuning=Tuning(prior_grid=settings.grid()),
        predictive=Predictive(link=settings.link),
    )


@register("exact_lla")
def _exact(problem, settings, progress) -> Method:
    P = num_parameters(problem.model)
    if P > settings.exact_max_params:
        raise NotApplicable(
            f"P = {P:,} weights > exact_max_params = {settings.exact_max_params:,}: a dense "
            f"{P:,} x {P:,} GGN is not formed"
        )
    return ExactLLA(
        problem.model,
        problem.likelihood,
        max_params=settings.exact_max_params,
        seed=problem.seed,
        progress=progress,
        tuning=Tuning(prior_grid=settings.grid()),
        predictive=Predictive(link=settings.link),
    )


def _ella(problem, settings, progress, residual=None, **kwargs) -> Method:
    return ELLA(
        problem.model,
        problem.likelihood,
        kernel_points=settings.kernel_points,
        seed=problem.seed,
        progress=progress,
        **kwargs,
        tuning=Tuning(prior_grid=settings.grid(), fold_in=settings.fold_in, residual=residual),
        predictive=Predictive(link=settings.link),
    )


@register("ella")
def _ella_defaults(problem, settings, progress) -> Method:
    """``ELLA(model)`` with the library's defaults: none of the benchmark's settings."""
    return ELLA(problem.model, problem.likelihood, seed=problem.seed, progress=progress)


@register("ella_nystrom")
def _ella_nystrom(problem, settings, progress) -> Method:
    return _ella(problem, settings, progress, solver=Nystrom(settings.k, settings.nystrom_points, seed=problem.seed))


@register("ella_neuralef")
def _ella_neuralef(problem, settings, progress) -> Method:
    return _ella(problem, settings, progress, **settings.neuralef(problem.model, problem.seed, progress))


@register("ella_neuralef_residual")
def _ella_neuralef_residual(problem, settings, progress) -> Method:
    return _ella(
        problem,
        settings,
        progress,
        residual=settings.residual_samples,
        **settings.neuralef(problem.model, problem.seed, progress),
    )


def _trajectory(name: str):
    def builder(problem, settings, progress):
        if problem.likelihood != "classification":
            raise NotApplicable("trajectory_methods builds classification methods only")
        if "trajectory_methods" not in problem.cache:  # one recorded trajectory for all three rows
            problem.cache["trajectory_methods"] = trajectory_methods(
                problem.splits,
                problem.model,
                problem.recipe,
                seed=problem.seed,
                progress=progress,
                **settings.trajectory,
            )
        return problem.cache["trajectory_methods"][name]

    return builder


for _name in TRAJECTORY_METHODS:
    register(_name)(_trajectory(_name))
