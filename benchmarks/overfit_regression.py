"""Regression without validation data on an overfit network: the Laplace evidence picks the hyperparameters of
ExactLLA and ELLA, whose test NLLs show what a rank-k posterior leaves out there.

scikit-learn's diabetes (442 points, standardised; 350 training, 92 test, a seeded split), a 10-100-100-1 tanh MLP
trained by Adam to a training MSE near 1e-8 (11,301 weights). Both methods fit on the training loader alone, so the
prior precision and the noise come from the evidence of the linearised model; the test NLL, the chosen values and,
for ELLA, the share of the training curvature's trace its features hold (the warning's figure). Writes
``overfit_regression.json``.

    python benchmarks/overfit_regression.py
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
from sklearn.datasets import load_diabetes
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ella
from ella.methods import ExactLLA, Tuning
from ella.metrics import gaussian_nll
from ella_lab.compare.cost import timed
from ella_lab.report import benchmark_parser, parse_benchmark


def overfit_mlp(x, y, steps: int = 5000, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(10, 100), nn.Tanh(), nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 1))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(steps):
        opt.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        opt.step()
    return model.eval()


def main(argv=None) -> dict:
    args = parse_benchmark(benchmark_parser(__doc__, threads=2), argv)
    x, y = load_diabetes(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)[:, None]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:350], order[350:]
    model = overfit_mlp(x[train], y[train])
    with torch.no_grad():
        rows = {
            "train_mse": float((model(x[train]) - y[train]).pow(2).mean()),
            "test_mse": float((model(x[test]) - y[test]).pow(2).mean()),
        }
    loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=64)
    for name, method in (
        ("ella", ella.ELLA(model, "regression", progress=False)),
        ("exact_lla", ExactLLA(model, "regression", max_params=12_000, progress=False)),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, seconds = timed(method.fit, loader)
        mean, var = method.predict(x[test])
        share = next((re.search(r"hold (\d+)%", str(w.message)) for w in caught if "hold" in str(w.message)), None)
        rows[name] = {
            "test_nll": gaussian_nll(mean, var, y[test]),
            "prior_precision": method.prior_precision_,
            "noise": float(method.noise_[0]),
            "fit_seconds": seconds,
            "trace_share": None if share is None else int(share.group(1)) / 100,
        }
        print(name, json.dumps(rows[name]), flush=True)
    for residual in ("mean", "learned"):
        post = ella.ELLA(model, "regression", tuning=Tuning(residual=residual), progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post.fit(loader)
        rows[f"ella_{residual}"] = {"test_nll": gaussian_nll(*post.predict(x[test]), y[test])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overfit_regression.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
