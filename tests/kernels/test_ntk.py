import math

import pytest
import torch
from torch import nn

from ella.kernels import EmpiricalNTK
from ella.kernels.ntk import directions

from tests.conftest import tiny_mlp


def exact_gram(model, x):
    return EmpiricalNTK(model, "exact", progress=False).gram(x)


def test_exact_gram_is_jacobian_outer_product(mlp, inputs):
    ntk = EmpiricalNTK(mlp, "exact", progress=False)
    J = ntk.jacobian(inputs).flatten(0, 1)
    assert torch.allclose(ntk.gram(inputs), J @ J.T, atol=1e-12)
    # as a feature kernel: Phi = sqrt(P) J, K = Phi Phi^T / P
    phi = ntk.features(inputs).flatten(0, 1)
    assert torch.allclose(phi @ phi.T / ntk.num_features, J @ J.T, atol=1e-10)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_jvp_features_are_jacobian_times_directions(mlp, inputs, distribution):
    ntk = EmpiricalNTK(mlp, "jvp", num_samples=70, distribution=distribution, seed=3, batch_size=8, progress=False)
    V = torch.cat([directions(3, b, ntk.num_params, distribution, torch.float64) for b in range(3)])[:70]
    expected = torch.einsum("bcp,sp->bcs", ntk.jacobian(inputs), V)
    assert torch.allclose(ntk.features(inputs), expected, atol=1e-6, rtol=0)
    assert torch.allclose(ntk.features(inputs), expected, atol=1e-12)


def test_features_do_not_depend_on_batching(mlp, inputs):
    a = EmpiricalNTK(mlp, "jvp", num_samples=40, batch_size=3, progress=False).features(inputs)
    b = EmpiricalNTK(mlp, "jvp", num_samples=40, batch_size=64, progress=False).features(inputs)
    # the same numbers up to the round-off of another matrix-product blocking (BLAS picks it by shape)
    assert torch.allclose(
        a[:5], EmpiricalNTK(mlp, "jvp", num_samples=40, progress=False).features(inputs[:5]), atol=1e-14, rtol=0
    )
    assert torch.allclose(a, b, atol=1e-14)


@pytest.mark.parametrize("central, tol", [(False, 1e-6), (True, 1e-9)])
def test_finite_differences_match_jvp(mlp, inputs, central, tol):
    jvp = EmpiricalNTK(mlp, "jvp", num_samples=40, progress=False).features(inputs)
    fd = EmpiricalNTK(mlp, "fd", num_samples=40, central=central, progress=False).features(inputs)
    assert (fd - jvp).norm() / jvp.norm() < tol


def test_finite_differences_restore_weights_exactly(mlp, inputs):
    before = [p.detach().clone() for p in mlp.parameters()]
    EmpiricalNTK(mlp, "fd", num_samples=33, central=True, progress=False).features(inputs)
    assert all(torch.equal(p, b) for p, b in zip(mlp.parameters(), before))


class Exploding(nn.Module):
    """Raises on the n-th forward call, e.g. in the middle of a perturbation."""

    def __init__(self, net, n):
        super().__init__()
        self.net, self.n, self.calls = net, n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("interrupted")
        return self.net(x)


def test_finite_differences_restore_weights_after_an_exception(inputs):
    model = Exploding(tiny_mlp(), n=5).eval()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="interrupted"):
        EmpiricalNTK(model, "fd", num_samples=10, progress=False).features(inputs)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_monte_carlo_error_shrinks_like_one_over_sqrt_samples(inputs):
    model = tiny_mlp(hidden=16)
    K = exact_gram(model, inputs)
    sizes = [32, 128, 512, 2048]
    errors = []
    for S in sizes:
        err = [
            (EmpiricalNTK(model, "jvp", num_samples=S, seed=s, progress=False).gram(inputs) - K).norm() / K.norm()
            for s in range(6)
        ]
        errors.append(torch.stack(err).pow(2).mean().sqrt().item())  # root-mean-square over seeds
    slope = (
        torch.linalg.lstsq(
            torch.tensor([[math.log(s), 1.0] for s in sizes]), torch.tensor([[math.log(e)] for e in errors])
        )
        .solution[0]
        .item()
    )
    assert -0.65 < slope < -0.35, (errors, slope)


def test_same_seed_same_features_other_seed_different(mlp, inputs):
    a = EmpiricalNTK(mlp, "jvp", num_samples=16, seed=1, progress=False).features(inputs)
    b = EmpiricalNTK(mlp, "jvp", num_samples=16, seed=1, progress=False).features(inputs)
    c = EmpiricalNTK(mlp, "jvp", num_samples=16, seed=2, progress=False).features(inputs)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "bogus"}, "estimator"),
        ({"distribution": "uniform"}, "distribution"),
        ({"num_samples": 0}, "num_samples"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_bad_arguments_are_named(mlp, kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmpiricalNTK(mlp, **kwargs)


def test_rejects_training_mode_dropout_and_non_finite_weights():
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="eval"):
        EmpiricalNTK(net)
    net.eval()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        EmpiricalNTK(net)


def test_the_progress_bar_ticks_per_batch_of_inputs_and_block_of_directions(mlp, inputs, monkeypatch):
    ticks = []
    monkeypatch.setattr("ella.kernels.ntk.progress", lambda units, *args, **kwargs: ticks.append(len(units)) or units)
    EmpiricalNTK(mlp, "fd", num_samples=70, batch_size=4, progress=True).features(inputs)
    assert ticks == [math.ceil(70 / 32) * math.ceil(len(inputs) / 4)]  # blocks of 32 directions x batches
