"""Shared fixtures: tiny float64 networks and data whose exact NTK is cheap to form."""

import importlib.util

import pytest
import torch
from torch import nn

# Small problems run fastest, and reproducibly, on one thread.
torch.set_num_threads(1)

# Tests of the laplace-torch baselines run where their extra is installed.
needs_laplace = pytest.mark.skipif(
    importlib.util.find_spec("laplace") is None, reason="laplace-torch (the `laplace` extra) is not installed"
)


def sine_regression(n: int = 150, noise: float = 0.3, steps: int = 500, seed: int = 0):
    """laplace-torch's README toy: a 1-50-1 tanh MLP (151 weights, float32, eval mode) trained by Adam on ``n``
    points of ``sin(x) + noise`` on [-4, 4]; returns ``(model, x, y)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 8 - 4
    y = torch.sin(x) + noise * torch.randn(n, 1, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    return model.eval(), x, y


def is_png(path) -> bool:
    """Whether ``path`` holds a PNG image with some content (more than an empty canvas's header)."""
    data = open(path, "rb").read()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def tiny_mlp(in_features=3, hidden=8, out_features=3, seed=0, activation=nn.Tanh):
    """A float64 MLP in eval mode, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(in_features, hidden), activation(), nn.Linear(hidden, out_features))
    return net.double().eval()


@pytest.fixture
def mlp():
    return tiny_mlp()


@pytest.fixture
def inputs():
    return torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
