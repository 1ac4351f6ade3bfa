"""Temperature scaling finds the NLL-optimal temperature."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella.methods.temperature import TemperatureScaling, optimal_temperature, temperature_nll


class Fixed(nn.Module):
    """A "network" whose outputs are given logits, indexed by the integer input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, i):
        return self.logits[i.long().reshape(-1)]


@pytest.fixture(scope="module")
def synthetic():
    """Labels drawn from softmax(z / T*) with T* = 2.5: the NLL-optimal temperature is close to T*."""
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(20000, 5, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z / 2.5, -1), 1, generator=g)[:, 0]
    return z, y


def test_optimal_temperature_is_the_nll_minimum(synthetic):
    z, y = synthetic
    T = optimal_temperature(z, y)
    grid = torch.linspace(0.5 * T, 1.5 * T, 2001, dtype=torch.float64)
    nlls = torch.tensor([temperature_nll(z, y, t) for t in grid.tolist()], dtype=torch.float64)
    best = grid[int(nlls.argmin())].item()
    assert T == pytest.approx(best, abs=float(grid[1] - grid[0]))  # the dense grid's minimum
    assert temperature_nll(z, y, T) <= nlls.min().item() + 1e-12
    # stationary: the slope of the NLL in beta = 1/T vanishes at the optimum
    beta = torch.tensor(1 / T, dtype=torch.float64, requires_grad=True)
    loss = (z * beta).logsumexp(-1).mean() - (z * beta).gather(1, y[:, None]).mean()
    (slope,) = torch.autograd.grad(loss, beta)
    assert abs(slope.item()) < 1e-9
    assert T == pytest.approx(2.5, rel=0.05)  # and it recovers the generating temperature


def test_method_predicts_tempered_softmax(synthetic):
    z, y = synthetic
    model = Fixed(z[:2000].float()).eval()
    idx = torch.arange(2000)
    val = DataLoader(TensorDataset(idx[:1000], y[:1000]), batch_size=300)
    ts = TemperatureScaling(model).fit(None, val)
    assert ts.temperature_ == pytest.approx(optimal_temperature(z[:1000].float(), y[:1000]), rel=1e-6)
    probs = ts.predict(idx[1000:1010])
    assert torch.allclose(probs, torch.softmax(z[1000:1010].float() / ts.temperature_, -1), atol=1e-6)
    mean, cov = ts.predictive_moments(idx[:3])
    assert cov.abs().max() == 0 and ts.name == "temperature_scaling"


def test_separable_validation_set_hits_the_bound():
    z = torch.tensor([[5.0, -5.0], [-5.0, 5.0]], dtype=torch.float64)
    assert optimal_temperature(z, torch.tensor([0, 1]), bounds=(1e-2, 1e2)) == pytest.approx(1e-2)


def test_regression_fits_noise_variance_and_needs_validation():
    g = torch.Generator().manual_seed(1)
    model = nn.Linear(2, 1).double().eval()
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    y = model(x).detach() + 0.3 * torch.randn(200, 1, generator=g, dtype=torch.float64)
    ts = TemperatureScaling(model, "regression").fit(None, DataLoader(TensorDataset(x, y), batch_size=64))
    assert float(ts.noise_[0]) ** 2 == pytest.approx((model(x).detach() - y).pow(2).mean().item())
    mean, var = ts.predict(x[:4])
    assert torch.allclose(var, ts.noise_.pow(2).expand(4, 1))
    with pytest.raises(ValueError, match="val_loader"):
        TemperatureScaling(model, "regression").fit(None, None)
    with pytest.raises(ValueError, match="bounds"):
        TemperatureScaling(model, bounds=(2.0, 1.0))
