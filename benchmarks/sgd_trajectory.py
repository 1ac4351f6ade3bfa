"""The SGD-trajectory kernel on MNIST-1D: MAP vs SWA vs SWAG vs ELLA with the SGD-trajectory kernel.

Same protocol as ``ella demo``: ``mnist1d()`` (3,500 train / 500 validation / 10,000 generated test points),
the reference CNN and the overfitting MLP trained by ``ella_lab.train``'s recipes. From each MAP model an
SWA-style phase (``ella_lab.trajectory.trajectory_methods``: the recipe's optimizer at a constant learning rate,
1,000 steps, a snapshot every 5) records one trajectory, from which SWA, SWAG (rank 20, scale 0.5, 30
samples) and the SGD-trajectory ELLA (k = 10 NeuralEF eigenfunctions, mean the SWA model, kernel scale tuned
on validation NLL) are built. For every model and method this prints a table and writes JSON with NLL, ECE
(15 equal-width bins, top label), accuracy, Brier, fit and predict seconds, and checks the claims:

* the SGD-trajectory predictive has lower NLL and ECE than the MAP solution;
* its NLL is within 10% of SWAG's (or lower);
* it predicts with one pass of the eigenfunction network (plus the mean network) against SWAG's 30 passes.

    python benchmarks/sgd_trajectory.py [--models cnn mlp] [--seed 0] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ella.methods import MAP, predict_all
from ella_lab.data import mnist1d
from ella_lab.report import environment, markdown_table, run_method
from ella_lab.train import train_mnist1d_cnn, train_mnist1d_mlp
from ella_lab.trajectory import trajectory_methods

TRAINERS = {"cnn": train_mnist1d_cnn, "mlp": train_mnist1d_mlp}
STORAGE = {"float32": None, "float16": torch.float16}
COLUMNS = ("acc", "nll", "ece", "brier", "fit_seconds", "predict_seconds", "predict_seconds_best")


def best_predict_seconds(method, loader, repeats: int) -> float:
    """The fastest of ``repeats`` timed passes of ``method.predict`` over ``loader`` (the machine is shared)."""
    return min((predict_all(method, loader, "test_loader")[2] for _ in range(repeats)), default=float("inf"))


def claims(rows: dict) -> dict:
    """The three checks of the SGD-trajectory rows against MAP and SWAG, on one model's rows."""
    ella, swag, map_ = rows["ella_sgd_trajectory"], rows["swag"], rows["map"]
    return {
        "nll_below_map": ella["nll"] < map_["nll"],
        "ece_below_map": ella["ece"] < map_["ece"],
        "nll_within_10pct_of_swag": ella["nll"] <= 1.1 * swag["nll"],
        "nll_ratio_to_swag": ella["nll"] / swag["nll"],
        "predict_speedup_over_swag": swag["predict_seconds"] / ella["predict_seconds"],
        "predict_speedup_over_swag_best_of_repeats": swag["predict_seconds_best"] / ella["predict_seconds_best"],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"], choices=sorted(TRAINERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-test", type=int, default=10000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--neuralef-steps", type=int, default=2000)
    parser.add_argument("--storage", choices=sorted(STORAGE), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed prediction passes (the fastest is kept)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = mnist1d(num_test=args.num_test)
    train = DataLoader(data.train, batch_size=256)
    val = DataLoader(data.val, batch_size=500)
    test = DataLoader(data.test, batch_size=1000)
    report = {
        "benchmark": "sgd_trajectory",
        "dataset": "mnist1d",
        "seed": args.seed,
        "num_train": len(data.train),
        "num_val": len(data.val),
        "num_test": len(data.test),
        "k": args.k,
        "neuralef_steps": args.neuralef_steps,
        "storage": args.storage,
        "environment": environment(),
        "ece": "15 equal-width bins, top-label confidence",
        "models": {},
        "trajectories": {},
        "claims": {},
    }
    for name in args.models:
        model, history = TRAINERS[name](data, seed=args.seed, progress=args.progress)
        start = time.perf_counter()
        methods = trajectory_methods(
            data,
            model,
            history["recipe"],
            k=args.k,
            neuralef_steps=args.neuralef_steps,
            storage_dtype=STORAGE[args.storage],
            seed=args.seed,
            progress=args.progress,
        )
        record_seconds = time.perf_counter() - start
        trajectory = methods["swag"].trajectory
        report["trajectories"][name] = {
            "snapshots": trajectory.num_snapshots,
            "phase": trajectory.meta["phase"],
            "phase_seconds": trajectory.meta["phase_seconds"],
            "record_seconds": trajectory.meta["record_seconds"],
            "seconds": record_seconds,
            "map_recipe": history["recipe"],
        }
        methods = {"map": MAP(model), **methods}
        rows = {}
        for method_name, method in methods.items():
            rows[method_name] = run_method(method, train, val, test, args.progress)[0]
            rows[method_name]["predict_seconds_best"] = min(
                rows[method_name]["predict_seconds"], best_predict_seconds(method, test, args.repeats - 1)
            )
        report["models"][name] = rows
        report["claims"][name] = claims(rows)
        print(
            f"\nMNIST-1D {name}: {len(data.test)} test points, trajectory of {trajectory.num_snapshots} snapshots "
            f"({record_seconds:.1f} s); ECE: 15 equal-width bins, top label"
        )
        print(markdown_table(rows, COLUMNS))
        print(json.dumps(report["claims"][name]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sgd_trajectory.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {path}")
    return report


if __name__ == "__main__":
    main()
