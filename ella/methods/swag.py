"""SWA and SWAG (Maddox et al., 2019) from a recorded trajectory, as methods of ella's protocol.

* :class:`SWA`: the network at the averaged weights ``theta_swa = (1/M) sum_m theta_m`` (batch-norm
  statistics recomputed on the training loader); a point predictive, ``softmax(g(x, theta_swa))``.
* :class:`SWAG`: the Gaussian ``N(theta_swa, s (Sigma_diag + D D^T / (K - 1)))`` over the weights, with
  ``Sigma_diag = diag(bar(theta^2) - theta_swa^2)`` and ``D`` the last ``K`` deviations from the running mean
  (:mod:`ella.trajectory.moments`); predictions average ``softmax(g(x, theta_s))`` over ``S`` samples
  ``theta_s = theta_swa + sqrt(s) (Sigma_diag^{1/2} z_1 + D z_2 / sqrt(K - 1))``. The paper's setting:
  rank ``K = 20``, scale ``s = 0.5``, ``S = 30``. The samples are drawn at ``fit`` from ``seed`` (and each gets its
  own batch-norm statistics when the model has batch norm).

Both are built from the same :class:`~ella.trajectory.Trajectory` as the SGD-trajectory kernel, on a network of
their own (the user's is never touched).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import batches
from ..checks import check_float, check_int, check_positive_int
from ..trajectory import Trajectory, WeightMoments, flat_parameters, model_state, with_parameters
from ..utils import progress, seeded_generator
from .base import Method
from .map import PointPredictive
from .survey import survey


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def update_bn(model: nn.Module, loader) -> nn.Module:
    """Recompute the batch-norm running statistics of ``model`` in one pass over ``loader``'s inputs: equal
    averages of the batch means and (unbiased) batch variances, as ``torch.optim.swa_utils.update_bn`` does.
    The model is left in eval mode. A no-op without batch norm."""
    if has_batch_norm(model):
        inputs = ((batches.split_batch(batch, "train_loader")[0],) for batch in loader)
        torch.optim.swa_utils.update_bn(inputs, model, device=next(model.parameters()).device)
    return model.eval()


def averaged_model(trajectory: Trajectory) -> nn.Module:
    """A new network with the weights ``theta_swa`` and the last snapshot's buffers (batch-norm statistics
    not yet recomputed: see :func:`swa_model`), in eval mode."""
    model = copy.deepcopy(trajectory.model)
    model.load_state_dict(trajectory.swa_state())
    return model.eval()


def swa_model(trajectory: Trajectory, loader=None) -> nn.Module:
    """A new network with the SWA weights ``theta_swa`` of ``trajectory``, in eval mode.

    Args:
        trajectory: the recorded run.
        loader: the training loader, needed when the model has batch norm (its statistics are recomputed).
    """
    _check_trajectory(trajectory)
    if has_batch_norm(trajectory.model) and loader is None:
        raise ValueError(
            "the model has batch norm: pass the training `loader` so that its statistics are "
            "recomputed for the averaged weights"
        )
    return update_bn(averaged_model(trajectory), loader) if loader is not None else averaged_model(trajectory)


def _check_trajectory(trajectory) -> Trajectory:
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"`trajectory` must be an ella.trajectory.Trajectory, got {type(trajectory).__name__}")
    return trajectory


def swag_moments(trajectory: Trajectory, rank: int = 20) -> WeightMoments:
    """The SWAG moments of ``trajectory`` with ``rank`` deviations: the recorded ones, or recomputed from the
    weight snapshots when another rank is asked for."""
    check_positive_int(rank, "rank")
    if rank == trajectory.moments.rank:
        return trajectory.moments
    if not trajectory.has_weights:
        raise ValueError(
            f"`rank` = {rank} but the trajectory kept {trajectory.moments.rank} deviations and no "
            f"weight snapshots: record with swag_rank={rank}"
        )
    moments, model = WeightMoments(rank), trajectory.model
    for m in range(trajectory.num_snapshots):
        moments.update(flat_parameters(trajectory.snapshot(m), model, next(model.parameters()).dtype))
    return moments


class SWA(PointPredictive):
    """The SWA solution as a method: ``predict`` is ``softmax(g(x, theta_swa))`` (or ``(mean, sigma^2)``).

    Args:
        trajectory: the recorded run.
        likelihood: ``"classification"`` or ``"regression"``.
        sigma_noise: regression only: the observation noise; ``None`` tunes it (as for :class:`MAP`).
        batch_size: inputs per forward pass.
    """

    name = "swa"

    def __init__(
        self, trajectory: Trajectory, likelihood: str = "classification", sigma_noise=None, batch_size: int = 1024
    ):
        self.trajectory = _check_trajectory(trajectory)
        super().__init__(
            averaged_model(trajectory), likelihood, sigma_noise=sigma_noise, batch_size=batch_size, progress=False
        )

    def _fit_point(self, data, train_loader, val_loader) -> None:
        """Recompute batch-norm statistics on ``train_loader`` if the model has batch norm."""
        if has_batch_norm(self.model):
            if train_loader is None:
                raise ValueError("the model has batch norm: `train_loader` is needed to recompute its statistics")
            self.model.load_state_dict(self.trajectory.swa_state())
            update_bn(self.model, train_loader)


class SWAG(Method):
    """SWAG: Bayesian model averaging over ``num_samples`` weight samples of the SWAG Gaussian.

    Args:
        trajectory: the recorded run.
        likelihood: ``"classification"`` or ``"regression"``.
        rank: K, the deviations in the low-rank part (20).
        scale: s, the covariance scale of the samples (0.5).
        num_samples: S, the weight samples averaged (30).
        low_rank: ``False`` gives SWAG-diagonal.
        sigma_noise: regression observation noise (added to the sample variance).
        seed: seed of the samples.
        batch_size: inputs per forward pass.
        progress: show a progress bar while drawing samples (and recomputing batch norm).

    Fitted: ``samples_``, the S state dicts.
    """

    name = "swag"

    def __init__(
        self,
        trajectory: Trajectory,
        likelihood: str = "classification",
        rank: int = 20,
        scale: float = 0.5,
        num_samples: int = 30,
        low_rank: bool = True,
        sigma_noise: float = 1.0,
        seed: int = 0,
        batch_size: int = 1024,
        progress: bool = False,
    ):
        self.trajectory = _check_trajectory(trajectory)
        super().__init__(averaged_model(trajectory), likelihood, batch_size=batch_size, progress=progress)
        self.moments = swag_moments(trajectory, rank)
        self.rank, self.scale = rank, check_float(scale, "scale")
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.low_rank, self.seed = bool(low_rank), check_int(seed, "seed", 0)
        self.sigma_noise = check_float(sigma_noise, "sigma_noise")

    def _fit(self, train_loader, val_loader) -> None:
        """Draw the ``S`` weight samples (seeded); with batch norm, recompute its statistics for each on
        ``train_loader``."""
        bn = has_batch_norm(self.model)
        if bn and train_loader is None:
            raise ValueError("the model has batch norm: `train_loader` is needed to recompute its statistics")
        if train_loader is not None or val_loader is not None:
            self.input_spec_ = survey(self.model, self.likelihood, train_loader, val_loader).input_spec
        gen, base = seeded_generator(self.seed), model_state(averaged_model(self.trajectory))
        samples = []
        for _ in progress(range(self.num_samples), self.progress, "SWAG samples"):
            theta = self.moments.sample(gen, self.scale, self.low_rank)  # theta_s (float64)
            state = with_parameters(base, theta, self.model)
            if bn:  # the sample's own batch-norm statistics, on the method's own network
                self.model.load_state_dict(state)
                state = model_state(update_bn(self.model, train_loader))
            samples.append(state)
        if bn:
            self.model.load_state_dict(base)
            update_bn(self.model, train_loader)
        self.samples_ = samples

    def _sample_outputs(self, x) -> torch.Tensor:
        """``g(x, theta_s)`` for every sample, ``(S, B, C)``."""
        return torch.stack([batches.functional(self.model, state, x) for state in self.samples_])

    @torch.no_grad()
    def _predict(self, x):
        f = self._sample_outputs(x)
        if self.likelihood == "classification":
            return f.softmax(-1).mean(0)
        return f.mean(0), f.var(0, unbiased=False) + self.sigma_noise**2

    def predictive_moments(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample mean ``(B, C)`` and covariance ``(B, C, C)`` of the outputs over the S weight samples."""

        def moments(piece):
            f = self._sample_outputs(piece)
            dev = f - f.mean(0)
            return f.mean(0), torch.einsum("sbc,sbd->bcd", dev, dev) / len(f)

        return self._stream(x, moments)
