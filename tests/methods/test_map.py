"""MAP: the network's own softmax, zero latent covariance, a regression noise to fit."""

import pytest
import torch

from ella.methods import MAP

from tests.methods.conftest import mlp


def test_map_is_softmax(cnn, data):
    xt = data[4]
    m = MAP(cnn, "classification")
    assert m.fit() is m and m.name == "map"
    probs = m.predict(xt.double())  # float64 input is cast to the model's dtype
    assert probs.dtype == torch.float32
    assert torch.allclose(probs, torch.softmax(cnn(xt), -1), atol=1e-7, rtol=0)
    mean, cov = m.predictive_moments(xt)
    assert cov.shape == (200, 10, 10) and (cov == 0).all()
    reg = MAP(mlp((40, 5, 2)).eval(), "regression", sigma_noise=0.3)
    with pytest.raises(RuntimeError, match="fit"):
        reg.predict(xt)
    mu, var = reg.fit().predict(xt)
    assert mu.shape == var.shape == (200, 2) and torch.allclose(var, torch.full_like(var, 0.09))
