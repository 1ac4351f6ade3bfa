"""ella_lab.trajectory: the SWA-style phase that records a trajectory continuing a MAP training."""

import pytest
import torch

from ella_lab.trajectory import swa_phase

from tests.conftest import tiny_mlp
from tests.trajectory.test_record import data, loader


def test_swa_phase_leaves_the_model_alone_and_is_seeded():
    x, y = data()
    model = tiny_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    kwargs = dict(steps=12, lr=1e-2, optimizer="adam", every=3, progress=False)
    a, b = swa_phase(model, loader(x, y), **kwargs), swa_phase(model, loader(x, y), **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert a.num_snapshots == 4 and torch.equal(a.deviations, b.deviations)
    assert a.meta["phase"]["optimizer"] == "adam"
    with pytest.raises(ValueError, match="at least 2"):
        swa_phase(model, loader(x, y), steps=3, lr=1e-2, every=2)
