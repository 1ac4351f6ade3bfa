"""ELLA on a network you trained yourself: scikit-learn digits, an MLP, calibrated predictions.

python examples/quickstart.py
"""

import torch
from torch.utils.data import DataLoader

import ella
from ella.methods import MAP
from ella_lab.data import digits
from ella_lab.models import digits_mlp
from ella_lab.train import train_map

data = digits(seed=0)
train = DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
val, test = DataLoader(data.val, batch_size=256), DataLoader(data.test, batch_size=256)

model = digits_mlp(seed=0)
train_map(model, train, epochs=60, lr=1e-2, progress=False)  # a MAP network, left in eval mode

post = ella.ELLA(model, likelihood="classification", k=20, progress=False)
post.fit(DataLoader(data.train, batch_size=256), val_loader=val)  # NTK -> eigenfunctions -> k x k posterior

map_report = ella.evaluate(MAP(model), test)
ella_report = ella.evaluate(post, test)
for name, r in (("MAP", map_report), ("ELLA", ella_report)):
    print(f"{name:5s} acc {r['acc']:.3f}  NLL {r['nll']:.3f}  ECE {r['ece']:.3f} (15 bins)")
print(
    f"eigen-solver {post.solver_.kind} (auto), prior precision {post.prior_precision_:.3g}, "
    f"top eigenvalues {post.eigenvalues[:3].tolist()}"
)
