"""ella.trajectory.record: the schedule, recorded functions and weights, resuming, and bad recordings."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella.kernels.sgd_trajectory import SGDTrajectoryKernel
from ella.trajectory import Schedule, Trajectory, TrajectoryRecorder
from ella_lab.train import train_map

from tests.conftest import tiny_mlp


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, dtype=torch.float64, generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def loader(x, y, batch_size=8, seed=0):
    return DataLoader(
        TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def run(recorder, steps=20, seed=0, lr=0.05):
    x, y = data()
    model = tiny_mlp(seed=seed)
    train_map(model, loader(x, y), steps=steps, lr=lr, optimizer="sgd", callback=recorder, progress=False)
    return model


def test_schedule_picks_start_every_and_at_most_max():
    s = Schedule(start=3, every=4, max_snapshots=3)
    taken, count = [], 0
    for step in range(1, 40):
        if s.due(step, count):
            taken.append(step)
            count += 1
    assert taken == [3, 7, 11]
    with pytest.raises(ValueError, match="every"):
        Schedule(every=0)


def test_recorded_functions_are_the_snapshots_outputs():
    x, _ = data()
    rec = TrajectoryRecorder(x, store="both", start=2, every=3, max_snapshots=5)
    run(rec)
    traj = rec.trajectory
    assert traj.steps == [2, 5, 8, 11, 14] and traj.num_snapshots == 5
    recorded = traj.recorded_functions(torch.arange(len(x))) + traj.anchor  # g(x, theta_m) = d_m + a
    direct = traj.functions(x)  # from the weight snapshots
    assert torch.allclose(recorded, direct, rtol=0, atol=1e-12)


def test_float16_storage_stays_within_tolerance():
    x, _ = data()
    full, half = TrajectoryRecorder(x, every=2), TrajectoryRecorder(x, every=2, storage_dtype=torch.float16)
    run(lambda step, model: (full(step, model), half(step, model)))
    a, b = full.trajectory, half.trajectory
    assert b.deviations.dtype == torch.float16 and a.deviations.dtype == torch.float64
    idx = torch.arange(len(x))
    fa, fb = a.recorded_functions(idx), b.recorded_functions(idx)
    # deviations from the first snapshot are small, so float16 keeps ~3 significant digits of them
    assert ((fa - fb).norm() / fa.norm()) < 1e-3
    assert torch.equal(a.anchor, b.anchor)


def test_resuming_from_snapshots_on_disk_gives_identical_results(tmp_path):
    x, y = data()
    once = TrajectoryRecorder(x, store="both", start=2, every=2, directory=tmp_path / "once")
    run(once)
    model = tiny_mlp()
    # the same run, interrupted after step 10 and resumed by a new recorder on the same directory
    first = TrajectoryRecorder(x, store="both", start=2, every=2, directory=tmp_path / "resumed")
    run(lambda step, m: first(step, m) if step <= 10 else None)
    second = TrajectoryRecorder(x, store="both", start=2, every=2, directory=tmp_path / "resumed", resume=True)
    run(lambda step, m: second(step, m) if step > 10 else None)
    a, b = once.trajectory, second.trajectory
    assert a.steps == b.steps == list(range(2, 21, 2))
    assert torch.equal(a.deviations, b.deviations) and torch.equal(a.anchor, b.anchor)
    assert torch.equal(a.moments.mean, b.moments.mean) and torch.equal(a.moments.deviations, b.moments.deviations)
    assert torch.equal(SGDTrajectoryKernel(a).features(x), SGDTrajectoryKernel(b).features(x))
    # a trajectory read back from the directory alone
    c = Trajectory.from_directory(tmp_path / "once", model)
    assert c.steps == a.steps and torch.equal(c.functions(x), a.functions(x))
    assert torch.equal(c.moments.sq_mean, a.moments.sq_mean)
    with pytest.raises(ValueError, match="already holds 10 snapshot files"):
        TrajectoryRecorder(x, store="weights", directory=tmp_path / "once")


def test_bad_recordings_are_rejected_naming_the_snapshot():
    x, _ = data()
    rec = TrajectoryRecorder(x, every=1)
    rec(1, tiny_mlp())
    with pytest.raises(ValueError, match="at least 2"):
        rec.trajectory
    broken = tiny_mlp()
    with torch.no_grad():
        broken[0].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"snapshot 1 \(step 2\) has non-finite values in parameter `0.weight`"):
        rec(2, broken)
    with pytest.raises(ValueError, match=r"snapshot 1 \(step 3\) does not match"):
        rec(3, tiny_mlp(hidden=5))
    with pytest.raises(ValueError, match="inputs"):
        TrajectoryRecorder(store="functions")
    with pytest.raises(ValueError, match="store"):
        TrajectoryRecorder(x, store="gradients")
    with pytest.raises(ValueError, match="storage_dtype"):
        TrajectoryRecorder(x, storage_dtype=torch.int8)
