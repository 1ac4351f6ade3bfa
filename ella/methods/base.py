"""The contract every method keeps, and the Gaussian predictive most of them share.

::

    method = Cls(model, likelihood, ...)        # configuration only, checked here, never changed later
    method.fit(train_loader, val_loader)        # -> method; what it learns ends in "_" (prior_precision_, ...)
    method.predict(x)                           # (B, C) probabilities, or (mean, var) for regression
    method.predictive_moments(x)                # latent (mean (B, C), cov (B, C, C)), where it has one
    method.name, method.likelihood, method.model, method.fit_seconds_, method.setup_seconds

:class:`Method` owns ``fit``'s bookkeeping (fitted state cleared, the call timed) and the streaming of
``predict``: inputs are checked, the model's mode re-checked, the model checked against the one ``fit`` saw
(:func:`~ella.checks.model_signature`), and the work done ``batch_size`` inputs at a time,
so memory stays bounded whatever the number of inputs. :class:`GaussianMethod` is the predictive
``f(x) ~ N(m(x), F(x) F(x)^T)`` given by a mean and a factor; it owns the links, the observation noise and
``predictive_moments``. A method without latent uncertainty (MAP, temperature scaling, SWA) has a factor of
width 0.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch
from torch import nn

from .. import batches
from ..checks import (
    check_bool,
    check_choice,
    check_deterministic,
    check_finite_outputs,
    check_int,
    check_likelihood,
    check_mode,
    check_model,
    check_noise,
    check_positive_int,
    check_unchanged,
    model_signature,
)
from ..names import LINKS
from ..predictive import link_probs, marginal_variance, noise_tensor


class Method(ABC):
    """The protocol of every method (see the module docstring).

    Args:
        model: the trained network ``g(x, theta_MAP)`` (eval mode), outputs ``(B, C)`` or an object with
            ``logits``; never modified.
        likelihood: ``"classification"`` or ``"regression"``.
        batch_size: inputs per piece of work in ``predict``.
        progress: show progress bars.
    """

    #: the row name in reports.
    name = "method"
    #: seconds spent outside ``fit`` that belong to the method's cost (e.g. recording a trajectory).
    setup_seconds: float = 0.0
    #: wall-clock seconds of the last ``fit`` (``None``: not fitted).
    fit_seconds_: float | None = None
    #: the shape and dtype of the input rows ``fit`` saw (:func:`ella.batches.spec`); ``predict`` checks them.
    input_spec_: dict | None = None
    #: the training flags of the model's modules when its determinism was last probed (one probe per mode state).
    _probed_mode: tuple | None = None
    #: the model's :func:`~ella.checks.model_signature` when it was fitted (or loaded); every prediction checks it.
    _signature: tuple | None = None

    def __init__(
        self, model: nn.Module, likelihood: str = "classification", *, batch_size: int = 1024, progress: bool = True
    ):
        self.model = check_model(model)
        self.likelihood = check_likelihood(likelihood)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.progress = check_bool(progress, "progress")

    def fit(self, train_loader=None, val_loader=None):
        """Fit on ``train_loader`` (tuning on ``val_loader`` where the method tunes); returns ``self``.

        Every fitted value of an earlier ``fit`` is dropped first, so fitting twice with the same seed gives the
        same method as fitting once, also from loaders that shuffle (``DataLoader(..., shuffle=True)``): the global
        CPU generator they draw their orders from is seeded from the method's ``seed`` during the fit and
        restored after it."""
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)
        check_mode(self.model)
        start = time.perf_counter()
        # the global CPU generator seeded for the fit, and restored after it: a loader that shuffles draws the same
        # orders in every fit of the same seed, and the caller's random state is left as it was
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(getattr(self, "seed", 0))
            self._fit(train_loader, val_loader)
        self.fit_seconds_ = time.perf_counter() - start
        self._signature = model_signature(self.model)  # checked at every prediction
        return self

    @abstractmethod
    def _fit(self, train_loader, val_loader) -> None:
        """Set the fitted attributes."""

    @abstractmethod
    def _predict(self, x):
        """``predict`` for one piece of at most ``batch_size`` inputs, already on the model's device."""

    def predict(self, x):
        """Classification: class probabilities ``(B, C)``. Regression: ``(mean, var)`` of the observations, each
        ``(B, C)``, ``var`` including the observation noise."""
        return self._stream(x, self._predict)

    __call__ = predict

    @property
    def is_fitted(self) -> bool:
        return self.fit_seconds_ is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call `fit(train_loader, val_loader)` first")

    def _checked(self, x):
        """``x`` on the model's device, after the checks of every prediction call: non-empty, finite, shaped like
        the inputs ``fit`` saw; the model in eval mode, and deterministic on a probe of 8 inputs (two forward
        passes that must agree), probed again whenever a module's training flag has changed since the last probe."""
        if batches.check_inputs(x, "x") == 0:
            raise ValueError("`x` is an empty batch: give at least one input")
        if self.input_spec_ is not None:
            batches.check_spec(x, self.input_spec_)
        x = batches.to_model(x, self.model)
        check_mode(self.model)
        if self._signature is not None:
            check_unchanged(self.model, self._signature)
        mode = tuple(m.training for m in self.model.modules())
        if mode != self._probed_mode:
            check_deterministic(self.model, batches.take(x, slice(0, 8)))
            self._probed_mode = mode
        return x

    @torch.no_grad()
    def _stream(self, x, fn):
        """``fn`` over pieces of ``batch_size`` inputs, results concatenated (tensors, or tuples of tensors).

        Checks the inputs and the model's mode first: a model switched to training mode, or one whose outputs
        are random (dropout), is refused rather than silently giving random predictions."""
        self._check_fitted()
        x = self._checked(x)
        rows, out, start = batches.num_rows(x), None, 0
        for piece in batches.chunks(x, self.batch_size):
            result = fn(piece)
            parts = result if isinstance(result, tuple) else (result,)
            if not all(torch.isfinite(part).all() for part in parts):  # from a model output that is not finite
                check_finite_outputs(batches.call(self.model, piece), "`x`", start)
                raise ValueError(
                    f"{type(self).__name__}'s predictions for some of inputs {start} to "
                    f"{start + len(parts[0]) - 1} of `x` are not finite"
                )
            if out is None:  # the whole result at once: no small piece outlives its chunk (fragmentation)
                out = tuple(part.new_empty(rows, *part.shape[1:]) for part in parts)
            for whole, part in zip(out, parts):
                whole[start : start + len(part)] = part
            start += len(parts[0])
        return out if isinstance(result, tuple) else out[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(likelihood={self.likelihood!r})"


class GaussianMethod(Method):
    """A method whose latent predictive is ``f(x) ~ N(m(x), F(x) F(x)^T)``, a mean ``(B, C)`` and a factor
    ``(B, C, r)``; subclasses give :meth:`_mean_and_factor` for a piece of inputs.

    Besides the arguments of :class:`Method`:

    Args:
        link: class probabilities from the Gaussian: ``"margin"`` (probit on the margins against the top class;
            deterministic, keeps the MAP class), ``"probit"`` or ``"mc"`` (``n_samples`` Monte-Carlo samples).
        n_samples: Monte-Carlo samples of the ``"mc"`` link.
        sigma_noise: regression only: the observation noise (a number, or one per output); ``None`` tunes it.
        seed: seed of the method's randomness (the ``"mc"`` link's draws, the same for every input).

    Fitted: ``noise_``, the observation noise per output ``(C,)`` (regression).
    """

    noise_: torch.Tensor | None = None

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        *,
        link: str = "margin",
        n_samples: int = 512,
        sigma_noise=None,
        seed: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
    ):
        super().__init__(model, likelihood, batch_size=batch_size, progress=progress)
        self.link = check_choice(link, "link", LINKS)
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.sigma_noise = check_noise(sigma_noise, self.likelihood)
        self.seed = check_int(seed, "seed", 0)

    @abstractmethod
    def _mean_and_factor(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m(x) (B, C), F(x) (B, C, r))`` for a piece of inputs on the model's device."""

    @property
    def _dtype(self) -> torch.dtype:
        """The model's floating dtype: the dtype of predictions."""
        return next(self.model.parameters()).dtype

    def _fixed_noise(self, num_outputs: int, like: torch.Tensor) -> torch.Tensor | None:
        """``sigma_noise`` as a ``(C,)`` tensor (``None`` if it is tuned)."""
        if self.sigma_noise is None:
            return None
        noise = torch.as_tensor(self.sigma_noise, dtype=torch.float64).to(like).flatten()
        if len(noise) not in (1, num_outputs):
            raise ValueError(f"`sigma_noise` has {len(noise)} values for a model with {num_outputs} outputs")
        return noise_tensor(noise if len(noise) > 1 else noise[0], num_outputs, like)

    def _mean_factor_isotropic(self, x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`_mean_and_factor` with an isotropic variance ``v(x)`` ``(B,)`` apart (``Sigma = F F^T + v I_C``),
        or ``None``; the links add it without widening ``F``."""
        return *self._mean_and_factor(x), None

    def _predict(self, x, link: str | None = None, n_samples: int | None = None):
        mean, factor, iso = self._mean_factor_isotropic(x)
        if self.likelihood == "regression":
            return mean, marginal_variance(factor, iso) + self.noise_.to(mean).pow(2)
        return link_probs(mean, factor, link or self.link, n_samples or self.n_samples, self.seed, iso)

    def predict(self, x, link: str | None = None, n_samples: int | None = None):
        """Classification: class probabilities ``(B, C)`` by ``link`` (default: the method's). Regression:
        ``(mean, var)``, ``var = diag(F F^T) + sigma^2`` (the observation noise included)."""
        if link is not None:
            check_choice(link, "link", LINKS)
        if n_samples is not None:
            check_positive_int(n_samples, "n_samples")
        return self._stream(x, lambda piece: self._predict(piece, link, n_samples))

    __call__ = predict

    def predictive_moments(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``f(x) ~ N(mean, cov)``: mean ``(B, C)`` and covariance ``(B, C, C)`` (no observation noise)."""

        def moments(piece):
            mean, factor = self._mean_and_factor(piece)
            return mean, factor @ factor.transpose(1, 2)

        return self._stream(x, moments)

    def __repr__(self) -> str:
        link = f", link={self.link!r}" if self.likelihood == "classification" else ""
        return f"{type(self).__name__}(likelihood={self.likelihood!r}{link})"
