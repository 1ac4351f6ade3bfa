"""What a linearised posterior is told besides its features, as two values: :class:`Tuning`, its hyperparameters
(each fixed or searched), and :class:`Predictive`, how its predictions are formed and computed.

::

    ELLA(model, tuning=Tuning(prior_precision=1.0), predictive=Predictive(link="probit"))

Both are frozen and checked when made (a ``ValueError`` naming the field), hold plain Python values (what a saved
posterior records, :meth:`Tuning.as_dict`), and leave to the method what they leave as ``None``: its default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .. import names
from ..checks import (
    check_choice,
    check_float,
    check_fold_in,
    check_grid,
    check_int,
    check_noise,
    check_positive_int,
    check_residual,
)


@dataclass(frozen=True)
class Tuning:
    """The hyperparameters of a linearised Laplace posterior: each fixed by a value, or searched (on validation NLL;
    without validation data by the Laplace evidence for regression).

    Args:
        prior_precision: ``delta``, the prior precision of the linear weights; ``None`` searches ``prior_grid``.
        sigma_noise: regression only: the observation noise, a number or one per output; ``None`` searches
            ``noise_grid``.
        prior_grid: the ``delta`` values searched (default 33 values log-spaced from 1e-4 to 1e4; widened a decade
            at a time at an edge, see :mod:`ella.methods.search`).
        noise_grid: the noise scales ``s`` searched, ``sigma_c = s rho_c`` with ``rho_c`` the MAP's RMSE of output
            ``c`` on the validation data (default 17 values log-spaced from 1e-3 to 10).
        fold_in: the training points folded into the curvature: ``"all"``, ``"tune"`` (a number chosen among
            tenths of the training set with the prior, the ELLA paper's model selection), a number (the first of a
            seeded random order), or 0 (none: the prior alone, ``G = delta I``). ``None``: the method's default.
        residual: ELLA with the NTK: the prior variance its eigenfunctions leave out (``"auto"``, ``"learned"``,
            ``"mean"``, ``"none"`` or a number of random directions; see :class:`~ella.methods.ella.ELLA`).
            ``None``: the method's default.
    """

    prior_precision: float | None = None
    sigma_noise: float | tuple[float, ...] | None = None
    prior_grid: tuple[float, ...] | None = None
    noise_grid: tuple[float, ...] | None = None
    fold_in: str | int | None = None
    residual: str | int | None = None

    def __post_init__(self):
        checks = {
            "prior_precision": lambda v: check_float(v, "prior_precision"),
            "sigma_noise": check_noise,
            "prior_grid": lambda v: tuple(check_grid(v, "prior_grid").tolist()),  # (sorted)
            "noise_grid": lambda v: tuple(check_grid(v, "noise_grid").tolist()),
            "fold_in": check_fold_in,
            "residual": check_residual,
        }
        for name, check in checks.items():  # (frozen: the checked values set past __setattr__)
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else check(value))

    def as_dict(self) -> dict:
        """The fields as JSON-ready values (tuples as lists).

        Returns:
            ``{field: value}`` for every field.
        """
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


@dataclass(frozen=True)
class Predictive:
    """How a Gaussian posterior's predictions are formed and computed.

    Args:
        link: class probabilities from the Gaussian predictive: ``"margin"`` (probit on the margins against the
            top class; deterministic, keeps the MAP class), ``"probit"`` or ``"mc"`` (``n_samples`` Monte-Carlo
            samples, the same draws for every input).
        n_samples: Monte-Carlo samples of the ``"mc"`` link.
        batch_size: inputs per piece of work in ``predict`` (and in the passes of ``fit`` that are not the
            loaders' own batches); ``None``: the method's default.
    """

    link: str = "margin"
    n_samples: int = 512
    batch_size: int | None = None

    def __post_init__(self):
        check_choice(self.link, "link", names.LINKS)
        check_positive_int(self.n_samples, "n_samples")
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size")

    def as_dict(self) -> dict:
        """The fields as JSON-ready values.

        Returns:
            ``{field: value}`` for every field.
        """
        return asdict(self)


def or_default(cls, value, name: str):
    """``value`` if it is a ``cls`` (a :class:`Tuning` or :class:`Predictive`), ``cls()`` for ``None``."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise TypeError(f"`{name}` must be an ella.{cls.__name__} (or None), got {type(value).__name__}")
    return value


#: the arguments the linearised methods took before :class:`Tuning` and :class:`Predictive`: where each went.
MOVED = {
    **{f.name: f"it is a field of `tuning=ella.Tuning({f.name}=...)`" for f in fields(Tuning)},
    **{f.name: f"it is a field of `predictive=ella.Predictive({f.name}=...)`" for f in fields(Predictive)},
    "posterior_update": "fold in no training point instead: `tuning=ella.Tuning(fold_in=0)`",
    "residual_samples": "give the number of directions as `tuning=ella.Tuning(residual=S)`",
    "features": "the eigenfunctions are chosen by `solver=` ('auto', 'neuralef', 'nystrom', 'exact', 'spin' "
    "or an ella.eigen.EigenSolver)",
}


def check_moved(cls: type, given: dict) -> None:
    """A ``TypeError`` naming where an argument of earlier versions went, for the first of ``given`` in
    :data:`MOVED` (Python's own error follows for any other unknown argument)."""
    for name in given:
        if name in MOVED:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}: {MOVED[name]}")
