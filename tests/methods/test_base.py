"""ella.methods.base: the Method protocol and the Gaussian-factor predictive that streams, checks and links."""

import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella import ELLA
from ella.eigen import NeuralEF
from ella.methods import MAP, GaussianMethod, Method

from tests.conftest import tiny_mlp


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class Peak:
    """The peak resident-memory increase of the body, sampled every millisecond."""

    def __enter__(self):
        self.start, self.peak, self.stop = resident_bytes(), 0, threading.Event()

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, resident_bytes() - self.start)
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.fixture(scope="module")
def fitted():
    """ELLA with a short NeuralEF on a 40-input MLP (MNIST-1D-sized inputs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 40, generator=g), torch.randint(0, 10, (300,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=100)
    post = ELLA(model, solver=NeuralEF(8, steps=20, progress=False), progress=False).fit(loader, loader)
    return model, post


@pytest.mark.parametrize("link", ["margin", "mc"])
def test_predicting_200k_inputs_streams_in_bounded_memory(fitted, link):
    _, post = fitted
    x = torch.randn(200_000, 40)  # 32 MB of inputs; the probabilities are 8 MB
    post.predict(x[:10], link=link)  # warm-up: first-call allocations
    with Peak() as memory:
        probs = post.predict(x, link=link, n_samples=256)
    assert probs.shape == (200_000, 10) and torch.isfinite(probs).all()
    assert memory.peak < 100 * 2**20, f"{memory.peak / 2**20:.0f} MB"


def test_each_row_is_predicted_alone_whatever_its_batch_mates(fitted):
    _, post = fitted
    x = torch.randn(37, 40, generator=torch.Generator().manual_seed(1))
    for link in ("margin", "probit", "mc"):
        together = post.predict(x, link=link)
        apart = torch.cat([post.predict(x[i : i + 1], link=link) for i in range(len(x))])
        assert torch.allclose(together, apart, rtol=0, atol=1e-6), link
    small = ELLA(post.model, solver=post.solver, progress=False, batch_size=5)
    small.__dict__.update({k: v for k, v in vars(post).items() if k.endswith("_")})  # the same fitted posterior
    assert torch.allclose(small.predict(x, link="mc"), post.predict(x, link="mc"), rtol=0, atol=1e-6)


def test_predict_rechecks_the_models_mode():
    class FunctionalDropout(nn.Module):  # dropout without a Dropout module: only two forward passes can tell
        def __init__(self):
            super().__init__()
            self.layer, self.forwards = nn.Linear(4, 3), 0

        def forward(self, x):
            self.forwards += 1
            return nn.functional.dropout(self.layer(x), 0.5, training=self.training)

    model = FunctionalDropout().eval()
    method = MAP(model)
    x = torch.randn(8, 4)
    method.predict(x)
    assert model.forwards == 3  # the probe's two passes, then the prediction
    method.predict(x)
    assert model.forwards == 4  # the same mode: no second probe
    model.train()
    with pytest.raises(ValueError, match="different outputs for the same input"):
        method.predict(x)
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    method = MAP(bn)
    bn.train()
    before = bn[1].running_mean.clone()
    with pytest.raises(ValueError, match="training mode"):
        method.predict(x)
    assert torch.equal(bn[1].running_mean, before)  # refused before any forward pass could update it


def test_the_protocol():
    assert issubclass(ELLA, GaussianMethod) and issubclass(GaussianMethod, Method)
    with pytest.raises(TypeError, match="abstract"):
        Method(tiny_mlp())
    method = MAP(tiny_mlp(), "regression", sigma_noise=[0.1, 0.2, 0.3])
    assert not method.is_fitted and method.fit() is method and method.is_fitted and method.setup_seconds == 0.0
    assert torch.equal(method.noise_, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma_noise` applies to regression only"):
        MAP(tiny_mlp(), "classification", sigma_noise=0.1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 9), scale=st.sampled_from([1e-6, 1.0, 1e3, 1e6]), link=st.sampled_from(["margin", "probit", "mc"]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_predictions_are_probabilities_for_any_batch_and_scale(fitted, rows, scale, link, dtype):
    _, post = fitted
    x = (torch.randn(rows, 40, generator=torch.Generator().manual_seed(rows)) * scale).to(dtype)
    probs = post.predict(x, link=link, n_samples=64)
    assert probs.shape == (rows, 10) and torch.isfinite(probs).all()
    assert (probs >= 0).all() and torch.allclose(probs.sum(-1), torch.ones(rows), atol=1e-5)
    mean, cov = post.predictive_moments(x)
    assert torch.isfinite(cov).all() and (cov.diagonal(dim1=1, dim2=2) >= 0).all()
