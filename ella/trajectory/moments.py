"""SWA / SWAG moments of the weights along a trajectory (Maddox et al., 2019), accumulated in one pass.

For snapshots ``theta_1, ..., theta_M`` (flat, ``P`` values each):

* SWA mean ``theta_swa = (1/M) sum_m theta_m`` and second moment ``bar(theta^2) = (1/M) sum_m theta_m^2``;
* diagonal covariance ``Sigma_diag = diag(bar(theta^2) - theta_swa^2)``;
* deviation matrix ``D`` (``P x K``) of the last ``K`` snapshots, column ``theta_m - bar(theta)_m`` with
  ``bar(theta)_m`` the running mean of the first ``m`` snapshots (as SWAG's own code stores it), and the
  low-rank covariance ``D D^T / (K - 1)``.

A SWAG sample is ``theta = theta_swa + sqrt(s) (Sigma_diag^{1/2} z_1 + D z_2 / sqrt(K - 1))`` with
``z_1 ~ N(0, I_P)``, ``z_2 ~ N(0, I_K)`` and scale ``s`` (0.5 in the paper: the ``1/sqrt(2)`` factors).
Means and second moments are accumulated in float64.
"""

from __future__ import annotations

import torch

from ..checks import check_positive_int


class WeightMoments:
    """Streaming SWA/SWAG moments: :meth:`update` once per snapshot, then read the moments.

    Args:
        rank: K, the number of last deviations kept for the low-rank part.
    """

    def __init__(self, rank: int = 20):
        self.rank = check_positive_int(rank, "rank")
        self.count = 0
        self.mean: torch.Tensor | None = None  # theta_swa (float64)
        self.sq_mean: torch.Tensor | None = None  # bar(theta^2) (float64)
        self._deviations: list[torch.Tensor] = []  # theta_m - bar(theta)_m, at most K

    def update(self, theta: torch.Tensor) -> None:
        """Fold in one flat snapshot ``theta`` of shape ``(P,)``; its deviation is kept in ``theta``'s dtype."""
        dtype, theta = theta.dtype, theta.detach().to(torch.float64)
        if self.mean is None:
            self.mean, self.sq_mean = torch.zeros_like(theta), torch.zeros_like(theta)
        elif theta.shape != self.mean.shape:
            raise ValueError(f"snapshot {self.count} has {theta.numel()} parameters, earlier ones {self.mean.numel()}")
        n = self.count
        # running means: bar(t)_{n+1} = bar(t)_n n / (n + 1) + t / (n + 1)
        self.mean = self.mean * (n / (n + 1)) + theta / (n + 1)
        self.sq_mean = self.sq_mean * (n / (n + 1)) + theta.pow(2) / (n + 1)
        self._deviations = (self._deviations + [(theta - self.mean).to(dtype)])[-self.rank :]
        self.count = n + 1

    @property
    def variance(self) -> torch.Tensor:
        """``diag(Sigma_diag) = bar(theta^2) - theta_swa^2``, clamped at 0, float64 ``(P,)``."""
        return (self.sq_mean - self.mean.pow(2)).clamp_min(0)

    @property
    def deviations(self) -> torch.Tensor:
        """``D`` of shape ``(P, K)``: the last ``K`` deviations from the running mean, oldest first."""
        return torch.stack(self._deviations, dim=1)

    def sample(self, generator: torch.Generator, scale: float = 0.5, low_rank: bool = True) -> torch.Tensor:
        """One SWAG sample ``theta_swa + sqrt(s) (Sigma_diag^{1/2} z_1 + D z_2 / sqrt(K - 1))`` (float64).

        ``z_1`` and ``z_2`` are drawn from ``generator`` on the CPU; ``low_rank=False`` gives SWAG-diagonal.
        """
        z1 = torch.randn(self.mean.shape, generator=generator, dtype=torch.float64).to(self.mean.device)
        step = self.variance.sqrt() * z1  # Sigma_diag^{1/2} z_1
        K = len(self._deviations)
        if low_rank and K > 1:
            z2 = torch.randn(K, generator=generator, dtype=torch.float64).to(self.mean.device)
            step = step + self.deviations.double() @ z2 / (K - 1) ** 0.5  # D z_2 / sqrt(K - 1)
        return self.mean + scale**0.5 * step

    def state_dict(self) -> dict:
        return {
            "rank": self.rank,
            "count": self.count,
            "mean": self.mean,
            "sq_mean": self.sq_mean,
            "deviations": list(self._deviations),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "WeightMoments":
        out = cls(state["rank"])
        out.count, out.mean, out.sq_mean = state["count"], state["mean"], state["sq_mean"]
        out._deviations = list(state["deviations"])
        return out
