"""The library alone: installed without extras, ``ella`` imports and fits and saves ELLA with none of the lab's
packages present (CI runs this in an environment made by ``pip install .``)."""

import importlib.util
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ella

for package in ("matplotlib", "sklearn", "mnist1d", "laplace"):
    assert importlib.util.find_spec(package) is None, f"{package} is installed: this check needs a bare environment"

torch.manual_seed(0)
x = torch.randn(300, 4)
y = (x[:, 0] + x[:, 1] > 0).long()
model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
train = DataLoader(TensorDataset(x[:200], y[:200]), batch_size=50)
val = DataLoader(TensorDataset(x[200:], y[200:]), batch_size=50)
posterior = ella.ELLA(model, progress=False).fit(train, val)
probs = posterior.predict(x[:10])
assert probs.shape == (10, 2) and torch.allclose(probs.sum(1), torch.ones(10))
with tempfile.TemporaryDirectory() as folder:
    posterior.save(Path(folder) / "posterior.pt")
    loaded = ella.ELLA.load(Path(folder) / "posterior.pt", model)
assert torch.equal(loaded.predict(x[:10]), probs)
print(f"the library alone: ELLA fitted (k = {posterior.k_}, {posterior.solver_.kind}), saved and loaded")
