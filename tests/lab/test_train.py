"""The MAP trainer and the reference recipes: training behaviour, determinism, input checks."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella.utils import seeded_generator
from ella_lab.models import regression_mlp
from ella_lab.train import train_map, train_mnist1d_cnn, train_mnist1d_mlp


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: one intra-op thread is much faster, above all on a shared, loaded machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(n=256, seed=0):
    g = seeded_generator(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
    x = centers[y] + 0.7 * torch.randn(n, 2, generator=g)
    return TensorDataset(x, y)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))


def _loader(ds, seed=0, batch_size=32):
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=seeded_generator(seed))


def test_train_map_reduces_loss_and_is_deterministic():
    ds = _blobs()
    x, y = ds.tensors
    model = _net()
    before = nn.functional.cross_entropy(model(x), y).item()
    history = train_map(model, _loader(ds), steps=150, lr=1e-2, progress=False)
    after = nn.functional.cross_entropy(model(x), y).item()
    assert after < 0.5 * before
    assert not model.training
    assert history["steps"] == 150 and len(history["losses"]) == 150
    assert history["final_loss"] < history["losses"][0]

    again = _net()
    train_map(again, _loader(ds), steps=150, lr=1e-2, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    # The loader has no generator of its own here, so shuffling comes from train_map's seed.
    runs = []
    for seed in (1, 1, 2):
        m = _net()
        train_map(m, DataLoader(ds, batch_size=32, shuffle=True), epochs=2, seed=seed, progress=False)
        runs.append(torch.nn.utils.parameters_to_vector(m.parameters()))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_train_map_leaves_global_state_untouched():
    ds = _blobs(64)
    model = _net()
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    train_map(model, DataLoader(ds, batch_size=16, shuffle=True), steps=5, num_threads=2, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.get_num_threads() == threads


def test_train_map_callback_epochs_and_options():
    ds = _blobs(64)
    seen = []

    def callback(step, model):
        seen.append(step)
        model.eval()  # the trainer must restore training mode

    loader = _loader(ds, batch_size=16)
    history = train_map(
        _net(),
        loader,
        epochs=3,
        optimizer="sgd",
        schedule="cosine",
        weight_decay=1e-3,
        callback=callback,
        progress=False,
    )
    assert seen == list(range(1, 13)) and history["steps"] == 12 and history["epochs"] == 3
    train_map(_net(), loader, steps=20, optimizer="adamw", weight_decay=1e-2, progress=False)


def test_train_map_regression():
    g = seeded_generator(0)
    x = torch.rand(128, 1, generator=g) * 2 - 1
    y = torch.sin(3 * x)
    model = regression_mlp(hidden=16)
    before = nn.functional.mse_loss(model(x), y).item()
    train_map(model, _loader(TensorDataset(x, y)), steps=200, lr=1e-2, likelihood="regression", progress=False)
    assert nn.functional.mse_loss(model(x), y).item() < 0.2 * before


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({}, "steps"),
        ({"steps": 5, "epochs": 1}, "epochs"),
        ({"steps": 0}, "steps"),
        ({"steps": 5, "optimizer": "lbfgs"}, "optimizer"),
        ({"steps": 5, "likelihood": "poisson"}, "likelihood"),
        ({"steps": 5, "schedule": "step"}, "schedule"),
        ({"steps": 5, "lr": -1.0}, "lr"),
        ({"steps": 5, "weight_decay": -1.0}, "weight_decay"),
        ({"steps": 5, "num_threads": 0}, "num_threads"),
    ],
)
def test_train_map_bad_input(kwargs, name):
    model = _net()
    before = torch.nn.utils.parameters_to_vector(model.parameters()).clone()
    with pytest.raises(ValueError, match=name):
        train_map(model, _loader(_blobs(32)), progress=False, **kwargs)
    assert torch.equal(torch.nn.utils.parameters_to_vector(model.parameters()), before)


def test_train_map_bad_types():
    with pytest.raises(TypeError, match="model"):
        train_map("model", _loader(_blobs(32)), steps=1)
    with pytest.raises(TypeError, match="callback"):
        train_map(_net(), _loader(_blobs(32)), steps=1, callback=3)
    with pytest.raises(ValueError, match="train_loader"):
        train_map(_net(), DataLoader(TensorDataset(torch.empty(0, 2), torch.empty(0).long())), steps=1)


def test_recipes_reject_wrong_data():
    from ella_lab.data import toy_regression

    for recipe in (train_mnist1d_cnn, train_mnist1d_mlp):
        with pytest.raises(TypeError, match="splits"):
            recipe("mnist1d")
        with pytest.raises(ValueError, match="splits"):
            recipe(toy_regression())
