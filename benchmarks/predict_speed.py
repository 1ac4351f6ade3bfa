"""Prediction cost of every method as a ratio to the MAP forward pass, measured in one run.

Trains the MNIST-1D MAP models (CNN and MLP), fits the methods once, then times ``predict`` on the same
test inputs for each (best of ``--repeats`` runs, after a warm-up, same thread count), and prints and
writes the seconds per 1,000 inputs and the ratio to MAP.

    python benchmarks/predict_speed.py [--test 10000] [--repeats 5] [--threads 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ella import ELLA
from ella.baselines import KFACLLA, MAP
from ella.experiments.compare import Settings
from ella.experiments.data import mnist1d
from ella.experiments.train import train_mnist1d_cnn, train_mnist1d_mlp


def best_time(fn, x: torch.Tensor, repeats: int, batch_size: int = 1000) -> float:
    """Best-of-``repeats`` seconds of predicting all of ``x`` in batches (one warm-up first)."""
    fn(x[:batch_size])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            fn(x[i : i + batch_size])
        times.append(time.perf_counter() - start)
    return min(times)


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
    chosen = Settings().neuralef_kwargs()  # the benchmark's ELLA settings (prediction cost does not depend on them)
    for name, trainer in (("cnn", train_mnist1d_cnn), ("mlp", train_mnist1d_mlp)):
        model, _ = trainer(data, progress=False)
        methods = {
            "map": MAP(model),
            "ella_neuralef": ELLA(model, progress=False, **chosen),
            "ella_neuralef_mc": None,
            "ella_neuralef_residual": ELLA(model, progress=False, residual_samples=Settings().residual_samples, **chosen),
            "ella_nystrom": ELLA(model, features="nystrom", progress=False),
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
            seconds = best_time(fn, points, args.repeats if method_name != "kfac_lla" else 1)
            rows[method_name] = {"seconds_per_1000": seconds * 1000 / len(points)}
        for row in rows.values():
            row["ratio_to_map"] = row["seconds_per_1000"] / rows["map"]["seconds_per_1000"]
        results[name] = rows
        print(f"\nMNIST-1D {name}: predict seconds per 1,000 inputs (threads = {torch.get_num_threads()})")
        for method_name, row in rows.items():
            print(f"  {method_name:24s} {row['seconds_per_1000']:8.4f} s   {row['ratio_to_map']:7.1f}x MAP")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict_speed.json").write_text(json.dumps({"threads": torch.get_num_threads(), "test_points": args.test,
                                                         "models": results}, indent=2))


if __name__ == "__main__":
    main()
