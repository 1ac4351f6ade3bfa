"""ella.trajectory.store: saving, loading and checking trajectories, and reading a user's checkpoints."""

import pytest
import torch

from ella.trajectory import Trajectory, TrajectoryRecorder, flat_parameters

from tests.conftest import tiny_mlp
from tests.trajectory.test_record import data, run


def test_save_load_round_trip_and_checks(tmp_path):
    x, _ = data()
    rec = TrajectoryRecorder(x, store="both", every=4)
    model = run(rec)
    traj = rec.trajectory
    traj.save(tmp_path / "traj.pt")
    back = Trajectory.load(tmp_path / "traj.pt", model)
    assert back.steps == traj.steps and torch.equal(back.deviations, traj.deviations)
    assert torch.equal(back.functions(x), traj.functions(x))
    with pytest.raises(ValueError, match="parameters"):
        Trajectory.load(tmp_path / "traj.pt", tiny_mlp(hidden=5))
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an ella-trajectory file"):
        Trajectory.load(tmp_path / "bad.pt", model)


def test_user_checkpoints_are_loaded_and_checked(tmp_path):
    model = tiny_mlp()
    paths = []
    for m in range(4):
        state = tiny_mlp(seed=m).state_dict()
        paths.append(tmp_path / f"epoch{m}.pt")
        torch.save({"epoch": m, "model_state_dict": state} if m % 2 else state, paths[-1])
    traj = Trajectory.from_checkpoints(paths, model)
    thetas = torch.stack([flat_parameters(tiny_mlp(seed=m).state_dict(), model) for m in range(4)])
    assert traj.num_snapshots == 4 and torch.allclose(traj.moments.mean, thetas.mean(0), atol=1e-14)

    with pytest.raises(ValueError, match="at least 2"):
        Trajectory.from_checkpoints(paths[:1], model)
    torch.save(tiny_mlp(hidden=5).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"snapshot 2 \(.*other.pt\) does not match the model's architecture"):
        Trajectory.from_checkpoints(paths[:2] + [tmp_path / "other.pt"], model)
    broken = tiny_mlp(seed=7).state_dict()
    broken["2.bias"][1] = float("nan")
    torch.save(broken, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"snapshot 1 \(.*nan.pt\) has non-finite values in parameter `2.bias`"):
        Trajectory.from_checkpoints([paths[0], tmp_path / "nan.pt"], model)
    with pytest.raises(ValueError, match="snapshot 1: no such file"):
        Trajectory.from_checkpoints([paths[0], tmp_path / "missing.pt"], model)
