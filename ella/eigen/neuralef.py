"""NeuralEF (Deng, Shi & Zhu, 2022): the top-k eigenfunctions of a kernel, learned by one network.

For a batch with rows ``(x_b, c)`` and outputs ``Psi`` normalised to unit mean square per column,
``R = Psi^T K Psi / (B C)^2`` estimates the Rayleigh quotients of the kernel's integral operator. The
network maximises

    sum_j [ R_jj - sum_{i<j} R_ij^2 / sg(R_ii) ],   with stop-gradient on psi_i inside R_ij (i < j),

so ``psi_1`` is the top eigenfunction, ``psi_2`` the top one orthogonal to ``psi_1``, and so on: the
outputs come out ordered. With random features ``K = Phi Phi^T / S`` the Gram block is never formed:
``R`` is built from ``A = Phi^T Psi`` of shape ``(S, k)``.

Minibatch bias. The batch Gram weights each input's own ``C x C`` block ``kappa(x_b, x_b)`` by ``1/B``
instead of ``1/N``. Here the diagonal blocks are re-weighted so that ``R`` is unbiased for the operator
on the ``N`` training inputs (or, with ``num_data=None``, for the population operator):

    R = (1 - 1/N) R_off + (1/N) R_diag.

With ``B = N`` this is exactly ``Psi^T K Psi / (N C)^2``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from .._checks import check_positive_int
from .._utils import progress, seeded_generator
from ..kernels.base import FeatureKernel, Kernel
from .nets import EigenfunctionNet, eigenfunction_net
from .solver import EigenSolver


def diagonal_blocks(phi: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``kappa(x_b, x_b) = Phi_b Phi_b^T / S`` for every input, shape ``(N, C, C)``."""
    S = phi.shape[-1]
    return torch.cat([p @ p.transpose(1, 2) / S for p in phi.split(chunk)])


def gram_blocks(gram: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """The diagonal ``C x C`` blocks ``kappa(x_b, x_b)`` of a Gram block ``(B C, B C)``, shape ``(B, C, C)``."""
    B = len(gram) // num_outputs
    return gram.reshape(B, num_outputs, B, num_outputs).diagonal(dim1=0, dim2=2).permute(2, 0, 1)


def index_batches(num_data: int, batch_size: int, generator: torch.Generator, device,
                  shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Endless index batches of ``B`` of the ``N`` inputs, reshuffled every epoch; with ``shuffle=False``
    and ``B = N``, all of them in order (for a Gram block formed once: the losses do not depend on the order
    of the rows)."""
    if not shuffle and batch_size == num_data:
        idx = torch.arange(num_data, device=device)
        while True:
            yield idx
    order, pos = torch.randperm(num_data, generator=generator), 0
    while True:
        if pos + batch_size > num_data:  # a new epoch: reshuffle
            order, pos = torch.randperm(num_data, generator=generator), 0
        yield order[pos : pos + batch_size].to(device)
        pos += batch_size


@torch.no_grad()
def operator_moments(kernel: Kernel, x: torch.Tensor, phi: torch.Tensor | None, psi: torch.Tensor,
                     chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Full and diagonal-block parts of ``Psi^T K Psi`` over all of ``x`` in float64, ``(k, k)`` each, for
    :func:`rayleigh_quotients`: through the features ``phi`` if given, else Gram blocks of ``chunk`` inputs."""
    N, C, k = psi.shape
    psi64 = psi.double()
    if phi is not None:
        a = sum(p.reshape(-1, p.shape[-1]).double().T @ q.reshape(-1, k)
                for p, q in zip(phi.split(chunk), psi64.split(chunk)))  # Phi^T Psi over all of x
        full = a.T @ a / phi.shape[-1]
        blocks = diagonal_blocks(phi).double()
    else:
        full = sum(q1.reshape(-1, k).T @ kernel.gram(x1, x2).double() @ q2.reshape(-1, k)
                   for x1, q1 in zip(x.split(chunk), psi64.split(chunk))
                   for x2, q2 in zip(x.split(chunk), psi64.split(chunk)))
        blocks = kernel.diagonal_blocks(x).double()
    return full, psi64.reshape(N * C, k).T @ (blocks @ psi64).reshape(N * C, k)


def _moments(psi: torch.Tensor, phi: torch.Tensor | None, gram: torch.Tensor | None,
             blocks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Full and diagonal-block parts of ``Psi^T K Psi`` for one batch, each also with ``sg(Psi)`` on the left.

    Returns ``(full, full_sg, diag, diag_sg)``, all ``(k, k)``.
    """
    B, C, k = psi.shape
    flat = psi.reshape(B * C, k)
    if phi is not None:
        a = phi.reshape(B * C, -1).T @ flat  # A = Phi^T Psi: (S, k)
        full, full_sg = a.T @ a / phi.shape[-1], a.detach().T @ a / phi.shape[-1]
    else:
        k_psi = gram @ flat  # K Psi
        full, full_sg = flat.T @ k_psi, flat.detach().T @ k_psi
    b_psi = (blocks @ psi).reshape(B * C, k)  # kappa(x_b, x_b) psi(x_b)
    return full, full_sg, flat.T @ b_psi, flat.detach().T @ b_psi


def rayleigh_quotients(full: torch.Tensor, diag: torch.Tensor, batch: int, num_outputs: int,
                       num_data: int | None) -> torch.Tensor:
    """``R = (1 - 1/N) (full - diag) / (B (B-1) C^2) + (1/N) diag / (B C^2)`` (see the module docstring)."""
    C2 = num_outputs**2
    off = (full - diag) / (batch * (batch - 1) * C2) if batch > 1 else torch.zeros_like(full)
    if num_data is None:
        return off
    return (1 - 1 / num_data) * off + diag / (num_data * batch * C2)


def neuralef_loss(psi: torch.Tensor, phi: torch.Tensor | None = None, gram: torch.Tensor | None = None,
                  blocks: torch.Tensor | None = None, num_data: int | None = None,
                  balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The NeuralEF loss (to minimise) for a batch ``psi`` of shape ``(B, C, k)``; also returns ``diag(R)``.

    Give either random features ``phi`` ``(B, C, S)`` or the Gram block ``gram`` ``(B C, B C)``;
    ``blocks`` ``(B, C, C)`` are the diagonal blocks ``kappa(x_b, x_b)`` (read off ``gram`` if omitted).
    ``balanced`` maximises ``sum_j [R_jj - 2 sum_{i<j} R_ij^2 / sg(R_ii)] / sg(R_jj)`` instead (see
    :class:`NeuralEF`); the maximisers are the same eigenfunctions.
    """
    B, C, k = psi.shape
    if blocks is None:
        blocks = diagonal_blocks(phi) if phi is not None else gram_blocks(gram, C)
    full, full_sg, diag, diag_sg = _moments(psi, phi, gram, blocks)
    R = rayleigh_quotients(full, diag, B, C, num_data)  # psi_i^T K psi_j
    R_sg = rayleigh_quotients(full_sg, diag_sg, B, C, num_data)  # sg(psi_i)^T K psi_j
    eigenvalues = R.diagonal()
    scale = eigenvalues.detach().abs().max().clamp_min(1e-30)
    denom = eigenvalues.detach().clamp_min(1e-12 * scale)
    penalty = (torch.triu(R_sg, diagonal=1) ** 2 / denom[:, None]).sum(0)  # sum_{i<j} R_ij^2 / sg(R_ii), per j
    if balanced:  # each term on the scale of its own eigenvalue; overlaps with earlier psi_i cost mu_i
        return -((eigenvalues - 2 * penalty) / denom).sum(), eigenvalues.detach()
    return -(eigenvalues.sum() - penalty.sum()), eigenvalues.detach()


class NeuralEF(EigenSolver):
    """Learn the top-``k`` eigenfunctions of a kernel with a neural network.

    Args:
        k: number of eigenfunctions.
        net: an :class:`~ella.eigen.nets.EigenfunctionNet`; default :func:`~ella.eigen.nets.eigenfunction_net`
            built from ``model`` (a widened copy of it) or an MLP.
        model: the network whose architecture the default eigenfunction network copies.
        steps: optimisation steps (Adam, cosine learning-rate decay).
        batch_size: inputs per step (``B``; the batch has ``B * C`` rows).
        lr: Adam learning rate.
        momentum: EMA coefficient of the eigenvalue estimates during training.
        seed: seed of the batches and of the default network's initialisation.
        progress: show a progress bar.
        balanced: train on ``sum_j [R_jj - 2 sum_{i<j} R_ij^2 / sg(R_ii)] / sg(R_jj)``. Same maximisers, better
            conditioned for steep spectra: with the plain objective the gradient of term ``j`` scales with
            ``mu_j`` (the small eigenfunctions starve when ``mu_k << mu_1``) and an overlap of ``psi_j`` with
            an earlier ``psi_i`` costs nothing but normalisation (the deflated operator is 0 on ``psi_i``),
            so it decays at a rate ``~ mu_j``. Dividing term ``j`` by ``sg(R_jj)`` puts every term on the
            scale of its relative eigen-gap, and the doubled penalty makes the deflated operator ``-mu_i`` on
            ``psi_i``, so overlaps are pushed out at a rate ``~ mu_i / mu_j``. Recommended with full or large
            batches (the division amplifies minibatch noise in the small ``R_jj``).
    """

    def __init__(self, k: int, net: EigenfunctionNet | None = None, model: nn.Module | None = None,
                 steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, momentum: float = 0.9,
                 seed: int = 0, progress: bool = True, balanced: bool = False):
        self.k = check_positive_int(k, "k")
        self.steps = check_positive_int(steps, "steps")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if net is not None and not isinstance(net, nn.Module):
            raise TypeError(f"`net` must be an nn.Module mapping x to (B, C, k), got {type(net).__name__}")
        self.net, self.model = net, model
        self.lr, self.momentum, self.seed, self.progress = lr, momentum, seed, progress
        self.balanced = bool(balanced)
        self.history: list[float] = []

    def fit(self, kernel: Kernel, x: torch.Tensor, num_data: int | None = -1) -> "NeuralEF":
        """Train on inputs ``x`` (the empirical measure over them, uniform over outputs).

        Args:
            kernel: a :class:`~ella.kernels.Kernel`; a :class:`~ella.kernels.FeatureKernel` is evaluated
                once on ``x`` and trained on through its features.
            x: training inputs ``(N, ...)``.
            num_data: size of the measure for the diagonal correction; ``-1`` (default) means ``len(x)``
                (the operator on the training inputs), ``None`` the population operator.
        """
        C = self._check_fit(kernel, x)
        N = len(x)
        num_data = N if num_data == -1 else num_data
        self._default_net = self.net is None
        self._input_shape, self._num_outputs = tuple(x.shape[1:]), C
        if self.net is None:
            self.net = eigenfunction_net(self.model, self.k, x, C, seed=self.seed)
        phi = kernel.features(x) if isinstance(kernel, FeatureKernel) else None
        blocks = diagonal_blocks(phi) if phi is not None else None
        B = min(self.batch_size, N)
        # full batches of a Gram-block kernel: the block is the same every step, so form it once (the loss
        # does not depend on the order of the rows)
        full_gram = kernel.gram(x) if phi is None and B == N else None
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / self.steps)))
        batches = index_batches(N, B, seeded_generator(self.seed), x.device, shuffle=full_gram is None)
        ema = None
        self.net.train()
        bar = progress(range(self.steps), self.progress, "NeuralEF")
        for _, idx in zip(bar, batches):
            psi = self.net(x[idx])
            if phi is not None:
                loss, eig = neuralef_loss(psi, phi=phi[idx], blocks=blocks[idx], num_data=num_data,
                                          balanced=self.balanced)
            else:
                gram = full_gram if full_gram is not None else kernel.gram(x[idx])
                loss, eig = neuralef_loss(psi, gram=gram.to(psi.dtype), num_data=num_data, balanced=self.balanced)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema = eig if ema is None else self.momentum * ema + (1 - self.momentum) * eig
            self.history.append(loss.item())
            if self.progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(mu1=f"{ema[0].item():.3g}", muk=f"{ema[-1].item():.3g}", refresh=False)
        self.net.eval()
        self._training_eigenvalues = ema
        self._refine(kernel, x, phi, num_data)
        return self

    @torch.no_grad()
    def _refine(self, kernel: Kernel, x: torch.Tensor, phi: torch.Tensor | None, num_data: int | None,
                chunk: int = 1024) -> None:
        """One pass over all of ``x``: set the eval-mode norm to the exact mean square of each output on
        ``x`` and the eigenvalues to the Rayleigh quotients over all of ``x`` (instead of batch EMAs)."""
        raw = torch.cat([self.net.raw(x[i : i + chunk]) for i in range(0, len(x), chunk)])
        self.net.norm.running_norm.copy_(raw.pow(2).mean(dim=(0, 1)).sqrt())
        psi = raw / self.net.norm.running_norm
        full, diag = operator_moments(kernel, x, phi, psi, chunk)
        N, C, _ = psi.shape
        self._eigenvalues = rayleigh_quotients(full, diag, N, C, num_data).diagonal().to(psi.dtype)

    def state_dict(self) -> dict:
        """What :meth:`load_state_dict` needs to rebuild the fitted solver."""
        self._check_fitted()
        return {"kind": "neuralef", "k": self.k, "seed": self.seed, "eigenvalues": self._eigenvalues,
                "net": self.net.state_dict(), "default_net": self._default_net,
                "input_shape": self._input_shape, "num_outputs": self._num_outputs}

    def load_state_dict(self, state: dict) -> "NeuralEF":
        """Restore a fitted solver; the default network is rebuilt from ``model``, a custom one must be ``net``."""
        if self.net is None:
            if not state["default_net"]:
                raise ValueError("this NeuralEF was fitted with a custom `net`: pass the same architecture as `net`")
            p = next(self.model.parameters())
            example = torch.zeros(2, *state["input_shape"], device=p.device, dtype=p.dtype)
            self.net = eigenfunction_net(self.model, self.k, example, state["num_outputs"], seed=state["seed"])
        self.net.load_state_dict(state["net"])
        self.net.eval()
        self._default_net, self._input_shape, self._num_outputs = (state["default_net"], state["input_shape"],
                                                                   state["num_outputs"])
        self._eigenvalues = state["eigenvalues"]
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Eigenfunctions ``psi(x)`` of shape ``(B, C, k)``, unit mean square on the training inputs."""
        self._check_fitted()
        with torch.no_grad():
            return self.net(x)
