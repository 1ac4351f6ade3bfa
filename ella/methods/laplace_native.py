"""laplace-torch 0.3's own function-space posteriors, end to end: its fit, its hyperparameters, its predictive.

ella's other laplace-torch baselines take laplace-torch's curvature and predict with ella's GLM predictive;
these two rows are laplace-torch as its users run it, for a like-for-like comparison:

* :class:`NativeLaplaceELLA`: ``laplace.ELLA``, the ELLA paper's Nystrom feature map from ``subsample_size``
  training inputs and ``n_eigenvalues`` directions, its prior precision chosen by laplace-torch's validation grid
  search (``optimize_prior_precision(method="gridsearch")``);
* :class:`NativeVaLLA`: ``laplace.VaLLA``, variational linearised Laplace with ``num_inducing`` inducing outputs
  (Ortega et al., 2024), its prior precision learned with the variational parameters during ``fit``.

Both predict with laplace-torch's ``pred_type="gp"`` predictive and the probit link (``link_approx``), in pieces
of ``batch_size`` inputs. Classification only.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch.utils.data import DataLoader

from .. import batches
from ..checks import check_choice, check_int, check_positive_int
from ..utils import require, seeded_generator
from .base import Method
from .laplace_torch import _as_dataloader

LINK_APPROXIMATIONS = ("probit", "mc", "bridge")


class _Native(Method):
    """A laplace-torch function-space posterior; subclasses build and fit the laplace-torch object."""

    def __init__(
        self,
        model,
        likelihood: str = "classification",
        *,
        link_approx: str = "probit",
        seed: int = 0,
        batch_size: int = 512,
        progress: bool = True,
    ):
        super().__init__(model, likelihood, batch_size=batch_size, progress=progress)
        if self.likelihood != "classification":
            raise ValueError(f"{type(self).__name__} supports classification only, got {likelihood!r}")
        self.link_approx = check_choice(link_approx, "link_approx", LINK_APPROXIMATIONS)
        self.seed = check_int(seed, "seed", 0)
        self._laplace = require("laplace", "laplace-torch", "laplace", type(self).__name__)

    def _fit(self, train_loader, val_loader) -> None:
        train = _as_dataloader(train_loader, "train_loader")
        val = None if val_loader is None else _as_dataloader(val_loader, "val_loader")
        x, _ = batches.split_batch(next(iter(train)), "train_loader")
        self.input_spec_ = batches.spec(x)
        with torch.random.fork_rng(devices=[]):  # laplace-torch draws from the global generator
            torch.manual_seed(self.seed)
            self.la_ = self._fit_laplace(train, val)

    @abstractmethod
    def _fit_laplace(self, train: DataLoader, val: DataLoader | None):
        """The fitted laplace-torch object (its prior chosen as laplace-torch chooses it)."""

    def _predict(self, x):
        return self.la_(x, pred_type="gp", link_approx=self.link_approx).detach()


class NativeLaplaceELLA(_Native):
    """laplace-torch's ``ELLA`` (see the module docstring).

    Args:
        model: the trained network (eval mode); never modified.
        likelihood: ``"classification"``.
        k: ``n_eigenvalues``, the directions of the feature map (the ELLA paper's K = 20).
        subsample_size: the training inputs of the Nystrom basis (the paper's M = 2,000).
        grid_size: points of laplace-torch's prior grid, ``10^-4 .. 10^4`` (its default, 100).
        link_approx: laplace-torch's link: ``"probit"``, ``"mc"`` or ``"bridge"``.
        seed: seed of laplace-torch's subset and of the global generator during ``fit``.
        batch_size: inputs per piece of ``predict``.
        progress: show laplace-torch's progress bars.

    Fitted: ``la_`` (the ``laplace.ELLA``), ``prior_precision_``.
    """

    name = "laplace_torch_native_ella"

    def __init__(
        self,
        model,
        likelihood: str = "classification",
        *,
        k: int = 20,
        subsample_size: int = 2000,
        grid_size: int = 100,
        link_approx: str = "probit",
        seed: int = 0,
        batch_size: int = 512,
        progress: bool = True,
    ):
        super().__init__(
            model, likelihood, link_approx=link_approx, seed=seed, batch_size=batch_size, progress=progress
        )
        self.k = check_positive_int(k, "k")
        self.subsample_size = check_positive_int(subsample_size, "subsample_size")
        self.grid_size = check_positive_int(grid_size, "grid_size")

    def _fit_laplace(self, train, val):
        la = self._laplace.ELLA(
            self.model, "classification", subsample_size=self.subsample_size, n_eigenvalues=self.k, seed=self.seed
        )
        la.fit(train, progress_bar=self.progress)
        if val is not None:
            la.optimize_prior_precision(
                method="gridsearch",
                val_loader=val,
                grid_size=self.grid_size,
                link_approx=self.link_approx,
                progress_bar=self.progress,
            )
        self.prior_precision_ = float(torch.as_tensor(la.prior_precision).detach())
        return la


class NativeVaLLA(_Native):
    """laplace-torch's ``VaLLA`` (see the module docstring).

    Args:
        model: the trained network (eval mode); never modified.
        likelihood: ``"classification"``.
        num_inducing: inducing outputs, chosen by ``inducing`` from the training loader.
        inducing: ``"kmeans"`` or ``"random"``.
        iterations: laplace-torch's Adam steps of the variational fit.
        lr: their learning rate.
        fit_batch_size: training inputs per step of the variational fit, drawn from the training loader's data
            set in a seeded shuffled order (each step holds the Jacobians of that many inputs and of the inducing
            points, with their gradient graph: memory grows with it times the number of weights).
        link_approx: laplace-torch's link: ``"probit"``, ``"mc"`` or ``"bridge"``.
        seed: seed of the inducing points, the fit's batches and the global generator during ``fit``.
        batch_size: inputs per piece of ``predict``.
        progress: show laplace-torch's progress bars.

    Fitted: ``la_`` (the ``laplace.VaLLA``), ``prior_precision_`` (learned by the fit).
    """

    name = "laplace_torch_valla"

    def __init__(
        self,
        model,
        likelihood: str = "classification",
        *,
        num_inducing: int = 100,
        inducing: str = "random",
        iterations: int = 1000,
        lr: float = 1e-3,
        fit_batch_size: int = 32,
        link_approx: str = "probit",
        seed: int = 0,
        batch_size: int = 512,
        progress: bool = True,
    ):
        super().__init__(
            model, likelihood, link_approx=link_approx, seed=seed, batch_size=batch_size, progress=progress
        )
        self.num_inducing = check_positive_int(num_inducing, "num_inducing")
        self.inducing = check_choice(inducing, "inducing", ("kmeans", "random"))
        self.iterations = check_positive_int(iterations, "iterations")
        self.lr = float(lr)
        self.fit_batch_size = check_positive_int(fit_batch_size, "fit_batch_size")

    def _fit_laplace(self, train, val):
        la = self._laplace.VaLLA(
            self.model,
            "classification",
            inducing_locations=self.inducing,
            num_inducing=self.num_inducing,
            seed=self.seed,
        )
        steps = DataLoader(
            train.dataset, batch_size=self.fit_batch_size, shuffle=True, generator=seeded_generator(self.seed)
        )
        la.fit(steps, iterations=self.iterations, lr=self.lr, val_loader=val, progress_bar=self.progress)
        self.prior_precision_ = float(torch.as_tensor(la.prior_precision).detach())
        return la
