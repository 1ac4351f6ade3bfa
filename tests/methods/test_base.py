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
from ella.methods import MAP, GaussianMethod, Method, Predictive, Tuning

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
    small = ELLA(post.model, solver=post.solver, progress=False, predictive=Predictive(batch_size=5))
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
@given(
    rows=st.integers(1, 9),
    scale=st.sampled_from([1e-6, 1.0, 1e3, 1e6]),
    link=st.sampled_from(["margin", "probit", "mc"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_predictions_are_probabilities_for_any_batch_and_scale(fitted, rows, scale, link, dtype):
    _, post = fitted
    x = (torch.randn(rows, 40, generator=torch.Generator().manual_seed(rows)) * scale).to(dtype)
    probs = post.predict(x, link=link, n_samples=64)
    assert probs.shape == (rows, 10) and torch.isfinite(probs).all()
    assert (probs >= 0).all() and torch.allclose(probs.sum(-1), torch.ones(rows), atol=1e-5)
    mean, cov = post.predictive_moments(x)
    assert torch.isfinite(cov).all() and (cov.diagonal(dim1=1, dim2=2) >= 0).all()


# ---------------------------------------------------------------- threads, loaders, non-finite outputs
def _nystrom_posterior():
    from ella.eigen import Nystrom

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(80, 6, generator=g), torch.randint(0, 3, (80,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=40)
    return ELLA(model, k=6, solver=Nystrom(6, 40), progress=False).fit(loader, loader)


@pytest.mark.parametrize("which", ["neuralef", "nystrom"])
def test_twenty_concurrent_predictions_equal_the_sequential_ones(fitted, which):
    """NeuralEF reads hidden features through a hook, Nystrom's features are JVPs through ``functional_call``:
    neither is seen by another thread's call."""
    post = fitted[1] if which == "neuralef" else _nystrom_posterior()
    dim = (
        post.input_spec_["shape"][0]
        if isinstance(post.input_spec_, dict) and "shape" in post.input_spec_
        else next(post.model.parameters()).shape[1]
    )
    inputs = [torch.randn(50, dim, generator=torch.Generator().manual_seed(i)) for i in range(20)]
    sequential = [post.predict(x) for x in inputs]
    results, start = [None] * 20, threading.Barrier(20)

    def work(i):
        start.wait()
        results[i] = post.predict(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None and torch.equal(r, s) for r, s in zip(results, sequential))


def test_another_threads_forward_never_sees_perturbed_weights_during_a_fit():
    from ella.kernels import EmpiricalNTK

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3)).eval()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(200, 6, generator=g), torch.randint(0, 3, (200,), generator=g)
    probe = torch.randn(16, 6, generator=g)
    with torch.no_grad():
        expected = model(probe)
    done, wrong, calls = threading.Event(), [], [0]

    def watch():
        while not done.is_set():
            with torch.no_grad():
                out = model(probe)
            calls[0] += 1
            if not torch.equal(out, expected):
                wrong.append(calls[0])

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        kernel = EmpiricalNTK(model, estimator="fd", num_samples=64, progress=False)
        ELLA(model, k=5, kernel=kernel, solver=NeuralEF(5, steps=30, progress=False), progress=False).fit(
            DataLoader(TensorDataset(x, y), batch_size=50)
        )
    finally:
        done.set()
        watcher.join()
    assert calls[0] > 10 and not wrong, f"{len(wrong)} of {calls[0]} calls saw other weights"


def test_one_shot_loaders_are_refused_before_any_work(fitted):
    model, _ = fitted
    x, y = torch.randn(60, 40), torch.randint(0, 10, (60,))
    batches = [(x[i : i + 20], y[i : i + 20]) for i in range(0, 60, 20)]
    reads = []

    class Counting(list):
        def __iter__(self):
            reads.append(1)
            return super().__iter__()

    post = ELLA(model, solver=NeuralEF(4, steps=5, progress=False), progress=False)
    with pytest.raises(TypeError, match="`train_loader` is a one-shot iterator \\(generator\\)"):
        post.fit(b for b in batches)
    with pytest.raises(TypeError, match="`val_loader` is a one-shot iterator"):
        post.fit(Counting(batches), iter(batches))
    assert not reads  # refused before the training data was read


def test_a_loader_without_a_length_gives_the_same_posterior(fitted):
    from torch.utils.data import IterableDataset

    model, _ = fitted
    x, y = torch.randn(90, 40, generator=torch.Generator().manual_seed(5)), torch.randint(0, 10, (90,))

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(x, y))

    solver = NeuralEF(4, steps=5, progress=False)
    sized = ELLA(model, solver=solver, progress=False).fit(DataLoader(TensorDataset(x, y), batch_size=30))
    unsized = ELLA(model, solver=solver, progress=False).fit(DataLoader(Stream(), batch_size=30))
    assert torch.equal(sized.predict(x[:10]), unsized.predict(x[:10]))


def test_non_finite_model_outputs_are_named_at_fit_and_predict():
    class Sometimes(nn.Module):  # NaN for inputs whose first feature exceeds 2
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 3)

        def forward(self, x):
            out = self.layer(x)
            return torch.where(x[:, :1] > 2, torch.nan, out)

    model = Sometimes().eval()
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(40, 4, generator=g).clamp(max=1), torch.randint(0, 3, (40,), generator=g)
    post = ELLA(model, k=3, progress=False).fit(DataLoader(TensorDataset(x, y), batch_size=20))
    xt = torch.randn(10, 4, generator=g).clamp(max=1)
    xt[[3, 7], 0] = 5.0
    with pytest.raises(ValueError, match=r"outputs on 2 input\(s\) of `x` are not finite \(NaN or inf\): rows 3, 7"):
        post.predict(xt)
    x[25, 0] = 5.0  # a training input: found at the kernel points (all 40 of them), before the solver runs
    with pytest.raises(ValueError, match=r"1 input\(s\) of the kernel points of train_loader are not finite .*rows 25"):
        ELLA(model, k=3, progress=False).fit(DataLoader(TensorDataset(x, y), batch_size=20))
    # ... and one outside the kernel points by the curvature pass, naming its batch
    post = ELLA(model, k=3, kernel_points=10, progress=False)
    with pytest.raises(ValueError, match=r"train_loader \(batch 1\) are not finite .*rows 5"):
        post.fit(DataLoader(TensorDataset(x, y), batch_size=20))


def test_a_model_changed_after_fit_is_refused_at_predict():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 6, generator=g), torch.randint(0, 3, (60,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=30)
    post = ELLA(model, k=4, solver=NeuralEF(4, steps=5, progress=False), progress=False).fit(loader, loader)
    post.predict(x[:5])
    with torch.no_grad():
        model[0].bias.add_(1e-3)  # an in-place update (what an optimiser step does)
    with pytest.raises(ValueError, match="parameter '0.bias' was modified in place"):
        post.predict(x[:5])
    post.fit(loader, loader)
    model[0].weight.requires_grad_(False)  # a frozen layer: the posterior's parameters are others
    with pytest.raises(ValueError, match="parameter '0.weight' changed its requires_grad"):
        post.predict(x[:5])
    model[0].weight.requires_grad_(True)
    post.predict(x[:5])
    model[1] = nn.Tanh()  # another activation, the same weights
    with pytest.raises(ValueError, match="module '1' was a ReLU and is a Tanh"):
        post.predict(x[:5])


def test_shuffling_loaders_give_the_same_posterior_for_the_same_seed(fitted):
    model, _ = fitted
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(120, 40, generator=g), torch.randint(0, 10, (120,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=25, shuffle=True)
    fits = []
    for draw in range(2):
        torch.manual_seed(100 + draw)  # the caller's random state differs between the fits
        state = torch.random.get_rng_state()
        post = ELLA(model, solver=NeuralEF(4, steps=10, progress=False), progress=False, tuning=Tuning(fold_in=60))
        fits.append(post.fit(loader, loader).predict(x[:20]))
        assert torch.equal(torch.random.get_rng_state(), state)  # and is left as it was
    assert torch.equal(fits[0], fits[1])
