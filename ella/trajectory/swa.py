"""The SWA solution of a trajectory, and an SWA-style phase that records one from a trained model.

SWA (Izmailov et al., 2018) averages the weights along the trajectory, ``theta_swa = (1/M) sum_m theta_m``;
batch-norm statistics are not averaged but recomputed for ``theta_swa`` with one pass over the training
data. :func:`swa_phase` continues training a *copy* of a trained (MAP) model at a constant learning rate,
SGD or Adam, and records its trajectory: what SWA/SWAG and the SGD-trajectory kernel are built from.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .._checks import check_positive_int
from .._utils import collect, model_device_dtype
from ..train import train_map
from .record import TrajectoryRecorder
from .store import Trajectory


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def update_bn(model: nn.Module, loader) -> nn.Module:
    """Recompute the batch-norm running statistics of ``model`` in one pass over ``loader``'s inputs: equal
    averages of the batch means and (unbiased) batch variances, as ``torch.optim.swa_utils.update_bn`` does.
    The model is left in eval mode. A no-op without batch norm."""
    if has_batch_norm(model):
        device, _ = model_device_dtype(model)
        torch.optim.swa_utils.update_bn(loader, model, device=device)
    return model.eval()


def swa_model(trajectory: Trajectory, loader=None) -> nn.Module:
    """A new network with the SWA weights ``theta_swa`` of ``trajectory``, in eval mode.

    Args:
        trajectory: the recorded run.
        loader: the training loader, needed when the model has batch norm (its statistics are recomputed).

    Raises:
        ValueError: the model has batch norm and no ``loader`` was given.
    """
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"`trajectory` must be an ella.trajectory.Trajectory, got {type(trajectory).__name__}")
    if has_batch_norm(trajectory.model) and loader is None:
        raise ValueError("the model has batch norm: pass the training `loader` so that its statistics are "
                         "recomputed for the averaged weights")
    model = averaged_model(trajectory)
    return update_bn(model, loader) if loader is not None else model


def averaged_model(trajectory: Trajectory) -> nn.Module:
    """A new network with the weights ``theta_swa`` and the last snapshot's buffers (batch-norm statistics
    not yet recomputed: see :func:`swa_model`), in eval mode."""
    model = copy.deepcopy(trajectory.model)
    model.load_state_dict(trajectory.swa_state())
    return model.eval()


def swa_phase(model: nn.Module, train_loader, *, steps: int, lr: float, optimizer: str = "sgd",
              momentum: float = 0.9, weight_decay: float = 0.0, every: int = 1, max_snapshots: int | None = None,
              store: str = "functions", inputs=None, storage_dtype: torch.dtype | None = None, directory=None,
              swag_rank: int = 20, seed: int = 0, num_threads: int | None = None,
              progress: bool = True) -> Trajectory:
    """Continue training a copy of ``model`` for ``steps`` steps at the constant learning rate ``lr`` and
    record the trajectory (``model`` itself is not changed).

    Args:
        model: the trained network (e.g. a MAP model trained with Adam and a decaying learning rate).
        train_loader: the training batches (the recipe's shuffled loader).
        steps, lr, optimizer, momentum, weight_decay: the phase, as in :func:`ella.train.train_map`
            (``optimizer`` ``"sgd"``, ``"adam"`` or ``"adamw"``; constant learning rate).
        every: a snapshot every ``every`` steps, from step ``every`` on.
        max_snapshots: M; default ``steps // every``.
        store, inputs, storage_dtype, directory, swag_rank: as in :class:`TrajectoryRecorder`; ``inputs``
            default to all inputs of ``train_loader`` (needed for ``store="functions"``).
        seed: seed of the phase's randomness (shuffling without its own generator).
        num_threads: CPU threads while training.
        progress: show a progress bar.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    check_positive_int(steps, "steps")
    check_positive_int(every, "every")
    max_snapshots = steps // every if max_snapshots is None else max_snapshots
    if min(max_snapshots, steps // every) < 2:
        raise ValueError(f"`steps` = {steps} with `every` = {every} gives {steps // every} snapshot(s); a "
                         "trajectory needs at least 2")
    if inputs is None and store in ("functions", "both"):
        device, dtype = model_device_dtype(model)
        inputs = collect(train_loader, "train_loader", device, dtype)[0]
    recorder = TrajectoryRecorder(inputs, store=store, start=every, every=every, max_snapshots=max_snapshots,
                                  storage_dtype=storage_dtype, directory=directory, swag_rank=swag_rank)
    run = copy.deepcopy(model)
    history = train_map(run, train_loader, steps=steps, lr=lr, optimizer=optimizer, momentum=momentum,
                        weight_decay=weight_decay, schedule="constant", seed=seed, callback=recorder,
                        num_threads=num_threads, progress=progress)
    trajectory = recorder.trajectory
    trajectory.meta.update(phase=dict(steps=steps, lr=lr, optimizer=optimizer, momentum=momentum,
                                      weight_decay=weight_decay, every=every, seed=seed),
                           phase_seconds=history["seconds"], final_loss=history["final_loss"])
    return trajectory
