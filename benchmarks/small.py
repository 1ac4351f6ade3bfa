"""ELLA's defaults on small tabular problems: what ``solver="auto"`` picks, its fit seconds and its test NLL.

Three scikit-learn tables (breast cancer, digits, wine), standardised, at most 400 training points each, an MLP of
about 2,000 weights trained to its MAP. For each, ``ELLA(model)`` with its defaults is fitted ``--repeats`` times
(median fit seconds with the spread), beside

* ``exact``: the exact eigendecomposition of the exact NTK's Gram matrix on all ``N C`` training rows
  (``EmpiricalNTK(estimator="exact")`` with ``ExactEigen``), the answer the defaults are held to;
* ``neuralef``: the solver the defaults pick for large problems, fitted once.

    python benchmarks/small.py [--repeats 3] [--threads 1] [--out benchmarks/results]

Writes ``small.json`` and prints a markdown table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from torch.utils.data import DataLoader, TensorDataset

from ella.eigen import ExactEigen
from ella.kernels import EmpiricalNTK
from ella.methods import ELLA
from ella.metrics import nll
from ella_lab.compare.cost import timed
from ella_lab.models import mlp
from ella_lab.report import benchmark_parser, parse_benchmark
from ella_lab.train import train_map

#: name -> (loader, hidden widths): about 2,000 weights each
TABLES = {
    "breast_cancer": (load_breast_cancer, (32, 32)),
    "digits": (load_digits, (24, 24)),
    "wine": (load_wine, (40, 40)),
}


def splits(load, num_train: int = 400, seed: int = 0):
    """Standardised, shuffled ``(train, val, test)`` tensors: at most ``num_train`` training points (60% of a
    smaller table), the rest halved into validation and test."""
    x, y = load(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])
    n = min(num_train, int(0.6 * len(x)))
    v = (len(x) - n) // 2
    return (x[:n], y[:n]), (x[n : n + v], y[n : n + v]), (x[n + v :], y[n + v :])


def fitted(model, train, val, **options) -> tuple[ELLA, float]:
    loaders = DataLoader(TensorDataset(*train), batch_size=128), DataLoader(TensorDataset(*val), batch_size=256)
    return timed(ELLA(model, progress=False, **options).fit, *loaders)


def main(argv=None) -> None:
    args = parse_benchmark(benchmark_parser(__doc__, threads=1, repeats=3), argv)
    rows = []
    for name, (load, hidden) in TABLES.items():
        train, val, test = splits(load)
        C = int(train[1].max()) + 1
        model = mlp(train[0].shape[1], hidden, C, seed=0)
        train_map(
            model,
            DataLoader(TensorDataset(*train), batch_size=64, shuffle=True),
            epochs=100,
            weight_decay=1e-4,
            progress=False,
        )
        model.eval()
        seconds, post = [], None
        for _ in range(args.repeats):
            post, s = fitted(model, train, val)
            seconds.append(s)
        exact, exact_s = fitted(
            model, train, val, kernel=EmpiricalNTK(model, estimator="exact", progress=False), solver=ExactEigen(post.k)
        )
        neuralef, neuralef_s = fitted(model, train, val, solver="neuralef")
        scores = {
            label: nll(p.predict(test[0]), test[1])
            for label, p in (("default", post), ("exact", exact), ("neuralef", neuralef))
        }
        rows.append(
            {
                "table": name,
                "N": len(train[0]),
                "C": C,
                "P": sum(p.numel() for p in model.parameters()),
                "chosen": post.solver_.kind,
                "fit_seconds": statistics.median(seconds),
                "fit_min": min(seconds),
                "fit_max": max(seconds),
                "nll": scores["default"],
                "exact_nll": scores["exact"],
                "exact_fit_seconds": exact_s,
                "nll_gap": scores["default"] / scores["exact"] - 1,
                "neuralef_nll": scores["neuralef"],
                "neuralef_fit_seconds": neuralef_s,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "small.json").write_text(
        json.dumps(
            {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__, "rows": rows}, indent=2
        )
    )
    print(f"\n`python benchmarks/small.py` ({args.threads} thread(s), median of {args.repeats} fits [min, max])\n")
    print("| table | N | C | P | default picks | default fit s | default NLL | exact NLL | gap | NeuralEF fit s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['table']} | {r['N']} | {r['C']} | {r['P']:,} | {r['chosen']} | {r['fit_seconds']:.2f} "
            f"[{r['fit_min']:.2f}, {r['fit_max']:.2f}] | {r['nll']:.4f} | {r['exact_nll']:.4f} | "
            f"{100 * r['nll_gap']:+.2f}% | {r['neuralef_fit_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
