import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella import ELLA
from ella.eigen import NeuralEF, Nystrom
from ella.kernels.sgd_trajectory import SGDTrajectoryKernel
from ella.trajectory import TrajectoryRecorder
from ella_lab.train import train_map

from tests.conftest import tiny_mlp


def record(out_features=3, n=30, steps=20, every=2, storage_dtype=None, store="both", seed=0):
    """A float64 MLP trained by SGD, snapshots every ``every`` steps: M = steps / every."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (n,), generator=g) if out_features == 3 else torch.randn(n, 1, generator=g).double()
    model = tiny_mlp(out_features=out_features)
    rec = TrajectoryRecorder(x, store=store, every=every, storage_dtype=storage_dtype)
    train_map(
        model,
        DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True, generator=g),
        steps=steps,
        lr=0.1,
        optimizer="sgd",
        likelihood="classification" if out_features == 3 else "regression",
        callback=rec,
        progress=False,
    )
    return rec.trajectory, x, y


def direct_covariance(trajectory, x1, x2):
    """(1/M) sum_m (g(x1, theta_m) - gbar(x1)) (g(x2, theta_m) - gbar(x2))^T over (x, c) rows, from the weights."""
    g1, g2 = trajectory.functions(x1), trajectory.functions(x2)  # (M, B, C)
    d1, d2 = (g1 - g1.mean(0)).flatten(1), (g2 - g2.mean(0)).flatten(1)
    return d1.T @ d2 / len(g1)


@pytest.fixture(scope="module")
def recorded():
    return record()


def test_kernel_from_recorded_functions_is_the_empirical_covariance(recorded):
    traj, x, _ = recorded
    kernel = SGDTrajectoryKernel(traj, source="functions", progress=False)
    assert kernel.num_features == 10 and kernel.num_outputs == 3
    assert torch.allclose(kernel.gram(x), direct_covariance(traj, x, x), rtol=0, atol=1e-12)
    # any order or subset of the recorded inputs (e.g. a shuffled loader), without a forward pass
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:12]
    assert torch.allclose(kernel.gram(x[perm]), direct_covariance(traj, x[perm], x[perm]), atol=1e-12)
    assert torch.allclose(kernel.mean(x), traj.functions(x).mean(0), atol=1e-12)


def test_kernel_from_weights_at_new_inputs(recorded):
    traj, x, _ = recorded
    kernel = SGDTrajectoryKernel(traj, progress=False)  # "auto": unrecorded inputs go through the weights
    x_new = torch.randn(7, 3, dtype=torch.float64)
    assert torch.allclose(kernel.gram(x_new, x), direct_covariance(traj, x_new, x), atol=1e-12)
    assert torch.allclose(SGDTrajectoryKernel(traj, "weights").gram(x), kernel.gram(x), atol=1e-12)
    functions_only, _, _ = record(store="functions")
    with pytest.raises(ValueError, match="not recorded"):
        SGDTrajectoryKernel(functions_only).features(x_new)
    with pytest.raises(ValueError, match="source"):
        SGDTrajectoryKernel(functions_only, source="weights")


def test_float16_functions_give_the_kernel_within_tolerance():
    traj32, x, _ = record(store="functions")
    traj16, _, _ = record(store="functions", storage_dtype=torch.float16)
    K32, K16 = SGDTrajectoryKernel(traj32).gram(x), SGDTrajectoryKernel(traj16).gram(x)
    assert ((K16 - K32).norm() / K32.norm()) < 2e-3


def test_rank_is_at_most_m_minus_1_and_solvers_respect_it(recorded):
    traj, x, y = recorded
    kernel = SGDTrajectoryKernel(traj, progress=False)
    M = traj.num_snapshots
    evals = torch.linalg.eigvalsh(kernel.gram(x)).flip(0)
    assert kernel.max_rank == M - 1 and evals[M - 2] > 1e-8 * evals[0] and evals[M - 1 :].abs().max() < 1e-12 * evals[0]
    for solver in (NeuralEF(M, steps=5, progress=False), Nystrom(M)):
        with pytest.raises(ValueError, match=rf"`k` = {M} is larger than the rank of the kernel .* at most {M - 1}"):
            solver.fit(kernel, x)
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    with pytest.raises(ValueError, match="rank"):
        ELLA(tiny_mlp(), k=M, kernel=kernel, progress=False).fit(loader)
    Nystrom(M - 1, num_points=len(x)).fit(kernel, x)  # k = M - 1 is fine
