"""ELLA for regression: a 1-D toy problem with a gap in the training inputs.

The predictive variance (including the observation noise) grows in the gap and outside the data.

    python examples/regression.py   # writes regression.png
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

import ella
from ella_lab.data import toy_regression
from ella_lab.models import regression_mlp
from ella_lab.train import train_map

data = toy_regression(seed=0)
model = regression_mlp(seed=0)
train_map(
    model,
    DataLoader(data.train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
    steps=3000,
    lr=1e-2,
    likelihood="regression",
    progress=False,
)

post = ella.ELLA(model, likelihood="regression", k=10, progress=False)
post.fit(DataLoader(data.train, batch_size=64), val_loader=DataLoader(data.val, batch_size=64))

x = torch.linspace(-1.5, 1.5, 300)[:, None]
mean, var = post.predict(x)
mean, std = mean[:, 0], var[:, 0].sqrt()
xt, yt = data.train.tensors
plt.fill_between(x[:, 0], mean - 2 * std, mean + 2 * std, alpha=0.3, label="ELLA mean +- 2 std")
plt.plot(x[:, 0], mean, label="MAP mean")
plt.scatter(xt[:, 0], yt[:, 0], s=8, c="k", label="training data")
plt.legend()
plt.savefig("regression.png", dpi=120)
print(
    f"noise {post.noise_.item():.3f} (tuned on validation NLL), prior precision {post.prior_precision_:.3g}; "
    "wrote regression.png"
)
