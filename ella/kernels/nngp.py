"""The NNGP kernel of an architecture, by Monte Carlo over random initialisations.

For weights drawn from the architecture's initialisation distribution, ``theta_s ~ p_0``,

    kappa(x, x') = E_theta[g(x, theta) g(x', theta)^T] ~= (1/S) sum_s g(x, theta_s) g(x', theta_s)^T,

a feature kernel with ``phi_s(x) = g(x, theta_s)`` (shape ``(B, C, S)``). Initialisation ``s`` is drawn from
the seed ``seed * 1_000_003 + s`` alone, so every call of :meth:`NNGPKernel.features` (training or test
inputs, any batching) uses the same ``S`` networks.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import batches
from ..checks import check_positive_int
from ..utils import progress, reinitialised
from .base import FeatureKernel


class NNGPKernel(FeatureKernel):
    """Monte-Carlo NNGP kernel ``E_theta[g(x, theta) g(x', theta)^T]`` of an architecture.

    Args:
        architecture: an ``nn.Module`` (its initialisation is redrawn by ``reset_parameters``) or a factory
            ``seed -> nn.Module`` such as ``lambda seed: ella_lab.models.mnist1d_mlp(seed=seed)``. Outputs
            ``(B, C)``; evaluated in eval mode.
        num_samples: S, the number of random initialisations.
        seed: seed of the initialisations.
        batch_size: inputs pushed through a network together.
        cache: keep the ``S`` networks in memory after their first use (``S x P`` weights) instead of
            re-drawing them at every call of :meth:`features`.
        progress: show a progress bar over the initialisations.
    """

    def __init__(
        self,
        architecture: nn.Module | Callable[[int], nn.Module],
        num_samples: int = 256,
        seed: int = 0,
        batch_size: int = 1024,
        cache: bool = True,
        progress: bool = True,
    ):
        if not (isinstance(architecture, nn.Module) or callable(architecture)):
            raise TypeError(
                "`architecture` must be an nn.Module or a callable seed -> nn.Module, "
                f"got {type(architecture).__name__}"
            )
        self.architecture = architecture
        self.num_features = check_positive_int(num_samples, "num_samples")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed, self.progress, self.cache = seed, progress, cache
        self._num_outputs = None
        self._networks: dict[int, nn.Module] = {}

    @property
    def num_outputs(self) -> int:
        if self._num_outputs is None:
            raise AttributeError("num_outputs is known after the first evaluation of the kernel")
        return self._num_outputs

    def network(self, s: int) -> nn.Module:
        """Initialisation ``theta_s`` of the architecture, from the seed ``seed * 1_000_003 + s``."""
        if s in self._networks:
            return self._networks[s]
        seed = self.seed * 1_000_003 + s
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if isinstance(self.architecture, nn.Module):
                net = reinitialised(self.architecture)
            else:
                net = self.architecture(seed)
        if not isinstance(net, nn.Module):
            raise TypeError(f"`architecture` factory must return an nn.Module, got {type(net).__name__}")
        if self.cache:
            self._networks[s] = net.eval()
        return net.eval()

    def _outputs(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return batches.outputs(net, x, self.batch_size)

    def infer_num_outputs(self, x: torch.Tensor) -> int:
        net = self.network(0)
        p = next(net.parameters())
        self._num_outputs = self._outputs(net.to(device=x.device, dtype=self._dtype(x, p)), x).shape[1]
        return self._num_outputs

    @staticmethod
    def _dtype(x: torch.Tensor, p: torch.Tensor) -> torch.dtype:
        return x.dtype if x.dtype.is_floating_point else p.dtype

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``Phi(x)[b, c, s] = g(x_b, theta_s)_c``, shape ``(B, C, S)``."""
        cols = []
        for s in progress(range(self.num_features), self.progress, "NNGP features"):
            net = self.network(s)
            p = next(net.parameters())
            cols.append(self._outputs(net.to(device=x.device, dtype=self._dtype(x, p)), x))  # g(x, theta_s): (B, C)
        phi = torch.stack(cols, dim=-1)
        self._num_outputs = phi.shape[1]
        return phi
