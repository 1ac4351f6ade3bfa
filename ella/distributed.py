"""Several processes (``torch.distributed``, launched by ``torchrun``): who does which part of a fit, and the sums.

ella shares the work of ``fit`` when a process group is initialised (gloo on CPU, NCCL on GPU) and works alone
otherwise: a single process needs no launcher and no process group. Every rank is given the same loaders and the
same seed, reads the data the same way and so holds the same kernel points; inside :func:`sharing`

* each rank computes every ``R``-th block of kernel features, and the blocks are summed into the whole array;
* each rank trains the eigenfunction network on every ``R``-th row of each minibatch, with the Rayleigh moments
  summed across ranks and the gradient of the whole batch's loss on every rank, so every rank takes the same
  optimisation step;
* each rank folds every ``R``-th training batch into the curvature and scores every ``R``-th validation batch,
  and the ``k x k`` sums are added up.

Sums of the same numbers in another order differ only by float round-off, so every rank ends with the same
posterior, equal to the one-process posterior of the same seed within float tolerance.

The passes over loaders split their batches with :func:`mine` and add up with :func:`total` directly. A kernel or
a solver, which cannot know whether the other ranks call it with the same inputs, splits its work only inside
:func:`sharing`, which ``fit`` opens around the eigen-solver on the kernel points; outside it (prediction, a
kernel used on its own) nothing is split, and each rank may predict its own inputs.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist

_SHARING = [False]


def world() -> tuple[int, int]:
    """``(rank, size)`` of the process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and reports (rank 0, or the only process)."""
    return world()[0] == 0


@contextmanager
def sharing():
    """Inside the block, work is split across the ranks of the process group (see the module docstring)."""
    before = _SHARING[0]
    _SHARING[0] = world()[1] > 1
    try:
        yield
    finally:
        _SHARING[0] = before


def shared() -> bool:
    """Whether a kernel or a solver should split its work across ranks now (inside :func:`sharing`)."""
    return _SHARING[0]


def mine(index: int) -> bool:
    """Whether piece ``index`` of work that every rank walks through alike (batches of the same loader, blocks of
    the same directions) is this rank's: every ``R``-th piece; all of them for a single process."""
    rank, size = world()
    return index % size == rank


def my_rows(index: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a batch ``index``: every ``R``-th."""
    rank, size = world()
    return index[rank::size] if size > 1 else index


def barrier() -> None:
    """Wait until every rank gets here (nothing for a single process)."""
    if world()[1] > 1:
        dist.barrier()


def _collective_device(tensor: torch.Tensor) -> torch.device:
    """Where a collective of the process group runs: NCCL reduces CUDA tensors only, gloo any."""
    if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def total(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks, in place (the tensor itself for a single process)."""
    if world()[1] > 1:
        device = _collective_device(tensor)
        if device == tensor.device:
            dist.all_reduce(tensor)
        else:  # a CPU sum under NCCL: through the device
            moved = tensor.to(device)
            dist.all_reduce(moved)
            tensor.copy_(moved)
    return tensor


def total_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """:func:`total` inside the autograd graph of a loss that every rank computes alike from such sums. Its backward
    sums the gradients of every rank's copy of the loss: R copies of one loss (see :func:`whole_gradient`)."""
    if world()[1] == 1:
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor)


def whole_gradient(parameters) -> None:
    """After ``backward`` through :func:`total_with_grad`, set every rank's gradients to the gradient of the loss:
    the sum of the ranks' gradients over ``R`` (R copies of the loss were differentiated), in one collective."""
    grads = [p.grad for p in parameters if p.grad is not None]
    size = world()[1]
    if size == 1 or not grads:
        return
    flat = total(torch.cat([g.reshape(-1) for g in grads])) / size
    for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(part.view_as(grad))
