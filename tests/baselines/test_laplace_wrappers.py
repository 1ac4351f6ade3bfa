"""laplace-torch's own ELLA and the diagonal LLA, wrapped in ella's protocol, on tiny networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella.baselines.diag_lla import DiagLLA
from ella.baselines.laplace_ella import LaplaceTorchELLA
from ella.functional import jacobians
from ella.predictive import moments_probs


def loader(x, y, batch_size=32):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


@pytest.fixture(scope="module")
def tiny():
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


def test_laplace_torch_ella_wrapper_runs_and_uses_its_own_grid_search(tiny):
    model, x, y, xv, yv, xt = tiny
    m = LaplaceTorchELLA(model, k=5, subsample_size=50, grid_size=7, progress=False)
    assert m.fit(loader(x, y), loader(xv, yv)) is m
    assert m.name == "laplace_torch_ella" and m.link == "margin"
    # laplace-torch tuned delta over its own grid, logspace(-4, 4, grid_size)
    grid = torch.logspace(-4, 4, 7)
    assert min(abs(m.prior_precision - g.item()) / g.item() for g in grid) < 1e-5
    assert len(m.la.fit_history_["tuning"]) == 7
    mean, cov = m.predictive_moments(xt)
    mean_la, cov_la = m.la.predictive_moments(xt)
    assert torch.allclose(mean, mean_la) and torch.allclose(cov, cov_la)
    probs = m.predict(xt)
    assert probs.shape == (25, 3) and torch.allclose(probs.sum(1), torch.ones(25), atol=1e-5)
    assert torch.allclose(probs, moments_probs(mean, cov, "margin"), atol=1e-6)
    with pytest.raises(ValueError, match="subsample_size"):
        LaplaceTorchELLA(model, k=30, subsample_size=20)


def test_laplace_torch_ella_regression_adds_noise(tiny):
    model, x, _, xv, _, xt = tiny
    y, yv = model(x).detach() + 0.1, model(xv).detach()
    m = LaplaceTorchELLA(model, "regression", k=4, subsample_size=40, grid_size=5, progress=False)
    m.fit(loader(x, y), loader(xv, yv))
    assert m.sigma_noise == pytest.approx(0.1, rel=1e-4)  # training RMSE
    mean, var = m.predict(xt)
    _, cov = m.predictive_moments(xt)
    assert torch.allclose(var, cov.diagonal(dim1=1, dim2=2) + 0.01, rtol=1e-4)


def test_diag_lla_predictive_is_the_diagonal_glm_formula(tiny):
    model, x, y, xv, yv, xt = tiny
    m = DiagLLA(model, prior="gridsearch", grid=[0.1, 1.0, 10.0], progress=False).fit(loader(x, y), loader(xv, yv))
    assert m.name == "diag_lla" and min(abs(m.prior_precision - g) / g for g in (0.1, 1.0, 10.0)) < 1e-6
    mean, cov = m.predictive_moments(xt)
    J = jacobians(model, xt)
    # J diag(1 / (diag(GGN) + delta)) J^T, with laplace-torch's diagonal GGN
    var = 1 / (m.la.H + m.prior_precision)
    assert torch.allclose(cov, torch.einsum("bcp,p,bdp->bcd", J, var, J), rtol=1e-4, atol=1e-7)
    assert torch.allclose(cov, m.la.functional_variance(J), rtol=1e-4, atol=1e-7)
    assert torch.allclose(mean, model(xt), atol=1e-6)
    marglik = DiagLLA(model, prior="marglik", marglik_steps=20, progress=False).fit(loader(x, y))
    assert marglik.prior_precision > 0 and marglik.prior_precision != 1.0
