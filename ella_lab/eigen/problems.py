"""Eigen-problems with known answers: a kernel, training and held-out inputs, and the exact eigenpairs.

``make_problem(kernel, data)`` builds one; :mod:`ella.eigen.experiment` fits a solver to it and compares.

Data: ``"gaussian-1d"`` (training inputs: ``n`` quantile points of ``N(0, 1)``, i.e. an ``n``-point quadrature
of the density, so the empirical operator matches the population one to ``O(1/n)`` instead of the
``O(1/sqrt(n))`` of a random sample; held-out inputs: a random sample), ``"moons"``, ``"circles"``
(scikit-learn generators, standardised) and ``"mnist1d"`` (generated locally).
Kernels: ``"rbf"`` (closed-form reference on ``gaussian-1d``), ``"polynomial"``, ``"nngp"`` (an MLP's, by
Monte Carlo) and ``"ntk"`` (the exact empirical NTK of a small MLP trained on the data).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella.eigen import EigenSolver, ExactEigen, RBFGaussianEigen
from ella.kernels import RBF, EmpiricalNTK, Kernel, NNGPKernel, Polynomial
from ella.utils import seeded_generator

from .. import models
from . import DATASETS, KERNELS

DEFAULT_DATA = {"rbf": "gaussian-1d", "polynomial": "moons", "nngp": "circles", "ntk": "mnist1d"}
DEFAULT_SIZES = {"gaussian-1d": (500, 1000), "moons": (400, 400), "circles": (400, 400), "mnist1d": (300, 200)}


@dataclass
class EigenProblem:
    """A kernel on training inputs with its exact eigenpairs (``exact`` holds at least ``k`` of them)."""

    name: str
    kernel: Kernel
    x_train: torch.Tensor
    x_test: torch.Tensor
    exact: EigenSolver
    num_outputs: int


def gaussian_quantiles(n: int, std: float = 1.0) -> torch.Tensor:
    """``x_i = std * Phi^-1((i + 1/2) / n)``: ``n`` equal-weight quadrature points of ``N(0, std^2)``, ``(n, 1)``."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (std * 2**0.5 * torch.erfinv(2 * p - 1)).unsqueeze(1)


def load_data(data: str, num_train: int, num_test: int, seed: int = 0):
    """``(x_train, y_train, x_test)`` (float32; ``y_train`` is ``None`` for ``gaussian-1d``)."""
    if data == "gaussian-1d":
        x_test = torch.randn(num_test, 1, generator=seeded_generator(seed), dtype=torch.float64)
        return gaussian_quantiles(num_train).float(), None, x_test.float()
    if data in ("moons", "circles"):
        from sklearn.datasets import make_circles, make_moons

        make = make_moons if data == "moons" else make_circles
        kwargs = {"noise": 0.1} if data == "moons" else {"noise": 0.08, "factor": 0.5}
        x, y = make(num_train + num_test, random_state=seed, **kwargs)
        x = torch.as_tensor(x, dtype=torch.float32)
        x = (x - x[:num_train].mean(0)) / x[:num_train].std(0)
        y = torch.as_tensor(y, dtype=torch.int64)
        return x[:num_train], y[:num_train], x[num_train:]
    if data == "mnist1d":
        from ..data import mnist1d

        split = mnist1d(num_train=max(num_train, 1000), num_val=100, num_test=num_test, test_seed=1000 + seed)
        x, y = split.train.tensors
        return x[:num_train], y[:num_train], split.test.tensors[0]
    raise ValueError(f"`data` must be one of {DATASETS}, got {data!r}")


def trained_mlp(x: torch.Tensor, y: torch.Tensor | None, seed: int = 0, steps: int = 1000) -> nn.Module:
    """A small MLP trained to a MAP: a classifier on ``(x, y)``, or a regressor on ``sin(3 x)`` without labels."""
    from ..train import train_map

    D = x[0].numel()
    if y is None:
        targets, likelihood, C = torch.sin(3 * x.reshape(len(x), -1)[:, :1]), "regression", 1
    else:
        targets, likelihood, C = y, "classification", int(y.max()) + 1
    model = models.mlp(D, (32, 32), C, seed=seed)
    loader = DataLoader(TensorDataset(x, targets), batch_size=100, shuffle=True, generator=seeded_generator(seed))
    train_map(model, loader, steps=steps, lr=3e-3, likelihood=likelihood, seed=seed, progress=False, num_threads=1)
    return model.eval()


def make_problem(
    kernel: str = "rbf",
    data: str | None = None,
    k: int = 5,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> EigenProblem:
    """Build a kernel on data with its exact top eigenpairs (``k + 5`` of them, for the spectrum plots).

    ``rbf`` on ``gaussian-1d`` uses the closed form (:class:`RBFGaussianEigen`, lengthscale 1, ``N(0, 1)``);
    every other pair uses :class:`ExactEigen` on the training inputs (extended to held-out inputs by the
    Nystrom formula).
    """
    if kernel not in KERNELS:
        raise ValueError(f"`kernel` must be one of {KERNELS}, got {kernel!r}")
    data = DEFAULT_DATA[kernel] if data is None else data
    if data not in DATASETS:
        raise ValueError(f"`data` must be one of {DATASETS}, got {data!r}")
    n_train, n_test = DEFAULT_SIZES[data]
    n_train, n_test = num_train or n_train, num_test or n_test
    if k >= n_train:
        raise ValueError(f"`k` = {k} must be smaller than the number of training inputs ({n_train})")
    x, y, x_test = load_data(data, n_train, n_test, seed)
    D = x[0].numel()
    if kernel == "rbf":
        if data == "gaussian-1d":
            exact = RBFGaussianEigen(k + 5, lengthscale=1.0, std=1.0)
            return EigenProblem(f"rbf/{data}", exact.kernel_, x, x_test, exact, 1)
        kern = RBF(lengthscale=float(torch.pdist(x[:500].reshape(min(len(x), 500), -1)).median()))
    elif kernel == "polynomial":
        kern = Polynomial(degree=3, offset=1.0, scale=1.0 / D)
    elif kernel == "nngp":
        C = 10 if data == "mnist1d" else 1
        kern = NNGPKernel(lambda s: models.mlp(D, (128, 128), C, seed=s), num_samples=512, seed=seed, progress=progress)
    else:
        kern = EmpiricalNTK(trained_mlp(x, y, seed), "exact", progress=progress)
    try:  # a few more than k for the spectrum plot, if the kernel's rank allows
        exact = ExactEigen(k + 5).fit(kern, x)
    except ValueError:
        exact = ExactEigen(k).fit(kern, x)
    return EigenProblem(f"{kernel}/{data}", kern, x, x_test, exact, exact.num_outputs_)
