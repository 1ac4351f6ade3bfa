"""One call from a trained MAP model to the three trajectory methods: SGD-trajectory ELLA, SWA and SWAG.

    model, history = train_mnist1d_cnn(data, seed=0)
    methods = trajectory_methods(data, model, history["recipe"], seed=0)
    for name, method in methods.items():                  # "ella_sgd_trajectory", "swa", "swag"
        row, probs, labels = run_method(method, train, val, test)

The trajectory is recorded by an SWA-style phase that continues the recipe from the trained weights at a
constant learning rate (:func:`~ella.trajectory.swa_phase`): the recipe's optimizer and weight decay, its
learning rate if it was constant, a tenth of its peak learning rate if it was annealed.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .._checks import check_positive_int
from .swa import swa_model, swa_phase

PHASE_DEFAULTS = dict(steps=1000, every=5)  # M = 200 snapshots, as the NeuralEF paper's "every 5 steps"


def phase_settings(recipe: dict, **overrides) -> dict:
    """The SWA-style phase for a MAP ``recipe`` (``optimizer``, ``lr``, ``weight_decay``, ``schedule``)."""
    missing = [key for key in ("optimizer", "lr", "weight_decay", "schedule") if key not in recipe]
    if missing:
        raise ValueError(f"`recipe` must name the MAP training's {missing} (see ella.train's recipes)")
    lr = recipe["lr"] if recipe["schedule"] == "constant" else recipe["lr"] / 10
    settings = dict(PHASE_DEFAULTS, optimizer=recipe["optimizer"], lr=lr, weight_decay=recipe["weight_decay"])
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings


def trajectory_methods(splits, model: nn.Module, recipe: dict, *, loader=None, k: int = 10,
                       neuralef_steps: int = 2000, storage_dtype: torch.dtype | None = None,
                       swag_samples: int = 30, seed: int = 0, progress: bool = True, num_threads: int | None = 1,
                       **phase) -> dict:
    """Record a trajectory from ``model`` and return ``{"ella_sgd_trajectory", "swa", "swag"}``, each ready
    for :func:`ella.report.run_method` (which fits it: NeuralEF on the trajectory kernel and the scale tuning,
    SWA's and SWAG's batch-norm statistics and SWAG's samples).

    Args:
        splits: the data (``ella.data.mnist1d()``; its training set is where the functions are recorded).
        model: the trained MAP network (not changed).
        recipe: its training recipe (``history["recipe"]`` of ``ella.train.train_mnist1d_*``): the phase
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
        SWA network, which :func:`ella.report.run_method` and ``ella compare`` add to its fit time.
    """
    from ..baselines.swag import SWA, SWAG
    from ..data import Splits
    from ..ella import ELLA

    if not isinstance(splits, Splits):
        raise TypeError(f"`splits` must be an ella.data.Splits, got {type(splits).__name__}")
    check_positive_int(k, "k")
    settings = phase_settings(recipe, **phase)
    if loader is None:
        batch_size = recipe.get("batch_size", 100)
        loader = torch.utils.data.DataLoader(splits.train, batch_size=batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
    x_train = splits.train.tensors[0].to(next(model.parameters()).device)  # functions recorded in the data's order
    start = time.perf_counter()
    trajectory = swa_phase(model, loader, inputs=x_train, storage_dtype=storage_dtype, seed=seed,
                           num_threads=num_threads, progress=progress, **settings)
    if k > trajectory.num_snapshots - 1:
        raise ValueError(f"`k` = {k} is larger than the rank of the trajectory kernel "
                         f"({trajectory.num_snapshots} snapshots: at most {trajectory.num_snapshots - 1})")
    mean = swa_model(trajectory, loader)  # the predictive mean: the SWA solution
    ella = ELLA(mean, k=k, kernel="sgd-trajectory", kernel_kwargs={"trajectory": trajectory},
                feature_kwargs={"steps": neuralef_steps}, seed=seed, progress=progress)
    methods = {"ella_sgd_trajectory": ella, "swa": SWA(trajectory),
               "swag": SWAG(trajectory, num_samples=swag_samples, seed=seed, progress=progress)}
    for method in methods.values():  # recording the shared trajectory is part of each method's cost
        method.setup_seconds = time.perf_counter() - start
    return methods
