"""Prediction cost of every method as a ratio to the MAP forward pass, measured in one run.

Trains the MNIST-1D MAP models (CNN and MLP), fits the methods once, then times ``predict`` on the same
test inputs for each (``--repeats`` runs after a warm-up, same thread count, in one process), and prints and
writes the median seconds per 1,000 inputs with the spread (min and max) and the median ratio to MAP.

    python benchmarks/predict_speed.py [--test 10000] [--repeats 5] [--threads 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ella.eigen import Nystrom
from ella.experiments.compare import Settings
from ella.methods import ELLA, KFACLLA, MAP
from ella.experiments.data import mnist1d
from ella.experiments.train import train_mnist1d_cnn, train_mnist1d_mlp


def times(fn, x: torch.Tensor, repeats: int, batch_size: int = 1000) -> list[float]:
    """Seconds of predicting all of ``x`` in batches, ``repeats`` times (one warm-up first)."""
    fn(x[:batch_size])
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            fn(x[i : i + batch_size])
        out.append(time.perf_counter() - start)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = mnist1d(num_test=args.test)
    train, val = DataLoader(data.train, batch_size=256), DataLoader(data.val, batch_size=500)
    x = data.test.tensors[0]
    results = {}
    settings = Settings()  # the benchmark's ELLA settings (prediction cost does not depend on them)
    for name, trainer in (("cnn", train_mnist1d_cnn), ("mlp", train_mnist1d_mlp)):
        model, _ = trainer(data, progress=False)
        methods = {
            "map": MAP(model),
            "ella_neuralef": ELLA(model, progress=False, **settings.neuralef(model)),
            "ella_neuralef_mc": None,
            "ella_neuralef_residual": ELLA(model, progress=False, residual_samples=settings.residual_samples,
                                           **settings.neuralef(model)),
            "ella_nystrom": ELLA(model, solver=Nystrom(settings.k, settings.nystrom_points), progress=False),
            "kfac_lla": KFACLLA(model, progress=False),
        }
        rows = {}
        for method_name, method in methods.items():
            if method_name == "ella_neuralef_mc":  # the same posterior, Monte-Carlo link (512 samples)
                post = methods["ella_neuralef"]
                fn = lambda xb: post.predict(xb, link="mc")
            else:
                method.fit(train, val)
                fn = method.predict
            points = x if method_name != "kfac_lla" else x[:2000]  # its dense Jacobians are slow
            per_1000 = [t * 1000 / len(points) for t in times(fn, points, args.repeats)]
            rows[method_name] = {"seconds_per_1000": statistics.median(per_1000), "min": min(per_1000),
                                 "max": max(per_1000), "repeats": len(per_1000)}
        unit = rows["map"]["seconds_per_1000"]
        for row in rows.values():
            row["ratio_to_map"] = row["seconds_per_1000"] / unit
        results[name] = rows
        print(f"\nMNIST-1D {name}: predict seconds per 1,000 inputs, median of {args.repeats} (min - max), "
              f"threads = {torch.get_num_threads()}")
        for method_name, row in rows.items():
            print(f"  {method_name:24s} {row['seconds_per_1000']:8.4f} s ({row['min']:.4f} - {row['max']:.4f})"
                  f"   {row['ratio_to_map']:7.1f}x MAP")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict_speed.json").write_text(json.dumps({"threads": torch.get_num_threads(), "test_points": args.test,
                                                         "models": results}, indent=2))


if __name__ == "__main__":
    main()
