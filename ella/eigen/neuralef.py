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
from .rayleigh import batch_moments, diagonal_blocks, gram_blocks, index_batches, operator_moments, rayleigh_quotients


def neuralef_loss(
    psi: torch.Tensor,
    phi: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    blocks: torch.Tensor | None = None,
    num_data: int | None = None,
    balanced: bool = False,
    batch: int | None = None,
    reduce=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The NeuralEF loss (to minimise) for a batch ``psi`` of shape ``(B, C, k)``; also returns ``diag(R)``.

    Give either random features ``phi`` ``(B, C, S)`` or the Gram block ``gram`` ``(B C, B C)``;
    ``blocks`` ``(B, C, C)`` are the diagonal blocks ``kappa(x_b, x_b)`` (read off ``gram`` if omitted).
    ``balanced`` maximises ``sum_j [R_jj - 2 sum_{i<j} R_ij^2 / sg(R_ii)] / sg(R_jj)`` instead (see
    :class:`NeuralEF`); the maximisers are the same eigenfunctions. When the batch's rows are split across
    processes, ``batch`` is its whole number of inputs and ``reduce`` sums the moments over the processes.
    """
    B, C, k = psi.shape
    B = batch or B
    if blocks is None:
        blocks = diagonal_blocks(phi) if phi is not None else gram_blocks(gram, C)
    full, full_sg, diag, diag_sg = batch_moments(psi, phi, gram, blocks, reduce)
    R = rayleigh_quotients(full, diag, B, C, num_data)  # psi_i^T K psi_j
    R_sg = rayleigh_quotients(full_sg, diag_sg, B, C, num_data)  # sg(psi_i)^T K psi_j
    eigenvalues = R.diagonal()
    scale = eigenvalues.detach().abs().max().clamp_min(1e-30)
    denom = eigenvalues.detach().clamp_min(1e-12 * scale)
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
        z = net.trained_input(x)  # a head on a frozen model reads hidden features computed once, not a forward
        phi = kernel.features(x) if isinstance(kernel, FeatureKernel) else None
        blocks = diagonal_blocks(phi) if phi is not None else None
        B = min(self.batch_size, N)
        # full batches of a Gram-block kernel: the block is the same every step, so form it once (the loss
        # does not depend on the order of the rows)
        full_gram = kernel.gram(x) if phi is None and B == N else None
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / self.steps)))
        order = index_batches(N, B, seeded_generator(self.seed), batches.device(x), shuffle=full_gram is None)
        ema, history = None, []
        # with features and several processes, each takes every R-th row of a batch; the moments and the gradients
        # are summed over them, so every process takes the step of the whole batch
        split = distributed.shared() and phi is not None
        net.train()
        bar = progress(range(self.steps), self.progress, "NeuralEF")
        for _, idx in zip(bar, order):
            if split:  # the L2 batch norm over the rows of every process
                rows = distributed.my_rows(idx)
                raw = net.raw_from(batches.take(z, rows))
                square = distributed.total_with_grad(raw.pow(2).sum(dim=(0, 1))) / (len(idx) * C)
                psi = raw / square.add(net.norm.eps).sqrt()
                loss, eig = neuralef_loss(
                    psi,
                    phi=phi[rows],
                    blocks=blocks[rows],
                    num_data=num_data,
                    balanced=self.balanced,
                    batch=len(idx),
                    reduce=distributed.total_with_grad,
                )
            elif phi is not None:
                psi = net.norm(net.raw_from(batches.take(z, idx)))
                loss, eig = neuralef_loss(
                    psi, phi=phi[idx], blocks=blocks[idx], num_data=num_data, balanced=self.balanced
                )
            else:
                psi = net.norm(net.raw_from(batches.take(z, idx)))
                gram = full_gram if full_gram is not None else kernel.gram(batches.take(x, idx))
                loss, eig = neuralef_loss(psi, gram=gram.to(psi.dtype), num_data=num_data, balanced=self.balanced)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if split:  # every process takes the step of the whole batch
                distributed.whole_gradient(net.parameters())
            opt.step()
            sched.step()
            ema = eig if ema is None else self.momentum * ema + (1 - self.momentum) * eig
            history.append(loss.item())
            if self.progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(mu1=f"{ema[0].item():.3g}", muk=f"{ema[-1].item():.3g}", refresh=False)
        net.eval()
        self.net_, self.history_ = net, history
        self.num_outputs_, self.input_spec_ = C, batches.spec(x)
        self.eigenvalues_ = self._refine(kernel, x, z, phi, num_data)
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
