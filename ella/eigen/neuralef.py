"""NeuralEF (Deng, Shi & Zhu, 2022): the top-k eigenfunctions of a kernel, learned by one network.

For a batch with rows ``(x_b, c)`` and outputs ``Psi`` normalised to unit mean square per column,
``R = Psi^T K Psi / (B C)^2`` estimates the Rayleigh quotients of the kernel's integral operator. The
network maximises

    sum_j [ R_jj - sum_{i<j} R_ij^2 / sg(R_ii) ],   with stop-gradient on psi_i inside R_ij (i < j),

so ``psi_1`` is the top eigenfunction, ``psi_2`` the top one orthogonal to ``psi_1``, and so on: the
outputs come out ordered. With random features ``K = Phi Phi^T / S`` the Gram block is never formed:
``R`` is built from ``A = Phi^T Psi`` of shape ``(S, k)``.

``R`` is made unbiased for the operator on the ``N`` training inputs (:mod:`ella.eigen.rayleigh`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import batches, distributed
from ..checks import check_bool
from ..kernels.base import FeatureKernel, Kernel
from ..utils import progress, seeded_generator
from .nets import NetworkSolver
from .rayleigh import (
    batch_moments,
    diagonal_blocks,
    gram_blocks,
    index_batches,
    operator_moments,
    paired_quotients,
    rayleigh_quotients,
)

#: the least denominator ``sg(R_ii)`` of the penalty, relative to the largest ``|R_jj|``: a guard against division
#: by zero for a positive semi-definite kernel, whose Rayleigh quotients are never negative.
PSD_FLOOR = 1e-12
#: the same for an indefinite kernel (a graph's normalised adjacency): there a random start has quotients near zero
#: or below, whose reciprocals blow the first steps up (on a 600-node block model every eigenfunction but the first
#: was lost); 1% of the top keeps the penalty's weight bounded, and the top k must lie above it.
INDEFINITE_FLOOR = 1e-2
#: view pairs at least behind the eigenvalues of a kernel known through pairs of views (the standard error of each
#: quotient about 1 / sqrt(PAIRED_SAMPLES))
PAIRED_SAMPLES = 2**15


def neuralef_loss(
    psi: torch.Tensor,
    phi: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    blocks: torch.Tensor | None = None,
    num_data: int | None = None,
    balanced: bool = False,
    batch: int | None = None,
    reduce=None,
    floor: float = PSD_FLOOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The NeuralEF loss (to minimise) for a batch ``psi`` of shape ``(B, C, k)``; also returns ``diag(R)``.

    Give either random features ``phi`` ``(B, C, S)`` or the Gram block ``gram`` ``(B C, B C)``;
    ``blocks`` ``(B, C, C)`` are the diagonal blocks ``kappa(x_b, x_b)`` (read off ``gram`` if omitted).
    ``balanced`` maximises ``sum_j [R_jj - 2 sum_{i<j} R_ij^2 / sg(R_ii)] / sg(R_jj)`` instead (see
    :class:`NeuralEF`); the maximisers are the same eigenfunctions. When the batch's rows are split across
    processes, ``batch`` is its whole number of inputs and ``reduce`` sums the moments over the processes.
    The denominators ``sg(R_ii)`` are at least ``floor`` times the largest ``|R_jj|`` (:data:`PSD_FLOOR`, or
    :data:`INDEFINITE_FLOOR` for a kernel that is not positive semi-definite).
    """
    B, C, k = psi.shape
    B = batch or B
    if blocks is None:
        blocks = diagonal_blocks(phi) if phi is not None else gram_blocks(gram, C)
    full, full_sg, diag, diag_sg = batch_moments(psi, phi, gram, blocks, reduce)
    R = rayleigh_quotients(full, diag, B, C, num_data)  # psi_i^T K psi_j
    R_sg = rayleigh_quotients(full_sg, diag_sg, B, C, num_data)  # sg(psi_i)^T K psi_j
    return neuralef_objective(R, R_sg, balanced, floor)


def neuralef_objective(
    R: torch.Tensor, R_sg: torch.Tensor, balanced: bool = False, floor: float = PSD_FLOOR
) -> tuple[torch.Tensor, torch.Tensor]:
    """The NeuralEF loss (to minimise) from the Rayleigh quotients ``R`` ``(k, k)`` and ``R_sg`` (the same with
    ``sg(psi_i)``); also returns ``diag(R)``. See :func:`neuralef_loss`."""
    eigenvalues = R.diagonal()
    scale = eigenvalues.detach().abs().max().clamp_min(1e-30)
    denom = eigenvalues.detach().clamp_min(floor * scale)
    penalty = (torch.triu(R_sg, diagonal=1) ** 2 / denom[:, None]).sum(0)  # sum_{i<j} R_ij^2 / sg(R_ii), per j
    if balanced:  # each term on the scale of its own eigenvalue; overlaps with earlier psi_i cost mu_i
        return -((eigenvalues - 2 * penalty) / denom).sum(), eigenvalues.detach()
    return -(eigenvalues.sum() - penalty.sum()), eigenvalues.detach()


class NeuralEF(NetworkSolver):
    """Learn the top-``k`` eigenfunctions of a kernel with a neural network.

    Args:
        k: number of eigenfunctions.
        net: an :class:`~ella.eigen.nets.EigenfunctionNet` to start from (a copy is trained; the given one is
            never changed), or the default :func:`~ella.eigen.nets.eigenfunction_net` built on ``model``:
            ``"head"`` (or ``None``) a small MLP on the model's own hidden features (the input of its last
            ``nn.Linear``), which ELLA evaluates on the forward pass that gives the MAP outputs, so a prediction
            costs that forward pass and the head; ``"copy"`` a widened copy of the model's architecture (the
            papers' choice), one more forward pass of the model's size per prediction.
        model: the network the default eigenfunction network is built on (default: the kernel's ``model``, e.g.
            the network of an :class:`~ella.kernels.EmpiricalNTK`).
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
        population: make the minibatch quotients unbiased for the population operator instead of the operator
            on the ``N`` training inputs (see :mod:`ella.eigen.rayleigh`).

    Fitted attributes: ``net_`` (the trained network), ``eigenvalues_``, ``history_`` (the loss per step).
    """

    kind = "neuralef"

    def __init__(
        self,
        k: int,
        net: nn.Module | str | None = None,
        model: nn.Module | None = None,
        steps: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        momentum: float = 0.9,
        seed: int = 0,
        progress: bool = True,
        balanced: bool = False,
        population: bool = False,
    ):
        super().__init__(
            k,
            net=net,
            model=model,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            seed=seed,
            progress=progress,
            population=population,
        )
        self.balanced = check_bool(balanced, "balanced")

    def fit(self, kernel: Kernel, x) -> "NeuralEF":
        """Train on inputs ``x`` (the empirical measure over them, uniform over outputs).

        Args:
            kernel: a :class:`~ella.kernels.Kernel`; a :class:`~ella.kernels.FeatureKernel` is evaluated
                once on ``x`` and trained on through its features.
            x: training inputs ``(N, ...)`` (a tensor or a dict of tensors).
        """
        C = self._check_fit(kernel, x)
        N = batches.num_rows(x)
        num_data = None if self.population else N
        net = self._initial_net(x, C, kernel)
        B = min(self.batch_size, N)
        floor = PSD_FLOOR if kernel.positive_semidefinite else INDEFINITE_FLOOR
        if kernel.paired:  # no Gram block: two views of each clean input of a batch, the augmentations seeded
            with torch.random.fork_rng(devices=[] if batches.device(x).type == "cpu" else [batches.device(x)]):
                torch.manual_seed(self.seed)
                return self._fit_paired(kernel, x, net, B, C, floor)
        z = net.trained_input(x)  # a head on a frozen model reads hidden features computed once, not a forward
        phi = kernel.features(x) if isinstance(kernel, FeatureKernel) else None
        blocks = diagonal_blocks(phi) if phi is not None else None
        # full batches of a Gram-block kernel: the block is the same every step, so form it once (the loss
        # does not depend on the order of the rows)
        full_gram = kernel.gram(x) if phi is None and B == N else None
        order = index_batches(N, B, seeded_generator(self.seed), batches.device(x), shuffle=full_gram is None)
        # with features and several processes, each takes every R-th row of a batch; the moments and the gradients
        # are summed over them, so every process takes the step of the whole batch
        split = distributed.shared() and phi is not None

        def batch_loss(idx):
            if split:  # the L2 batch norm over the rows of every process
                rows = distributed.my_rows(idx)
                raw = net.raw_from(batches.take(z, rows))
                square = distributed.total_with_grad(raw.pow(2).sum(dim=(0, 1))) / (len(idx) * C)
                psi = raw / square.add(net.norm.eps).sqrt()
                return neuralef_loss(
                    psi,
                    phi=phi[rows],
                    blocks=blocks[rows],
                    num_data=num_data,
                    balanced=self.balanced,
                    batch=len(idx),
                    reduce=distributed.total_with_grad,
                )
            psi = net.norm(net.raw_from(batches.take(z, idx)))
            if phi is not None:
                return neuralef_loss(psi, phi=phi[idx], blocks=blocks[idx], num_data=num_data, balanced=self.balanced)
            gram = full_gram if full_gram is not None else kernel.gram(batches.take(x, idx))
            return neuralef_loss(psi, gram=gram.to(psi.dtype), num_data=num_data, balanced=self.balanced, floor=floor)

        self._train(net, order, batch_loss, distributed.whole_gradient if split else None)
        self.num_outputs_, self.input_spec_ = C, batches.spec(x)
        self.eigenvalues_ = self._refine(kernel, x, z, phi, num_data)
        return self

    def _train(self, net: nn.Module, order, batch_loss, synchronise=None) -> None:
        """``steps`` Adam steps (cosine learning-rate decay) on ``batch_loss(idx) -> (loss, diag R)`` over the index
        batches ``order``; ``synchronise(parameters)`` after each backward pass (several processes). Sets ``net_``
        (in eval mode) and ``history_``."""
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / self.steps)))
        ema, history = None, []
        net.train()
        bar = progress(range(self.steps), self.progress, "NeuralEF")
        for _, idx in zip(bar, order):
            loss, eig = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if synchronise is not None:  # every process takes the step of the whole batch
                synchronise(net.parameters())
            opt.step()
            sched.step()
            ema = eig if ema is None else self.momentum * ema + (1 - self.momentum) * eig
            history.append(loss.item())
            if self.progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(mu1=f"{ema[0].item():.3g}", muk=f"{ema[-1].item():.3g}", refresh=False)
        net.eval()
        self.net_, self.history_ = net, history

    def _fit_paired(self, kernel: Kernel, x, net, B: int, C: int, floor: float) -> "NeuralEF":
        """Train on two views of each clean input of a batch (:func:`~ella.eigen.rayleigh.paired_quotients`); the
        eigenvalues from one pass of view pairs over all of ``x``."""
        N = batches.num_rows(x)

        def batch_loss(idx):
            v1, v2 = kernel.views(batches.take(x, idx))
            psi = net.norm(net.raw(torch.cat([v1, v2])))  # one normalisation over both views
            R, R_sg = paired_quotients(psi[: len(idx)], psi[len(idx) :])
            return neuralef_objective(R, R_sg, self.balanced, floor)

        self._train(net, index_batches(N, B, seeded_generator(self.seed), batches.device(x)), batch_loss)
        self.num_outputs_, self.input_spec_ = C, batches.spec(x)
        # the eval-mode norm and the eigenvalues from pairs of views of every input, drawn often enough that at least
        # PAIRED_SAMPLES pairs are averaged (one pair per input is noisy for a small data set)
        repeats = -(-PAIRED_SAMPLES // N)
        with torch.no_grad():
            raw = [
                (net.raw(v1), net.raw(v2))
                for _ in range(repeats)
                for v1, v2 in map(kernel.views, batches.chunks(x, 1024))
            ]
            square = sum(a.pow(2).sum(dim=(0, 1)) + b.pow(2).sum(dim=(0, 1)) for a, b in raw) / (2 * repeats * N * C)
            net.norm.running_norm.copy_(square.sqrt())
            norm = net.norm.running_norm
            R = sum(paired_quotients(a / norm, b / norm)[0] * len(a) for a, b in raw) / (repeats * N)
        self.eigenvalues_ = R.diagonal().to(norm.dtype)
        return self

    @torch.no_grad()
    def _refine(
        self, kernel: Kernel, x, z, phi: torch.Tensor | None, num_data: int | None, chunk: int = 1024
    ) -> torch.Tensor:
        """One pass over all of ``x`` (its :meth:`~ella.eigen.nets.EigenfunctionNet.trained_input` ``z``): set the
        eval-mode norm to the exact mean square of each output on ``x`` and return the Rayleigh quotients over all
        of ``x`` (instead of batch EMAs) as eigenvalues."""
        raw = torch.cat([self.net_.raw_from(piece) for piece in batches.chunks(z, chunk)])
        self.net_.norm.running_norm.copy_(raw.pow(2).mean(dim=(0, 1)).sqrt())
        psi = raw / self.net_.norm.running_norm
        full, diag = operator_moments(kernel, x, phi, psi, chunk)
        N, C, _ = psi.shape
        return rayleigh_quotients(full, diag, N, C, num_data).diagonal().to(psi.dtype)

    def state_dict(self) -> dict:
        """What :meth:`load_state_dict` needs to rebuild the fitted solver."""
        return self._net_state()

    def load_state_dict(self, state: dict, kernel: Kernel | None = None) -> "NeuralEF":
        """Restore a fitted solver into a copy of ``net`` or, without one, the default network built from
        ``model`` (the network and its weights must match the saved ones)."""
        self._load_net(self._check_state(state), kernel)
        return self

    def __call__(self, x) -> torch.Tensor:
        """Eigenfunctions ``psi(x)`` of shape ``(B, C, k)``, unit mean square on the training inputs."""
        self._check_fitted()
        with torch.no_grad():
            return self.net_(x)

    def outputs_and_eigenfunctions(self, model: nn.Module, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``model(x)`` and ``psi(x)``; from one forward pass of ``model`` when the network is a head on it."""
        self._check_fitted()
        with torch.no_grad():
            return self.net_.with_outputs(model, x)
