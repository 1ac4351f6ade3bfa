import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella.methods.swag import SWA, SWAG, swa_model, swag_moments, update_bn
from ella.trajectory import Trajectory, TrajectoryRecorder, flat_parameters
from ella_lab.train import train_map

from tests.conftest import tiny_mlp


@pytest.fixture(scope="module")
def tiny():
    """M = 6 snapshots of a tiny MLP (here: independently initialised networks), weights in memory."""
    model = tiny_mlp()
    snapshots = [tiny_mlp(seed=m).state_dict() for m in range(6)]
    thetas = torch.stack([flat_parameters(s, model) for s in snapshots])  # (M, P)
    return model, snapshots, thetas


def test_swag_moments_equal_their_definitions(tiny):
    model, snapshots, thetas = tiny
    M, K = len(thetas), 4
    traj = Trajectory.from_snapshots(snapshots, model, rank=K)
    mom = traj.moments
    assert torch.allclose(mom.mean, thetas.mean(0), rtol=0, atol=1e-14)  # theta_swa
    # Sigma_diag = mean(theta^2) - theta_swa^2
    assert torch.allclose(mom.variance, thetas.pow(2).mean(0) - thetas.mean(0).pow(2), rtol=0, atol=1e-13)
    # D: the last K deviations theta_m - bar(theta)_m from the running means, oldest first
    running = torch.cumsum(thetas, 0) / torch.arange(1, M + 1, dtype=torch.float64)[:, None]
    assert torch.allclose(mom.deviations, (thetas - running)[M - K :].T, rtol=0, atol=1e-14)
    # another rank is recomputed from the weight snapshots
    assert torch.allclose(swag_moments(traj, 2).deviations, (thetas - running)[M - 2 :].T, atol=1e-14)


def test_swag_sample_is_the_paper_formula(tiny):
    model, snapshots, thetas = tiny
    mom = Trajectory.from_snapshots(snapshots, model, rank=4).moments
    sample = mom.sample(torch.Generator().manual_seed(3), scale=0.5)
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(thetas.shape[1], generator=g, dtype=torch.float64)
    z2 = torch.randn(4, generator=g, dtype=torch.float64)
    # theta_swa + (1/sqrt 2) Sigma_diag^{1/2} z_1 + (1/sqrt(2 (K - 1))) D z_2
    expected = mom.mean + mom.variance.sqrt() * z1 / math.sqrt(2) + mom.deviations @ z2 / math.sqrt(2 * 3)
    assert torch.allclose(sample, expected, rtol=0, atol=1e-13)
    diag_only = mom.sample(torch.Generator().manual_seed(3), scale=0.5, low_rank=False)
    assert torch.allclose(diag_only, mom.mean + mom.variance.sqrt() * z1 / math.sqrt(2), atol=1e-13)


def test_swa_and_swag_predict_by_the_protocol(tiny):
    model, snapshots, _ = tiny
    traj = Trajectory.from_snapshots(snapshots, model)
    x = torch.randn(9, 3, dtype=torch.float64)
    swa = SWA(traj).fit()
    assert swa.name == "swa" and torch.allclose(swa.predict(x), swa_model(traj)(x).softmax(-1).detach())
    swag = SWAG(traj, num_samples=5, seed=1)
    with pytest.raises(RuntimeError, match="fit"):
        swag.predict(x)
    assert swag.fit() is swag and swag.name == "swag" and isinstance(swag.model, nn.Module)
    # (1/S) sum_s softmax(g(x, theta_s)) with the seeded samples
    net = tiny_mlp()
    probs = []
    for state in swag.samples_:
        net.load_state_dict(state)
        probs.append(net(x).softmax(-1).detach())
    assert torch.allclose(swag.predict(x), torch.stack(probs).mean(0), atol=1e-14)
    assert torch.equal(SWAG(traj, num_samples=5, seed=1).fit().predict(x), swag.predict(x))
    assert not torch.equal(SWAG(traj, num_samples=5, seed=2).fit().predict(x), swag.predict(x))
    mean, cov = swag.predictive_moments(x)
    assert mean.shape == (9, 3) and cov.shape == (9, 3, 3)


def test_swag_from_recorded_functions_only_and_bad_input(tiny):
    model, _, _ = tiny
    x = torch.randn(20, 3, dtype=torch.float64)
    rec = TrajectoryRecorder(x, store="functions", swag_rank=3)
    for step in range(4):
        rec(step + 1, tiny_mlp(seed=step))
    swag = SWAG(rec.trajectory, rank=3, num_samples=4).fit()  # the streamed moments, no weights kept
    assert swag.predict(x).shape == (20, 3)
    with pytest.raises(ValueError, match="swag_rank=20"):
        SWAG(rec.trajectory, rank=20)
    with pytest.raises(TypeError, match="Trajectory"):
        SWAG(model)
    with pytest.raises(ValueError, match="num_samples"):
        SWAG(rec.trajectory, rank=3, num_samples=0)


def test_swag_recomputes_batch_norm_for_every_sample():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = [nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double().eval() for _ in range(3)]
    traj = Trajectory.from_snapshots([n.state_dict() for n in nets], nets[0])
    x = torch.randn(32, 3, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, torch.zeros(32, dtype=torch.long)), batch_size=32)
    with pytest.raises(ValueError, match="batch norm"):
        SWAG(traj, num_samples=2).fit()
    swag = SWAG(traj, num_samples=2).fit(loader)
    for state in swag.samples_:  # each sample's statistics are those of its own pre-norm activations
        h = x @ state["0.weight"].T + state["0.bias"]
        assert torch.allclose(state["1.running_mean"], h.mean(0), atol=1e-12)


def loader(x, y, batch_size=8, seed=0):
    return DataLoader(
        TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def test_batch_norm_statistics_are_recomputed_for_the_swa_weights():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, dtype=torch.float64, generator=g), torch.randint(0, 3, (64,), generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    rec = TrajectoryRecorder(store="weights", every=2)
    train_map(net, loader(x, y, 16), steps=10, lr=0.1, optimizer="sgd", callback=rec, progress=False)
    with pytest.raises(ValueError, match="batch norm"):
        swa_model(rec.trajectory)
    swa = swa_model(rec.trajectory, DataLoader(TensorDataset(x, y), batch_size=16))
    # one pass, equal averages of the batch statistics of the SWA network's pre-norm activations
    h = swa[0](x).detach().reshape(4, 16, 6)
    assert torch.allclose(swa[1].running_mean, h.mean(1).mean(0), atol=1e-12)
    assert torch.allclose(swa[1].running_var, h.var(1, unbiased=True).mean(0), atol=1e-12)
    plain = tiny_mlp()
    before = [p.detach().clone() for p in plain.parameters()]
    assert update_bn(plain, loader(x, y)) is plain  # a no-op without batch norm
    assert all(torch.equal(p, b) for p, b in zip(plain.parameters(), before))
