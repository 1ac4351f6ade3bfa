"""The empirical neural tangent kernel ``kappa(x, x') = J(x) J(x')^T`` of a network at its weights.

Three estimators behind one interface (``estimator=``):

* ``"exact"``: dense per-sample Jacobians; the ground truth for small networks. As a feature kernel
  it has ``S = P`` features ``Phi(x) = sqrt(P) J(x)``.
* ``"jvp"``: random features ``phi_s(x) = J(x) v_s`` by forward-mode ``torch.func.jvp``, exact per
  feature, with ``E[v v^T] = I`` (Rademacher or Gaussian ``v``), so ``Phi Phi^T / S -> J J^T``.
* ``"fd"``: the same features by finite differences of the outputs under weight perturbations,
  ``(g(x, theta + eps v) - g(x, theta)) / eps`` (or central differences). Needs only forward passes.

The directions ``v_s`` are generated in fixed blocks from ``seed``, so ``"jvp"`` and ``"fd"`` use the
same ``v_s`` and every call of :meth:`EmpiricalNTK.features` (training or test inputs) the same features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import batches, distributed
from ..checks import check_bool, check_choice, check_float, check_int, check_model, check_positive_int
from ..functional import jacobian_rows, jacobians, jvps, perturbed_outputs
from ..names import NTK_ESTIMATORS
from ..utils import num_parameters, progress, seeded_generator
from .base import FeatureKernel

DISTRIBUTIONS = ("rademacher", "gaussian")
_BLOCK = 32  # directions generated (and pushed through the network) together


def directions(
    seed: int, block: int, num_params: int, distribution: str = "rademacher", dtype=torch.float32
) -> torch.Tensor:
    """Block ``block`` of ``_BLOCK`` random directions ``v_s`` in ``R^P`` with ``E[v v^T] = I``.

    Generated on the CPU from ``(seed, block)`` alone, so a block is the same on any device and for any
    batching of the data.
    """
    g = seeded_generator(seed * 1_000_003 + block)
    if distribution == "rademacher":
        return (torch.randint(0, 2, (_BLOCK, num_params), generator=g) * 2 - 1).to(dtype)
    return torch.randn(_BLOCK, num_params, generator=g, dtype=torch.float64).to(dtype)


def default_eps(dtype: torch.dtype, central: bool = False) -> float:
    """Finite-difference step: 1e-5 in float32 (as in NeuralEF), 1e-8 (central: 1e-6) in float64, 1e-2 in
    half precision.

    Smaller than the textbook ``sqrt(eps_mach)`` for smooth functions: in ReLU networks units whose
    pre-activation sits near zero (dead units, whose biases weight decay drives to zero) flip under the
    perturbation, an error that grows with ``eps``; on the MNIST-1D CNN the feature error against the
    exact JVP fell from 2.6e-2 at 3.5e-4 to 4.8e-3 at 1e-5 in float32 (``benchmarks/ntk_estimators.py``).
    """
    if dtype == torch.float64:
        return 1e-6 if central else 1e-8
    return 1e-5 if dtype == torch.float32 else 1e-2


class EmpiricalNTK(FeatureKernel):
    """Empirical NTK of ``model`` at its current weights (``in_weight_space``).

    Args:
        model: network ``g(x, theta)`` with outputs of shape ``(B, C)``; used in eval mode, never modified
            (perturbed weights are evaluated through ``functional_call``).
        estimator: ``"jvp"`` (default), ``"fd"`` or ``"exact"``.
        num_samples: S, the number of random directions (ignored by ``"exact"``).
        distribution: ``"rademacher"`` or ``"gaussian"`` directions.
        eps: finite-difference step; default :func:`default_eps` of the model's dtype.
        central: central differences ``(g(theta + eps v) - g(theta - eps v)) / (2 eps)`` for ``"fd"``.
        seed: seed of the directions.
        batch_size: inputs pushed through the network together.
        progress: show a progress bar over the directions.
    """

    in_weight_space = True

    def __init__(
        self,
        model: nn.Module,
        estimator: str = "jvp",
        num_samples: int = 1000,
        distribution: str = "rademacher",
        eps: float | None = None,
        central: bool = False,
        seed: int = 0,
        batch_size: int = 512,
        progress: bool = True,
    ):
        self.model = check_model(model)
        self.estimator = check_choice(estimator, "estimator", NTK_ESTIMATORS)
        self.distribution = check_choice(distribution, "distribution", DISTRIBUTIONS)
        self.central = check_bool(central, "central")
        self.seed = check_int(seed, "seed", 0)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.progress = check_bool(progress, "progress")
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.num_params = num_parameters(model)
        self.dtype = next(model.parameters()).dtype
        self.eps = default_eps(self.dtype, central) if eps is None else check_float(eps, "eps")
        self.num_features = self.num_params if estimator == "exact" else num_samples
        self.device = next(model.parameters()).device
        self._num_outputs = None
        self._block: tuple[int, torch.Tensor] | None = None  # (index, directions) of the last block drawn

    @property
    def config(self) -> dict:
        """The constructor's arguments (all but ``model`` and ``progress``), JSON-ready: what rebuilds this kernel."""
        return {
            "estimator": self.estimator,
            "num_samples": self.num_samples,
            "distribution": self.distribution,
            "eps": self.eps,
            "central": self.central,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def resampled(self, num_samples: int, seed: int) -> "EmpiricalNTK":
        """The same estimator with ``num_samples`` other random directions, drawn from ``seed`` (no progress bar)."""
        return EmpiricalNTK(self.model, **{**self.config, "num_samples": num_samples, "seed": seed}, progress=False)

    @property
    def num_outputs(self) -> int:
        if self._num_outputs is None:
            raise AttributeError("num_outputs is known after the first evaluation of the kernel")
        return self._num_outputs

    def infer_num_outputs(self, x) -> int:
        return self.outputs(batches.to_model(x, self.model)).shape[1]

    def outputs(self, x) -> torch.Tensor:
        """``g(x, theta)`` flattened to ``(B, C)``, in batches."""
        out = batches.outputs(self.model, x, self.batch_size)
        self._num_outputs = out.shape[1]
        return out

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Dense per-sample Jacobians ``J(x)``, shape ``(B, C, P)``."""
        return jacobians(self.model, x)

    def jacobian_rows(self, x, index: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """Rows ``J_{c_b}(x_b)`` for one output ``c_b`` per input, shape ``(B, P)``."""
        split = distributed.shared()
        pieces = []
        for j, start in enumerate(range(0, batches.num_rows(x), chunk)):
            piece = batches.take(x, slice(start, start + chunk))
            if split and not distributed.mine(j):
                pieces.append(
                    torch.zeros(batches.num_rows(piece), self.num_params, dtype=self.dtype, device=self.device)
                )
            else:
                pieces.append(jacobian_rows(self.model, piece, index[start : start + chunk], chunk))
        rows = torch.cat(pieces)
        return distributed.total(rows) if split else rows

    def jvp(self, x: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        """``J(x) V`` for ``V`` of shape ``(P, k)``, by k forward-mode JVPs; returns ``(B, C, k)``."""
        return torch.cat([jvps(self.model, piece, tangents.T) for piece in batches.chunks(x, self.batch_size)])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``Phi(x)`` of shape ``(B, C, S)`` with ``kappa ~= Phi Phi^T / S``."""
        x = batches.to_model(x, self.model)
        if self.estimator == "exact":
            jac = self.jacobian(x)
            self._num_outputs = jac.shape[1]
            return jac * math.sqrt(self.num_params)
        base = self.outputs(x)  # g(x, theta): (B, C)
        S, C = self.num_features, base.shape[1]
        phi = torch.empty(len(base), C, S, dtype=base.dtype, device=base.device)
        num_blocks = math.ceil(S / _BLOCK)
        split = distributed.shared()  # every rank computes its blocks, and the blocks are added up
        if split:
            phi.zero_()
        blocks = [block for block in range(num_blocks) if not split or distributed.mine(block)]
        # one tick of the progress bar per block of directions on one batch of inputs
        units = [(block, start) for block in blocks for start in range(0, len(base), self.batch_size)]
        for block, start in progress(units, self.progress, f"NTK features ({self.estimator})"):
            lo, hi = block * _BLOCK, min(S, (block + 1) * _BLOCK)
            v = self._directions(block)[: hi - lo]
            rows = slice(start, start + self.batch_size)
            piece = batches.take(x, rows)
            phi[rows, :, lo:hi] = (
                self._jvp_block(piece, v) if self.estimator == "jvp" else self._fd_block(piece, v, base[rows])
            )
        return distributed.total(phi) if split else phi

    def _directions(self, block: int) -> torch.Tensor:
        """Block ``block`` of directions on the kernel's device; kept, so that a kernel of at most one block
        (e.g. the few directions of a prediction-time estimate) draws its directions once."""
        if self._block is None or self._block[0] != block:
            v = directions(self.seed, block, self.num_params, self.distribution, self.dtype).to(self.device)
            self._block = (block, v)
        return self._block[1]

    @torch.no_grad()
    def _jvp_block(self, x, v: torch.Tensor) -> torch.Tensor:
        # v_s -> J(x) v_s for a block of directions on one batch of inputs: (B, C, s)
        return jvps(self.model, x, v)

    @torch.no_grad()
    def _fd_block(self, x, v: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        # (g(x, theta + eps v_s) - g(x, theta)) / eps, or the central difference, on one batch of inputs: (B, C, s)
        cols = []
        for vs in v:
            plus = perturbed_outputs(self.model, x, vs, self.eps)
            if self.central:
                cols.append((plus - perturbed_outputs(self.model, x, vs, -self.eps)) / (2 * self.eps))
            else:
                cols.append((plus - base) / self.eps)
        return torch.stack(cols, dim=-1)

    def gram(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        if self.estimator == "exact":
            # K = J_1 J_2^T over the flattened (b, c) rows
            j1 = self.jacobian(batches.to_model(x1, self.model)).flatten(0, 1)
            j2 = j1 if x2 is None else self.jacobian(batches.to_model(x2, self.model)).flatten(0, 1)
            self._num_outputs = len(j1) // batches.num_rows(x1)
            return j1 @ j2.T
        return super().gram(x1, x2)
