"""One call from a trained MAP model to the three trajectory methods: SGD-trajectory ELLA, SWA and SWAG.

    model, history = train_mnist1d_cnn(data, seed=0)
    methods = trajectory_methods(data, model, history["recipe"], seed=0)
    for name, method in methods.items():                  # "ella_sgd_trajectory", "swa", "swag"
        row, probs, labels = run_method(method, train, val, test)

The trajectory is recorded by an SWA-style phase that continues the recipe from the trained weights at a
constant learning rate (:func:`swa_phase`): the recipe's optimizer and weight decay, its learning rate if it
was constant, a tenth of its peak learning rate if it was annealed.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ella import batches
from ella.checks import check_positive_int
from ella.eigen import NeuralEF
from ella.kernels import SGDTrajectoryKernel
from ella.methods import ELLA, SWA, SWAG, swa_model
from ella.trajectory import Trajectory, TrajectoryRecorder

from .data import Splits
from .train import train_map

PHASE_DEFAULTS = dict(steps=1000, every=5)  # M = 200 snapshots, as the NeuralEF paper's "every 5 steps"


def swa_phase(
    model: nn.Module,
    train_loader,
    *,
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    every: int = 1,
    max_snapshots: int | None = None,
    store: str = "functions",
    inputs=None,
    storage_dtype: torch.dtype | None = None,
    directory=None,
    swag_rank: int = 20,
    seed: int = 0,
    num_threads: int | None = None,
    progress: bool = True,
) -> Trajectory:
    """Continue training a copy of ``model`` for ``steps`` steps at the constant learning rate ``lr`` and
    record the trajectory (``model`` itself is not changed).

    Args:
        model: the trained network (e.g. a MAP model trained with Adam and a decaying learning rate).
        train_loader: the training batches (the recipe's shuffled loader).
        steps, lr, optimizer, momentum, weight_decay: the phase, as in :func:`ella_lab.train.train_map`
            (``optimizer`` ``"sgd"``, ``"adam"`` or ``"adamw"``; constant learning rate).
        every: a snapshot every ``every`` steps, from step ``every`` on.
        max_snapshots: M; default ``steps // every``.
        store, inputs, storage_dtype, directory, swag_rank: as in :class:`~ella.trajectory.TrajectoryRecorder`;
            ``inputs`` default to all inputs of ``train_loader`` (needed for ``store="functions"``).
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
        raise ValueError(
            f"`steps` = {steps} with `every` = {every} gives {steps // every} snapshot(s); a "
            "trajectory needs at least 2"
        )
    if inputs is None and store in ("functions", "both"):
        inputs = batches.to_model(batches.collect(train_loader, "train_loader")[0], model)
    recorder = TrajectoryRecorder(
        inputs,
        store=store,
        start=every,
        every=every,
        max_snapshots=max_snapshots,
        storage_dtype=storage_dtype,
        directory=directory,
        swag_rank=swag_rank,
    )
    run = copy.deepcopy(model)
    history = train_map(
        run,
        train_loader,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule="constant",
        seed=seed,
        callback=recorder,
        num_threads=num_threads,
        progress=progress,
    )
    trajectory = recorder.trajectory
    trajectory.meta.update(
        phase=dict(
            steps=steps,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            every=every,
            seed=seed,
        ),
        phase_seconds=history["seconds"],
        final_loss=history["final_loss"],
    )
    return trajectory


def phase_settings(recipe: dict, **overrides) -> dict:
    """The SWA-style phase for a MAP ``recipe`` (``optimizer``, ``lr``, ``weight_decay``, ``schedule``)."""
    missing = [key for key in ("optimizer", "lr", "weight_decay", "schedule") if key not in recipe]
    if missing:
        raise ValueError(f"`recipe` must name the MAP training's {missing} (see ella_lab.train's recipes)")
    lr = recipe["lr"] if recipe["schedule"] == "constant" else recipe["lr"] / 10
    settings = dict(PHASE_DEFAULTS, optimizer=recipe["optimizer"], lr=lr, weight_decay=recipe["weight_decay"])
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings


def trajectory_methods(
    splits,
    model: nn.Module,
    recipe: dict,
    *,
    loader=None,
    k: int = 10,
    neuralef_steps: int = 2000,
    storage_dtype: torch.dtype | None = None,
    swag_samples: int = 30,
    seed: int = 0,
    progress: bool = True,
    num_threads: int | None = 1,
    **phase,
) -> dict:
    """Record a trajectory from ``model`` and return ``{"ella_sgd_trajectory", "swa", "swag"}``, each ready
    for :func:`ella_lab.report.run_method` (which fits it: NeuralEF on the trajectory kernel and the scale
    tuning, SWA's and SWAG's batch-norm statistics and SWAG's samples).

    Args:
        splits: the data (``ella_lab.data.mnist1d()``; its training set is where the functions are recorded).
        model: the trained MAP network (not changed).
        recipe: its training recipe (``history["recipe"]`` of ``ella_lab.train.train_mnist1d_*``): the phase
            continues it (:func:`phase_settings`).
        loader: the shuffled training loader of the phase; default the recipe's (its ``batch_size``).
        k: eigenfunctions of the SGD-trajectory kernel.
        neuralef_steps: NeuralEF optimisation steps.
        storage_dtype: dtype of the recorded functions (``torch.float16`` halves their memory).
        swag_samples: SWAG's weight samples (30).
        seed: seed of the phase, NeuralEF and SWAG's samples.
        progress: show progress bars.
        num_threads: CPU threads of the phase.
        **phase: overrides of the phase (``steps``, ``every``, ``lr``, ``optimizer``, ``weight_decay``).

    Returns:
        The three methods; the trajectory is ``methods["swag"].trajectory`` (its ``meta`` holds the phase
        and the recording time). Each method's ``setup_seconds`` is the time of the recording and of the
        SWA network, which :func:`ella_lab.report.run_method` and ``ella compare`` add to its fit time.
    """
    if not isinstance(splits, Splits):
        raise TypeError(f"`splits` must be an ella_lab.data.Splits, got {type(splits).__name__}")
    check_positive_int(k, "k")
    settings = phase_settings(recipe, **phase)
    if loader is None:
        batch_size = recipe.get("batch_size", 100)
        loader = torch.utils.data.DataLoader(
            splits.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
        )
    x_train = splits.train.tensors[0].to(next(model.parameters()).device)  # functions recorded in the data's order
    start = time.perf_counter()
    trajectory = swa_phase(
        model,
        loader,
        inputs=x_train,
        storage_dtype=storage_dtype,
        seed=seed,
        num_threads=num_threads,
        progress=progress,
        **settings,
    )
    if k > trajectory.num_snapshots - 1:
        raise ValueError(
            f"`k` = {k} is larger than the rank of the trajectory kernel "
            f"({trajectory.num_snapshots} snapshots: at most {trajectory.num_snapshots - 1})"
        )
    mean = swa_model(trajectory, loader)  # the predictive mean: the SWA solution
    solver = NeuralEF(k, steps=neuralef_steps, seed=seed, progress=progress)
    # the functions are recorded on every training input: the eigenfunctions are learned on all of them
    ella = ELLA(
        mean,
        kernel=SGDTrajectoryKernel(trajectory, progress=progress),
        solver=solver,
        kernel_points=len(x_train),
        seed=seed,
        progress=progress,
    )
    methods = {
        "ella_sgd_trajectory": ella,
        "swa": SWA(trajectory),
        "swag": SWAG(trajectory, num_samples=swag_samples, seed=seed, progress=progress),
    }
    for method in methods.values():  # recording the shared trajectory is part of each method's cost
        method.setup_seconds = time.perf_counter() - start
    return methods
