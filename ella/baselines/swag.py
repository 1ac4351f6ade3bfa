"""SWA and SWAG (Maddox et al., 2019) from a recorded trajectory, as methods of ella's protocol.

* :class:`SWA`: the network at the averaged weights ``theta_swa = (1/M) sum_m theta_m`` (batch-norm
  statistics recomputed on the training loader); predictions ``softmax(g(x, theta_swa))``.
* :class:`SWAG`: the Gaussian ``N(theta_swa, s (Sigma_diag + D D^T / (K - 1)))`` over the weights, with
  ``Sigma_diag = diag(bar(theta^2) - theta_swa^2)`` and ``D`` the last ``K`` deviations from the running mean
  (:mod:`ella.trajectory.moments`); predictions average ``softmax(g(x, theta_s))`` over ``S`` samples
  ``theta_s = theta_swa + sqrt(s) (Sigma_diag^{1/2} z_1 + D z_2 / sqrt(K - 1))``. The paper's setting:
  rank ``K = 20``, scale ``s = 0.5``, ``S = 30``. The samples are drawn once, at ``fit``, from ``seed`` (and
  each gets its own batch-norm statistics when the model has batch norm).

Both are built from the same :class:`~ella.trajectory.Trajectory` as the SGD-trajectory kernel.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from .._checks import check_likelihood, check_positive_int
from .._utils import progress as progress_bar
from .._utils import seeded_generator
from ..trajectory import Trajectory, WeightMoments, flat_parameters, update_bn
from ..trajectory.snapshots import model_state, with_parameters
from ..trajectory.swa import averaged_model, has_batch_norm
from .map import _positive_float, _prepare_input

__all__ = ["SWA", "SWAG", "swag_moments"]


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
        raise ValueError(f"`rank` = {rank} but the trajectory kept {trajectory.moments.rank} deviations and no "
                         f"weight snapshots: record with swag_rank={rank}")
    moments, model = WeightMoments(rank), trajectory.model
    for m in range(trajectory.num_snapshots):
        moments.update(flat_parameters(trajectory.snapshot(m), model, next(model.parameters()).dtype))
    return moments


class SWA:
    """The SWA solution as a method: ``predict`` is ``softmax(g(x, theta_swa))`` (or ``(mean, sigma^2)``).

    Args:
        trajectory: the recorded run.
        likelihood: ``"classification"`` or ``"regression"``.
        sigma_noise: observation noise standard deviation for regression.
        batch_size: inputs per forward pass.
    """

    name = "swa"
    link = None

    def __init__(self, trajectory: Trajectory, likelihood: str = "classification", sigma_noise: float = 1.0,
                 batch_size: int = 1024):
        self.trajectory = _check_trajectory(trajectory)
        self.likelihood = check_likelihood(likelihood)
        self.sigma_noise = _positive_float(sigma_noise, "sigma_noise")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.model = averaged_model(trajectory)  # batch-norm statistics are recomputed at fit

    def fit(self, train_loader=None, val_loader=None) -> "SWA":
        """Recompute batch-norm statistics on ``train_loader`` if the model has batch norm. Returns ``self``."""
        if has_batch_norm(self.model):
            if train_loader is None:
                raise ValueError("the model has batch norm: `train_loader` is needed to recompute its statistics")
            update_bn(self.model, train_loader)
        return self

    @torch.no_grad()
    def _outputs(self, x: torch.Tensor, state=None) -> torch.Tensor:
        x = _prepare_input(self.model, x)
        if state is None:  # theta_swa: the model itself
            out = [self.model(x[i: i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        else:
            out = [functional_call(self.model, state, (x[i: i + self.batch_size],))
                   for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).reshape(len(x), -1)

    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent moments ``(g(x, theta_swa), 0)``."""
        mean = self._outputs(x)
        return mean, mean.new_zeros(*mean.shape, mean.shape[1])

    def predict(self, x: torch.Tensor):
        """Probabilities ``softmax(g(x, theta_swa))`` ``(B, C)``, or ``(mean, sigma^2)`` for regression."""
        mean = self._outputs(x)
        if self.likelihood == "classification":
            return mean.softmax(-1)
        return mean, torch.full_like(mean, self.sigma_noise**2)


class SWAG(SWA):
    """SWAG: Bayesian model averaging over ``num_samples`` weight samples of the SWAG Gaussian.

    Args:
        trajectory: the recorded run.
        likelihood: ``"classification"`` or ``"regression"``.
        rank: K, the deviations in the low-rank part (20).
        scale: s, the covariance scale of the samples (0.5).
        num_samples: S, the weight samples averaged (30).
        low_rank: ``False`` gives SWAG-diagonal.
        sigma_noise: observation noise standard deviation for regression.
        seed: seed of the samples.
        batch_size: inputs per forward pass.
        progress: show a progress bar while drawing samples (and recomputing batch norm).
    """

    name = "swag"

    def __init__(self, trajectory: Trajectory, likelihood: str = "classification", rank: int = 20,
                 scale: float = 0.5, num_samples: int = 30, low_rank: bool = True, sigma_noise: float = 1.0,
                 seed: int = 0, batch_size: int = 1024, progress: bool = False):
        super().__init__(trajectory, likelihood, sigma_noise, batch_size)
        self.moments = swag_moments(trajectory, rank)
        self.rank, self.scale = rank, _positive_float(scale, "scale")
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.low_rank, self.seed, self.progress = low_rank, seed, progress
        self.samples: list[dict[str, torch.Tensor]] | None = None

    def fit(self, train_loader=None, val_loader=None) -> "SWAG":
        """Draw the ``S`` weight samples (seeded); with batch norm, recompute its statistics for each on
        ``train_loader``. Returns ``self``."""
        bn = has_batch_norm(self.model)
        if bn and train_loader is None:
            raise ValueError("the model has batch norm: `train_loader` is needed to recompute its statistics")
        super().fit(train_loader, val_loader)
        gen, base = seeded_generator(self.seed), model_state(self.model)
        self.samples = []
        for _ in progress_bar(range(self.num_samples), self.progress, "SWAG samples"):
            theta = self.moments.sample(gen, self.scale, self.low_rank)  # theta_s (float64)
            state = with_parameters(base, theta, self.model)
            if bn:  # the sample's own batch-norm statistics
                self.model.load_state_dict(state)
                state = model_state(update_bn(self.model, train_loader))
            self.samples.append(state)
        if bn:
            self.model.load_state_dict(base)
        return self

    def _sample_outputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.samples is None:
            raise RuntimeError("SWAG is not fitted: call `fit(train_loader)` first to draw the weight samples")
        return torch.stack([self._outputs(x, state) for state in self.samples])  # g(x, theta_s): (S, B, C)

    def predictive_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample mean ``(B, C)`` and covariance ``(B, C, C)`` of the outputs over the S weight samples."""
        f = self._sample_outputs(x)
        mean = f.mean(0)
        dev = f - mean
        return mean, torch.einsum("sbc,sbd->bcd", dev, dev) / len(f)

    def predict(self, x: torch.Tensor):
        """``(1/S) sum_s softmax(g(x, theta_s))`` ``(B, C)``; for regression ``(mean, var + sigma^2)``."""
        f = self._sample_outputs(x)
        if self.likelihood == "classification":
            return f.softmax(-1).mean(0)
        return f.mean(0), f.var(0, unbiased=False) + self.sigma_noise**2
