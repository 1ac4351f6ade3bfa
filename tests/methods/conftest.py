"""Networks, data and helpers shared by the tests of the laplace-torch baselines."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector
from torch.utils.data import DataLoader, TensorDataset

from ella.utils import trainable_parameters, unflatten_like


class SmallCNN(nn.Module):
    """MNIST-1D-like CNN: (B, 40) -> (B, 1, 1, 40), three Conv2d with (1, 5) kernels (laplace-torch's KFAC
    rejects Conv1d), then a linear head. About 6.2k parameters with ``channels=20``."""

    def __init__(self, channels: int = 20, num_classes: int = 10, length: int = 40):
        super().__init__()
        c = channels
        self.length = length
        self.features = nn.Sequential(
            nn.Conv2d(1, c, (1, 5), padding=(0, 2)),
            nn.ReLU(),
            nn.Conv2d(c, c, (1, 5), stride=(1, 2), padding=(0, 2)),
            nn.ReLU(),
            nn.Conv2d(c, c, (1, 5), stride=(1, 2), padding=(0, 2)),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(c * (length // 4), num_classes)

    def forward(self, x):
        return self.head(self.features(x.reshape(-1, 1, 1, self.length)))


def mlp(sizes=(40, 100, 100, 10)) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train(model, x, y, steps=30, lr=1e-2, loss="ce", seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lossfn = nn.functional.cross_entropy if loss == "ce" else nn.functional.mse_loss
    for _ in range(steps):
        opt.zero_grad()
        lossfn(model(x), y).backward()
        opt.step()
    return model.eval()


def loader(x, y, batch_size=100):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    xv = torch.randn(100, 40, generator=g)
    yv = torch.randint(0, 10, (100,), generator=g)
    xt = torch.randn(200, 40, generator=g)
    return x, y, xv, yv, xt


@pytest.fixture(scope="module")
def cnn(data):
    x, y, *_ = data
    torch.manual_seed(0)
    return train(SmallCNN(), x, y, steps=30)


def dense_jacobian(model, x):
    """(B, C, P) by torch.autograd.functional.jacobian of the flat vector of trainable parameters."""
    params = trainable_parameters(model)
    flat = parameters_to_vector(params.values()).detach()
    return torch.autograd.functional.jacobian(lambda t: functional_call(model, unflatten_like(t, params), (x,)), flat)


def at_fitted(method):
    """laplace-torch's own object at the hyperparameters the method chose (ella never changes it)."""
    la = copy.copy(method.la_)
    la.prior_precision = torch.tensor(method.prior_precision_, dtype=la._dtype)
    if method.noise_ is not None:
        la.sigma_noise = torch.tensor(float(method.noise_[0]), dtype=la._dtype)
    return la


@pytest.fixture(scope="module")
def small_classifier():
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    x, xv, xt = torch.randn(120, 4, generator=g), torch.randn(40, 4, generator=g), torch.randn(25, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    yv = (xv[:, 0] > 0).long() + (xv[:, 1] > 0.5).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y, xv, yv, xt
