"""What the laplace-torch baselines share: the one grid search of the prior, and input validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ella.methods import KFACLLA, MAP, LastLayerLLA

from tests.conftest import needs_laplace
from tests.methods.conftest import loader, mlp, train

pytestmark = needs_laplace

# --------------------------------------------------------------------------- reference models


# ------------------------------------------------------------------ ella's KFAC GLM predictive vs laplace-torch


@pytest.mark.parametrize("cls", [KFACLLA, LastLayerLLA])
def test_gridsearch_picks_best_validation_nll(cls, data):
    x, y, xv, yv, _ = data
    model = train(mlp((40, 20, 10)), x, y, steps=30).double()
    grid = [1e-2, 1.0, 1e2, 1e4]
    m = cls(model, prior="gridsearch", prior_grid=grid, progress=False, batch_size=32)
    m.fit(loader(x.double(), y), val_loader=loader(xv.double(), yv))
    searched = m.search_.prior_grid.tolist()  # widened at an edge if the minimum sat there
    nlls = []
    for prec in searched:  # the reference: the same method with each prior fixed
        p = cls(model, prior=prec, progress=False).fit(loader(x.double(), y)).predict(xv.double())
        nlls.append(-p[torch.arange(len(yv)), yv].log().mean().item())
    assert len(set(nlls)) == len(searched)  # the prior matters
    assert torch.allclose(m.search_.scores[0, :, 0], torch.tensor(nlls, dtype=torch.float64), rtol=1e-4)
    assert m.prior_precision_ == pytest.approx(searched[int(torch.tensor(nlls).argmin())])


def test_gridsearch_streams_the_jacobians_past_its_cache(data, monkeypatch):
    from ella.methods import laplace_torch

    x, y, xv, yv, _ = data
    model = train(mlp((40, 20, 10)), x, y, steps=30).double()

    def fit():
        m = KFACLLA(model, prior="gridsearch", prior_grid=[1e-2, 1.0, 1e2], progress=False, batch_size=16)
        return m.fit(loader(x.double(), y), val_loader=loader(xv.double(), yv))

    kept = fit()
    monkeypatch.setattr(laplace_torch, "JACOBIAN_CACHE", 0)  # recomputed per grid call, one piece at a time
    streamed = fit()
    assert torch.equal(streamed.search_.prior_grid, kept.search_.prior_grid)
    assert torch.allclose(streamed.search_.scores, kept.search_.scores, rtol=1e-12)
    assert streamed.prior_precision_ == kept.prior_precision_


# --------------------------------------------------------------------------- MAP and last-layer LLA


# --------------------------------------------------------------------------- validation
class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(40, 8), nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("cls", [MAP, KFACLLA, LastLayerLLA])
def test_bad_likelihood_and_training_mode_raise(cls):
    net = DropoutNet()
    with pytest.raises(ValueError, match="likelihood"):
        cls(net.eval(), likelihood="poisson")
    with pytest.raises(ValueError, match="eval"):
        cls(net.train(), likelihood="classification")
    with pytest.raises(TypeError, match="model"):
        cls("not a model", likelihood="classification")


def test_bad_arguments_raise(cnn, data):
    x, y, *_ = data
    with pytest.raises(ValueError, match="prior"):
        KFACLLA(cnn, prior="evidence")
    with pytest.raises(ValueError, match="prior"):
        KFACLLA(cnn, prior=-1.0)
    with pytest.raises(ValueError, match="link"):
        LastLayerLLA(cnn, link="bridge")
    with pytest.raises(ValueError, match="n_samples"):
        KFACLLA(cnn, link="mc", n_samples=0)
    with pytest.raises(ValueError, match="sigma_noise"):
        KFACLLA(cnn, sigma_noise=0.5)
    with pytest.raises(ValueError, match="one `sigma_noise` for all outputs: give one number, got 2"):
        KFACLLA(cnn, "regression", sigma_noise=(0.5, 0.2))
    assert KFACLLA(cnn, "regression", sigma_noise=torch.tensor([0.5])).sigma_noise == 0.5  # one value is a number

    with pytest.raises(RuntimeError, match="fit"):
        KFACLLA(cnn, progress=False).predict(x[:3])
    with pytest.raises(ValueError, match="val_loader"):
        KFACLLA(cnn, prior="gridsearch", progress=False).fit(loader(x, y))
    with pytest.raises(ValueError, match=r"labels of `train_loader`"):
        KFACLLA(cnn, progress=False).fit(loader(x, y + 10))
