"""ella.trajectory.moments: the SWA mean and the SWAG moments of the recorded weights."""

import torch

from ella.methods import swa_model
from ella.trajectory import TrajectoryRecorder, flat_parameters

from tests.trajectory.test_record import run


def test_weight_moments_are_the_swa_mean_and_swa_model():
    rec = TrajectoryRecorder(store="weights", every=2)
    model = run(rec)
    traj = rec.trajectory
    thetas = torch.stack([flat_parameters(traj.snapshot(m), model) for m in range(traj.num_snapshots)])
    assert torch.allclose(traj.moments.mean, thetas.mean(0), rtol=0, atol=1e-14)
    swa = swa_model(traj)
    assert torch.allclose(flat_parameters(swa.state_dict(), swa), thetas.mean(0), atol=1e-14)
    assert not swa.training
