"""``ELLA``: the linearised Laplace approximation of a trained network, reduced to a k x k posterior.

Pipeline (data flows one way)::

    MAP model -> kernel (empirical NTK) -> eigenfunctions psi (NeuralEF, Nystrom or exact; k of them)
              -> Psi(x) = psi(x) sqrt(mu) -> G = sum_i Psi_i^T Lambda_i Psi_i + delta I_k
              -> f(x) ~ N(g(x), Psi(x) G^{-1} Psi(x)^T) -> probabilities

ELLA is :class:`~ella.methods.linearised.LinearisedLaplace` in the feature space of the ``k`` eigenfunctions,
learned on ``kernel_points`` training inputs; the curvature ``G`` is accumulated over the whole training loader.

With the SGD-trajectory kernel the default is the predictive of the trajectory GP itself, without the
likelihood update: ``G = delta I_k``, so ``f(x) ~ N(g(x), Psi Psi^T / delta)`` with ``delta`` the inverse kernel
scale, tuned on validation NLL (``posterior_update=True`` adds the update).

With ``residual_samples = S' > 0`` (NTK kernel) the prior variance the k eigenfunctions leave out is kept:
``Sigma(x) += (r(x) / delta) I_C`` with ``r(x) = (tr kappa(x, x) - ||Psi(x)||_F^2) / C``, ``tr kappa(x, x)``
estimated from S' random weight directions (Hutchinson), at S' extra forward passes per prediction.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import batches, distributed, files
from .._checks import check_bool, check_int, check_positive_int
from .._utils import num_parameters
from ..eigen import EigenSolver, ExactEigen, NeuralEF, Nystrom, SpIN
from ..kernels import EmpiricalNTK, Kernel, SGDTrajectoryKernel
from ..posterior import factor_basis, residual_variance
from .linearised import LinearisedLaplace
from .survey import Survey

FORMAT = "ella-posterior"
FORMAT_VERSION = 4  # 4: an ella.files file (tensors + JSON, checksummed); the curvature's eigendecomposition
SOLVERS = {"neuralef": NeuralEF, "nystrom": Nystrom, "exact": ExactEigen, "spin": SpIN}
AUTO_JACOBIAN = 2**24  # entries of the M x P Jacobian rows "auto" may form for Nystrom (64 MiB in float32)


class ELLA(LinearisedLaplace):
    """ELLA posterior of a MAP-trained network.

    Args:
        model: the trained network ``g(x, theta_MAP)`` with outputs ``(B, C)`` (logits or regression outputs;
            a tensor or an object with ``logits``), in eval mode. It is never modified.
        likelihood: ``"classification"`` or ``"regression"``.
        k: number of eigenfunctions, the size of the posterior (default 20, or the ``solver``'s own ``k``).
        kernel: ``"ntk"`` (the empirical NTK, :class:`~ella.kernels.EmpiricalNTK` with its defaults and ``seed``)
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
        residual_samples: ``S'``; ``0`` (default) is the ELLA of the paper, whose predictive variance lives in
            the span of the k eigenfunctions. ``S' > 0`` adds the left-out prior variance ``r(x) / delta`` to
            every output (see :meth:`residual_variance`), estimated with S' random weight directions by the
            NTK's estimator; prediction then costs S' more forward passes (or JVPs). NTK kernel only.
        posterior_update: fold the likelihood curvature into ``G`` (the ELLA posterior). ``False`` drops it:
            ``G = delta I_k`` and the predictive covariance is the kernel's ``Psi Psi^T`` scaled by ``1 / delta``.
            Default: ``True``, except for the SGD-trajectory kernel.
        prior_precision: ``delta``, the prior precision of the ``k`` linear weights; ``None`` (default) tunes it
            on validation NLL (as for :class:`~ella.methods.linearised.LinearisedLaplace`).
        prior_grid: the ``delta`` values searched (widened at an edge; see :mod:`ella.methods.search`).
        sigma_noise: regression only: the observation noise (a number, or one per output); ``None`` tunes it.
        noise_grid: the noise scales ``s`` searched for regression, ``sigma_c = s rho_c``.
        fold_in: training points folded into the curvature: ``"all"``, a number, or ``"tune"``.
        link: ``"margin"``, ``"probit"`` or ``"mc"``: class probabilities from the Gaussian predictive.
        n_samples: Monte-Carlo samples of the ``"mc"`` link.
        seed: seed of the kernel's directions, the kernel-point sample, the solver and the ``"mc"`` draws.
        batch_size: inputs per piece of work in ``predict``.
        progress: show progress bars.

    Fitted: besides the base class's, ``solver_`` (the fitted eigen-solver: what ``"auto"`` chose) and
    ``num_kernel_points_`` (M).
    """

    solver_: EigenSolver | None = None

    def __init__(self, model: nn.Module, likelihood: str = "classification", k: int | None = None,
                 kernel: str | Kernel = "ntk", solver: str | EigenSolver = "auto", *, kernel_points: int = 2000,
                 residual_samples: int = 0, posterior_update: bool | None = None, prior_precision: float | None = None,
                 prior_grid=None, sigma_noise=None, noise_grid=None, fold_in="all", link: str = "margin",
                 n_samples: int = 512, seed: int = 0, batch_size: int = 512, progress: bool = True):
        super().__init__(model, likelihood, prior_precision=prior_precision, prior_grid=prior_grid,
                         sigma_noise=sigma_noise, noise_grid=noise_grid, fold_in=fold_in, link=link,
                         n_samples=n_samples, seed=seed, batch_size=batch_size, progress=progress)
        if kernel == "ntk":
            kernel = EmpiricalNTK(model, seed=self.seed, progress=self.progress)
        elif not isinstance(kernel, Kernel):
            raise ValueError(f"`kernel` must be 'ntk' or an ella.kernels.Kernel, got {kernel!r}")
        if isinstance(solver, EigenSolver):
            if k is not None and k != solver.k:
                raise ValueError(f"`k` = {k} must equal the k = {solver.k} of the `solver`")
            k = solver.k
        elif solver == "auto" or solver in SOLVERS:
            k = check_positive_int(20 if k is None else k, "k")
            solver = solver if solver == "auto" else self._named_solver(solver, k)
        else:
            raise ValueError(f"`solver` must be 'auto', one of {tuple(SOLVERS)} or an ella.eigen.EigenSolver, "
                             f"got {solver!r}")
        self.kernel, self.solver, self.k = kernel, solver, k
        self.kernel_points = check_positive_int(kernel_points, "kernel_points")
        self.residual_samples = check_int(residual_samples, "residual_samples", 0)
        if self.residual_samples and not isinstance(kernel, EmpiricalNTK):
            raise ValueError("`residual_samples` > 0 needs the NTK kernel (kernel='ntk' or an EmpiricalNTK), "
                             f"got {type(kernel).__name__}")
        trajectory = isinstance(kernel, SGDTrajectoryKernel)
        self.posterior_update = not trajectory if posterior_update is None else check_bool(posterior_update,
                                                                                            "posterior_update")

    def _auto_solver(self, data: Survey) -> EigenSolver:
        """What ``solver="auto"`` fits: Nystrom on all M kernel points when they are the whole training set, the
        kernel is the NTK, ``k <= M`` and the M x P Jacobian rows hold at most :data:`AUTO_JACOBIAN` entries; NeuralEF
        otherwise."""
        M = batches.num_rows(data.sample)
        small = (data.num_train <= self.kernel_points and isinstance(self.kernel, EmpiricalNTK) and self.k <= M
                 and M * self.kernel.num_params <= AUTO_JACOBIAN)
        return Nystrom(self.k, M, seed=self.seed) if small else self._named_solver("neuralef", self.k)

    def _named_solver(self, name: str, k: int) -> EigenSolver:
        if name == "neuralef":
            return NeuralEF(k, seed=self.seed, progress=self.progress)
        if name == "nystrom":
            return Nystrom(k, seed=self.seed)
        if name == "spin":
            return SpIN(k, seed=self.seed, progress=self.progress)
        return ExactEigen(k)

    # ---------------------------------------------------------------- the features
    def _num_features(self) -> int:
        return self.k

    def _prepare(self, data: Survey, train_loader) -> None:
        """Learn the eigenfunctions on the kernel points; set up the residual's estimator."""
        x = batches.to_model(data.sample, self.model)
        self.num_kernel_points_ = batches.num_rows(x)
        with distributed.sharing():  # every process holds the same kernel points: they split the solver's work
            solver = self._auto_solver(data) if self.solver == "auto" else copy.copy(self.solver)
            self.solver_ = solver.fit(self.kernel, x)
        self._set_scale()

    def _set_scale(self) -> None:
        # Psi(x) = psi(x) sqrt(mu); the residual's directions are seeded apart from the kernel's own
        self.feature_scale_ = self.solver_.eigenvalues.double().clamp_min(0).sqrt()
        self.residual_kernel_ = (self.kernel.resampled(self.residual_samples, self.kernel.seed + 1)
                                 if self.residual_samples else None)

    def _features(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        mean, psi = self.solver_.outputs_and_eigenfunctions(self.model, x)  # one forward pass with net="head"
        psi = psi.to(mean.dtype)  # (the exact solver works in float64)
        return mean, psi * self.feature_scale_.to(psi)

    def _isotropic(self, x, phi: torch.Tensor) -> torch.Tensor | None:
        if self.residual_kernel_ is None:
            return None
        return residual_variance(self.residual_kernel_.features(x), phi)

    # ---------------------------------------------------------------- derived quantities
    def feature_map(self, x) -> torch.Tensor:
        """``Psi(x) = psi(x) sqrt(mu)``, shape ``(B, C, k)``."""
        return self._stream(x, lambda piece: self._features(piece)[1])

    def residual_variance(self, x) -> torch.Tensor:
        """``r(x) / delta``, shape ``(B,)``: the prior variance the k eigenfunctions leave out, added to every
        output's predictive variance when ``residual_samples > 0``.

        ``r(x) = max(0, tr kappa(x, x) - ||Psi(x)||_F^2) / C``, with ``tr kappa(x, x)`` estimated by
        Hutchinson's estimator from ``residual_samples`` random weight directions.
        """
        if not self.residual_samples:
            raise ValueError("`residual_variance` needs `residual_samples` > 0")

        def piece(x):
            return self._isotropic(x, self._features(x)[1]) / self.prior_precision_

        return self._stream(x, piece)

    @property
    def eigenvalues(self) -> torch.Tensor:
        """``mu``: the kernel eigenvalues behind the feature map."""
        self._check_fitted()
        return self.solver_.eigenvalues

    @property
    def name(self) -> str:
        kind = self.solver_.kind if self.solver_ is not None else getattr(self.solver, "kind", "auto")
        if isinstance(self.kernel, SGDTrajectoryKernel):
            return "ella_sgd_trajectory" if kind == "neuralef" else f"ella_sgd_trajectory_{kind}"
        return f"ella_{kind}_residual" if self.residual_samples else f"ella_{kind}"

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the fitted posterior (not the model) to ``path``: an :mod:`ella.files` file (tensors and JSON,
        checksummed) with a format version and the model's parameter count and fingerprint, checked by
        :meth:`load`. Of several processes, the first writes it."""
        self._check_fitted()
        kernel = ({"kind": "ntk", "config": self.kernel.config} if isinstance(self.kernel, EmpiricalNTK)
                  else {"kind": type(self.kernel).__name__})
        solver_meta, solver_tensors = files.split(self.solver_.state_dict())
        meta = {"config": {"likelihood": self.likelihood, "k": self.k, "link": self.link,
                           "n_samples": self.n_samples, "seed": self.seed, "fold_in": self.fold_in,
                           "residual_samples": self.residual_samples, "posterior_update": self.posterior_update,
                           "kernel_points": self.kernel_points, "batch_size": self.batch_size},
                "kernel": kernel, "solver": solver_meta,
                "fitted": {"prior_precision": self.prior_precision_, "noise_scale": self.noise_scale_,
                           "num_folded": self.num_folded_, "num_train": self.num_train_,
                           "fit_seconds": self.fit_seconds_, "stage_seconds": self.stage_seconds_,
                           "num_kernel_points": self.num_kernel_points_, "input_spec": self.input_spec_},
                "model": {"num_params": num_parameters(self.model), "fingerprint": files.fingerprint(self.model)}}
        tensors = {"evals": self.evals_, "evecs": self.evecs_, "solver": solver_tensors}
        if self.noise_ is not None:
            tensors["noise"] = self.noise_
        if distributed.is_main():  # every process holds the same posterior: one of them writes it
            files.write(path, FORMAT, FORMAT_VERSION, meta, tensors)
        distributed.barrier()  # the file is whole before any process goes on (and may read it)

    @classmethod
    def load(cls, path, model: nn.Module, kernel: Kernel | None = None, net: nn.Module | None = None) -> "ELLA":
        """Load a posterior written by :meth:`save` onto ``model`` (the same trained network).

        Args:
            path: the file.
            model: the network it was fitted to (checked: parameter count, and a fingerprint of its parameters
                and buffers).
            kernel: the kernel, for posteriors fitted with a kernel other than the NTK (which is rebuilt from
                its saved settings).
            net: the eigenfunction network's architecture, for a NeuralEF fitted with a custom ``net`` (or SpIN).

        Raises:
            ValueError: the file is not an ella posterior of a supported version, is malformed or corrupted, or
                ``model`` is not the network it was fitted to. Nothing in the file is unpickled.
        """
        where = str(path)
        _, meta, tensors = files.read(path, FORMAT, FORMAT_VERSION, map_location=next(model.parameters()).device)
        saved_model = files.require(meta, "model", dict, where)
        if saved_model.get("num_params") != num_parameters(model):
            raise ValueError(f"`model` has {num_parameters(model)} parameters but the posterior in {where} was "
                             f"fitted to a model with {saved_model.get('num_params')}")
        if saved_model.get("fingerprint") != files.fingerprint(model):
            raise ValueError(f"`model` has different weights or buffers from the model the posterior in {where} "
                             "was fitted to")
        config, fitted = files.require(meta, "config", dict, where), files.require(meta, "fitted", dict, where)
        kind = files.require(meta, "kernel", dict, where).get("kind")
        if kind == "ntk":  # rebuilt from its saved settings unless given
            if kernel is None:
                kernel = EmpiricalNTK(model, **files.require(meta["kernel"], "config", dict, where), progress=False)
            elif not isinstance(kernel, EmpiricalNTK):
                raise ValueError(f"the posterior in {where} was fitted with the NTK: `kernel` must be an EmpiricalNTK "
                                 f"(or None, to rebuild it), got {type(kernel).__name__}")
        elif kernel is None or type(kernel).__name__ != kind:
            raise ValueError(f"the posterior in {where} was fitted with a {kind} kernel: pass it as `kernel`")
        solver_state = {**files.require(meta, "solver", dict, where), **files.require(tensors, "solver", dict, where)}
        solver_kind = solver_state.get("kind")
        if solver_kind not in SOLVERS:
            raise ValueError(f"{where} is malformed: unknown solver kind {solver_kind!r}")
        try:
            k = config["k"]
            solver = SOLVERS[solver_kind](k, net=net, model=model) if solver_kind in ("neuralef", "spin") else \
                SOLVERS[solver_kind](k)
            post = cls(model, config["likelihood"], kernel=kernel, solver=solver, progress=False,
                       **{key: config[key] for key in ("link", "n_samples", "seed", "fold_in", "residual_samples",
                                                       "posterior_update", "kernel_points", "batch_size")})
            post.solver_ = copy.copy(solver).load_state_dict(solver_state, kernel)
            post._set_scale()
            post.evals_, post.evecs_ = files.require(tensors, "evals", torch.Tensor, where), \
                files.require(tensors, "evecs", torch.Tensor, where)
            post.noise_ = tensors.get("noise")
            post.prior_precision_, post.noise_scale_ = float(fitted["prior_precision"]), float(fitted["noise_scale"])
            post.num_folded_, post.num_train_ = fitted["num_folded"], fitted["num_train"]
            post.search_ = None
            post.basis_ = factor_basis(post.evals_.double(), post.evecs_.double(), post.prior_precision_,
                                       post.noise_scale_).to(post._dtype)
            post.fit_seconds_, post.input_spec_ = float(fitted["fit_seconds"]), fitted["input_spec"]
            post.stage_seconds_, post.num_kernel_points_ = fitted.get("stage_seconds"), fitted.get("num_kernel_points")
        except (KeyError, TypeError, RuntimeError) as e:
            raise ValueError(f"{where} is malformed: {type(e).__name__}: {e}") from None
        return post
