"""The Rayleigh-quotient math the learned eigen-solvers (NeuralEF, SpIN) share.

For a batch of ``B`` inputs with rows ``(x_b, c)`` and outputs ``Psi`` ``(B, C, k)``, ``Psi^T K Psi`` is
estimated from random features ``Phi`` (``K = Phi Phi^T / S``, through ``A = Phi^T Psi`` of shape ``(S, k)``,
never the ``(B C)^2`` Gram block) or from a Gram block.

Minibatch bias. The batch Gram weights each input's own ``C x C`` block ``kappa(x_b, x_b)`` by ``1/B``
instead of ``1/N``. The diagonal blocks are therefore re-weighted so that the quotient is unbiased for the
operator on the ``N`` training inputs (or, with ``num_data=None``, for the population operator):

    R = (1 - 1/N) R_off + (1/N) R_diag,   R_off = (full - diag) / (B (B-1) C^2),   R_diag = diag / (B C^2),

where ``full = Psi^T K Psi`` and ``diag`` is its part from the diagonal blocks. With ``B = N`` this is exactly
``Psi^T K Psi / (N C)^2``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .. import batches
from ..kernels.base import Kernel


def diagonal_blocks(phi: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``kappa(x_b, x_b) = Phi_b Phi_b^T / S`` for every input, shape ``(N, C, C)``."""
    S = phi.shape[-1]
    return torch.cat([p @ p.transpose(1, 2) / S for p in phi.split(chunk)])


def gram_blocks(gram: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """The diagonal ``C x C`` blocks ``kappa(x_b, x_b)`` of a Gram block ``(B C, B C)``, shape ``(B, C, C)``."""
    B = len(gram) // num_outputs
    return gram.reshape(B, num_outputs, B, num_outputs).diagonal(dim1=0, dim2=2).permute(2, 0, 1)


def index_batches(
    num_data: int, batch_size: int, generator: torch.Generator, device, shuffle: bool = True
) -> Iterator[torch.Tensor]:
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
def operator_moments(
    kernel: Kernel, x, phi: torch.Tensor | None, psi: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full and diagonal-block parts of ``Psi^T K Psi`` over all of ``x`` in float64, ``(k, k)`` each, for
    :func:`rayleigh_quotients`: through the features ``phi`` if given, else Gram blocks of ``chunk`` inputs."""
    N, C, k = psi.shape
    psi64 = psi.double()
    if phi is not None:
        a = sum(
            p.reshape(-1, p.shape[-1]).double().T @ q.reshape(-1, k)
            for p, q in zip(phi.split(chunk), psi64.split(chunk))
        )  # Phi^T Psi over all of x
        full = a.T @ a / phi.shape[-1]
        blocks = diagonal_blocks(phi).double()
    else:
        pieces = list(zip(batches.chunks(x, chunk), psi64.split(chunk)))
        full = sum(
            q1.reshape(-1, k).T @ kernel.gram(x1, x2).double() @ q2.reshape(-1, k)
            for x1, q1 in pieces
            for x2, q2 in pieces
        )
        blocks = kernel.diagonal_blocks(x).double()
    return full, psi64.reshape(N * C, k).T @ (blocks @ psi64).reshape(N * C, k)


def batch_moments(
    psi: torch.Tensor, phi: torch.Tensor | None, gram: torch.Tensor | None, blocks: torch.Tensor, reduce=None
) -> tuple[torch.Tensor, ...]:
    """Full and diagonal-block parts of ``Psi^T K Psi`` for one batch, each also with ``sg(Psi)`` on the left.

    With random features every part is a sum over the batch's rows; ``reduce`` (the sum over the processes that
    hold the other rows, see :mod:`ella.distributed`) adds them up. Returns ``(full, full_sg, diag, diag_sg)``,
    all ``(k, k)``.
    """
    reduce = reduce or (lambda t: t)
    B, C, k = psi.shape
    flat = psi.reshape(B * C, k)
    if phi is not None:
        a = reduce(phi.reshape(B * C, -1).T @ flat)  # A = Phi^T Psi: (S, k)
        full, full_sg = a.T @ a / phi.shape[-1], a.detach().T @ a / phi.shape[-1]
    else:
        k_psi = gram @ flat  # K Psi
        full, full_sg = flat.T @ k_psi, flat.detach().T @ k_psi
    b_psi = (blocks @ psi).reshape(B * C, k)  # kappa(x_b, x_b) psi(x_b)
    return full, full_sg, reduce(flat.T @ b_psi), reduce(flat.detach().T @ b_psi)


def rayleigh_quotients(
    full: torch.Tensor, diag: torch.Tensor, batch: int, num_outputs: int, num_data: int | None
) -> torch.Tensor:
    """``R = (1 - 1/N) (full - diag) / (B (B-1) C^2) + (1/N) diag / (B C^2)`` (see the module docstring);
    ``num_data=None``: the population operator, ``R = R_off``."""
    C2 = num_outputs**2
    off = (full - diag) / (batch * (batch - 1) * C2) if batch > 1 else torch.zeros_like(full)
    if num_data is None:
        return off
    return (1 - 1 / num_data) * off + diag / (num_data * batch * C2)


def paired_quotients(psi1: torch.Tensor, psi2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``R = (Psi_1^T Psi_2 + Psi_2^T Psi_1) / (2 B C)`` from two views ``(B, C, k)`` of each of ``B`` inputs (a
    kernel known through pairs of views: :class:`~ella.kernels.AugmentationKernel`), unbiased for
    ``E_{p(x, x')}[psi_i(x) psi_j(x')]``; also with ``sg(Psi)`` on the left. Returns ``(R, R_sg)``, each ``(k, k)``."""
    B, C, k = psi1.shape
    a, b = psi1.reshape(B * C, k), psi2.reshape(B * C, k)
    R = (a.T @ b + b.T @ a) / (2 * B * C)
    R_sg = (a.detach().T @ b + b.detach().T @ a) / (2 * B * C)
    return R, R_sg
