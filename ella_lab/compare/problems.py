"""The benchmark problems: a data set, a MAP-trained network and its recipe, built from one seed.

===========================  =======================================================  ==================================
problem                      data                                                     network (P)
===========================  =======================================================  ==================================
``mnist1d`` / ``cnn``        MNIST-1D, 3,500 / 500 / ``num_test`` (10,000) generated  CNN (5,210)
``mnist1d`` / ``mlp``        same                                                     MLP, overfit (15,210)
``mnist1d`` / ``cnn_bn``     same                                                     CNN + BatchNorm (5,360)
``digits`` / ``mlp``         scikit-learn digits, 60 / 15 / 25 % stratified           MLP 64-32-32-10 (3,466)
``toy`` / ``mlp``            1-D regression with an in-between gap, 100 / 50 / 300    tanh MLP (2,701)
``fashion-mnist`` / ``mlp``  Fashion-MNIST (Debian package), 54,000 / 6,000 / 10,000  MLP 784-200-200-10, tanh (199,210)
``fashion-mnist`` / ``cnn``  same                                                     small CNN (28,938)
``<images>`` / ``cnn``       image files on disk (``data_root``), 90 / 10 % of train  small CNN
===========================  =======================================================  ==================================

``fashionmnist`` is the same data set as ``fashion-mnist``.

Every method of a comparison is built on the same trained network and the same splits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from ella.utils import seeded_generator

from ..data import Splits, digits, mnist1d, toy_regression
from ..data.images import IMAGE_DATASETS, image_dataset
from ..models import digits_mlp, mlp, regression_mlp
from ..train import train_map, train_mnist1d_cnn, train_mnist1d_mlp

__all__ = ["Problem", "make_problem", "network_name", "MODELS", "image_cnn"]

# data set -> the networks it is benchmarked with
MODELS = {
    "mnist1d": ("cnn", "mlp", "cnn_bn"),
    "digits": ("mlp",),
    "toy": ("mlp",),
    **{name: ("cnn",) for name in IMAGE_DATASETS},
    "fashionmnist": ("mlp", "cnn"),
}
ALIASES = {"fashion-mnist": "fashionmnist"}

DIGITS_RECIPE = dict(steps=3000, lr=1e-3, weight_decay=1e-4, optimizer="adam", schedule="cosine", batch_size=64)
TOY_RECIPE = dict(steps=3000, lr=1e-2, weight_decay=1e-4, optimizer="adam", schedule="cosine", batch_size=20)
# training / validation images of the 60,000 (MNIST, Fashion-MNIST, KMNIST; CIFAR-10: 50,000 of 50,000)
IMAGE_SPLITS = {"mnist": (54000, 6000), "fashionmnist": (54000, 6000), "kmnist": (54000, 6000)}
IMAGE_RECIPE = dict(steps=4000, lr=1e-3, weight_decay=1e-4, optimizer="adam", schedule="cosine", batch_size=128)


@dataclass
class Problem:
    """One trained network on one data set.

    Attributes:
        dataset, model_name: the names given to :func:`make_problem`.
        splits: the data.
        model: the MAP network, in eval mode.
        likelihood: ``"classification"`` or ``"regression"``.
        recipe: how the network was trained (optimizer, lr, weight decay, schedule, steps, batch size).
        train_seconds: wall time of the MAP training.
        seed: the seed of the network, the training and every method.
        cache: scratch space shared by method builders (e.g. one recorded trajectory for several methods).
    """

    dataset: str
    model_name: str
    splits: Splits
    model: nn.Module
    likelihood: str
    recipe: dict
    train_seconds: float
    seed: int = 0
    cache: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``"<dataset>_<model>"``, the problem's name in reports."""
        return f"{self.dataset}_{self.model_name}"

    def loaders(self, batch_size: int = 256, eval_batch_size: int = 1000) -> tuple[DataLoader, DataLoader, DataLoader]:
        """Unshuffled ``(train, val, test)`` loaders: every method sees the data in the same order."""
        return (
            DataLoader(self.splits.train, batch_size=batch_size),
            DataLoader(self.splits.val, batch_size=eval_batch_size),
            DataLoader(self.splits.test, batch_size=eval_batch_size),
        )


def image_mlp(in_features: int, num_classes: int, seed: int = 0) -> nn.Sequential:
    """The MLP of the Fashion-MNIST benchmarks (VaLLA's and ELLA's papers): flatten, 200, 200 tanh units."""
    return nn.Sequential(nn.Flatten(), *mlp(in_features, (200, 200), num_classes, nn.Tanh, seed=seed)).eval()


def image_cnn(in_channels: int, num_classes: int, image_size: int, seed: int = 0) -> nn.Sequential:
    """A small CNN for torchvision images: two (conv 5x5, ReLU, max-pool 2) blocks, 16 and 32 channels, and a
    linear head (``nn.Conv2d`` / ``nn.Linear`` only, so laplace-torch's KFAC applies)."""
    side = image_size // 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * side * side, num_classes),
        ).eval()


def _train(model: nn.Module, splits: Splits, recipe: dict, likelihood: str, seed: int, progress: bool) -> dict:
    opts = {k: v for k, v in recipe.items() if k != "batch_size"}
    loader = DataLoader(splits.train, batch_size=recipe["batch_size"], shuffle=True, generator=seeded_generator(seed))
    return train_map(model, loader, likelihood=likelihood, seed=seed, progress=progress, num_threads=1, **opts)


def network_name(dataset: str, model: str | None = None) -> str:
    """The network ``model`` of ``dataset`` (``None``: its first), checked against :data:`MODELS`."""
    dataset = ALIASES.get(dataset, dataset)
    if dataset not in MODELS:
        raise ValueError(f"`dataset` must be one of {sorted(MODELS)}, got {dataset!r}")
    model = MODELS[dataset][0] if model is None else model
    if model not in MODELS[dataset]:
        raise ValueError(f"`model` for dataset {dataset!r} must be one of {MODELS[dataset]}, got {model!r}")
    return model


def make_problem(
    dataset: str, model: str | None = None, seed: int = 0, num_test: int = 10000, data_root=None, progress: bool = True
) -> Problem:
    """Build the data and train the MAP network of one benchmark problem.

    Args:
        dataset: ``"mnist1d"``, ``"digits"``, ``"toy"``, ``"fashion-mnist"`` or an image data set's name
            (:data:`ella_lab.data.images.IMAGE_DATASETS`).
        model: one of ``MODELS[dataset]`` (default: the first).
        seed: seed of the network's initialisation and training (the data's own seeds are fixed).
        num_test: MNIST-1D and torchvision test points.
        data_root: folder of the image files (image data sets; Fashion-MNIST's default is its Debian package).
        progress: show a progress bar while training.

    Raises:
        ValueError: unknown ``dataset`` or ``model``.
        ella_lab.data.images.DataUnavailable: an image data set whose files are not on disk.
    """
    model = network_name(dataset, model)
    dataset = ALIASES.get(dataset, dataset)
    start = time.perf_counter()
    likelihood = "regression" if dataset == "toy" else "classification"
    if dataset == "mnist1d":
        splits = mnist1d(num_test=num_test)
        if model == "mlp":
            net, history = train_mnist1d_mlp(splits, seed=seed, progress=progress)
        else:
            net, history = train_mnist1d_cnn(splits, seed=seed, progress=progress, batch_norm=model == "cnn_bn")
        recipe = history["recipe"]
    else:
        if dataset == "digits":
            splits, recipe = digits(), DIGITS_RECIPE
            net = digits_mlp(seed=seed)
        elif dataset == "toy":
            splits, recipe = toy_regression(), TOY_RECIPE
            net = regression_mlp(seed=seed)
        else:
            train, val = IMAGE_SPLITS.get(dataset, (45000, 5000))
            splits = image_dataset(dataset, data_root, num_train=train, num_val=val, num_test=num_test)
            channels, side = splits.input_shape[0], splits.input_shape[-1]
            recipe = IMAGE_RECIPE
            if model == "mlp":
                net = image_mlp(channels * side * side, splits.num_classes, seed=seed)
            else:
                net = image_cnn(channels, splits.num_classes, side, seed=seed)
        _train(net, splits, recipe, likelihood, seed, progress)
    recipe = dict(recipe)
    return Problem(dataset, model, splits, net.eval(), likelihood, recipe, time.perf_counter() - start, seed)
