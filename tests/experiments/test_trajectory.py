"""ella.experiments.trajectory: the SWA-style phase that records a trajectory continuing a MAP training."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella.experiments.trajectory import swa_phase

from tests.conftest import tiny_mlp


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, dtype=torch.float64, generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def loader(x, y, batch_size=8, seed=0):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


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
