"""laplace-torch's own ELLA feature map and the diagonal LLA inside ella's methods, on small_classifier networks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella.methods import ELLA, Predictive, Tuning
from ella.methods.laplace_ella import LaplaceTorchELLA
from ella.predictive import covariance_factor, link_probs

from tests.conftest import needs_laplace

pytestmark = needs_laplace


def loader(x, y, batch_size=32):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def test_laplace_torch_ella_uses_laplace_torchs_features_and_curvature(small_classifier):
    model, x, y, xv, yv, xt = small_classifier
    m = LaplaceTorchELLA(model, k=5, subsample_size=50, progress=False)
    assert m.fit(loader(x, y), loader(xv, yv)) is m
    assert m.name == "laplace_torch_ella" and m.link == "margin"
    # the posterior is laplace-torch's own at the chosen prior: its feature Gram matrix plus delta I
    la = m.la_
    assert torch.allclose(
        m.posterior_precision.float(), la.feature_gram + m.prior_precision_ * torch.eye(5), rtol=1e-4, atol=1e-5
    )
    la.prior_precision = m.prior_precision_
    la._build_precision()
    mean_la, cov_la = la.predictive_moments(xt)
    mean, cov = m.predictive_moments(xt)
    assert torch.allclose(mean, mean_la) and torch.allclose(cov, cov_la, rtol=1e-4, atol=1e-6)
    probs = m.predict(xt)
    assert probs.shape == (25, 3) and torch.allclose(probs.sum(1), torch.ones(25), atol=1e-5)
    assert torch.allclose(probs, link_probs(mean, covariance_factor(cov), "margin"), atol=1e-5)
    scores = m.search_.scores[0, :, 0]
    assert scores.min() == scores[m.search_.prior_grid.tolist().index(m.prior_precision_)]
    with pytest.raises(ValueError, match="subsample_size"):
        LaplaceTorchELLA(model, k=30, subsample_size=20)


def test_laplace_torch_ella_regression_adds_the_tuned_noise(small_classifier):
    model, x, _, xv, _, xt = small_classifier
    g = torch.Generator().manual_seed(1)
    y = model(x).detach() + 0.1 * torch.randn(len(x), 3, generator=g)
    yv = model(xv).detach() + 0.1 * torch.randn(len(xv), 3, generator=g)
    m = LaplaceTorchELLA(model, "regression", k=4, subsample_size=40, progress=False)
    m.fit(loader(x, y), loader(xv, yv))
    assert torch.all((m.noise_ > 0.05) & (m.noise_ < 0.2))
    mean, var = m.predict(xt)
    _, cov = m.predictive_moments(xt)
    assert torch.allclose(var, cov.diagonal(dim1=1, dim2=2) + m.noise_**2, rtol=1e-5)


def test_it_saves_and_loads_to_the_same_predictions_without_laplace_torchs_object(small_classifier, tmp_path):
    model, x, y, xv, yv, xt = small_classifier
    tuning, predictive = Tuning(prior_grid=[0.1, 1.0, 10.0]), Predictive(link="probit", batch_size=9)
    post = LaplaceTorchELLA(model, k=4, subsample_size=50, tuning=tuning, predictive=predictive, progress=False)
    post.fit(loader(x, y), loader(xv, yv))
    post.save(tmp_path / "post.pt")
    back = LaplaceTorchELLA.load(tmp_path / "post.pt", model)
    assert back.la_ is None and torch.equal(back.directions_, post.directions_)  # the whole feature map
    assert back._config() == post._config() and back.tuning == tuning and back.predictive == predictive
    assert back.k == 4 and back.subsample_size == 50 and back.prior_precision_ == post.prior_precision_
    assert torch.equal(back.predict(xt), post.predict(xt))
    with pytest.raises(ValueError, match="holds a posterior of 'LaplaceTorchELLA', not of ELLA"):
        ELLA.load(tmp_path / "post.pt", model)
