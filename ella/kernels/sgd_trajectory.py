"""The SGD-trajectory kernel: the covariance of a network's functions along its own training run.

Over M snapshots ``theta_1, ..., theta_M`` of one run (see :mod:`ella.trajectory`),

    kappa_SGD(x, x') = (1/M) sum_m (g(x, theta_m) - gbar(x)) (g(x', theta_m) - gbar(x'))^T,
    gbar(x) = (1/M) sum_m g(x, theta_m),

a random-feature kernel with the ``S = M`` features ``phi_m(x) = g(x, theta_m) - gbar(x)``, so
``K = Phi Phi^T / M`` as for every :class:`~ella.kernels.FeatureKernel`. The features sum to zero over ``m``,
so the kernel has rank at most ``M - 1`` (:attr:`SGDTrajectoryKernel.max_rank`); eigen-solvers refuse
``k > M - 1``.

The features come from the functions recorded on the training inputs (no forward pass) when every input of
``x`` was recorded, otherwise from the weight snapshots (``M`` forward passes).
"""

from __future__ import annotations

import torch

from ..trajectory.store import Trajectory
from .base import FeatureKernel

SOURCES = ("auto", "functions", "weights")


class SGDTrajectoryKernel(FeatureKernel):
    """``kappa_SGD`` of a recorded :class:`~ella.trajectory.Trajectory`.

    Args:
        trajectory: the recorded run (functions on the training inputs and/or weight snapshots).
        source: ``"functions"`` (recorded inputs only), ``"weights"`` (any input, M forward passes) or
            ``"auto"`` (functions where all inputs were recorded, weights otherwise).
        batch_size: inputs per forward pass through a snapshot.
        progress: show a progress bar over the snapshots when evaluating weights.
    """

    posterior_update = False  # the trajectory GP is itself the posterior
    row_name = "sgd_trajectory"

    def __init__(self, trajectory: Trajectory, source: str = "auto", batch_size: int = 1024, progress: bool = True):
        if not isinstance(trajectory, Trajectory):
            raise TypeError(
                f"`trajectory` must be an ella.trajectory.Trajectory (from a TrajectoryRecorder, "
                f"Trajectory.from_checkpoints, ...), got {type(trajectory).__name__}"
            )
        if source not in SOURCES:
            raise ValueError(f"`source` must be one of {SOURCES}, got {source!r}")
        if source == "functions" and not trajectory.has_functions:
            raise ValueError("`source`='functions' but the trajectory recorded weights only")
        if source == "weights" and not trajectory.has_weights:
            raise ValueError("`source`='weights' but the trajectory recorded functions only")
        self.trajectory, self.source, self.batch_size, self.progress = trajectory, source, batch_size, progress
        self.num_features = trajectory.num_snapshots  # S = M
        self._num_outputs = trajectory.anchor.shape[1] if trajectory.has_functions else None

    @property
    def model(self):
        """The recorded architecture (a default eigenfunction network copies it)."""
        return self.trajectory.model

    @property
    def max_rank(self) -> int:
        """``M - 1``: the features are centred over the M snapshots."""
        return self.num_features - 1

    @property
    def num_outputs(self) -> int:
        if self._num_outputs is None:
            raise AttributeError("num_outputs is known after the first evaluation of the kernel")
        return self._num_outputs

    def infer_num_outputs(self, x: torch.Tensor) -> int:
        if self._num_outputs is None:
            self._num_outputs = self.trajectory.outputs(x[:1], self.trajectory.snapshot(0)).shape[1]
        return self._num_outputs

    def functions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, a)`` with ``g(x, theta_m) = f_m + a``: ``f`` of shape ``(M, B, C)``, offset ``a`` ``(B, C)``.

        From recorded functions ``f`` are the deviations from the first snapshot and ``a`` its outputs; from
        weights ``f = g`` and ``a = 0``.
        """
        traj = self.trajectory
        index = traj.lookup(x) if self.source != "weights" else None
        if index is not None:
            return traj.recorded_functions(index), traj.anchor[index.to(traj.anchor.device)]
        if not traj.has_weights:
            raise ValueError(
                "`x` holds inputs on which the trajectory's functions were not recorded; record "
                "weight snapshots (store='weights' or 'both') to evaluate the kernel at any x"
            )
        if self.source == "functions":
            raise ValueError("`x` holds inputs that were not recorded and `source`='functions'")
        p = next(traj.model.parameters())
        x = x.to(device=p.device, dtype=p.dtype if x.dtype.is_floating_point else None)
        f = traj.functions(x, self.batch_size, self.progress)
        self._num_outputs = f.shape[-1]
        return f, torch.zeros_like(f[0])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``Phi(x)`` of shape ``(B, C, M)``, ``phi_m(x) = g(x, theta_m) - gbar(x)``."""
        f, _ = self.functions(x)
        phi = f - f.double().mean(0).to(f.dtype)  # subtract gbar (the offset a cancels)
        return phi.permute(1, 2, 0)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """``gbar(x) = (1/M) sum_m g(x, theta_m)``, shape ``(B, C)``."""
        f, offset = self.functions(x)
        return offset + f.double().mean(0).to(offset.dtype)
